"""The oracle tier's cases: every ttnn name ttjax mirrors, called over generated arguments (grids of shapes,
layouts, orientations, strategies, core counts and grids, dtypes, refusals included). Plain JSON, so that ttnn's
side (ttnn_side.py, in .venv-ttnn) and ttjax's (ttjax_side.py) read the same thing. Deterministic: a fixed seed.
"""

from __future__ import annotations

import itertools
import random

SHARD_ORIENTATIONS = ("ROW_MAJOR", "COL_MAJOR")
FIDELITIES = ("LoFi", "HiFi2", "HiFi3", "HiFi4")


def _range(x0, y0, x1, y1):
    return [[x0, y0], [x1, y1]]


def num_cores_to_corerangeset():
    out = []
    for grid in ((8, 8), (8, 7), (7, 9), (1, 8), (8, 1), (5, 3), (12, 10)):
        total = grid[0] * grid[1]
        for n in sorted({0, 1, 2, grid[0] - 1, grid[0], grid[0] + 1, grid[1], grid[1] + 3, total // 2, total - 1, total,
                         total + 1}):
            if n < 0:
                continue
            for row_wise in (None, True, False):
                out.append({"n": n, "grid": list(grid), "row_wise": row_wise})
    return out


def create_sharded_memory_config():
    out = []
    shapes = ((1, 1, 256, 512), (1, 1, 32, 2048), (2, 4, 64, 96), (1, 1, 100, 64), (1, 1, 320, 64), (64, 128),
              (1, 1, 32, 1000), (3, 96, 256), (1, 32, 128))
    grids = [{"core_grid": g} for g in ((4, 2), (8, 8), (8, 1), (1, 8), (2, 4), (5, 5), (8, 4), (3, 1))]
    for shape, grid, strategy, orientation, use_hw in itertools.product(
            shapes, grids, ("HEIGHT", "WIDTH", "BLOCK"), (None, "ROW_MAJOR", "COL_MAJOR"), (False, True)):
        out.append({"shape": list(shape), "grid": grid, "strategy": strategy, "orientation": orientation, "use_hw": use_hw})
    ranges = [[_range(0, 0, 7, 0)], [_range(0, 0, 3, 1)], [_range(0, 0, 7, 7)], [_range(0, 0, 7, 0), _range(0, 1, 1, 1)]]
    for shape, rs, strategy, orientation, use_hw in itertools.product(
            ((1, 1, 32, 64), (1, 1, 128, 256), (64, 32)), ranges, ("HEIGHT", "WIDTH", "BLOCK"), (None, "COL_MAJOR"), (False, True)):
        out.append({"shape": list(shape), "grid": {"ranges": rs}, "strategy": strategy, "orientation": orientation,
                    "use_hw": use_hw})
    for shape, use_hw in itertools.product(((1, 1, 32, 64), (1, 1, 288, 64)), (False, True)):
        out.append({"shape": list(shape), "grid": {"two_grids": [[8, 4], [3, 1]]}, "strategy": "HEIGHT", "orientation": None,
                    "use_hw": use_hw})
    return out


def tensor_spec():
    out = []
    rng = random.Random(0)
    grids = [[_range(0, 0, 7, 0)], [_range(0, 0, 3, 1)], [_range(0, 0, 3, 0)], [_range(0, 0, 8, 0)], [_range(0, 0, 9, 9)],
             [_range(0, 0, 7, 7)], [_range(0, 0, 7, 0), _range(0, 1, 1, 1)], [_range(1, 1, 4, 2)]]
    shapes = ((1, 1, 256, 64), (1, 1, 100, 64), (1, 1, 32, 512), (1, 1, 256, 512), (2, 3, 40, 70), (64, 96), (1, 1, 32, 1000))
    shards = ((32, 64), (32, 32), (16, 64), (128, 128), (64, 256), (128, 64), (200, 200), (32, 96), (256, 64), (32, 512),
              (96, 70), (64, 1024), (40, 70), (240, 96))
    for shape, layout_name in itertools.product(shapes, ("HEIGHT_SHARDED", "WIDTH_SHARDED", "BLOCK_SHARDED")):
        for _ in range(9):
            out.append({"shape": list(shape), "dtype": rng.choice(("bfloat16", "bfloat8_b", "float32")),
                        "layout": rng.choice(("TILE", "TILE", "ROW_MAJOR")), "memory_layout": layout_name,
                        "grid": rng.choice(grids), "shard_shape": list(rng.choice(shards)),
                        "orientation": rng.choice(SHARD_ORIENTATIONS), "buffer": rng.choice(("L1", "DRAM"))})
    for dtype, layout in itertools.product(("bfloat16", "bfloat8_b", "bfloat4_b", "float32"), ("TILE", "ROW_MAJOR")):
        out.append({"shape": [2, 33, 65], "dtype": dtype, "layout": layout, "memory_layout": "INTERLEAVED", "buffer": "DRAM"})
    return out


