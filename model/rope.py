"""RoPE tables, prepared once: cos/sin [rows, head_dim] in Meta's interleaved layout.

The tables have a row for every position a program can touch: max_seq_len, or more when the
longest prompt's prefill bucket is longer (model.buckets.prefill_extent), because a padded
prompt's last chunk runs past the cache and dynamic_slice would otherwise clamp its start and
hand it the angles of other positions. Prefill slices rows [start, start + seq) (a chunk of a
long prompt starts past 0); decode
gathers one row per user at its current_pos. That is the report's iterative update: the tables
stay on device, the decode step advances current_pos on device (model.serving.generator), and the next
step looks its rows up, an embedding lookup, so no rotation matrix is recomputed or sent from
the host per token. The RotMats pytree also carries the fused rotary's transformation matrix.
Frequencies and angles are float32, as in Meta's and Hugging Face's reference code; under a TT preset the
rotary op reads the tables in bfloat16, as tt_transformers stores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from model.buckets import prefill_extent
from model.config import ModelArgs, RopeScaling
from model.errors import SequenceLengthError
from ttjax.rotary import get_rot_transformation_mat


@jax.tree_util.register_dataclass
@dataclass
class RotMats:
    cos: jax.Array  # [max_seq_len, head_dim]
    sin: jax.Array
    trans_mat: jax.Array  # [32, 32], for rotary_impl="transformation_mat"


def apply_scaling(inv_freq: np.ndarray, scaling: RopeScaling) -> np.ndarray:
    """Llama 3.1 frequency scaling: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between."""
    if scaling.rope_type == "linear":
        return inv_freq / np.float32(scaling.factor)
    orig = scaling.original_max_position_embeddings
    low_wavelen = orig / scaling.low_freq_factor
    high_wavelen = orig / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (orig / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def inv_frequencies(args: ModelArgs) -> np.ndarray:
    """The head_dim // 2 rotation frequencies, after any scaling."""
    exponent = np.arange(0, args.head_dim, 2, dtype=np.float32) / np.float32(args.head_dim)
    inv_freq = (1.0 / np.float32(args.rope_theta) ** exponent).astype(np.float32)
    if args.rope_scaling is not None:
        inv_freq = apply_scaling(inv_freq, args.rope_scaling)
    if args.rope_freq_factors is not None:
        inv_freq = inv_freq / np.asarray(args.rope_freq_factors, np.float32)
    return inv_freq.astype(np.float32)


def precompute_rot_mats(args: ModelArgs, seq_len: int | None = None) -> RotMats:
    """Tables for positions 0 .. seq_len - 1 (default: every position a prefill or decode program of args reaches)."""
    seq_len = seq_len or prefill_extent(args.max_seq_len)
    angles = np.outer(np.arange(seq_len, dtype=np.float32), inv_frequencies(args)).astype(np.float32)
    angles = np.repeat(angles, 2, axis=-1).astype(np.float64)  # [c0, c0, c1, c1, ...]: interleaved pairs
    # cos and sin of the float32 angles in float64, rounded once: numpy's float32 cos / sin take SIMD paths that
    # differ between CPUs in the last bit, which the bfloat16 tables of the TT presets would sometimes keep.
    cos, sin = (np.asarray(f(angles), np.float32) for f in (np.cos, np.sin))
    return RotMats(cos=jnp.asarray(cos), sin=jnp.asarray(sin), trans_mat=get_rot_transformation_mat())


def prefill_rot_mats(rot: RotMats, seq_len: int, start_pos=0) -> tuple[jax.Array, jax.Array]:
    """Rows [start_pos, start_pos + seq_len) of the tables, each [seq_len, head_dim].

    A traced start_pos is the caller's to keep within the tables (the Generator checks every chunk's on the
    host); a Python int is checked here."""
    rows = rot.cos.shape[0]
    end = seq_len + (start_pos if isinstance(start_pos, int) else 0)
    if end > rows:
        raise SequenceLengthError(f"prefill rows up to position {end - 1} are past the rotary tables' {rows} positions.")
    size = (seq_len, rot.cos.shape[1])
    return jax.lax.dynamic_slice(rot.cos, (start_pos, 0), size), jax.lax.dynamic_slice(rot.sin, (start_pos, 0), size)


def decode_rot_mats(rot: RotMats, current_pos: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One row per user at its position, [batch, head_dim]; empty slots (pos < 0) read row 0. Positions are below
    max_seq_len (checked on the host, and advanced on device only within a request's checked length), so in
    the tables."""
    pos = jnp.maximum(current_pos, 0)
    return jnp.take(rot.cos, pos, axis=0), jnp.take(rot.sin, pos, axis=0)
