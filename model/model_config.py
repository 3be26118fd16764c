"""How the model is placed on a mesh and which collectives join its pieces (tt-metal's model_config).

Two schemes, as in tt_transformers:

1D mesh (1 x N: N150, N300, T3K). Heads, MLP hidden and vocab split over the N devices
(mesh axis 1). wqkv, w1, w3 are column-parallel on a replicated input; wo and w2 are
row-parallel, and their partial sums are reduced either
  - ccl="reduce_scatter": reduce-scattered along dim, leaving the residual stream fractured
    (dim / N per device); the next norm all-gathers it (tt-metal's N300/T3K path), or
  - ccl="all_reduce": all-reduced, leaving the residual replicated.

2D mesh (R x C, R > 1: Galaxy/TG 8x4, 2x4). Heads, hidden and vocab split over the R rows
(cluster axis 0); the model dim split over the C columns (cluster axis 1), so the residual
stream is dim / C per device. Matmuls whose K is dim (wqkv, w1, w3, LM head) all-reduce
over axis 1; wo and w2 reduce over axis 0 by all-reduce or, with ccl="reduce_scatter",
reduce-scatter + all-gather (tt-metal's composite). Norms are distributed over axis 1.

Head counts that do not divide: KV heads are zero-padded up to a count that divides the
head-split devices or that they divide; with fewer KV heads than devices each KV head is
replicated on several devices, which share its query heads (query heads are zero-padded
per group so they share evenly). A padded query head has zero wo rows, so it adds
nothing. tt-metal instead requires heads to divide the device count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from model.errors import ConfigError
from ttjax.flash_attention import SDPAProgramConfig

CCL_MODES = ("reduce_scatter", "all_reduce")
NORM_MODES = ("auto", "replicated", "distributed")
# tt-metal: 668 columns per core over the LM head's core grid (48 cores on Wormhole: 128256 / 4).
DEFAULT_MAX_COLUMNS_PER_DEVICE = 668 * 48


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    cluster_shape: tuple[int, int] = (1, 1)
    ccl: str = "reduce_scatter"
    norm: str = "auto"  # auto: distributed on 2D meshes, or in prefill when dim > 4096 (tt-metal's rule)
    ccl_topology: str | None = None  # "linear" | "ring"; None: ring on 8 devices, else linear (tt-metal)
    num_links: int = 1
    max_columns_per_device_lm_head: int = DEFAULT_MAX_COLUMNS_PER_DEVICE

    def __post_init__(self):
        if self.ccl not in CCL_MODES:
            raise ConfigError(f"ccl {self.ccl!r} is not one of {', '.join(CCL_MODES)}.")
        if self.norm not in NORM_MODES:
            raise ConfigError(f"norm {self.norm!r} is not one of {', '.join(NORM_MODES)}.")
        if self.ccl_topology not in (None, "linear", "ring"):
            raise ConfigError(f"ccl_topology {self.ccl_topology!r} is not 'linear' or 'ring'.")
        if self.max_columns_per_device_lm_head < 32:
            raise ConfigError(f"max_columns_per_device_lm_head = {self.max_columns_per_device_lm_head} is below one tile (32).")

    @property
    def num_devices(self) -> int:
        return self.cluster_shape[0] * self.cluster_shape[1]

    @property
    def is_2d(self) -> bool:
        return self.cluster_shape[0] > 1

    @property
    def topology(self) -> str:
        return self.ccl_topology or ("ring" if self.num_devices == 8 else "linear")


@dataclass(frozen=True)
class TPLayout:
    """Per-device sizes and the mesh axes each kind of split uses, for one model on one mesh."""

    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_dim: int
    vocab_size: int
    config: ModelConfig

    def axis_size(self, axis: int | None) -> int:
        return 1 if axis is None else self.config.cluster_shape[axis]

    @property
    def heads_axis(self) -> int:
        """Mesh axis splitting heads, MLP hidden and vocab."""
        return 0 if self.config.is_2d else 1

    @property
    def dim_axis(self) -> int | None:
        """Mesh axis splitting the model dim of the weights (2D meshes only)."""
        return 1 if self.config.is_2d else None

    @property
    def residual_axis(self) -> int | None:
        """Mesh axis the residual stream is fractured over (None: replicated)."""
        if self.config.is_2d or self.config.ccl == "reduce_scatter":
            return 1
        return None

    @property
    def n_shards(self) -> int:
        return self.axis_size(self.heads_axis)

    @cached_property
    def _heads(self) -> tuple[int, int, int]:
        """(padded KV heads, KV heads per device, replicas of each KV head)."""
        n, kv = self.n_shards, self.n_kv_heads
        if kv >= n:
            padded = math.ceil(kv / n) * n
            return padded, padded // n, 1
        padded = next(d for d in range(kv, n + 1) if n % d == 0)
        return padded, 1, n // padded

    @property
    def kv_padded(self) -> int:
        return self._heads[0]

    @property
    def n_local_kv_heads(self) -> int:
        return self._heads[1]

    @property
    def kv_replicas(self) -> int:
        return self._heads[2]

    @property
    def group_padded(self) -> int:
        """Query heads per KV head after padding, so the replicas of a KV head share them evenly."""
        g = self.n_heads // self.n_kv_heads
        return math.ceil(g / self.kv_replicas) * self.kv_replicas

    @property
    def n_local_heads(self) -> int:
        return self.n_local_kv_heads * self.group_padded // self.kv_replicas

    @property
    def hidden_padded(self) -> int:
        return math.ceil(self.hidden_dim / self.n_shards) * self.n_shards

    @property
    def hidden_local(self) -> int:
        return self.hidden_padded // self.n_shards

    @property
    def vocab_padded(self) -> int:
        return math.ceil(self.vocab_size / self.n_shards) * self.n_shards

    @property
    def vocab_local(self) -> int:
        return self.vocab_padded // self.n_shards

    @property
    def dim_local(self) -> int:
        """Residual-stream width per device."""
        return self.dim // self.axis_size(self.residual_axis)

    @property
    def dim_k_local(self) -> int:
        """K of wqkv / w1 / w3 / LM head per device."""
        return self.dim // self.axis_size(self.dim_axis)

    @property
    def lm_head_splits(self) -> list[int]:
        """Column counts of the per-device LM head chunks (tt-metal's split_sizes)."""
        per_device, cap = self.vocab_local, self.config.max_columns_per_device_lm_head
        n = math.ceil(per_device / cap)
        return [min(per_device, cap)] * (n - 1) + [per_device - min(per_device, cap) * (n - 1)]

    def validate(self):
        for axis in {self.residual_axis, self.dim_axis} - {None}:
            if self.dim % self.axis_size(axis):
                raise ConfigError(
                    f"dim {self.dim} does not divide over the {self.axis_size(axis)} devices of mesh axis {axis} "
                    f"(mesh {self.config.cluster_shape[0]}x{self.config.cluster_shape[1]})."
                )
        return self


# Op configs (tt-metal's model_config["SDPA_PROGCFG"] and ["SDPA_DECODE_PROGCFG"]).


def sdpa_program_config(seq_len: int) -> SDPAProgramConfig:
    """Flash-attention chunks for a prefill of seq_len rows: 256 from 2048 rows up, else 64."""
    size = 256 if seq_len >= 2048 else 64
    return SDPAProgramConfig(q_chunk_size=size, k_chunk_size=size)


def sdpa_decode_program_config(max_seq_len: int) -> SDPAProgramConfig:
    """Flash-decode chunks of the KV sequence: 256 positions, or the largest tile multiple that divides the
    cache; a cache that no tile multiple divides is one chunk (the op caps k_chunk_size at the cache length)."""
    size = next((c for c in (256, 128, 64, 32) if max_seq_len % c == 0), 32 * -(-max_seq_len // 32))
    return SDPAProgramConfig(q_chunk_size=32, k_chunk_size=size)
