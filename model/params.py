"""Parameters as pytrees, and the one conversion from a Meta-named state dict into them.

Every checkpoint loader produces a state dict with Meta's names and layout
(`layers.{i}.attention.wq.weight` as [out, in], rotary rows in interleaved pairs);
`params_from_state_dict` then transposes matmul weights to [in, out] (TT's [K, N]) and fuses
wq/wk/wv into `wqkv` = [q | k | v] along N.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from model.config import ModelArgs
from model.errors import CheckpointError


@jax.tree_util.register_dataclass
@dataclass
class AttentionParams:
    wqkv: jax.Array  # [dim, (n_heads + 2 * n_kv_heads) * head_dim]
    wo: jax.Array  # [n_heads * head_dim, dim]


@jax.tree_util.register_dataclass
@dataclass
class MLPParams:
    w1: jax.Array  # [dim, hidden_dim]  gate
    w2: jax.Array  # [hidden_dim, dim]  down
    w3: jax.Array  # [dim, hidden_dim]  up


@jax.tree_util.register_dataclass
@dataclass
class DecoderParams:
    attention_norm: jax.Array  # [dim]
    attention: AttentionParams
    ffn_norm: jax.Array  # [dim]
    feed_forward: MLPParams


@jax.tree_util.register_dataclass
@dataclass
class TransformerParams:
    tok_embeddings: jax.Array  # [vocab, dim]
    layers: list[DecoderParams]
    norm: jax.Array  # [dim]
    # [dim, vocab]; None when tied to tok_embeddings; on a mesh, a list of per-device column chunks.
    output: jax.Array | list[jax.Array] | None

    def lm_head_weights(self) -> list[jax.Array]:
        if self.output is None:
            return [self.tok_embeddings.T]
        return list(self.output) if isinstance(self.output, (list, tuple)) else [self.output]


def _expect(state_dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in state_dict:
        raise CheckpointError(f"checkpoint has no tensor {name!r}.")
    t = state_dict[name]
    if tuple(t.shape) != shape:
        raise CheckpointError(f"tensor {name!r} has shape {tuple(t.shape)}; the config implies {shape}.")
    return t


def params_from_state_dict(state_dict, args: ModelArgs, dtype=jnp.float32) -> TransformerParams:
    """Build params from a Meta-named state dict (values: numpy arrays, [out, in] matmul weights)."""
    d, hd = args.dim, args.head_dim

    def put(a, transpose=False):
        a = np.asarray(a)
        return jnp.asarray(a.T if transpose else a, dtype=dtype)

    layers = []
    for i in range(args.n_layers):
        p = f"layers.{i}."
        wq = _expect(state_dict, p + "attention.wq.weight", (args.n_heads * hd, d))
        wk = _expect(state_dict, p + "attention.wk.weight", (args.n_kv_heads * hd, d))
        wv = _expect(state_dict, p + "attention.wv.weight", (args.n_kv_heads * hd, d))
        wqkv = np.concatenate([np.asarray(wq), np.asarray(wk), np.asarray(wv)], axis=0)
        layers.append(
            DecoderParams(
                attention_norm=put(_expect(state_dict, p + "attention_norm.weight", (d,))),
                attention=AttentionParams(
                    wqkv=put(wqkv, transpose=True),
                    wo=put(_expect(state_dict, p + "attention.wo.weight", (d, args.n_heads * hd)), transpose=True),
                ),
                ffn_norm=put(_expect(state_dict, p + "ffn_norm.weight", (d,))),
                feed_forward=MLPParams(
                    w1=put(_expect(state_dict, p + "feed_forward.w1.weight", (args.hidden_dim, d)), transpose=True),
                    w2=put(_expect(state_dict, p + "feed_forward.w2.weight", (d, args.hidden_dim)), transpose=True),
                    w3=put(_expect(state_dict, p + "feed_forward.w3.weight", (args.hidden_dim, d)), transpose=True),
                ),
            )
        )
    output = None
    if not args.tie_word_embeddings:
        output = put(_expect(state_dict, "output.weight", (args.vocab_size, d)), transpose=True)
    return TransformerParams(
        tok_embeddings=put(_expect(state_dict, "tok_embeddings.weight", (args.vocab_size, d))),
        layers=layers,
        norm=put(_expect(state_dict, "norm.weight", (d,))),
        output=output,
    )
