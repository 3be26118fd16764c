"""Placement choices tt-metal makes on its own, pinned to the values tt-metal computes.

- Decode SDPA's K chunk. tt_transformers' SDPA_DECODE_PROGCFG gives k_chunk_size=0, so the op picks it:
  get_chunk_size in ttnn/cpp/ttnn/operations/transformer/sdpa_decode/sdpa_decode.cpp for the contiguous
  cache; get_dynamic_Sk_chunk_t (sdpa_decode/device/kernels/rt_args_common.hpp) with the cap
  max_dynamic_chunk_size (sdpa_decode_program_factory.cpp) for the paged one.
- The LM head's column split: max_columns_per_device_lm_head = 668 * lm_head_core_grid.num_cores
  (models/tt_transformers/tt/model_config.py), split_sizes in models/tt_transformers/tt/lm_head.py.
"""

import pytest

from mesh.errors import TTJaxError
from model.config import named_config
from model.errors import ConfigError
from model.model_config import (
    ModelConfig,
    TPLayout,
    lm_head_core_grid,
    lm_head_max_columns_per_device,
    paged_sdpa_decode_k_chunk_size,
    sdpa_decode_k_chunk_size,
    sdpa_decode_program_config,
)
from ttjax.core_range import CoreCoord
from ttjax.flash_attention import SDPAProgramConfig
from ttjax.flash_decode import decode_k_chunk


# get_chunk_size: the largest power of two dividing the cache length, at least 2, at most 512.
@pytest.mark.parametrize("cache_len, chunk", [
    (32, 32), (64, 64), (96, 32), (128, 128), (256, 256), (384, 128), (512, 512), (1000, 8), (1024, 512),
    (2048, 512), (4096, 512), (8192, 512), (131072, 512), (100000, 32), (1, 2), (3, 2),
])
def test_decode_k_chunk_is_tt_metals_get_chunk_size(cache_len, chunk):
    assert sdpa_decode_k_chunk_size(cache_len) == chunk


@pytest.mark.parametrize("cache_len, k_chunk", [
    (64, 64), (128, 128), (256, 256), (384, 128), (2048, 512), (4096, 512), (8192, 512), (100000, 32),
])
def test_decode_program_config_runs_the_ops_chunk(cache_len, k_chunk):
    """What model.attention gives flash decode for a contiguous cache of cache_len, and the chunk it runs."""
    cfg = sdpa_decode_program_config(cache_len)
    assert cfg.k_chunk_size == k_chunk
    assert decode_k_chunk(cache_len, cfg) == k_chunk


def test_decode_cache_length_tt_metal_refuses_runs_as_one_chunk():
    """tt-metal stops on 1000 (get_chunk_size gives 8, TT_FATAL: not a multiple of 32); ttjax runs one chunk."""
    assert sdpa_decode_k_chunk_size(1000) % 32
    cfg = sdpa_decode_program_config(1000)
    assert cfg.k_chunk_size == 1024 and decode_k_chunk(1000, cfg) == 1000


# get_dynamic_Sk_chunk_t<0, max>: 32 * min(max, next power of two of cur_pos // 32 + 1 tiles); max = 4 tiles with
# fp32_dest_acc_en (tt_transformers' HiFi2 SDPA_DECODE config), 8 without.
@pytest.mark.parametrize("cur_pos, fp32, chunk", [
    (0, True, 32), (31, True, 32), (32, True, 64), (63, True, 64), (64, True, 128), (95, True, 128), (96, True, 128),
    (5000, True, 128),
    (0, False, 32), (64, False, 128), (127, False, 128), (128, False, 256), (255, False, 256), (100000, False, 256),
])
def test_paged_decode_k_chunk_is_tt_metals_dynamic_chunk(cur_pos, fp32, chunk):
    assert paged_sdpa_decode_k_chunk_size(cur_pos, fp32) == chunk