def spec_sharded():
    out = []
    for shape, layout, how, grid, orientation in itertools.product(
            ((32, 1000), (1, 1, 256, 64), (2, 3, 40, 70), (1, 1, 64, 4096), (5, 7)), ("TILE", "ROW_MAJOR"),
            ("height", "width", "block"), ([_range(0, 0, 7, 0)], [_range(0, 0, 3, 1)], [_range(2, 1, 6, 3)]), SHARD_ORIENTATIONS):
        for dtype in ("bfloat16", "float32"):
            out.append({"shape": list(shape), "dtype": dtype, "layout": layout, "buffer": "L1", "how": how, "grid": grid,
                        "orientation": orientation})
    return out


def core_range_set():
    rng = random.Random(1)
    out = []

    def random_set(max_ranges=3):
        ranges, cores = [], set()
        for _ in range(rng.randint(1, max_ranges)):
            x0, y0 = rng.randint(0, 7), rng.randint(0, 7)
            x1, y1 = rng.randint(x0, min(7, x0 + 4)), rng.randint(y0, min(7, y0 + 4))
            new = {(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)}
            if not new & cores:
                ranges.append(_range(x0, y0, x1, y1))
                cores |= new
        return ranges

    for _ in range(60):
        a, b = random_set(), random_set()
        for op in ("merge", "subtract", "contains_set"):
            out.append({"a": a, "op": op, "b": b})
        out.append({"a": a, "op": "num_cores"})
        out.append({"a": a, "op": "bounding_box"})
        out.append({"a": a, "op": "contains_coord", "b": [rng.randint(0, 8), rng.randint(0, 8)]})
        x0, y0 = rng.randint(0, 7), rng.randint(0, 7)
        out.append({"a": a, "op": "contains_range", "b": _range(x0, y0, rng.randint(x0, 8), rng.randint(y0, 8))})
    for a, b in (([_range(0, 0, 3, 0)], [_range(0, 1, 3, 1)]), ([_range(0, 0, 1, 3)], [_range(2, 0, 2, 3)]),
                 ([_range(0, 0, 3, 3)], [_range(2, 2, 5, 5)]), ([_range(0, 0, 7, 7)], [_range(2, 2, 3, 3)]),
                 ([], [_range(0, 0, 1, 1)]), ([_range(0, 0, 1, 1)], [])):
        for op in ("merge", "subtract", "contains_set"):
            out.append({"a": a, "op": op, "b": b})
    # construction: overlapping ranges are refused
    for rs in ([_range(0, 0, 3, 3), _range(2, 2, 5, 5)], [_range(0, 0, 3, 0), _range(0, 1, 3, 1)], [_range(0, 0, 0, 0)], []):
        out.append({"a": rs, "op": "new"})
    return out


def compute_kernel_config():
    out = [{"kwargs": {}}]
    for fidelity, approx, fp32, l1, sync in itertools.product(FIDELITIES, (True, False), (True, False), (True, False), (False, True)):
        out.append({"kwargs": {"math_fidelity": fidelity, "math_approx_mode": approx, "fp32_dest_acc_en": fp32,
                               "packer_l1_acc": l1, "dst_full_sync_en": sync}})
    for key in ("math_approx_mode", "fp32_dest_acc_en", "packer_l1_acc"):
        out.append({"kwargs": {key: False if key == "math_approx_mode" else True}})
    return out


def init_device_compute_kernel_config():
    out = []
    configs = [None, {}, {"math_fidelity": "HiFi2", "math_approx_mode": False}, {"fp32_dest_acc_en": True}]
    kwargs = [{}, {"math_fidelity": "HiFi4"}, {"math_fidelity": "HiFi4", "math_approx_mode": True, "fp32_dest_acc_en": False},
              {"math_fidelity": "HiFi2", "fp32_dest_acc_en": True, "packer_l1_acc": True}, {"math_approx_mode": False}]
    for config, kw in itertools.product(configs, kwargs):
        out.append({"config": config, "kwargs": kw})
    return out


