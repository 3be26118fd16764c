"""A Meta-named state dict -> the params pytree, by the parameter spec (model.params).

Every checkpoint loader produces a state dict with Meta's names and layout
(`layers.{i}.attention.wq.weight` as [out, in], rotary rows in interleaved pairs). Each weight's
WeightSpec names the tensors it is made from and their shapes: matmul weights are transposed to
[in, out] (TT's [K, N]), wq/wk/wv stack into `wqkv` = [q | k | v] along N, and a tied LM head is
the embedding's transpose.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from model.config import ModelArgs
from model.errors import CheckpointError
from model.params import TransformerParams, WeightSpec, map_specs


def _expect(state_dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in state_dict:
        raise CheckpointError(f"checkpoint has no tensor {name!r}.")
    t = state_dict[name]
    if tuple(t.shape) != shape:
        raise CheckpointError(f"tensor {name!r} has shape {tuple(t.shape)}; the config implies {shape}.")
    return np.asarray(t)


def params_from_state_dict(state_dict, args: ModelArgs, dtype=jnp.float32) -> TransformerParams:
    """Build params from a Meta-named state dict (values: numpy arrays, [out, in] matmul weights)."""

    def read(spec: WeightSpec, _=None):
        parts = [_expect(state_dict, name, shape) for name, shape in spec.source]
        a = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return jnp.asarray(a.T if spec.transpose else a, dtype=dtype)

    return map_specs(read, args)
