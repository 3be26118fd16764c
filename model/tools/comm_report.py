"""Communication report: the collectives a compiled prefill or decode program runs, per decoder layer,
and the bytes each moves per token, next to the figure the placement rules predict.

Bytes are what one device sends (= receives) in a bandwidth-optimal ring, per step:
all-gather (n-1)/n of its output, reduce-scatter (n-1)/n of its input, all-reduce twice
(n-1)/n of its buffer. Per token divides by the tokens of a step (batch in decode, sequence
length in prefill). XLA may merge collectives (it can combine the w1 and w3 reductions into
one on 2D meshes); counts are reported as compiled, bytes compare one for one.

Payload sizes: every value at the size of the format the model hands the collective, which model.ccl
names in a scope read from each op's op_name (XLA:CPU carries bfloat16 collectives as float32, and
moves casts across them, so the HLO's own dtypes would say otherwise); a collective outside model.ccl
at its HLO dtype. The format is the tensor's dtype, except for the reductions tt_transformers runs in
ccl_dtype on a Galaxy (2D meshes: wqkv, wo, w2, LM head): when the precision config's CCL output is a
block float their inputs are rounded to it (carried as bfloat16), and they count at the block float's
size: bfloat8_b 1088 bytes per 1024 values (1 exponent byte per 16 values + 1 byte per value), bfloat4_b 576.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import jax
import numpy as np

from mesh import MeshDevice
from model.ccl import CCL_SCOPE, ccl_format
from model.collectives import Collective, analytic_layer_collectives, bytes_per_value  # noqa: F401 (comm-report's names)
from model.config import ModelArgs
from model.errors import ConfigError
from model.serving.placement import Placement
from model.serving.programs import build_program, decode, prefill
from model.norm import uses_distributed_norm
from model.sharding import abstract_params, allocate_mesh_kv_cache, mesh_args
from model.rope import RotMats

KINDS = ("all-gather", "reduce-scatter", "all-reduce")
_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1, "f64": 8, "s64": 8}
_OP = re.compile(r"= (\(.*?\)|\S+) (all-gather|reduce-scatter|all-reduce)(?:-start)?\(")
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\]")
_FORMAT = re.compile(r'op_name="[^"]*/' + CCL_SCOPE + r'(\w+)/')


def _payload(shape_text: str, fmt: str | None = None) -> float:
    """Output bytes of a collective: its HLO dtypes', or every value at fmt's size (a ccl_dtype payload)."""
    total = 0
    for dtype, dims in _SHAPE.findall(shape_text):
        values = int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
        total += values * (bytes_per_value(fmt) if fmt else _BYTES.get(dtype, 4))
    return total


def hlo_collectives(hlo_text: str) -> list[Collective]:
    """The all-gathers, reduce-scatters and all-reduces of a compiled program, with their decoder layer."""
    out = []
    for line in hlo_text.splitlines():
        m = _OP.search(line)
        if not m:
            continue
        groups = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
        layer = re.search(r'op_name="[^"]*/layer_(\d+)/', line)
        fmt = _FORMAT.search(line)
        out.append(
            Collective(
                kind=m.group(2),
                layer=int(layer.group(1)) if layer else None,
                group=len(groups.group(1).split(",")) if groups else 1,
                payload_bytes=_payload(m.group(1), fmt.group(1) if fmt else None),
                fmt=fmt.group(1) if fmt else None,
            )
        )
    return out


def compiled_program(args: ModelArgs, mesh_device: MeshDevice, mode: str, *, batch: int = 1, seq_len: int = 128):
    """Compile prefill or decode for abstract (weightless) params on the mesh."""
    rows, cols = mesh_device.shape
    params = abstract_params(args, mesh_device)
    cache = jax.eval_shape(lambda: allocate_mesh_kv_cache(args, mesh_device, batch))

    def spec(*shape, dtype=np.int32):
        return jax.ShapeDtypeStruct((rows, cols, *shape), dtype, sharding=mesh_device.sharding)

    table = spec(args.max_seq_len, args.head_dim, dtype=np.float32)
    rot = RotMats(cos=table, sin=table, trans_mat=spec(32, 32, dtype=np.float32))

    if mode == "prefill":
        example = (params, spec(1, seq_len), rot, cache, spec(), spec())
        return build_program(prefill, args, Placement(args, mesh_device)).lower(*example).compile()
    return build_program(decode, args, Placement(args, mesh_device)).lower(params, spec(batch), spec(batch), rot, cache).compile()


def comm_report(args: ModelArgs, mesh_device: MeshDevice, mode: str, *, batch: int = 1, seq_len: int = 128, **config) -> dict:
    """The report as a dict (JSON-ready): per decoder layer, collectives as compiled and as predicted."""
    if mode not in ("prefill", "decode"):
        raise ConfigError(f"mode must be 'prefill' or 'decode', got {mode!r}.")
    args = mesh_args(args.replace(max_batch_size=batch, max_seq_len=max(args.max_seq_len, seq_len)), mesh_device, **config)
    program = compiled_program(args, mesh_device, mode, batch=batch, seq_len=seq_len)
    found = hlo_collectives(program.as_text())
    tokens = batch if mode == "decode" else seq_len
    predicted = analytic_layer_collectives(args, mode, tokens)
    by_layer = defaultdict(list)
    for c in found:
        by_layer[c.layer].append(c)

    def summary(cs):
        return {
            "ops": dict(Counter(c.kind for c in cs)),
            "bytes_per_token": sum(c.moved_bytes for c in cs) / tokens,
        }

    layers = [{"layer": i, **summary(by_layer.get(i, []))} for i in range(args.n_layers)]
    cfg, lay = args.model_config, args.layout
    return {
        "mesh": f"{mesh_device.shape[0]}x{mesh_device.shape[1]}",
        "mode": mode,
        "tokens_per_step": tokens,
        "ccl": cfg.ccl,
        "ccl_format": ccl_format(args, "qkv"),  # the format the 2D reductions in ccl_dtype carry (None: as computed)
        "wo": "all-gather + column-parallel" if lay.wo_gathered else "row-parallel",
        "user_groups": lay.user_groups(tokens) if mode == "decode" else 1,
        "norm": "distributed" if uses_distributed_norm(args, mode) else "replicated",
        "topology": cfg.topology,
        "layers": layers,
        "outside_layers": summary(by_layer.get(None, [])),
        "analytic_per_layer": summary(predicted),
        "total_bytes_per_token": sum(c.moved_bytes for c in found) / tokens,
    }


def format_report(rep: dict) -> str:
    a = rep["analytic_per_layer"]
    lines = [
        f"mesh {rep['mesh']}, {rep['mode']}, {rep['tokens_per_step']} token(s) per step, ccl={rep['ccl']}, "
        f"norm={rep['norm']}, topology={rep['topology']}, wo {rep['wo']}, {rep['user_groups']} user group(s)"
        + (f", CCL payloads in {rep['ccl_format']}" if rep["ccl_format"] else ""),
        f"{'layer':>7}  {'collectives (compiled HLO)':<52}{'bytes/token':>12}{'analytic':>12}",
    ]
    fmt_ops = lambda ops: ", ".join(f"{n} {k}" for k, n in sorted(ops.items())) or "none"  # noqa: E731
    for row in rep["layers"]:
        lines.append(f"{row['layer']:>7}  {fmt_ops(row['ops']):<52}{row['bytes_per_token']:>12.0f}{a['bytes_per_token']:>12.0f}")
    o = rep["outside_layers"]
    lines.append(f"{'other':>7}  {fmt_ops(o['ops']):<52}{o['bytes_per_token']:>12.0f}")
    lines.append(f"analytic per layer: {fmt_ops(a['ops'])}")
    lines.append(f"total bytes per token per device: {rep['total_bytes_per_token']:.0f}")
    return "\n".join(lines)
