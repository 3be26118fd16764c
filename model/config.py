"""ModelArgs: the architecture of a Llama model plus the run's limits, with tt-metal's names.

ModelArgs is frozen and hashable so it can be a static argument of jit: every field that
changes a shape (max_seq_len, max_batch_size, n_layers) changes the compiled program.
"""

from __future__ import annotations

import re

import dataclasses
from dataclasses import dataclass
from functools import cached_property

from model.errors import ConfigError, KVCacheError
from model.model_config import ModelConfig, TPLayout
from model.precision import ModelOptimizations, TensorGroup

TILE_SIZE = 32
ROTARY_IMPLS = ("rotate_pairs", "transformation_mat")


@dataclass(frozen=True)
class PagedAttentionConfig:
    """tt_transformers' PagedAttentionConfig (its demo uses 32 x 1024, or 64 x 2048 for long context)."""

    block_size: int = 32
    max_num_blocks: int = 1024

    def __post_init__(self):
        if self.block_size < 32 or self.block_size % 32:
            raise KVCacheError(f"block_size = {self.block_size} must be a positive multiple of 32 (the tile height).")
        if self.max_num_blocks < 1:
            raise KVCacheError(f"max_num_blocks = {self.max_num_blocks} must be at least 1.")

    def blocks_for(self, n_positions: int) -> int:
        return -(-n_positions // self.block_size)


@dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """Llama 3.1/3.2 ("llama3") or linear RoPE frequency scaling."""

    rope_type: str  # "llama3" or "linear"
    factor: float
    original_max_position_embeddings: int = 8192
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0

    def __post_init__(self):
        if self.rope_type not in ("llama3", "linear"):
            raise ConfigError(f"rope scaling type {self.rope_type!r} is not supported; supported: 'llama3', 'linear'.")
        if self.factor <= 0:
            raise ConfigError(f"rope scaling factor {self.factor} must be positive.")


@dataclass(frozen=True, kw_only=True)
class ModelArgs:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_dim: int
    vocab_size: int
    norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None = None
    # Per-frequency divisors stored by llama.cpp (GGUF rope_freqs) instead of scaling params.
    rope_freq_factors: tuple[float, ...] | None = None
    max_context_len: int  # the context the model was trained for
    max_seq_len: int  # the KV cache length of this run
    max_batch_size: int = 1
    tie_word_embeddings: bool = False
    model_name: str = "llama"
    model_config: ModelConfig = ModelConfig()  # placement and collectives (1x1 mesh by default)
    optimizations: ModelOptimizations = ModelOptimizations.float32()  # dtype per tensor group
    # None: the contiguous cache [batch, n_kv_heads, max_seq_len, head_dim]; else a paged block pool.
    paged_attention_config: PagedAttentionConfig | None = None
    # Prompts padded past this are prefilled chunk by chunk (needs a paged cache); a multiple of 2048 or
    # a power of two, as tt-metal's table of max_prefill_chunk_size per model and device.
    max_prefill_chunk_size: int = 2048
    # "rotate_pairs": x * cos + rotate_pairs(x) * sin; "transformation_mat": TT's fused rotary,
    # x * cos + (x @ trans_mat) * sin with a 32x32 transformation matrix per tile.
    rotary_impl: str = "rotate_pairs"

    def __post_init__(self):
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_dim", "vocab_size", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} = {getattr(self, name)} must be positive.")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads = {self.n_heads} is not a multiple of n_kv_heads = {self.n_kv_heads}.")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim = {self.head_dim} must be even for rotary embeddings.")
        if self.rope_freq_factors is not None and len(self.rope_freq_factors) != self.head_dim // 2:
            raise ConfigError(
                f"rope_freq_factors has {len(self.rope_freq_factors)} entries; head_dim {self.head_dim} needs {self.head_dim // 2}."
            )
        if self.rotary_impl not in ROTARY_IMPLS:
            raise ConfigError(f"rotary_impl {self.rotary_impl!r} is not one of {', '.join(ROTARY_IMPLS)}.")
        if self.max_prefill_chunk_size < TILE_SIZE or self.max_prefill_chunk_size % TILE_SIZE:
            raise ConfigError(f"max_prefill_chunk_size = {self.max_prefill_chunk_size} must be a positive multiple of {TILE_SIZE}.")
        if not 1 <= self.max_batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(f"max_batch_size = {self.max_batch_size} is outside 1..{MAX_BATCH_SIZE}.")
        for layer, group, setting in self.optimizations.layer_overrides:
            if not 0 <= layer < self.n_layers:
                raise ConfigError(
                    f"precision override layers.{layer}.{group.value}={setting.value} names layer {layer}; the model has layers 0..{self.n_layers - 1}."
                )

    @cached_property
    def layout(self) -> TPLayout:
        """Per-device sizes on model_config's mesh."""
        return TPLayout(self.dim, self.n_heads, self.n_kv_heads, self.head_dim, self.hidden_dim, self.vocab_size, self.model_config)

    @property
    def activation_dtype(self):
        """Dtype the activations flow in: float32, or bfloat16 (also when ACTIVATION is a block float,
        whose values bfloat16 holds exactly)."""
        import jax.numpy as jnp

        setting = self.optimizations.get_tensor_dtype(TensorGroup.ACTIVATION)
        return jnp.float32 if setting.value == "float32" else jnp.bfloat16

    @property
    def n_groups(self) -> int:
        """Query heads per KV head (grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def qkv_size(self) -> int:
        return self.head_dim * (self.n_heads + 2 * self.n_kv_heads)

    @property
    def tile_padded_batch_rows(self) -> int:
        return TILE_SIZE * -(-self.max_batch_size // TILE_SIZE)

    def replace(self, **changes) -> ModelArgs:
        return dataclasses.replace(self, **changes)


def read_json_config(path: str) -> dict:
    """A checkpoint's config.json / params.json as a dict, or a ConfigError that says where the JSON breaks."""
    import json

    try:
        with open(path) as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: it is not UTF-8 text ({e.reason} at byte {e.start}).") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{path} holds a JSON {type(config).__name__}, not the object of fields a model config is.")
    return config


