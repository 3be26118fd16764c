"""The ttnn half of the oracle tier: runs in .venv-ttnn (ttnn 0.81.1, mock n150), never imported by ttjax's tests.

    python ttnn_side.py CASES.json RESULTS.json

Each case (tests/oracle/cases.py) names a ttnn call and its arguments in plain JSON; each result is the call's value
in the same plain form tests/oracle/ttjax_side.py gives ttjax's (core ranges as [[x0, y0], [x1, y1]], memory configs
as dicts, tensors as files), or {"error": the first line of ttnn's message}. Tensor cases read their input from an
.npy file beside the cases and write ttnn's .tensorbin; "load" cases read a file ttjax wrote.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import ttnn

DTYPES = {"bfloat16": ttnn.bfloat16, "bfloat8_b": ttnn.bfloat8_b, "bfloat4_b": ttnn.bfloat4_b, "float32": ttnn.float32}
LAYOUTS = {"TILE": ttnn.TILE_LAYOUT, "ROW_MAJOR": ttnn.ROW_MAJOR_LAYOUT}
ORIENT = {"ROW_MAJOR": ttnn.ShardOrientation.ROW_MAJOR, "COL_MAJOR": ttnn.ShardOrientation.COL_MAJOR}
STRATEGY = {"HEIGHT": ttnn.ShardStrategy.HEIGHT, "WIDTH": ttnn.ShardStrategy.WIDTH, "BLOCK": ttnn.ShardStrategy.BLOCK}
BUFFER = {"DRAM": ttnn.BufferType.DRAM, "L1": ttnn.BufferType.L1}
FIDELITY = {f: getattr(ttnn.MathFidelity, f) for f in ("LoFi", "HiFi2", "HiFi3", "HiFi4", "Invalid")}


def coord(c):
    return ttnn.CoreCoord(*c)


def core_range(r):
    return ttnn.CoreRange(coord(r[0]), coord(r[1]))


def range_set(rs):
    return ttnn.CoreRangeSet({core_range(r) for r in rs})


def plain_range(r):
    return [[r.start.x, r.start.y], [r.end.x, r.end.y]]


def plain_set(s):
    return sorted(plain_range(r) for r in s.ranges())


def plain_memory_config(mc):
    spec = mc.shard_spec
    return {"layout": mc.memory_layout.name, "buffer": mc.buffer_type.name,
            "shard": None if spec is None else {"grid": plain_set(spec.grid), "shape": list(spec.shape),
                                                "orientation": spec.orientation.name}}


def name(enum_value) -> str:
    return str(enum_value).split(".")[-1]


def values(t) -> np.ndarray:
    """A host tensor's values as float32 (to_numpy gives bfloat16 as an object array under numpy 1; to_list is exact)."""
    return np.asarray(t.to_list() if t.dtype == ttnn.bfloat16 else t.to_numpy(), np.float32).reshape(tuple(t.shape))


def grid_arg(g):
    if "core_grid" in g:
        return ttnn.CoreGrid(x=g["core_grid"][0], y=g["core_grid"][1])
    if "two_grids" in g:
        return tuple(ttnn.CoreGrid(x=x, y=y) for x, y in g["two_grids"])
    return range_set(g["ranges"])


def fields(obj, names):
    out = {}
    for n in names:
        v = getattr(obj, n)
        out[n] = v if v is None or isinstance(v, (bool, int, float, str)) else name(v)
    return out


