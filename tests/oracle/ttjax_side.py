"""The ttjax half of the oracle tier: the cases of tests/oracle/cases.py through ttjax's mirrors, in the plain form
ttnn_side.py gives ttnn's results (errors as {"error": ttjax's message})."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import ttjax
from mesh.errors import TTJaxError
from ttjax import (CoreCoord, CoreGrid, CoreRange, CoreRangeSet, Layout, MathFidelity, ShardOrientation, ShardSpec,
                   ShardStrategy, TensorMemoryLayout, TensorSpec)
from ttjax.memory_config import BufferType, MemoryConfig

LAYOUTS = {"TILE": Layout.TILE, "ROW_MAJOR": Layout.ROW_MAJOR}
BUFFER = {"DRAM": BufferType.DRAM, "L1": BufferType.L1}


def core_range(r):
    return CoreRange(CoreCoord(*r[0]), CoreCoord(*r[1]))


def range_set(rs):
    return CoreRangeSet(tuple(core_range(r) for r in rs))


def plain_range(r):
    return [[r.start.x, r.start.y], [r.end.x, r.end.y]]


def plain_set(s):
    return sorted(plain_range(r) for r in s.ranges)


def plain_memory_config(mc):
    spec = mc.shard_spec
    return {"layout": mc.memory_layout.name, "buffer": mc.buffer_type.name,
            "shard": None if spec is None else {"grid": plain_set(spec.grid), "shape": list(spec.shape),
                                                "orientation": spec.orientation.name}}


def grid_arg(g):
    if "core_grid" in g:
        return CoreGrid(*g["core_grid"])
    if "two_grids" in g:
        return tuple(CoreGrid(x, y) for x, y in g["two_grids"])
    return range_set(g["ranges"])


def fields(obj, names):
    out = {}
    for n in names:
        v = getattr(obj, n)
        out[n] = v if v is None or isinstance(v, (bool, int, float, str)) else v.name
    return out


KERNEL_FIELDS = ("math_fidelity", "math_approx_mode", "fp32_dest_acc_en", "packer_l1_acc", "dst_full_sync_en")


def _kernel_kwargs(kw):
    return {k: MathFidelity[v] if k == "math_fidelity" else v for k, v in kw.items()}


def run(case):
    fn, a = case["fn"], case
    if fn == "num_cores_to_corerangeset":
        extra = {} if a["row_wise"] is None else {"row_wise": a["row_wise"]}
        return plain_set(ttjax.num_cores_to_corerangeset(a["n"], CoreCoord(*a["grid"]), **extra))
    if fn == "create_sharded_memory_config":
        kw = {} if a["orientation"] is None else {"orientation": ShardOrientation[a["orientation"]]}
        return plain_memory_config(ttjax.create_sharded_memory_config(
            tuple(a["shape"]), grid_arg(a["grid"]), ShardStrategy[a["strategy"]],
            use_height_and_width_as_shard_shape=a["use_hw"], **kw))
    if fn == "tensor_spec":
        layout = TensorMemoryLayout[a["memory_layout"]]
        shard = None if layout is TensorMemoryLayout.INTERLEAVED else ShardSpec(
            range_set(a["grid"]), tuple(a["shard_shape"]), ShardOrientation[a["orientation"]])
        spec = TensorSpec(tuple(a["shape"]), a["dtype"], MemoryConfig(layout, BUFFER[a["buffer"]], shard), LAYOUTS[a["layout"]])
        return {"memory_config": plain_memory_config(spec.memory_config)}
    if fn == "spec_sharded":
        spec = TensorSpec(tuple(a["shape"]), a["dtype"], MemoryConfig(buffer_type=BUFFER[a["buffer"]]), LAYOUTS[a["layout"]])
        orient = ShardOrientation[a["orientation"]]
        grid = core_range(a["grid"][0]) if a["how"] == "block" else range_set(a["grid"])
        return {"memory_config": plain_memory_config(getattr(spec, f"{a['how']}_sharded")(grid, orient).memory_config)}
    if fn == "core_range_set":
        op = a["op"]
        s = range_set(a["a"])
        if op == "new":
            return plain_set(s)
        if op == "num_cores":
            return s.num_cores()
        if op == "bounding_box":
            return plain_range(s.bounding_box())
        if op == "contains_coord":
            return s.contains(CoreCoord(*a["b"]))
        if op == "contains_range":
            return s.contains(core_range(a["b"]))
        if op == "contains_set":
            return s.contains(range_set(a["b"]))
        return plain_set(getattr(s, op)(range_set(a["b"])))
    if fn == "compute_kernel_config":
        return fields(ttjax.WormholeComputeKernelConfig(**_kernel_kwargs(a["kwargs"])), KERNEL_FIELDS)
    if fn == "init_device_compute_kernel_config":
        base = None if a["config"] is None else ttjax.WormholeComputeKernelConfig(**_kernel_kwargs(a["config"]))
        return fields(ttjax.init_device_compute_kernel_config("wormhole_b0", base, **_kernel_kwargs(a["kwargs"])), KERNEL_FIELDS)
    if fn == "program_config":
        kw = dict(a["kwargs"])
        if "compute_with_storage_grid_size" in kw:
            kw["compute_with_storage_grid_size"] = CoreCoord(*kw["compute_with_storage_grid_size"])
        if "math_fidelity" in kw:
            kw["matmul_math_fidelity"] = MathFidelity[kw.pop("math_fidelity")]
        cfg = getattr(ttjax, a["cls"])(**kw)
        out = {}
        for n in a["fields"]:
            v = getattr(cfg, n)
            if n == "compute_with_storage_grid_size":
                v = [v.x, v.y]
            elif n == "hop_cores":
                v = plain_set(v)
            elif n == "matmul_math_fidelity":
                v = None if v is None else v.name
            out[n] = v
        return out
    if fn == "tensor":
        x = np.load(a["npy"])
        value = to_ttjax(x, a["dtype"])
        layout = LAYOUTS[a["layout"]]
        ttjax.dump_tensor(a["ttjax_file"], value, layout=layout)
        loaded, spec = ttjax.read_tensor(a["ttnn_file"])
        values = np.asarray(loaded.decode() if isinstance(loaded, ttjax.BlockFloatTensor) else loaded, np.float32)
        return {"shape": list(spec.shape), "padded_shape": list(TensorSpec(x.shape, a["dtype"], layout=layout).padded_shape),
                "dtype": spec.dtype, "layout": spec.layout.name, "values": values,
                "own_values": np.asarray(value.decode() if isinstance(value, ttjax.BlockFloatTensor) else value, np.float32)}
    raise ValueError(f"unknown case {fn}")


def to_ttjax(x: np.ndarray, dtype: str):
    """The host tensor ttnn.Tensor(x, data_type=dtype) is, as ttjax holds it."""
    if dtype in ("bfloat8_b", "bfloat4_b"):
        return ttjax.as_tensor(x, getattr(ttjax, dtype))
    return jnp.asarray(x, jnp.float32 if dtype == "float32" else jnp.bfloat16)


def result(case) -> dict:
    try:
        return {"ok": run(case)}
    except (TTJaxError, TypeError, ValueError) as e:  # a refusal: compared with ttnn's accept/reject
        return {"error": str(e)}
