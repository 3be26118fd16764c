"""A short teacher-forced run's logits, as a digest: the shipped SmolLM2, cut to its first LAYERS decoder layers (every
kind of step, at a fraction of the compile time), prefills the first PREFILL tokens of the accuracy text and decodes
DECODE more fed the text's own tokens; the digest is the SHA-256 of every step's float32 logits. Under a TT preset each step's arithmetic is ttjax's own (the matrix engine, the SFPU, defined orders), so the
digest is the same on every host; tests/test_host_independence.py pins it.

Run as a script (python -m tests.host_digest CONFIG...) it prints {config: digest} as JSON, for a run under other
XLA_FLAGS or TTJAX_NATIVE_ISA in a process of its own."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np

PREFILL, DECODE, LAYERS = 40, 3, 4


def logits(ck, config: str) -> list[np.ndarray]:
    from model.precision import ModelOptimizations
    from model.serving.generator import Generator
    from model.tools.accuracy import shipped_text

    tokens = ck.tokenizer.encode(shipped_text())[: PREFILL + DECODE]
    gen = Generator(ck.params, ck.args.replace(optimizations=ModelOptimizations.named(config, ck.args.model_name)), ck.tokenizer)
    first, cache = gen.prefill_forward_text(tokens[:PREFILL], gen.allocate_kv_cache())
    steps = [np.asarray(first, np.float32)]
    batch = cache[0][0].shape[0]
    for i in range(PREFILL, PREFILL + DECODE):
        tok, pos = np.zeros(batch, np.int32), np.full(batch, -1, np.int32)  # slot 0 only; the others empty
        tok[0], pos[0] = tokens[i], i
        _, lg, _, cache = gen.decode_forward(tok, pos, cache)
        steps.append(np.asarray(lg, np.float32).reshape(batch, -1)[0])
    return steps


def digest(ck, config: str) -> str:
    return hashlib.sha256(b"".join(step.tobytes() for step in logits(ck, config))).hexdigest()


def load():
    from dataclasses import replace

    from model.checkpoint import default_model_path, load_checkpoint

    ck = load_checkpoint(default_model_path(), max_seq_len=128, progress=False)
    return replace(ck, params=replace(ck.params, layers=ck.params.layers[:LAYERS]), args=ck.args.replace(n_layers=LAYERS))


if __name__ == "__main__":
    ck = load()
    print(json.dumps({config: digest(ck, config) for config in sys.argv[1:]}))
