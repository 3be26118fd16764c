"""How the model is placed on a mesh and which collectives join its pieces (tt-metal's model_config).

Two schemes, as in tt_transformers (models/tt_transformers/tt/model_config.py, attention.py, mlp.py, ccl.py):

1D mesh (1 x N: N150, N300, T3K). Heads, MLP hidden and vocab split over the N devices
(mesh axis 1). wqkv, w1, w3 are column-parallel on a replicated input; w2 (and wo, below) are
row-parallel, and their partial sums are reduced either
  - ccl="auto" / "reduce_scatter": reduce-scattered along dim, leaving the residual stream fractured
    (dim / N per device); the next norm all-gathers it (tt_all_reduce on N300/T3K), or
  - ccl="all_reduce": all-reduced, leaving the residual replicated (ttjax's option).
wo on T3K: where tt_transformers sets USE_FUSED_ALL_GATHER_MATMUL (8 devices, not a Galaxy, and
(dim / 32 / 8) % 8 == 0, i.e. dim a multiple of 2048) its wo is column-parallel instead: sharded by
columns (ShardTensor2dMesh dims=(2, 3) on the 1x8 mesh), the attention output all-gathered before it
(decode: ttnn.experimental.all_gather_matmul_async on a ring, else all_gather_async + linear; prefill:
all_gather_async + linear) and no reduction after it: its output is already the fractured residual.
ModelConfig.all_gather_matmul forces it on or off (None: tt's rule).

2D mesh (R x C, R > 1: Galaxy/TG 8x4, 2x4). Heads, hidden and vocab split over the R rows
(cluster axis 0); the model dim split over the C columns (cluster axis 1), so the residual
stream is dim / C per device. Norms are distributed over axis 1. Every reduction is tt_all_reduce on
TG (ccl="auto", all_reduce_kind): an all-gather on the cluster axis followed by a local sum
(all_gather_async + fast_reduce_nc), or, where tt passes use_composite=True, reduce-scatter +
all-gather along the last dim:
  - wqkv: all-reduce over axis 1 (gather + sum);
  - wo: over axis 0, composite in decode when dim == 8192, else gather + sum;
  - w1 / w3: in decode with dim != 8192 each all-reduced over axis 1 (gather + sum); in prefill or
    when dim == 8192 reduce-scattered over axis 1, multiplied on the scattered slice and the product
    all-gathered before w2;
  - w2: over axis 0, composite when dim == 8192, else gather + sum;
  - LM head: over axis 1, composite.
The inputs of the wqkv, wo, w2 and LM head reductions are rounded to the CCL format (ccl_dtype,
bfloat8_b in tt's presets; model.precision OutputSite.CCL) and carried as bfloat16. ccl="reduce_scatter"
makes every 2D reduction composite, ccl="all_reduce" every one a plain all-reduce.
Decode users: tt's TG attention puts a batch in C groups, one per mesh column (batch_size_per_device_group
= batch / C: 8 of 32 on 8x4); each device computes attention for its group only (its KV-cache slots
hold only its group's users) and the users are all-gathered over the columns before wo. ttjax does so
where the batch divides over the columns (group_users=None) and refuses otherwise when group_users=True;
other batches keep every user on every device.

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
from ttjax.core_range import CoreCoord
from ttjax.flash_attention import TILE, SDPAProgramConfig

CCL_MODES = ("auto", "reduce_scatter", "all_reduce")
NORM_MODES = ("auto", "replicated", "distributed")
# tt-metal: 668 columns per core of the LM head's core grid ("128256 / 4 was experimentally the maximum
# columns that worked per device ... on 48 cores, so 128256 / 4 / 48 = 668 columns per core").
LM_HEAD_COLUMNS_PER_CORE = 668
# tt_transformers' attention.py / mlp.py: use_composite=True if self.hidden_size == 8192 (Llama-3.1-70B) on TG.
TG_COMPOSITE_DIM = 8192
TILE_SIZE = 32


def use_fused_all_gather_matmul(dim: int, cluster_shape: tuple[int, int]) -> bool:
    """tt_transformers' USE_FUSED_ALL_GATHER_MATMUL (models/tt_transformers/tt/model_config.py): num_devices == 8,
    not a Galaxy (ACTUAL_DEVICE != "TG"; here: a 1D mesh), and (dim // tile_size // num_devices) % num_devices == 0,
    i.e. dim a multiple of 2048 on 8 devices. Llama-3.2-1B (2048), 3.1-8B (4096), 3.1-70B (8192): on; SmolLM2-135M
    (576), Llama-3.2-3B (3072): off."""
    rows, cols = cluster_shape
    n = rows * cols
    return n == 8 and rows == 1 and (dim // TILE_SIZE // n) % n == 0 and n > 1


def all_reduce_kind(config: "ModelConfig", dim: int, site: str, mode: str) -> str:
    """How a reduction on a 2D mesh is done: "gather" (all-gather on the cluster axis + local sum, tt_all_reduce
    without use_composite), "composite" (reduce-scatter + all-gather), "all_reduce" (one all-reduce), or for w1 / w3
    "scatter" (reduce-scatter, the SiLU product on the slice, all-gather before w2: tt's mlp.py on TG in prefill or
    when dim == 8192). site: "qkv", "wo", "ff1_ff3", "ff2", "lm_head". ccl="reduce_scatter" / "all_reduce" pick one
    kind for every site; "auto" is tt's choice per site."""
    if config.ccl == "reduce_scatter":
        return "composite"
    if config.ccl == "all_reduce":
        return "all_reduce"
    big = dim == TG_COMPOSITE_DIM
    return {
        "qkv": "gather",
        "wo": "composite" if big and mode == "decode" else "gather",
        "ff1_ff3": "scatter" if big or mode == "prefill" else "gather",
        "ff2": "composite" if big else "gather",
        "lm_head": "composite",
    }[site]


# Sites whose reduction tt_transformers runs in ccl_dtype (dtype=self.ccl_dtype / args.ccl_dtype on TG); w1 / w3's
# take tt_all_reduce's default, bfloat16.
CCL_DTYPE_SITES = ("qkv", "wo", "ff2", "lm_head")


def lm_head_core_grid(dim: int, num_devices: int) -> tuple[int, int] | None:
    """(rows, cores per row) of the LM head's core grid, as tt_transformers' ModelArgs computes lm_head_core_grid
    (models/tt_transformers/tt/model_config.py, the block "Calculate largest number of lm_head_num_rows such that
    self.dim % (lm_head_num_rows * lm_head_cores_per_row) == 0"):

    - on 32 devices (Galaxy/TG) rows start at the largest of 4..1 with dim % (32 * 32 * rows) == 0, else at 8;
    - cores per row start at 8; while dim % (32 * rows * cores_per_row) != 0, rows go down by one, and when they
      reach 0, cores per row go down by one and rows restart at 8.

    Llama-3.2-1B / 3.1-8B / 3.1-70B (dim 2048 / 4096 / 8192): 8 x 8 = 64 cores; Llama-3.2-3B (3072): 6 x 8 = 48.
    On TG: 8B and 70B 4 x 8 = 32, 3B 3 x 8 = 24, 1B 2 x 8 = 16. None where tt-metal finds no grid: it raises ValueError
    when no cores per row are left (dim not a multiple of 32), and on TG divides by zero when no rows are left
    (dim not a multiple of 1024)."""
    if num_devices == 32:
        rows = next((r for r in (4, 3, 2, 1) if dim % (32 * 32 * r) == 0), 0)
        if not rows:
            return None
    else:
        rows = 8
    per_row = 8
    while dim % (32 * rows * per_row):
        rows -= 1
        if rows == 0:
            per_row -= 1
            if per_row == 0:
                return None
            rows = 8
    return rows, per_row


def lm_head_max_columns_per_device(dim: int, num_devices: int) -> int:
    """tt_transformers' max_columns_per_device_lm_head on Wormhole: 668 * the LM head grid's cores (lm_head_core_grid).
    64 cores -> 42752, 48 -> 32064, 32 -> 21376. (On Blackhole tt-metal uses 128256 // 8 = 16032 instead; ttjax
    follows Wormhole.) Where tt-metal finds no grid (it raises, see lm_head_core_grid) ttjax uses one core, 668."""
    grid = lm_head_core_grid(dim, num_devices)
    return LM_HEAD_COLUMNS_PER_CORE * (grid[0] * grid[1] if grid else 1)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    cluster_shape: tuple[int, int] = (1, 1)
    ccl: str = "auto"  # auto: tt_all_reduce's choice (1D: reduce-scatter; 2D: per site, all_reduce_kind)
    norm: str = "auto"  # auto: distributed on 2D meshes, or in prefill when dim > 4096 (tt-metal's rule)
    ccl_topology: str | None = None  # "linear" | "ring"; None: ring on 8 devices, else linear (tt-metal)
    num_links: int = 1
    # None: tt-metal's rule from the model dim and the device count (lm_head_max_columns_per_device); an int overrides it.
    max_columns_per_device_lm_head: int | None = None
    # wo as all-gather + column-parallel matmul on a 1D mesh (tt's all_gather_matmul); None: tt's rule
    # (use_fused_all_gather_matmul).
    all_gather_matmul: bool | None = None
    # Decode users in one group per mesh column on a 2D mesh (tt's batch_size_per_device_group); None: where the
    # batch divides over the columns; True: required (a batch that does not divide is refused); False: never.
    group_users: bool | None = None

    def __post_init__(self):
        if self.ccl not in CCL_MODES:
            raise ConfigError(f"ccl {self.ccl!r} is not one of {', '.join(CCL_MODES)}.")
        if self.norm not in NORM_MODES:
            raise ConfigError(f"norm {self.norm!r} is not one of {', '.join(NORM_MODES)}.")
        if self.ccl_topology not in (None, "linear", "ring"):
            raise ConfigError(f"ccl_topology {self.ccl_topology!r} is not 'linear' or 'ring'.")
        if self.max_columns_per_device_lm_head is not None and self.max_columns_per_device_lm_head < 32:
            raise ConfigError(f"max_columns_per_device_lm_head = {self.max_columns_per_device_lm_head} is below one tile (32).")
        for name in ("all_gather_matmul", "group_users"):
            if getattr(self, name) not in (None, True, False):
                raise ConfigError(f"{name} {getattr(self, name)!r} is not None, True or False.")

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
        if self.config.is_2d or self.config.ccl != "all_reduce":
            return 1
        return None

    @property
    def n_shards(self) -> int:
        return self.axis_size(self.heads_axis)

    @property
    def wo_gathered(self) -> bool:
        """wo column-parallel on the all-gathered attention output, no reduction after it (tt's fused
        all_gather_matmul path on T3K): a 1D mesh whose residual stream is fractured, by tt's rule unless
        model_config.all_gather_matmul says otherwise."""
        cfg = self.config
        if cfg.is_2d or self.residual_axis is None or self.n_shards == 1:
            return False
        if cfg.all_gather_matmul is not None:
            return cfg.all_gather_matmul
        return use_fused_all_gather_matmul(self.dim, cfg.cluster_shape)

    def user_groups(self, batch: int) -> int:
        """Groups a decode batch of `batch` users splits into, one per mesh column (tt's num_device_groups on TG);
        1: every device holds every user (1D meshes, group_users=False, or a batch that does not divide)."""
        cfg = self.config
        cols = cfg.cluster_shape[1]
        if not cfg.is_2d or cols == 1 or cfg.group_users is False:
            return 1
        if batch % cols:
            if cfg.group_users:
                raise ConfigError(
                    f"a decode batch of {batch} users does not divide into the {cols} user groups of the "
                    f"{cfg.cluster_shape[0]}x{cols} mesh (one per mesh column, tt's batch_size_per_device_group); "
                    f"use a multiple of {cols}, or group_users=None / False."
                )
            return 1
        return cols

    def users_per_group(self, batch: int) -> int:
        """Users each device computes attention for in decode (tt's batch_size_per_device_group)."""
        return batch // self.user_groups(batch)

    @property
    def _pad_to(self) -> int:
        """Hidden and vocab are padded to a multiple of this: the head-axis devices, and on a 2D mesh also the
        columns, so that tt's reduce-scatters over the columns (w1 / w3, the LM head) divide."""
        return self.n_shards * (self.axis_size(self.dim_axis) if self.config.is_2d else 1)

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
        return math.ceil(self.hidden_dim / self._pad_to) * self._pad_to

    @property
    def hidden_local(self) -> int:
        return self.hidden_padded // self.n_shards

    @property
    def vocab_padded(self) -> int:
        return math.ceil(self.vocab_size / self._pad_to) * self._pad_to

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
    def max_columns_per_device_lm_head(self) -> int:
        """Most columns of one LM head chunk per device: model_config's override, else tt-metal's rule
        (lm_head_max_columns_per_device of dim and the mesh's device count)."""
        cap = self.config.max_columns_per_device_lm_head
        return lm_head_max_columns_per_device(self.dim, self.config.num_devices) if cap is None else cap

    @property
    def lm_head_splits(self) -> list[int]:
        """Column counts of the per-device LM head chunks: tt-metal's split_sizes (models/tt_transformers/tt/lm_head.py,
        split_sizes_dram_sharded): ceil(per_device / max_columns) chunks, all of max_columns but the remainder last."""
        per_device, cap = self.vocab_local, self.max_columns_per_device_lm_head
        n = math.ceil(per_device / cap)
        return [min(per_device, cap)] * (n - 1) + [per_device - min(per_device, cap) * (n - 1)]

    def validate(self):
        cfg = self.config
        if cfg.all_gather_matmul and cfg.is_2d:
            raise ConfigError(
                f"all_gather_matmul (wo as all-gather + matmul) is tt's T3K path for a 1D mesh, not a "
                f"{cfg.cluster_shape[0]}x{cfg.cluster_shape[1]} mesh."
            )
        if cfg.all_gather_matmul and cfg.ccl == "all_reduce":
            raise ConfigError("all_gather_matmul leaves the residual stream fractured; it does not go with ccl='all_reduce'.")
        if cfg.group_users and not cfg.is_2d:
            raise ConfigError(
                f"group_users puts decode users in one group per mesh column of a 2D mesh (tt's TG attention); "
                f"the {cfg.cluster_shape[0]}x{cfg.cluster_shape[1]} mesh is not one."
            )
        for axis in {self.residual_axis, self.dim_axis} - {None}:
            if self.dim % self.axis_size(axis):
                raise ConfigError(
                    f"dim {self.dim} does not divide over the {self.axis_size(axis)} devices of mesh axis {axis} "
                    f"(mesh {self.config.cluster_shape[0]}x{self.config.cluster_shape[1]})."
                )
        return self


# Op configs (tt-metal's model_config["SDPA_PROGCFG"] and ["SDPA_DECODE_PROGCFG"], both with exp_approx_mode=False).


def sdpa_program_config(seq_len: int) -> SDPAProgramConfig:
    """Flash-attention chunks for a prefill of seq_len rows: 256 from 2048 rows up, else 64."""
    size = 256 if seq_len >= 2048 else 64
    return SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=size, k_chunk_size=size, exp_approx_mode=False)


