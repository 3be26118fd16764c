"""tt-llk's SFPU accuracy measurement, done again on ttjax.sfpu: the rows of sfpu_accuracy_budget.yaml, the sweep
that measured them and the golden they were measured against (tt-llk tests/python_tests: test_unary_sfpu_ulp.py,
helpers/ulp_sweep.py, helpers/ulp.py, helpers/golden_generators.py, stimuli_generator/strategies/structured.py, in
the ttnn 0.81.1 wheel). Written here from their documented behaviour; used by tests/test_sfpu_budget.py.

- The budget file is read from the ttnn wheel (`make setup` extracts it into .venv/ttnn-wheel); where the wheel is
  not there, from tests/data/sfpu_accuracy_budget.yaml, the rows of these ops copied from it.
- Stimuli: every finite bfloat16 (65,279, ascending, the one zero being -0.0), or a walk over float32 one sample per
  2^16 bit patterns (65,280, each at a golden-ratio phase inside its cell).
- Golden: computed per element as UnarySFPUGolden does, in torch: in the Dst's dtype for a 16-bit Dst (torch's own
  bfloat16 exp, sigmoid, gelu; fp64 then rounded for the others) and in float64 for an FP32 Dst, then rounded to
  FP32, to the Dst, NaN to infinity where the packer does that, cast to the output format, subnormals flushed.
- Distance: ranks of the output format's values with the subnormal band collapsed onto zero (ulp.py's
  flush_subnormals); lanes measured: neither side NaN, both agreeing on being finite, a normal (or zero) input, and
  for reciprocal x != 0, for sqrt and rsqrt x >= 0.
- The near-zero floor (a row that says "outside a X near-zero floor (N steps over every lane)"): lanes whose golden
  is under 1% of the cell's largest and under X / 0.01 with an absolute error up to X are set aside, and the row's
  first figure is the maximum over the rest.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WHEEL_BUDGET = ROOT / ".venv" / "ttnn-wheel" / "ttnn" / "tt_metal" / "tt-llk" / "tests" / "python_tests" / "helpers" / (
    "sfpu_accuracy_budget.yaml")
COPIED_BUDGET = Path(__file__).parent / "data" / "sfpu_accuracy_budget.yaml"
OPS = {"Exp": "exp", "Reciprocal": "reciprocal", "Rsqrt": "rsqrt", "Sqrt": "sqrt", "Sigmoid": "sigmoid", "Silu": "silu",
       "Gelu": "gelu"}
FORMATS = ("Float16_b", "Float32")


@dataclass(frozen=True)
class Row:
    op: str  # the yaml's name, e.g. "Exp"
    fmt_in: str
    fmt_out: str
    approx: bool | None  # None: the row has no approx key (Silu)
    dest: bool  # fp32_dest_acc_en
    measured: int  # "max N ULP"
    floor_atol: float | None = None  # "outside a X near-zero floor"
    every_lane: int | None = None  # "(N steps over every lane)"
    line: str = ""


ROW_PATTERN = re.compile(r"^\s*- \{(?P<keys>[^}]*)\}\s*#\s*(?P<note>.*)$")


def budget_path() -> Path:
    return WHEEL_BUDGET if WHEEL_BUDGET.exists() else COPIED_BUDGET


def parse_rows(text: str) -> list[Row]:
    """The Wormhole rows of these ops with Float16_b or Float32 in and out (no arch key means every arch)."""
    rows, op = [], None
    for line in text.splitlines():
        head = re.match(r"^(\w+):", line)
        if head:
            op = head.group(1)
            continue
        m = ROW_PATTERN.match(line)
        if op not in OPS or not m:
            continue
        keys = dict(kv.split(": ", 1) for kv in (p.strip() for p in m.group("keys").split(",")) if ": " in kv)
        if keys.get("in") not in FORMATS or keys.get("out") not in FORMATS or keys.get("arch", "wormhole") != "wormhole":
            continue
        note = m.group("note")
        measured = re.match(r"max (\d+) ULP", note)
        if not measured:
            raise ValueError(f"budget row without a measured maximum: {line.strip()}")
        floor = re.search(r"outside a ([0-9.e+-]+) near-zero floor \((\d+) steps over every lane\)", note)
        approx = keys.get("approx")
        rows.append(Row(op, keys["in"], keys["out"], None if approx is None else approx.strip('"') == "Yes",
                        keys["dest"].strip('"') == "Yes", int(measured.group(1)),
                        float(floor.group(1)) if floor else None, int(floor.group(2)) if floor else None, line.strip()))
    return rows


def load_rows() -> list[Row]:
    return parse_rows(budget_path().read_text())


# ------------------------------------------------------------------------------------------------ stimuli
def bf16_stimuli() -> np.ndarray:
    """Every finite bfloat16, ascending, one zero (-0.0): as float32."""
    vals = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)
    vals = vals[np.isfinite(vals) & ~((vals == 0) & ~np.signbit(vals))]  # one zero, -0.0
    return np.sort(vals).astype(np.float32)


def fp32_stimuli() -> np.ndarray:
    """The strided float32 walk: key order k(b) = b (b >= 0) or INT_MIN - b, from -inf's key in steps of 2^16 with
    a golden-ratio phase (odd) inside each step, finite samples only."""
    int_min = -(2**31)

    def key(b):
        return b if b >= 0 else int_min - b

    lo, hi = key(np.int32(np.uint32(0xFF800000).view(np.int32)).item()), key(0x7F800000)
    stride = 1 << 16
    count = min(65536, (hi - lo) // stride + 1)
    phase = int(stride * (math.sqrt(5) - 1) / 2) | 1
    i = np.arange(count, dtype=np.int64)
    keys = lo + i * stride + np.maximum(1, (i * phase) % stride)
    keys = keys[keys <= hi]
    bits = np.where(keys < 0, int_min - keys, keys).astype(np.int64)
    vals = (bits & 0xFFFFFFFF).astype(np.uint32).view(np.float32)
    vals = vals[np.isfinite(vals)]
    return np.unique(vals)


def stimuli(fmt_in: str) -> np.ndarray:
    return bf16_stimuli() if fmt_in == "Float16_b" else fp32_stimuli()


def received(x: np.ndarray, fmt_in: str, dest: bool) -> np.ndarray:
    """The input as the kernel's Dst holds it: a float32 input into a 16-bit Dst truncated to its top 16 bits."""
    if fmt_in == "Float32" and not dest:
        return (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    return x


# ------------------------------------------------------------------------------------------------ golden
def _torch():
    import torch

    return torch


def _cast_to_dest(values, dtype):
    """torch cast keeping a NaN's sign for bfloat16 (golden_generators.cast_to_dest_dtype)."""
    torch = _torch()
    out = values.to(dtype)
    if dtype is not torch.bfloat16:
        return out
    nan = torch.isnan(values)
    top = (values.view(torch.int32) >> 16).to(torch.int16)
    return torch.where(nan, top, out.view(torch.int16)).view(torch.bfloat16)


def _elementwise(op: str, values: list[float], dest: bool) -> list[float]:
    """The per-element op, as UnarySFPUGolden's methods compute it."""
    torch = _torch()
    import torch.nn.functional as tf

    work = torch.float64 if dest else torch.bfloat16
    if op in ("reciprocal", "rsqrt", "sqrt"):  # _torch_unary: fp64, not rounded to the work dtype here
        fn = {"reciprocal": torch.reciprocal, "rsqrt": torch.rsqrt, "sqrt": torch.sqrt}[op]
        return fn(torch.tensor(values, dtype=torch.float64)).tolist()  # IEEE operations: same one at a time
    out = []
    for x in values:
        t = torch.tensor(x, dtype=work)
        if op == "exp":
            out.append(torch.exp(t).item())
        elif op == "sigmoid":
            out.append(tf.sigmoid(t).item())
        elif op == "silu":
            out.append(tf.silu(t.to(torch.float64)).to(t.dtype).item())
        elif op == "gelu" and not dest:
            out.append(tf.gelu(t).item())
        elif op == "gelu":
            out.append((0.5 * t * torch.special.erfc(-t / math.sqrt(2.0))).item())
        else:
            raise ValueError(op)
    return out


@functools.lru_cache(maxsize=64)
def _op_result(op: str, fmt_in: str, dest: bool) -> np.ndarray:
    """The golden's value in Dst's dtype (as float32), before the output cast, for every stimulus."""
    torch = _torch()
    x = received(stimuli(fmt_in), fmt_in, dest)
    keep_negative_zero = fmt_in == "Float32" and dest  # unpacked to Dst: -0 stays
    x = np.where((x == 0) & ~keep_negative_zero, np.float32(0.0), x)
    dst_dtype = torch.float32 if dest else torch.bfloat16
    tensor = _cast_to_dest(torch.from_numpy(x.copy()), dst_dtype)
    op_res = _elementwise(op, tensor.tolist(), dest)
    op_tensor = torch.tensor(op_res, dtype=torch.float32)
    op_tensor = torch.where(torch.isnan(op_tensor), op_tensor.abs(), op_tensor)
    rounded = _cast_to_dest(op_tensor, dst_dtype).float()
    return rounded.numpy()


def golden(op: str, fmt_in: str, fmt_out: str, dest: bool) -> np.ndarray:
    """The golden in the output format, as float32 values."""
    torch = _torch()
    res = torch.from_numpy(_op_result(op, fmt_in, dest).copy())
    if not (dest and fmt_out == "Float32"):  # the packer turns NaN into an infinity of its sign
        res = torch.where(torch.isnan(res), torch.copysign(torch.full_like(res, float("inf")), res), res)
    out = res.to(torch.float32 if fmt_out == "Float32" else torch.bfloat16).float()
    out = torch.where(out.abs() < 2.0**-126, torch.zeros_like(out), out)
    return out.numpy()


# ------------------------------------------------------------------------------------------------ distance
def ranks(v: np.ndarray, fmt: str) -> np.ndarray:
    """Signed rank of each value among the format's values, the subnormal band collapsed onto zero."""
    if fmt == "Float16_b":
        b = (v.astype(np.float32).view(np.uint32) >> 16).astype(np.int64)
        sign, mbits = 0x8000, 7
    else:
        b = v.astype(np.float32).view(np.uint32).astype(np.int64)
        sign, mbits = 0x80000000, 23
    mag = b & (sign - 1)
    rank = np.maximum(mag - ((1 << mbits) - 1), 0)
    return np.where(b & sign, -rank, rank)


@dataclass
class Measurement:
    maximum: int  # over every measured lane
    outside_floor: int | None  # over the lanes the row's near-zero floor leaves
    lanes: int
    worst_input: float
    nonfinite_failures: int


def measure(row: Row, result: np.ndarray) -> Measurement:
    """tt-llk's statistics of one cell: result is ttjax's output in the row's output format (float32 values)."""
    x = stimuli(row.fmt_in)
    g = golden(OPS[row.op], row.fmt_in, row.fmt_out, row.dest)
    r = result.astype(np.float32)
    nan = np.isnan(g) | np.isnan(r)
    finite_g, finite_r = np.isfinite(g), np.isfinite(r)
    disagree = ~nan & ((finite_g != finite_r) | (np.isinf(g) & np.isinf(r) & (np.sign(g) != np.sign(r))))
    normal = (x == 0) | (np.abs(x) >= np.float32(2.0**-126))
    seen = received(x, row.fmt_in, row.dest)
    op = OPS[row.op]
    claimed = (seen != 0) if op == "reciprocal" else (seen >= 0) if op in ("sqrt", "rsqrt") else np.ones(x.shape, bool)
    mask = ~nan & ~disagree & normal & claimed
    dist = np.abs(ranks(g, row.fmt_out) - ranks(r, row.fmt_out))
    measured = np.where(mask, dist, -1)
    worst = int(np.argmax(measured))
    outside = None
    if row.floor_atol is not None:
        gm = np.abs(g[mask])
        band = mask & (np.abs(g) < 0.01 * gm.max())
        rescued = band & (np.abs(g) <= row.floor_atol / 0.01) & (np.abs(r - g) <= row.floor_atol)
        outside = int(np.where(mask & ~rescued, dist, -1).max())
    return Measurement(int(measured.max()), outside, int(mask.sum()), float(x[worst]),
                       int((disagree & normal & claimed & ~np.isnan(g)).sum()))


def ttjax_result(row: Row) -> np.ndarray:
    """ttjax.sfpu's function on the row's stimuli, packed to the row's output format (float32 values)."""
    import jax
    import jax.numpy as jnp

    from ttjax import sfpu
    from ttjax.matrix_engine import pack

    x = stimuli(row.fmt_in)
    x = jnp.asarray(x, jnp.bfloat16) if row.fmt_in == "Float16_b" else jnp.asarray(x)
    fn = sfpu.FUNCTIONS[OPS[row.op]]
    out_dtype = jnp.bfloat16 if row.fmt_out == "Float16_b" else jnp.float32

    @jax.jit
    def run(x):
        dst = fn(x, approx=bool(row.approx), fp32_dest_acc_en=row.dest).astype(jnp.float32)
        return pack(dst, out_dtype, row.dest).astype(jnp.float32)

    return np.asarray(run(x))