def require(config: dict, key: str, source: str):
    """config[key], or a ConfigError naming the missing field and the file it should be in."""
    if key not in config:
        raise ConfigError(f"{source} is missing the field {key!r}, which a Llama model needs.")
    return config[key]


# Users one decode step serves: tt_transformers' batch (32 users, a tile of rows).
MAX_BATCH_SIZE = 32


def check_users(flag: str, n: int) -> int:
    """A user count a flag gives, within what a decode step holds, or one sentence naming the flag."""
    if not 1 <= n <= MAX_BATCH_SIZE:
        raise ConfigError(f"{flag} {n} is outside 1..{MAX_BATCH_SIZE}, the users one decode step holds (tt_transformers' batch).")
    return n


# Shapes of the models tt-metal brings up, for dummy_weights (random weights, real shapes).
NAMED_CONFIGS = {
    "SmolLM2-135M": dict(
        dim=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, hidden_dim=1536, vocab_size=49152,
        norm_eps=1e-5, rope_theta=100000.0, max_context_len=8192, tie_word_embeddings=True,
    ),
    "Llama-3.2-1B": dict(
        dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, head_dim=64, hidden_dim=8192, vocab_size=128256,
        norm_eps=1e-5, rope_theta=500000.0, max_context_len=131072, tie_word_embeddings=True,
        rope_scaling=RopeScaling(rope_type="llama3", factor=32.0, original_max_position_embeddings=8192),
    ),
    "Llama-3.2-3B": dict(
        dim=3072, n_layers=28, n_heads=24, n_kv_heads=8, head_dim=128, hidden_dim=8192, vocab_size=128256,
        norm_eps=1e-5, rope_theta=500000.0, max_context_len=131072, tie_word_embeddings=True,
        rope_scaling=RopeScaling(rope_type="llama3", factor=32.0, original_max_position_embeddings=8192),
    ),
    "Llama-3.1-8B": dict(
        dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128, hidden_dim=14336, vocab_size=128256,
        norm_eps=1e-5, rope_theta=500000.0, max_context_len=131072, tie_word_embeddings=False,
        rope_scaling=RopeScaling(rope_type="llama3", factor=8.0, original_max_position_embeddings=8192),
    ),
    "Llama-3.1-70B": dict(
        dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, head_dim=128, hidden_dim=28672, vocab_size=128256,
        norm_eps=1e-5, rope_theta=500000.0, max_context_len=131072, tie_word_embeddings=False,
        rope_scaling=RopeScaling(rope_type="llama3", factor=8.0, original_max_position_embeddings=8192),
    ),
}


# Every model name the commands take (--model-name of generate, comm-report, perf-model, precision): a shape above,
# or a model tt_transformers brings up on one of them (PERF.md's vision models decode with a text decoder of the 8B /
# 70B shape plus cross-attention layers, priced as decoder layers: 40 for 11B, 100 for 90B; 3.3-70B is 3.1-70B's shape).
MODEL_NAMES = {name: (name, None) for name in NAMED_CONFIGS} | {
    "Llama-3.2-11B": ("Llama-3.1-8B", 40), "Llama-3.3-70B": ("Llama-3.1-70B", None), "Llama-3.2-90B": ("Llama-3.1-70B", 100)}


def canonical_model_name(name: str, flag: str = "--model-name") -> str:
    """The registry's spelling of a model name, matched in any case (an -Instruct-style suffix after the size, as
    tt_transformers' base names drop it, is allowed); else one sentence listing the names."""
    known = {k.lower(): k for k in MODEL_NAMES}
    key = str(name).strip().lower()
    base = re.match(r"(.*?\d+b)(-.*)?$", key)
    for candidate in (key, base.group(1) if base else None):
        if candidate in known:
            return known[candidate]
    raise ConfigError(f"{flag} {name!r} is not a model ttjax knows; the names (any case): {', '.join(MODEL_NAMES)}.")


def named_config(name: str, **overrides) -> ModelArgs:
    """ModelArgs for a named model shape (any name of MODEL_NAMES, in any case); overrides (n_layers=1,
    max_seq_len=256, ...) win."""
    name = canonical_model_name(name)
    shape, layers = MODEL_NAMES[name]
    fields = dict(NAMED_CONFIGS[shape], model_name=name, **({"n_layers": layers} if layers else {}))
    fields.setdefault("max_seq_len", min(fields["max_context_len"], 4096))
    fields.update(overrides)
    return ModelArgs(**fields)
