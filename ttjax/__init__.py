"""ttjax: the op surface of the Llama stack, named after ttnn (linear, rms_norm, embedding,
rotary_embedding_llama, flash scaled_dot_product_attention (+ chunked, paged), flash
scaled_dot_product_attention_decode (+ paged), fill_cache / update_cache and their paged forms), the
collectives (all_gather, reduce_scatter, all_reduce), host <-> mesh movement (as_tensor,
from_numpy, to_numpy) and TT's block floats (bfloat8_b, bfloat4_b, typecast).

Ops are pure jax functions; they know nothing about models (arrows point demos -> model ->
ttjax -> mesh).
"""

from ttjax.blockfloat import BlockFloatTensor, bfloat4_b, bfloat8_b, pack_as_bfp_tiles, quantize as typecast
from ttjax.ccl import ReduceType, Topology, all_gather, all_reduce, reduce_scatter
from ttjax.flash_attention import SDPAProgramConfig, chunked_scaled_dot_product_attention, scaled_dot_product_attention
from ttjax.flash_decode import paged_scaled_dot_product_attention_decode, scaled_dot_product_attention_decode
from ttjax.paged_cache import check_page_table, paged_fill_cache, paged_update_cache
from ttjax.embedding import embedding
from ttjax.eltwise import mul
from mesh.errors import TTJaxError
from ttjax.kv_cache import fill_cache, update_cache
from ttjax.linear import linear, matmul
from ttjax.memory_config import (
    DRAM_MEMORY_CONFIG,
    L1_HEIGHT_SHARDED_MEMORY_CONFIG,
    L1_MEMORY_CONFIG,
    L1_WIDTH_SHARDED_MEMORY_CONFIG,
    BufferType,
    CoreCoord,
    CoreGrid,
    CoreRange,
    CoreRangeSet,
    MemoryConfig,
    ROW_MAJOR_LAYOUT,
    TILE_LAYOUT,
    L1_BLOCK_SHARDED_MEMORY_CONFIG,
    Layout,
    ShardOrientation,
    ShardSpec,
    ShardStrategy,
    TensorMemoryLayout,
    TensorSpec,
    create_sharded_memory_config,
    num_cores_to_corerangeset,
)
from ttjax.program_config import (
    MatmulMultiCoreReuseMultiCast1DProgramConfig,
    MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig,
    MatmulMultiCoreReuseMultiCastProgramConfig,
)
from mesh.errors import OpConfigError
from ttjax.matrix_engine import MathFidelity, ThrottleLevel, WormholeComputeKernelConfig, init_device_compute_kernel_config
from ttjax.norm import rms_norm, rms_norm_post_all_gather, rms_norm_pre_all_gather
from ttjax.tensor import as_tensor, from_numpy, to_numpy
from ttjax.rotary import get_rot_transformation_mat, rotary_embedding_llama, rotate_pairs
from ttjax import sfpu
from ttjax.tensorbin import dump_tensor, load_tensor, read_tensor

__all__ = [
    "BlockFloatTensor",
    "bfloat4_b",
    "bfloat8_b",
    "pack_as_bfp_tiles",
    "typecast",
    "ReduceType",
    "Topology",
    "all_gather",
    "all_reduce",
    "as_tensor",
    "from_numpy",
    "reduce_scatter",
    "to_numpy",
    "TTJaxError",
    "OpConfigError",
    "DRAM_MEMORY_CONFIG",
    "L1_HEIGHT_SHARDED_MEMORY_CONFIG",
    "L1_MEMORY_CONFIG",
    "L1_WIDTH_SHARDED_MEMORY_CONFIG",
    "BufferType",
    "CoreCoord",
    "CoreGrid",
    "CoreRange",
    "CoreRangeSet",
    "MemoryConfig",
    "ShardOrientation",
    "ShardSpec",
    "TensorMemoryLayout",
    "create_sharded_memory_config",
    "num_cores_to_corerangeset",
    "ROW_MAJOR_LAYOUT",
    "TILE_LAYOUT",
    "L1_BLOCK_SHARDED_MEMORY_CONFIG",
    "Layout",
    "ShardStrategy",
    "TensorSpec",
    "ThrottleLevel",
    "init_device_compute_kernel_config",
    "dump_tensor",
    "load_tensor",
    "read_tensor",
    "MatmulMultiCoreReuseMultiCast1DProgramConfig",
    "MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig",
    "MatmulMultiCoreReuseMultiCastProgramConfig",
    "embedding",
    "mul",
    "fill_cache",
    "linear",
    "matmul",
    "MathFidelity",
    "WormholeComputeKernelConfig",
    "rms_norm",
    "rms_norm_post_all_gather",
    "rms_norm_pre_all_gather",
    "get_rot_transformation_mat",
    "rotary_embedding_llama",
    "rotate_pairs",
    "sfpu",
    "SDPAProgramConfig",
    "check_page_table",
    "chunked_scaled_dot_product_attention",
    "paged_fill_cache",
    "paged_scaled_dot_product_attention_decode",
    "paged_update_cache",
    "scaled_dot_product_attention",
    "scaled_dot_product_attention_decode",
    "update_cache",
]