def run(case):
    fn, a = case["fn"], case
    if fn == "num_cores_to_corerangeset":
        extra = {} if a["row_wise"] is None else {"row_wise": a["row_wise"]}
        return plain_set(ttnn.num_cores_to_corerangeset(a["n"], coord(a["grid"]), **extra))
    if fn == "create_sharded_memory_config":
        kw = {} if a["orientation"] is None else {"orientation": ORIENT[a["orientation"]]}
        mc = ttnn.create_sharded_memory_config(tuple(a["shape"]), grid_arg(a["grid"]), STRATEGY[a["strategy"]],
                                               use_height_and_width_as_shard_shape=a["use_hw"], **kw)
        return plain_memory_config(mc)
    if fn == "tensor_spec":
        shape = ttnn.Shape(a["shape"])
        if a["memory_layout"] == "INTERLEAVED":
            spec = ttnn.TensorSpec(shape, DTYPES[a["dtype"]], LAYOUTS[a["layout"]], BUFFER[a["buffer"]])
        else:
            shard = ttnn.ShardSpec(range_set(a["grid"]), a["shard_shape"], ORIENT[a["orientation"]])
            spec = ttnn.TensorSpec(shape, DTYPES[a["dtype"]], LAYOUTS[a["layout"]],
                                   getattr(ttnn.TensorMemoryLayout, a["memory_layout"]), shard, BUFFER[a["buffer"]])
        return {"memory_config": plain_memory_config(spec.memory_config)}
    if fn == "spec_sharded":
        spec = ttnn.TensorSpec(ttnn.Shape(a["shape"]), DTYPES[a["dtype"]], LAYOUTS[a["layout"]], BUFFER[a["buffer"]])
        orient = ORIENT[a["orientation"]]
        if a["how"] == "block":
            out = spec.block_sharded(core_range(a["grid"][0]), orient)
        else:
            out = getattr(spec, f"{a['how']}_sharded")(range_set(a["grid"]), orient)
        return {"memory_config": plain_memory_config(out.memory_config)}
    if fn == "core_range_set":
        op = a["op"]
        s = range_set(a["a"])
        if op == "num_cores":
            return s.num_cores()
        if op == "bounding_box":
            return plain_range(s.bounding_box())
        if op == "contains_coord":
            return s.contains(coord(a["b"]))
        if op == "contains_range":
            return s.contains(core_range(a["b"]))
        if op == "contains_set":
            return s.contains(range_set(a["b"]))
        if op == "merge":
            return plain_set(s.merge(range_set(a["b"])))
        if op == "new":
            return plain_set(s)
        if op == "subtract":
            return plain_set(s.subtract(range_set(a["b"])))
        raise ValueError(op)
    if fn == "compute_kernel_config":
        kw = {k: FIDELITY[v] if k == "math_fidelity" else v for k, v in a["kwargs"].items()}
        return fields(ttnn.WormholeComputeKernelConfig(**kw),
                      ("math_fidelity", "math_approx_mode", "fp32_dest_acc_en", "packer_l1_acc", "dst_full_sync_en"))
    if fn == "init_device_compute_kernel_config":
        kw = {k: FIDELITY[v] if k == "math_fidelity" else v for k, v in a["kwargs"].items()}
        base = None if a["config"] is None else ttnn.WormholeComputeKernelConfig(
            **{k: FIDELITY[v] if k == "math_fidelity" else v for k, v in a["config"].items()})
        out = ttnn.init_device_compute_kernel_config(ttnn.device.Arch.WORMHOLE_B0, base, **kw)
        return fields(out, ("math_fidelity", "math_approx_mode", "fp32_dest_acc_en", "packer_l1_acc", "dst_full_sync_en"))
    if fn == "program_config":
        cls = getattr(ttnn, a["cls"])
        kw = dict(a["kwargs"])
        if "compute_with_storage_grid_size" in kw:
            kw["compute_with_storage_grid_size"] = coord(kw["compute_with_storage_grid_size"])
        if "math_fidelity" in kw:
            kw["matmul_math_fidelity"] = FIDELITY[kw.pop("math_fidelity")]
        cfg = cls(**kw)
        names = [n for n in a["fields"]]
        out = {}
        for n in names:
            v = getattr(cfg, n)
            if n == "compute_with_storage_grid_size":
                v = [v.x, v.y]
            elif n in ("hop_cores",):
                v = plain_set(v)
            elif n == "matmul_math_fidelity":
                v = None if v is None else name(v)
            elif v is not None and not isinstance(v, (bool, int)):
                v = str(v)
            out[n] = v
        return out
    if fn == "tensor_dump":  # ttnn's tensor from the shared input, dumped
        t = ttnn.Tensor(np.load(a["npy"]), data_type=DTYPES[a["dtype"]], layout=LAYOUTS[a["layout"]])
        ttnn.dump_tensor(a["ttnn_file"], t)
        return {}
    if fn == "tensor":  # ttnn's tensor from the shared input, dumped; then the file ttjax wrote, loaded
        x = np.load(a["npy"])
        t = ttnn.Tensor(x, data_type=DTYPES[a["dtype"]], layout=LAYOUTS[a["layout"]])
        ttnn.dump_tensor(a["ttnn_file"], t)
        np.save(a["ttnn_values"], values(t))
        loaded = ttnn.load_tensor(a["ttjax_file"])
        np.save(a["loaded_values"], values(loaded))
        return {"shape": list(t.shape), "padded_shape": list(t.padded_shape), "dtype": name(t.dtype).lower(),
                "layout": name(t.layout), "loaded": {"shape": list(loaded.shape), "dtype": name(loaded.dtype).lower(),
                                                     "layout": name(loaded.layout)}}
    raise ValueError(f"unknown case {fn}")


def first_line(e: Exception) -> str:
    text = str(e)
    info = re.search(r"info:\s*\n(.*)", text)  # TT_FATAL's own message is on the line after "info:"
    return (info.group(1) if info else text.splitlines()[0] if text else type(e).__name__).strip()


def main(cases_path: str, results_path: str) -> None:
    results = []
    for case in json.load(open(cases_path)):
        try:
            results.append({"ok": run(case)})
        except Exception as e:  # every refusal is a result to compare, not a failure of the tier
            results.append({"error": first_line(e)})
    json.dump(results, open(results_path, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