# Decode SDPA. tt_transformers' SDPA_DECODE_PROGCFG gives q_chunk_size=0, k_chunk_size=0 (model_config.py), and
# its attention.py passes it to both ttnn.transformer.scaled_dot_product_attention_decode and
# paged_scaled_dot_product_attention_decode, so the op chooses the K chunk. ttjax's SDPAProgramConfig holds a
# chunk, not 0, so the chunk the op would choose is resolved here.
SDPA_DECODE_MAX_K_CHUNK = 512


def sdpa_decode_k_chunk_size(cache_len: int) -> int:
    """The K chunk ttnn.transformer.scaled_dot_product_attention_decode (the contiguous cache) takes when the
    program config's k_chunk_size is 0: get_chunk_size(s) in ttnn/cpp/ttnn/operations/transformer/sdpa_decode/
    sdpa_decode.cpp, s = K's logical sequence length (the cache's max_seq_len): the largest power of two that
    divides s, at least 2 (its search starts at 2^1), at most 512. 128 -> 128, 384 -> 128, 2048 and up -> 512.
    The op then stops (TT_FATAL "Chunk size must be multiple of 32") when the result is not a multiple of 32,
    i.e. when s is not: 1000 -> 8. It does not depend on the users' positions."""
    if cache_len < 1:
        raise ConfigError(f"the decode cache length {cache_len} must be positive.")
    return min(SDPA_DECODE_MAX_K_CHUNK, max(2, cache_len & -cache_len))


