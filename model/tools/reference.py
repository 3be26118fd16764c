"""The float32 reference the accuracy harness measures against: transformers' model of the same checkpoint, teacher-
forced over the same tokens in one forward, with each decoder layer's output (model.tools.accuracy,
model.tools.reference_spread).

`ttjax accuracy` keeps the reference it computed in a `references` folder beside its compile cache
(model.tools.compile_cache), keyed by the checkpoint's files (path, size, modification time), the tokens, the
lengths, the versions of transformers and torch, torch's CPU kernels and thread count: loading transformers' model
of a GGUF file takes most of a short run (16 s of 19 for SmolLM2 at 16 tokens), and a user comparing configs runs
the same reference again and again."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.checkpoint import Checkpoint
from model.errors import CheckpointError


@dataclass
class Reference:
    logits: np.ndarray  # [decode_steps + 1, vocab]: predictions for positions prefill_len .. prefill_len + decode_steps
    layer_outputs: list[np.ndarray]  # per decoder layer, [prefill_len, dim]
    name: str


_folder: Path | None = None


def enable(folder: str | os.PathLike | None) -> None:
    """Keep computed references in folder (None: off)."""
    global _folder
    _folder = None if folder is None else Path(folder)
    if _folder is not None:
        _folder.mkdir(parents=True, exist_ok=True)


def load_reference_model(path: str, fmt: str):
    """transformers' model of a checkpoint (a GGUF file or a Hugging Face folder), float32, in eval mode."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    if not sys.stderr.isatty():  # transformers' GGUF conversion draws its own tqdm bar, a line a step in a log file
        os.environ.setdefault("TQDM_DISABLE", "1")
    if fmt == "gguf":
        folder, name = os.path.split(path)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    elif fmt == "hf":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        raise CheckpointError(f"transformers cannot read the {fmt} checkpoint {path}; use reference='float32'.")
    return model.eval()


def transformers_reference(ck: Checkpoint | None, tokens: list[int], prefill_len: int, decode_steps: int, model=None,
                           threads: int | None = None) -> Reference:
    """transformers' LlamaForCausalLM, float32, teacher-forced over the same tokens in one forward
    (threads: torch's thread count, default every core)."""
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)
    model = (model if model is not None else load_reference_model(ck.path, ck.format)).eval()
    outputs = []
    hooks = [layer.register_forward_hook(lambda m, a, out: outputs.append(out[0] if isinstance(out, tuple) else out))
             for layer in model.model.layers]
    try:
        with torch.no_grad():
            logits = model(torch.tensor([tokens[: prefill_len + decode_steps]])).logits[0].numpy()
    finally:
        for h in hooks:
            h.remove()
    layers = [o[0, :prefill_len].float().numpy() for o in outputs]
    return Reference(logits[prefill_len - 1 :], layers, "transformers LlamaForCausalLM float32")


def reference_key(ck: Checkpoint, tokens: list[int], prefill_len: int, decode_steps: int, threads: int) -> str:
    """The file name a reference is kept under: a digest of what its numbers depend on (the module docstring)."""
    import importlib.metadata

    import torch

    from model.checkpoint.cache import fingerprint

    versions = [importlib.metadata.version(name) for name in ("transformers", "gguf", "numpy")]
    parts = [fingerprint(ck.path), ck.format, tokens[: prefill_len + decode_steps], prefill_len, decode_steps, versions,
             torch.__version__, torch.backends.cpu.get_cpu_capability(), threads]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def kept_transformers_reference(ck: Checkpoint, tokens: list[int], prefill_len: int, decode_steps: int) -> Reference:
    """transformers_reference, from the store when it holds this one (else computed and kept there)."""
    if _folder is None:
        return transformers_reference(ck, tokens, prefill_len, decode_steps)
    threads = os.cpu_count() or 1
    path = _folder / f"{reference_key(ck, tokens, prefill_len, decode_steps, threads)}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return Reference(f["logits"], [f[f"layer_{i}"] for i in range(int(f["layers"]))], str(f["name"]))
        except Exception:  # a file from an interrupted write or another numpy: compute afresh and replace it
            pass
    ref = transformers_reference(ck, tokens, prefill_len, decode_steps, threads=threads)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, logits=ref.logits, layers=len(ref.layer_outputs), name=ref.name,
                 **{f"layer_{i}": o for i, o in enumerate(ref.layer_outputs)})
        os.replace(tmp, path)  # atomic: a concurrent run reads a whole file or none
    except OSError as e:  # a full disk or a removed folder: the reference is still good for this run
        tmp.unlink(missing_ok=True)
        print(f"ttjax: transformers' reference was not kept in {_folder}: {e.strerror or e}", file=sys.stderr)
    return ref
