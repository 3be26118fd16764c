"""`ttjax generate` and the errors a request can hit."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from model.serving.engine import generate
from model.tools.cli import main
from model.errors import SequenceLengthError


def test_generate_json(capsys):
    assert main(["generate", "--prompt", "The capital of France is", "--max-new-tokens", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"text", "tokens", "prefill_s", "decode_tokens_per_s"} <= set(out)
    assert out["text"].startswith(" Paris")
    assert len(out["tokens"]) == 8
    assert out["prefill_s"] > 0 and out["decode_tokens_per_s"] > 0


def test_generate_from_token_ids_and_dummy_weights(capsys):
    """--prompt-ids gives the text prompt's tokens the same answer; --model-name (a named model's shapes on dummy
    weights, which have no tokenizer) needs ids; ids outside the vocabulary are refused."""
    args = ["--max-new-tokens", "4", "--json", "--max-seq-len", "128"]
    assert main(["generate", "--prompt", "The capital of France is", *args]) == 0
    text = json.loads(capsys.readouterr().out)
    assert main(["generate", "--prompt-ids", "504,3575,282,4649,314", *args]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == text["tokens"]
    assert main(["generate", "--model-name", "Llama-3.2-1B", "--prompt", "hi"]) == 2
    assert capsys.readouterr().err == "ttjax: error: --model-name Llama-3.2-1B gives dummy weights with no tokenizer; pass the prompt as --prompt-ids.\n"
    assert main(["generate", "--prompt-ids", "1,2", "--chat"]) == 2
    assert capsys.readouterr().err.startswith("ttjax: error: --chat wraps a text prompt in the chat template; --prompt-ids are tokens")
    assert main(["generate", "--prompt-ids", "1,x"]) == 2
    assert capsys.readouterr().err == "ttjax: error: --prompt-ids '1,x' holds 'x'; each must be a token id in 0..49151.\n"


def test_generate_with_a_precision_config(capsys):
    """--precision picks a tt_transformers config; compact block-float weights still give the float32 answer."""
    args = ["generate", "--prompt", "The capital of France is", "--max-new-tokens", "2", "--json", "--max-seq-len", "128"]
    assert main([*args, "--precision", "accuracy", "--override", "FF2=bfloat16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["precision"] == "accuracy+FF2=bfloat16" and out["text"].startswith(" Paris")
    assert main([*args, "--dtype", "bfloat16"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "bfloat16"


def test_prompt_longer_than_max_seq_len_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "model.tools.cli", "generate", "--prompt", "word " * 100, "--max-seq-len", "64", "--max-new-tokens", "4"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert re.fullmatch(r"ttjax: error: the prompt has 10\d tokens, more than --max-seq-len 64\.\n", proc.stderr)
    assert "Traceback" not in proc.stderr


def test_prompt_longer_than_max_seq_len(generator):
    with pytest.raises(SequenceLengthError, match=r"the prompt has 300 tokens, longer than max_seq_len = 256"):
        generate(generator, [5] * 300, 4)


def test_prompt_plus_new_tokens_past_max_seq_len(generator):
    with pytest.raises(SequenceLengthError, match=r"prompt \(250 tokens\) plus max_new_tokens \(10\) is 260 tokens, more than max_seq_len = 256"):
        generate(generator, [5] * 250, 10)


def test_empty_prompt_and_zero_tokens(generator):
    with pytest.raises(SequenceLengthError, match=r"request \d+ has an empty prompt: prefill needs at least one token"):
        generate(generator, [], 4)
    with pytest.raises(SequenceLengthError, match="the prompt is empty: prefill needs at least one token"):
        generator.prefill_forward_text([], generator.allocate_kv_cache())
    with pytest.raises(SequenceLengthError, match="max_new_tokens = 0; it must be an integer of at least 1"):
        generate(generator, [5], 0)


def test_a_second_run_compiles_nothing(tmp_path):
    """JAX's persistent compilation cache and the executables beside it: the first `ttjax generate` stores every
    program it compiles, a second one with the same model and shapes loads them all (no new entry appears, none is
    rewritten); --no-compile-cache keeps nothing."""
    import os

    cache, off = tmp_path / "xla", tmp_path / "off"
    env = {k: v for k, v in os.environ.items() if k != "TTJAX_COMPILE_CACHE"} | {"TTJAX_CACHE_DIR": str(off)}
    cmd = [sys.executable, "-m", "model.tools.cli", "generate", "--prompt", "The capital of France is", "--max-new-tokens", "4", "--json"]

    tokens = []

    def run(*extra):
        done = subprocess.run([*cmd, *extra], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        tokens.append(json.loads(done.stdout.strip().splitlines()[-1])["tokens"])
        return sorted((str(p.relative_to(cache)), p.stat().st_mtime_ns) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []

    first = run("--compile-cache", str(cache))
    assert first, "the first run stored no compiled program"
    assert any(name.startswith("executables/") for name, _ in first), "no executable was kept (model.serving.executables)"
    assert run("--compile-cache", str(cache)) == first  # every program came from the cache: none new, none rewritten
    # Executables lost while JAX's cache holds the rest: the next run compiles them afresh, and they load and run.
    shutil.rmtree(cache / "executables")
    run("--compile-cache", str(cache))
    run("--compile-cache", str(cache))
    run("--no-compile-cache")
    assert all(t == tokens[0] for t in tokens), tokens
    assert not off.exists() or not any(off.iterdir())  # TTJAX_CACHE_DIR, the default folder, stayed empty