MATMUL_2D = "MatmulMultiCoreReuseMultiCastProgramConfig"
MATMUL_1D = "MatmulMultiCoreReuseMultiCast1DProgramConfig"
MATMUL_DRAM = "MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig"
SDPA = "SDPAProgramConfig"
FIELDS = {
    MATMUL_2D: ["compute_with_storage_grid_size", "in0_block_w", "out_subblock_h", "out_subblock_w", "out_block_h",
                "out_block_w", "per_core_M", "per_core_N", "transpose_mcast", "fuse_batch"],
    MATMUL_1D: ["compute_with_storage_grid_size", "in0_block_w", "out_subblock_h", "out_subblock_w", "out_block_h",
                "out_block_w", "per_core_M", "per_core_N", "fuse_batch", "mcast_in0", "gather_in0", "hop_cores",
                "num_global_cb_receivers", "untilize_out", "stream_in1"],
    MATMUL_DRAM: ["in0_block_w", "per_core_M", "per_core_N", "num_workers_per_dram_bank"],
    SDPA: ["compute_with_storage_grid_size", "q_chunk_size", "k_chunk_size", "exp_approx_mode", "max_cores_per_head_batch",
           "max_k_splits", "matmul_math_fidelity", "segmented_accumulation"],
}


def program_config():
    rng = random.Random(2)
    out = []
    base = {
        MATMUL_2D: {"compute_with_storage_grid_size": [8, 8], "in0_block_w": 2, "out_subblock_h": 1, "out_subblock_w": 4,
                    "per_core_M": 4, "per_core_N": 8, "transpose_mcast": False},
        MATMUL_1D: {"compute_with_storage_grid_size": [8, 4], "in0_block_w": 4, "out_subblock_h": 1, "out_subblock_w": 2,
                    "per_core_M": 1, "per_core_N": 2, "fuse_batch": True, "mcast_in0": True},
        MATMUL_DRAM: {"in0_block_w": 8, "per_core_M": 1, "per_core_N": 3},
        SDPA: {"compute_with_storage_grid_size": [8, 8], "q_chunk_size": 64, "k_chunk_size": 128},
    }
    optional = {
        MATMUL_2D: {"out_block_h": [2, 4], "out_block_w": [4, 8], "fuse_batch": [False, True]},
        MATMUL_1D: {"out_block_h": [1], "out_block_w": [1, 2], "gather_in0": [True], "num_global_cb_receivers": [2],
                    "untilize_out": [True], "stream_in1": [True]},
        MATMUL_DRAM: {"num_workers_per_dram_bank": [2]},
        SDPA: {"exp_approx_mode": [False, True], "max_cores_per_head_batch": [8], "max_k_splits": [2],
               "math_fidelity": ["HiFi2", "HiFi4"], "segmented_accumulation": [True]},
    }
    for cls, kw in base.items():
        out.append({"cls": cls, "kwargs": dict(kw), "fields": FIELDS[cls]})
        for key in kw:  # each required argument left out: both refuse
            out.append({"cls": cls, "kwargs": {k: v for k, v in kw.items() if k != key}, "fields": FIELDS[cls]})
        for key, values in optional[cls].items():
            for v in values:
                out.append({"cls": cls, "kwargs": {**kw, key: v}, "fields": FIELDS[cls]})
        for _ in range(12):  # random counts
            kw2 = {k: (rng.choice([1, 2, 3, 4, 7, 8, 16]) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in kw.items()}
            out.append({"cls": cls, "kwargs": kw2, "fields": FIELDS[cls]})
    for q, k in ((0, 0), (33, 64), (16, 32), (64, 96), (2048, 2048), (32, 0)):
        out.append({"cls": SDPA, "kwargs": {**base[SDPA], "q_chunk_size": q, "k_chunk_size": k}, "fields": FIELDS[SDPA]})
    return out


def tensor():
    """Host tensors: ttnn builds each from the same .npy and dumps it; ttjax dumps its own; each loads the other's."""
    out = []
    shapes = ((32, 32), (64, 64), (3, 40, 70), (1, 1, 33, 65), (2, 2, 32, 96), (1, 100), (5, 7), (2, 1, 64, 31), (7,),
              (100,), (2, 3, 2, 40, 33))
    kinds = ("normal", "wide", "tiny", "special")
    for i, (shape, dtype, layout) in enumerate(itertools.product(shapes, ("bfloat16", "float32", "bfloat8_b", "bfloat4_b"),
                                                                  ("TILE", "ROW_MAJOR"))):
        if dtype in ("bfloat8_b", "bfloat4_b") and layout == "ROW_MAJOR":
            continue
        out.append({"shape": list(shape), "dtype": dtype, "layout": layout, "kind": kinds[i % len(kinds)], "seed": i})
    return out


NAMES = {
    "num_cores_to_corerangeset": num_cores_to_corerangeset,
    "create_sharded_memory_config": create_sharded_memory_config,
    "tensor_spec": tensor_spec,
    "spec_sharded": spec_sharded,
    "core_range_set": core_range_set,
    "compute_kernel_config": compute_kernel_config,
    "init_device_compute_kernel_config": init_device_compute_kernel_config,
    "program_config": program_config,
    "tensor": tensor,
}


def all_cases() -> list[dict]:
    return [{"fn": fn, **case} for fn, make in NAMES.items() for case in make()]
