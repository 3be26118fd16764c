"""A Meta-named state dict -> the params pytree, by the parameter spec (model.params).

Every checkpoint loader produces a state dict with Meta's names and layout
(`layers.{i}.attention.wq.weight` as [out, in], rotary rows in interleaved pairs). Each weight's
WeightSpec names the tensors it is made from and their shapes: matmul weights are transposed to
[in, out] (TT's [K, N]), wq/wk/wv stack into `wqkv` = [q | k | v] along N, and a tied LM head is
the embedding's transpose.

A loader's values may be LazyTensors (shape known, values read from the file when asked for), so that
`weight_reader` reads one weight at a time: the whole model never exists in float32 at once.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from model.config import ModelArgs
from model.errors import CheckpointError
from model.params import TransformerParams, WeightSpec, map_specs


class LazyTensor:
    """A checkpoint tensor whose values are read when asked for (np.asarray), each time afresh: nothing is kept."""

    def __init__(self, shape: tuple[int, ...], load: Callable[[], np.ndarray], slices: Callable[[], object] | None = None,
                 block: int = 1):
        self.shape = tuple(int(n) for n in shape)
        self.load = load
        # slices() -> an object with rows(r0, r1) and columns(c0, c1) of the float32 values (a 2-D tensor whose file
        # can be read in parts); columns in whole blocks of `block`
        self.slices, self.block = slices, block

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.load())
        return a if dtype is None else a.astype(dtype, copy=False)

    def __repr__(self):
        return f"LazyTensor(shape={self.shape})"


def materialize(state: dict) -> dict:
    """A state dict with every LazyTensor read (as the eager loaders return it)."""
    return {k: np.asarray(v) for k, v in state.items()}


def _expect(state_dict, name: str, shape: tuple[int, ...]):
    if name not in state_dict:
        raise CheckpointError(f"checkpoint has no tensor {name!r}.")
    t = state_dict[name]
    if tuple(t.shape) != shape:
        raise CheckpointError(f"tensor {name!r} has shape {tuple(t.shape)}; the config implies {shape}.")
    return t


def check_shapes(state_dict, args: ModelArgs):
    """Every tensor the spec needs is there with the shape the config implies (no values read)."""
    map_specs(lambda spec: [_expect(state_dict, name, shape) for name, shape in spec.source] and None, args)


def weight_reader(state_dict, args: ModelArgs, path: str = "the checkpoint", *, chunks: bool = False) -> Callable[[WeightSpec], np.ndarray]:
    """read(spec) -> the weight's float32 values in its logical layout ([K, N] for matmuls), read from the state
    dict one weight at a time; a weight holding NaN or inf is a CheckpointError naming its tensor. chunks: where the
    file allows, a function rows(r0, r1) of them instead (model.checkpoint.placed converts it chunk by chunk)."""

    def read(spec: WeightSpec):
        chunked = _chunk_reader(state_dict, spec, path) if chunks else None
        if chunked is not None:
            return chunked
        parts = []
        for name, shape in spec.source:
            a = np.asarray(_expect(state_dict, name, shape), dtype=np.float32)
            if not np.isfinite(a).all():
                raise CheckpointError(f"tensor {name!r} of {path} holds NaN or inf values, so the checkpoint is corrupt.")
            parts.append(a)
        a = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return a.T if spec.transpose else a

    return read


def _chunk_reader(state_dict, spec: WeightSpec, path: str):
    """rows(r0, r1) of the weight's [K, N] values read from its tensors' parts (model.params.row_chunks' ranges),
    or None where a tensor cannot be read in parts or the chunks would cut its quantization blocks."""
    from model.params import row_chunks

    if len(spec.shape) != 2:
        return None
    sources = [_expect(state_dict, name, shape) for name, shape in spec.source]
    if not all(isinstance(t, LazyTensor) and t.slices is not None for t in sources):
        return None
    if spec.transpose:  # rows of [K, N] are columns of each [out, in] tensor
        cuts = [r0 for r0, _ in row_chunks(spec.shape)]
        if any(r0 % t.block for t in sources for r0 in cuts):
            return None
    elif len(sources) != 1:
        return None
    opened = []

    def rows(r0: int, r1: int) -> np.ndarray:
        if not opened:  # each tensor's bytes read once, kept while this weight converts
            opened.extend(t.slices() for t in sources)
        if spec.transpose:
            a = np.concatenate([s.columns(r0, r1) for s in opened], axis=0).T
        else:
            a = opened[0].rows(r0, r1)
        if not np.isfinite(a).all():
            names = ", ".join(repr(name) for name, _ in spec.source)
            raise CheckpointError(f"tensor {names} of {path} holds NaN or inf values, so the checkpoint is corrupt.")
        return a

    return rows


def params_from_state_dict(state_dict, args: ModelArgs, dtype=jnp.float32) -> TransformerParams:
    """Build params from a Meta-named state dict (values: numpy arrays or LazyTensors, [out, in] matmul weights),
    one weight at a time."""
    check_shapes(state_dict, args)
    read = weight_reader(state_dict, args)
    return map_specs(lambda spec: jnp.asarray(read(spec), dtype=dtype), args)
