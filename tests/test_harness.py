"""The test harness itself: the host-device flag reaches jax whatever XLA_FLAGS already holds, hypothesis
runs derandomized (a red run reproduces), and every test has a timeout."""

import os
import subprocess
import sys

import jax
from hypothesis import settings

from tests.conftest import HOST_DEVICES, with_host_devices


def test_host_device_flag_is_added_to_existing_xla_flags():
    flag = f"--xla_force_host_platform_device_count={HOST_DEVICES}"
    assert with_host_devices("", HOST_DEVICES) == flag
    assert with_host_devices("--xla_cpu_enable_fast_math=false", HOST_DEVICES) == f"--xla_cpu_enable_fast_math=false {flag}"
    assert with_host_devices("--xla_force_host_platform_device_count=8 --xla_dump_to=/tmp/x", HOST_DEVICES) == f"--xla_dump_to=/tmp/x {flag}"
    assert with_host_devices("--xla_force_host_platform_device_count=64", HOST_DEVICES).endswith("=64")  # never lowered


def test_a_session_started_with_other_xla_flags_still_gets_the_devices():
    """Run as CI would with XLA_FLAGS already set (once, conftest skipped the device flag then)."""
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_enable_fast_math=false")
    code = "import tests.conftest, jax; print(jax.device_count(), tests.conftest.os.environ['XLA_FLAGS'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == str(HOST_DEVICES) and "--xla_cpu_enable_fast_math=false" in out
    assert jax.device_count() >= HOST_DEVICES


def test_hypothesis_is_derandomized_unless_asked():
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci":
        assert settings().derandomize


def test_every_test_has_a_timeout(pytestconfig):
    assert pytestconfig.getini("timeout") and float(pytestconfig.getini("timeout")) > 0
    assert pytestconfig.pluginmanager.hasplugin("timeout")


def test_a_hang_fails_instead_of_eating_ci(tmp_path):
    """A test that hangs past its timeout fails the run, in a child pytest with this project's timeout settings."""
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hang():\n    time.sleep(60)\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=2", "-o", "timeout_method=thread", str(tmp_path)],
        capture_output=True, text=True, timeout=50,
    )
    assert proc.returncode != 0 and "Timeout" in proc.stdout + proc.stderr