def paged_sdpa_decode_k_chunk_size(cur_pos: int, fp32_dest_acc_en: bool) -> int:
    """The K chunk ttnn.transformer.paged_scaled_dot_product_attention_decode takes when the program config's
    k_chunk_size is 0. sdpa_decode.cpp passes 0 on ("figure it out in kernels"); the kernels choose per user, from
    its position, get_dynamic_Sk_chunk_t (sdpa_decode/device/kernels/rt_args_common.hpp): the tiles up to cur_pos,
    cur_pos // 32 + 1, rounded up to a power of two (nearest_pow_of_2_up_to_8) and capped at max_dynamic_chunk_size,
    which sdpa_decode_program_factory.cpp sets to the Dst register's tiles: 4 with fp32_dest_acc_en, else 8.
    In positions: 32, 64, 128, then 128 from position 64 on (fp32 Dst, tt_transformers' HiFi2 for SDPA_DECODE),
    or 256 from position 128 on (16-bit Dst)."""
    if cur_pos < 0:
        raise ConfigError(f"cur_pos {cur_pos} is negative: the paged decode op skips that user, it takes no chunk.")
    tiles = cur_pos // TILE + 1
    return TILE * min(4 if fp32_dest_acc_en else 8, 1 << (tiles - 1).bit_length())


