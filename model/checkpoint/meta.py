"""Meta's consolidated checkpoints: params.json + consolidated.*.pth (+ tokenizer.model).

The .pth files are read with torch.load(weights_only=True): tensors and plain containers only,
never pickled code. Several consolidated.NN.pth files are model-parallel shards and are
concatenated along the dim Meta split them on. wq/wk are already in Meta's interleaved
rotary layout, the one the model uses.
"""

from __future__ import annotations

import glob
import os
from functools import partial

import ml_dtypes
import numpy as np
from model.progress import progress as progress_of

from model.checkpoint.state_dict import LazyTensor, materialize
from model.config import ModelArgs, RopeScaling, read_json_config, require
from model.errors import CheckpointError

# Dim along which Meta's model-parallel shards split each weight (fairscale: ColumnParallelLinear splits the
# output features, dim 0 of [out, in]; RowParallelLinear the input features, dim 1; norms are replicated).
# The embedding is VocabParallelEmbedding in Llama 3 (dim 0, the vocab) and ParallelEmbedding in Llama 2
# (dim 1, the model dim): _shard_dim tells them apart by the shards' shapes.
_SHARD_DIM = {"tok_embeddings": 0, "wq": 0, "wk": 0, "wv": 0, "wo": 1, "w1": 0, "w3": 0, "w2": 1, "output": 0}


def _shard_dim(kind: str, first_part: np.ndarray, dim: int) -> int:
    if kind == "tok_embeddings" and first_part.shape[1] != dim:
        return 1  # Llama 2's ParallelEmbedding: each shard holds a slice of the model dim
    return _SHARD_DIM[kind]


def meta_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """The SwiGLU hidden size of Meta's reference FeedForward."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * -(-hidden // multiple_of)


def args_from_params(params: dict, source: str, *, max_seq_len=None, max_batch_size=1, rope_scaling_factor=None) -> ModelArgs:
    dim = int(require(params, "dim", source))
    n_heads = int(require(params, "n_heads", source))
    scaling = None
    if params.get("use_scaled_rope"):
        # params.json does not record the factor. Llama 3.1 uses 8; Llama 3.2 1B/3B use 32
        # (ExecuTorch and tt-metal infer it from the model the same way).
        factor = rope_scaling_factor or params.get("rope_scaling_factor")
        if factor is None:
            factor = 32.0 if dim in (2048, 3072) else 8.0
        scaling = RopeScaling(rope_type="llama3", factor=float(factor), original_max_position_embeddings=8192)
    context = int(params.get("max_seq_len", 131072 if scaling else 4096))
    return ModelArgs(
        dim=dim,
        n_layers=int(require(params, "n_layers", source)),
        n_heads=n_heads,
        n_kv_heads=int(params.get("n_kv_heads") or n_heads),
        head_dim=dim // n_heads,
        hidden_dim=meta_hidden_dim(dim, int(params.get("multiple_of", 256)), params.get("ffn_dim_multiplier")),
        vocab_size=int(require(params, "vocab_size", source)),
        norm_eps=float(require(params, "norm_eps", source)),
        rope_theta=float(params.get("rope_theta", 10000.0)),
        rope_scaling=scaling,
        max_context_len=context,
        max_seq_len=int(min(context, 8192) if max_seq_len is None else max_seq_len),
        max_batch_size=max_batch_size,
        tie_word_embeddings=False,
    )


def _to_numpy(t) -> np.ndarray:
    import torch

    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _load_shard(path: str) -> dict:
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"reading {path} needs torch; install it with pip install 'torch==2.13.0'.") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise CheckpointError(f"{path} is truncated, corrupt or not a weights-only torch checkpoint: {e}.") from e


def lazy_meta(folder: str, *, max_seq_len=None, max_batch_size=1, rope_scaling_factor=None):
    """(ModelArgs, state dict of LazyTensors, params.json): the shards opened (memory-mapped), no weights read."""
    params_path = os.path.join(folder, "params.json")
    params = read_json_config(params_path)
    args = args_from_params(
        params, params_path, max_seq_len=max_seq_len, max_batch_size=max_batch_size, rope_scaling_factor=rope_scaling_factor
    )
    files = sorted(glob.glob(os.path.join(folder, "consolidated.*.pth")))
    if not files:
        raise CheckpointError(f"{folder} has a params.json but no consolidated.*.pth weights.")
    shards = [_load_shard(p) for p in files]

    def load(name):
        parts = [_to_numpy(s[name]) for s in shards]
        kind = name.split(".")[-2]
        if len(parts) > 1 and kind in _SHARD_DIM:
            return np.concatenate(parts, axis=_shard_dim(kind, parts[0], args.dim))
        return parts[0]

    state = {}
    for name in shards[0]:
        missing = [os.path.basename(p) for p, s in zip(files, shards) if name not in s]
        if missing:
            raise CheckpointError(f"tensor {name!r} is in {os.path.basename(files[0])} but missing from {', '.join(missing)}.")
        shape = list(shards[0][name].shape)
        kind = name.split(".")[-2]
        if len(shards) > 1 and kind in _SHARD_DIM:
            axis = _shard_dim(kind, shards[0][name], args.dim)
            shape[axis] = sum(int(s[name].shape[axis]) for s in shards)
        state[name] = LazyTensor(tuple(shape), partial(load, name))
    if "layers.0.feed_forward.w1.weight" in state:
        # The weights are the truth for the MLP width; params.json only implies it.
        args = args.replace(hidden_dim=int(state["layers.0.feed_forward.w1.weight"].shape[0]))
    if "output.weight" not in state:
        args = args.replace(tie_word_embeddings=True)
    args = args.replace(model_name=os.path.basename(os.path.abspath(folder)))
    return args, state, params


def read_meta(folder: str, *, max_seq_len=None, max_batch_size=1, progress=True, rope_scaling_factor=None):
    """(ModelArgs, state dict, params.json) from a Meta consolidated folder."""
    args, state, params = lazy_meta(folder, max_seq_len=max_seq_len, max_batch_size=max_batch_size,
                                    rope_scaling_factor=rope_scaling_factor)
    names = progress_of(list(state), f"loading {os.path.basename(os.path.abspath(folder))}", enabled=progress, unit="tensor")
    return args, materialize({k: state[k] for k in names}), params