def test_paged_decode_program_config():
    """One chunk for the compiled program: the cap users reach (128 with fp32 Dst, 256 without), within the span."""
    assert sdpa_decode_program_config(2048, paged=True).k_chunk_size == 128
    assert sdpa_decode_program_config(2048, paged=True, fp32_dest_acc_en=False).k_chunk_size == 256
    assert sdpa_decode_program_config(64, paged=True).k_chunk_size == 64
    assert sdpa_decode_program_config(96, paged=True).k_chunk_size == 32  # 3 blocks of 32: 128 does not divide
    with pytest.raises(ConfigError, match="skips that user"):
        paged_sdpa_decode_k_chunk_size(-1, True)
    # ttnn's config takes tt_transformers' 0 (the decode op then picks: the largest power of two dividing the cache
    # length, up to 512); chunk sizes are required, as ttnn's constructor requires them
    picks = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=0, k_chunk_size=0)
    assert [decode_k_chunk(s, picks) for s in (2048, 256, 96, 32)] == [512, 256, 32, 32]
    with pytest.raises(TypeError):
        SDPAProgramConfig(k_chunk_size=0)


# lm_head_core_grid and 668 columns per core (Wormhole).
@pytest.mark.parametrize("name, shape, grid, columns", [
    ("Llama-3.2-1B", (1, 1), (8, 8), 42752),
    ("Llama-3.2-1B", (1, 2), (8, 8), 42752),
    ("Llama-3.2-3B", (1, 1), (6, 8), 32064),
    ("Llama-3.2-3B", (1, 8), (6, 8), 32064),
    ("Llama-3.1-8B", (1, 1), (8, 8), 42752),
    ("Llama-3.1-8B", (1, 8), (8, 8), 42752),
    ("Llama-3.1-70B", (1, 8), (8, 8), 42752),
    ("Llama-3.1-70B", (2, 4), (8, 8), 42752),  # 8 devices: not TG
    ("Llama-3.1-70B", (8, 4), (4, 8), 21376),  # TG: 32 devices
    ("Llama-3.1-8B", (8, 4), (4, 8), 21376),
    ("Llama-3.2-3B", (8, 4), (3, 8), 16032),
    ("Llama-3.2-1B", (8, 4), (2, 8), 10688),
    ("SmolLM2-135M", (1, 1), (3, 6), 12024),  # dim 576: 8 cores per row never divide; 6 per row, 3 rows
])
def test_lm_head_max_columns_per_device(name, shape, grid, columns):
    args = named_config(name, n_layers=1)
    cfg = ModelConfig(cluster_shape=shape)
    assert lm_head_core_grid(args.dim, cfg.num_devices) == grid
    assert lm_head_max_columns_per_device(args.dim, cfg.num_devices) == columns == 668 * grid[0] * grid[1]
    lay = TPLayout(args.dim, args.n_heads, args.n_kv_heads, args.head_dim, args.hidden_dim, args.vocab_size, cfg)
    assert lay.max_columns_per_device_lm_head == columns


@pytest.mark.parametrize("name, shape, splits", [
    ("Llama-3.2-1B", (1, 1), [42752] * 3),  # 128256 = 3 * 42752
    ("Llama-3.2-3B", (1, 1), [32064] * 4),
    ("Llama-3.1-8B", (1, 2), [42752, 21376]),  # 64128 per device
    ("Llama-3.1-70B", (1, 8), [16032]),
    ("SmolLM2-135M", (1, 1), [12024] * 4 + [1056]),
])
def test_lm_head_splits(name, shape, splits):
    """tt-metal's split_sizes_dram_sharded: all of max_columns but the remainder last."""
    args = named_config(name, n_layers=1)
    lay = TPLayout(args.dim, args.n_heads, args.n_kv_heads, args.head_dim, args.hidden_dim, args.vocab_size,
                   ModelConfig(cluster_shape=shape))
    assert lay.lm_head_splits == splits and sum(splits) == lay.vocab_local


def test_lm_head_grid_where_tt_metal_finds_none():
    """tt-metal raises for a dim that is not a multiple of 32, and on TG for one not a multiple of 1024;
    ttjax takes one core (668 columns). An explicit max_columns_per_device_lm_head still wins."""
    assert lm_head_core_grid(48, 1) is None and lm_head_max_columns_per_device(48, 1) == 668
    assert lm_head_core_grid(576, 32) is None and lm_head_max_columns_per_device(576, 32) == 668
    lay = TPLayout(64, 2, 1, 32, 128, 1000, ModelConfig(max_columns_per_device_lm_head=192))
    assert lay.max_columns_per_device_lm_head == 192 and lay.lm_head_splits == [192] * 5 + [40]
