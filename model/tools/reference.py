"""The float32 reference the accuracy harness measures against: transformers' model of the same checkpoint, teacher-
forced over the same tokens in one forward, with each decoder layer's output (model.tools.accuracy,
model.tools.reference_spread)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from model.checkpoint import Checkpoint
from model.errors import CheckpointError


@dataclass
class Reference:
    logits: np.ndarray  # [decode_steps + 1, vocab]: predictions for positions prefill_len .. prefill_len + decode_steps
    layer_outputs: list[np.ndarray]  # per decoder layer, [prefill_len, dim]
    name: str


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
