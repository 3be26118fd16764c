"""The `ttjax` command as a new user meets it, through the command itself (a subprocess: exit status, stderr):
no traceback for a compile cache that cannot be used, a closed pipe or Ctrl-C, and flags that messages name exist."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from model.tools.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ttjax(*argv, env=None, **kw) -> subprocess.CompletedProcess:
    # (the suite turns the compile cache off; these runs turn it on, as a user's run has it)
    return subprocess.run([sys.executable, "-m", "model.tools.cli", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TTJAX_COMPILE_CACHE": "1", **(env or {})}, timeout=300, **kw)


def one_sentence(proc: subprocess.CompletedProcess, *words) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, proc.stderr
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture(scope="module")
def a_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "not-a-folder"
    path.write_text("x")
    return path


def test_a_compile_cache_that_cannot_be_used_is_one_sentence(a_file, tmp_path):
    quick = ["generate", "--prompt-ids", "1,2", "--max-new-tokens", "1"]
    one_sentence(ttjax(*quick, "--compile-cache", str(a_file)), str(a_file), "--compile-cache", "is a file")
    one_sentence(ttjax(*quick, env={"TTJAX_CACHE_DIR": str(a_file)}), "$TTJAX_CACHE_DIR", "is a file")
    home = {"HOME": str(a_file), "XDG_CACHE_HOME": "", "TTJAX_CACHE_DIR": ""}
    one_sentence(ttjax(*quick, env=home), "$HOME", "cannot be made")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # (root writes anywhere)
        one_sentence(ttjax(*quick, "--compile-cache", str(locked)), "not writable")
    # the commands that compile nothing do not touch the cache, and do not offer its flags
    for argv in (["precision", "--model-name", "Llama-3.1-8B"], ["perf-model", "--model-name", "Llama-3.2-1B"]):
        proc = ttjax(*argv, env=home)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "--compile-cache" not in ttjax(argv[0], "--help").stdout


def test_a_closed_pipe_ends_quietly_with_sigpipes_status():
    proc = subprocess.Popen([sys.executable, "-m", "model.tools.cli", "precision", "--model-name", "Llama-3.1-8B"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # the reader is gone before the first line (`| head -c 0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE and err == "", err


def test_ctrl_c_ends_quietly_with_sigints_status():
    # SIGINT as a terminal delivers it (a test runner's worker may have it ignored, and a child inherits that)
    proc = subprocess.Popen([sys.executable, "-m", "model.tools.cli", "generate", "--prompt", "Once upon a time",
                             "--max-new-tokens", "400", "--max-seq-len", "512", "--no-compile-cache"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(8)  # in the middle of loading, compiling or generating
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err, err


def test_a_flag_a_message_names_exists():
    """serve's context check points to --allow-past-context: serve takes it."""
    assert build_parser().parse_args(["serve", "--max-seq-len", "100000", "--allow-past-context"]).allow_past_context
    err = one_sentence(ttjax("serve", "--max-seq-len", "100000", "--port", "0"), "--allow-past-context")
    flags = [w.strip(".,;:()") for w in err.split() if w.startswith("--")]
    for flag in flags:
        assert flag in ttjax("serve", "--help").stdout, (flag, err)


@pytest.mark.parametrize("argv, words", [
    # one registry of model names, any case, or a refusal that lists them
    (["precision", "--model-name", "Foo-1B"], ["--model-name 'Foo-1B'", "Llama-3.1-70B"]),
    (["precision", "--model-name", ""], ["--model-name ''", "SmolLM2-135M"]),
    (["perf-model", "--model-name", "Foo-1B"], ["--model-name 'Foo-1B'", "Llama-3.2-90B"]),
    (["generate", "--model-name", "Foo-1B", "--prompt-ids", "1"], ["--model-name 'Foo-1B'"]),
    # values past what the model or the chip holds, named by their flag
    (["perf-model", "--context", "1000000"], ["--context 1000000", "131072"]),
    (["perf-model", "--mode", "prefill", "--seq-len", "1000000"], ["--seq-len 1000000"]),
    (["perf-model", "--n-layers", "40"], ["--n-layers 40", "1..32"]),
    (["comm-report", "--mesh", "1x2", "--mode", "prefill", "--seq-len", "100000"], ["--seq-len 100000", "8192"]),
    (["comm-report", "--mesh", "1x2", "--batch", "33"], ["--batch 33", "1..32"]),
    (["bench", "--batch", "33", "--no-peers"], ["--batch 33", "1..32"]),
    (["serve", "--max-batch-size", "33"], ["--max-batch-size 33"]),
    # options that would change nothing
    (["generate", "--prompt", "hi", "--dtype", "bfloat16", "--precision", "accuracy"], ["--dtype bfloat16", "--precision accuracy"]),
    (["generate", "--prompt", "hi", "--ccl", "all_reduce"], ["--ccl all_reduce", "--mesh"]),
    (["generate", "--prompt", "hi", "--norm", "distributed"], ["--norm distributed", "--mesh"]),
    (["generate", "--prompt", ""], ["--prompt ''", "no tokens"]),
    (["accuracy", "--configs", "nonsense"], ["--configs", "'nonsense'"]),
])
def test_bad_values_get_one_sentence_naming_the_flag(argv, words):
    start = time.monotonic()
    cache = ["--no-compile-cache"] if argv[0] in ("generate", "comm-report", "accuracy", "bench") else []
    one_sentence(ttjax(*argv, *cache), *words)
    assert time.monotonic() - start < 60  # refused before any model is loaded or compiled


def test_a_lowercase_model_name_gets_that_models_preset():
    upper = ttjax("precision", "--model-name", "Llama-3.1-70B", "--json")
    lower = ttjax("precision", "--model-name", "llama-3.1-70b", "--json")
    assert upper.returncode == lower.returncode == 0 and upper.stdout == lower.stdout
