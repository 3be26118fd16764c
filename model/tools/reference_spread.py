"""How far the float32 reference itself moves from host to host.

transformers' float32 forward is not one fixed computation: torch picks its vector kernels by the CPU's ISA
(ATen's dispatch, MKL's GEMM code path) and splits reductions by thread count, so the same checkpoint gives
logits that differ in the last bits on another machine. ttjax's TT presets compute every reduction in an order
of their own (tests/test_host_independence.py), so whatever moves in an accuracy table between hosts is the
reference's. This re-runs the reference in fresh processes under the kernel choices another host would make and
reports the spread, beside the margins that decide whether it can change a top-1 or top-5 label: if every logit
moves by less than half the smallest gap between the reference's first and second (fifth and sixth) token, the
top-1 (top-5) columns are the same on every host; only the perplexity moves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

from model.errors import CheckpointError

# (what a host might do differently, the environment that makes this host do it)
VARIANTS = (
    ("ATen without vector kernels", {"ATEN_CPU_CAPABILITY": "default"}),
    ("ATen AVX2 kernels", {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("MKL limited to AVX2", {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    ("one thread", {"TTJAX_REFERENCE_THREADS": "1"}),
)


def margins(logits: np.ndarray) -> tuple[float, float]:
    """The smallest gap, over positions, between the 1st and 2nd largest logits, and between the 5th and 6th."""
    top = -np.sort(-logits, axis=-1)[:, :6]
    return float((top[:, 0] - top[:, 1]).min()), float((top[:, 4] - top[:, 5]).min())


def _labels(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-logits, axis=-1)
    return order[:, 0], np.sort(order[:, :5], axis=-1)


def _perplexity(logits: np.ndarray, targets: np.ndarray) -> float:
    """In float64, not accuracy.score's float32: the spread measured here is in the seventh digit, float32's own."""
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return float(np.exp(-logp[np.arange(len(targets)), targets].mean()))


def measure(path: str, fmt: str, tokens: list[int], prefill_len: int, decode_steps: int, logits: np.ndarray) -> dict:
    """The reference's spread: logits (this process's reference) against the same forward under each VARIANT."""
    targets = np.asarray(tokens[prefill_len : prefill_len + decode_steps + 1])
    top1, top5 = _labels(logits)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "tokens.npy"), np.asarray(tokens[: prefill_len + decode_steps], np.int64))
        for name, env in VARIANTS:
            out = os.path.join(tmp, "logits.npy")
            argv = [sys.executable, "-m", "model.tools.reference_spread", path, fmt, tmp, str(prefill_len), str(decode_steps)]
            done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                                  cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
            if done.returncode != 0:
                raise CheckpointError(f"transformers' reference under {name} failed: {done.stderr.strip()[-2000:]}")
            other = np.load(out)
            o1, o5 = _labels(other)
            runs.append({"name": name, "env": env, "max_abs_logit_diff": float(np.abs(other - logits).max()),
                         "perplexity": _perplexity(other, targets), "top1_same": bool((o1 == top1).all()),
                         "top5_same": bool((o5 == top5).all())})
    m1, m5 = margins(logits)
    ppl = [_perplexity(logits, targets)] + [r["perplexity"] for r in runs]
    return {"variants": runs, "max_abs_logit_diff": max(r["max_abs_logit_diff"] for r in runs),
            "top1_same": all(r["top1_same"] for r in runs), "top5_same": all(r["top5_same"] for r in runs),
            "perplexity_range": [min(ppl), max(ppl)], "min_top1_margin": m1, "min_top5_margin": m5}


def _worker(path: str, fmt: str, tmp: str, prefill_len: str, decode_steps: str) -> None:
    """One variant's reference logits, written to tmp/logits.npy (run by measure in a fresh process: the kernel
    choices are read when torch loads)."""
    from model.tools.reference import load_reference_model, transformers_reference

    tokens = np.load(os.path.join(tmp, "tokens.npy")).tolist()
    threads = int(os.environ.get("TTJAX_REFERENCE_THREADS", "0")) or None
    ref = transformers_reference(None, tokens, int(prefill_len), int(decode_steps), load_reference_model(path, fmt), threads)
    np.save(os.path.join(tmp, "logits.npy"), ref.logits)


if __name__ == "__main__":
    _worker(*sys.argv[1:])
