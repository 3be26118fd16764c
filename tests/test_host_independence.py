"""One chip, one number on every host: under the TT presets every step of a decoder is ttjax's own arithmetic (the
matrix engine's phases and Dst, the SFPU's instructions, the packer's rounding, in defined orders), so the logits of
a short teacher-forced run are the same bits whatever the CPU: its native kernels at each vector ISA level, and XLA
limited to AVX2. The digests are pinned; a change to the arithmetic of a TT preset changes them on purpose, and the
new values go here with the reason. (float32 and the +fidelity=off / +sfpu=off configs are exact float math in XLA,
whose vector code differs between CPUs; they are not pinned.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import pytest

import ttjax.native as native
from tests import host_digest
from tests.conftest import with_host_devices

DIGESTS = {  # tests/host_digest.py: SmolLM2-135M cut to 4 layers, 40 tokens prefilled, 3 decoded
    "performance": "e5170b335e84c71fa8ac3d7e1eaa69b3764a2157d415d36014245def39ba7a25",
    "accuracy": "5629a16f978b8ad0c119ea7d87bfe1ffd77d0e30117f38dde06d18d753a71f8c",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def small_ckpt():
    return host_digest.load()


@pytest.mark.parametrize("isa", native.isa_levels() or ["auto"])
def test_tt_presets_give_the_same_logits_at_every_native_isa_level(isa, small_ckpt, monkeypatch):
    """The performance preset at every level (its steps use every native kernel: block-float and float matmuls at
    each Dst mode, both SDPA walks, the SFPU); both presets at the default level in the next test."""
    monkeypatch.setenv("TTJAX_NATIVE_ISA", isa)
    jax.clear_caches()  # the level is read when a step is traced
    try:
        assert host_digest.digest(small_ckpt, "performance") == DIGESTS["performance"]
    finally:
        jax.clear_caches()


def test_tt_presets_give_the_same_logits_with_xla_limited_to_avx2():
    env = dict(os.environ, XLA_FLAGS=with_host_devices("--xla_cpu_max_isa=AVX2", 1))
    proc = subprocess.run([sys.executable, "-m", "tests.host_digest", *DIGESTS], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == DIGESTS