def sdpa_decode_program_config(max_seq_len: int, *, paged: bool = False, fp32_dest_acc_en: bool = True) -> SDPAProgramConfig:
    """Flash-decode chunks of the KV sequence: the chunk the tt-metal op picks under tt_transformers' k_chunk_size=0.

    Contiguous cache (max_seq_len = its length): sdpa_decode_k_chunk_size. Where tt-metal stops (a length that is
    not a multiple of 32) ttjax runs the cache as one chunk instead.

    Paged (paged=True, max_seq_len = the positions a page-table row spans): the op's chunk depends on each user's
    position (paged_sdpa_decode_k_chunk_size); one compiled ttjax program takes one chunk for every user, the one
    users reach from a few tiles on (128 with fp32_dest_acc_en, else 256); where it does not divide the span, the
    span's largest power-of-two divisor below it. Users at earlier positions get smaller chunks on TT; flash decode's
    log-sum-exp combination makes the result the same up to float rounding.

    q_chunk_size is unused by decode (tt_transformers gives 0); 32 here."""
    if paged:
        cap = paged_sdpa_decode_k_chunk_size(TILE * 8, fp32_dest_acc_en)  # past the cap's position: the cap itself
        size = min(cap, max_seq_len & -max_seq_len)
    else:
        size = sdpa_decode_k_chunk_size(max_seq_len)
    if size % TILE:
        size = TILE * -(-max_seq_len // TILE)  # one chunk (flash decode caps k_chunk_size at the cache length)
    return SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=TILE, k_chunk_size=size, exp_approx_mode=False)
