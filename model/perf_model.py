"""What a Llama decode step (or a prefill) would cost on a Wormhole system, op by op (ttjax.device_model's prices).

The ops are tt_transformers' (models/tt_transformers/tt/attention.py, mlp.py, decoder.py, lm_head.py):
per decoder layer the norms, the matmuls with the configs model.op_configs gives them, the heads and
rotary ops, the KV-cache update, flash decode over the cache, the residual adds and the layout ops
between sharded and interleaved, and the collectives the placement rules put there
(model.collectives, the list comm-report checks compiled programs against); per step the
embedding, the final norm and the LM head. Weights are counted at the preset's formats and the
sizes their DRAM shards are padded to; decode's one row per user is a whole tile.
"""

from __future__ import annotations

import dataclasses
import math

from model.collectives import analytic_layer_collectives
from model.config import ModelArgs
from model.errors import ConfigError
from model.op_configs import OpConfig, op_configs, validate
from model.precision import MathFidelitySetting, ModelOptimizations, OpGroup
from mesh.errors import OpConfigError
from ttjax.device_model import OpCost, System, ccl_cost, matmul_cost, sdpa_decode_cost, small_op_cost, system
from ttjax.program_config import MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig
from ttjax.wormhole import TILE, tile_bytes

ACTIVATION_BYTES = 2  # bfloat16 activations on the device
KV_CACHE_FORMAT = "bfloat8_b"  # tt_transformers' KV cache (both presets for Llama 3)
FIDELITY = {MathFidelitySetting.LOFI: "LoFi", MathFidelitySetting.HIFI2: "HiFi2", MathFidelitySetting.HIFI2_NA: "HiFi2",
            MathFidelitySetting.HIFI2_FP16: "HiFi2", MathFidelitySetting.HIFI4: "HiFi4", MathFidelitySetting.HIFI4_FP32: "HiFi4"}
OP_GROUPS = {("wqkv", "decode"): OpGroup.LI_QKV_DECODE, ("wqkv", "prefill"): OpGroup.LI_QKV_PREFILL, ("wo", "decode"): OpGroup.LI_O_DECODE,
             ("wo", "prefill"): OpGroup.LI_O_PREFILL, ("w1_w3", "decode"): OpGroup.LI_FF1_FF3, ("w1_w3", "prefill"): OpGroup.LI_FF1_FF3,
             ("w2", "decode"): OpGroup.LI_FF2, ("w2", "prefill"): OpGroup.LI_FF2, ("lm_head", "decode"): OpGroup.LM_HEAD}


def mesh_placed(args: ModelArgs, sys: System, batch: int, precision: str) -> ModelArgs:
    """args as placed on the system's mesh, with the preset (its CCL formats) and the decode batch."""
    opt = ModelOptimizations.named(precision, args.model_name)
    cfg = dataclasses.replace(args.model_config, cluster_shape=sys.mesh)
    return args.replace(max_batch_size=batch, optimizations=opt, model_config=cfg)


def _fidelity(args: ModelArgs, name: str, mode: str) -> str:
    setting = args.optimizations.get_math_fidelity(OP_GROUPS[(name, mode)]) if (name, mode) in OP_GROUPS else None
    return FIDELITY.get(setting, "HiFi2")  # tt_transformers' default for its matmuls


def _matmul(op: OpConfig, args: ModelArgs, sys: System, mode: str, rows: int) -> OpCost:
    k, n = op.b.shape
    dram_sharded = isinstance(op.program_config, MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig)
    if dram_sharded:  # the weight as stored: N padded to a tile per DRAM bank
        spec = op.b.memory_config.shard_spec
        n_stored, cores = spec.shape[1] * spec.num_cores(), sys.chip.dram_banks
    else:
        grid = op.program_config.compute_with_storage_grid_size
        n_stored, cores = n, grid.x * grid.y
    weight = math.ceil(k / TILE) * math.ceil(n_stored / TILE) * tile_bytes(op.b.dtype)
    act = rows * k * ACTIVATION_BYTES
    out = rows * n * ACTIVATION_BYTES
    return matmul_cost(op.name, sys, m=rows, k=k, n=n, weight_bytes=weight, act_bytes=act, out_bytes=out, cores=cores,
                       fidelity=_fidelity(args, op.name, mode), dram_sharded=dram_sharded, act_in_dram=mode == "prefill", count=op.count)


def _configs(args: ModelArgs, device: str, mode: str, seq_len: int = 128, precision: str = "performance") -> list[OpConfig]:
    """tt_transformers' configs for the ops, each checked as the chip would: a config it refuses is not priced."""
    ops = op_configs(args, device, mode, seq_len, precision)
    for op in ops:
        validate(op)
    return ops


def tile_rows(rows: int) -> int:
    """Rows as the device moves them: whole tiles (decode's 1 user is 32 rows, in matmuls and collectives alike)."""
    return -(-rows // TILE) * TILE


def _collectives(args: ModelArgs, sys: System, mode: str, tokens: int) -> list[OpCost]:
    out = []
    for c in analytic_layer_collectives(args, mode, tile_rows(tokens), ACTIVATION_BYTES):
        cost = ccl_cost(sys, c.kind, c.group, c.moved_bytes, c.axis)
        cost.name = f"{c.kind} ({c.group} devices)"
        out.append(cost)
    return out


def decode_layer(args: ModelArgs, device: str, *, batch: int = 1, context: int = 256, precision: str = "performance") -> list[OpCost]:
    """One decoder layer's ops in a decode step at cache position context, in the order they run."""
    sys = system(device)
    placed = mesh_placed(args, sys, batch, precision)
    lay = placed.layout
    configs = {op.name: op for op in _configs(args, device, "decode", precision=precision)}
    distributed = sys.mesh[0] > 1  # a Galaxy's norms: partial statistics, an all-gather, then the norm
    norm = [small_op_cost("rms_norm_pre_all_gather"), small_op_cost("rms_norm_post_all_gather")] if distributed else [small_op_cost("rms_norm")]
    users = batch if not lay.user_groups(batch) > 1 else batch // lay.user_groups(batch)
    kv = users * 2 * lay.n_local_kv_heads * context * args.head_dim * tile_bytes(KV_CACHE_FORMAT) / (TILE * TILE)
    sdpa_flops = 4.0 * users * lay.n_local_heads * context * args.head_dim
    ops = [*norm, _matmul(configs["wqkv"], placed, sys, "decode", TILE), small_op_cost("sharded_to_interleaved"),
           small_op_cost("nlp_create_qkv_heads_decode"), small_op_cost("rotary_embedding_llama"), small_op_cost("paged_update_cache", count=2),
           sdpa_decode_cost(sys, kv, sdpa_flops), small_op_cost("nlp_concat_heads_decode"), small_op_cost("interleaved_to_sharded")]
    if "wo" in configs:
        ops.append(_matmul(configs["wo"], placed, sys, "decode", TILE))
    else:  # a Galaxy's wo: interleaved, ttnn's own config (tt gives none); priced as a DRAM-read 1D matmul on 8x8
        ops.append(matmul_cost("wo", sys, m=TILE, k=lay.n_local_heads * args.head_dim, n=args.dim // sys.mesh[1],
                               weight_bytes=lay.n_local_heads * args.head_dim * args.dim // sys.mesh[1] * tile_bytes(args_format(placed, "WO")) / 1024,
                               act_bytes=TILE * lay.n_local_heads * args.head_dim * 2, out_bytes=0, cores=64,
                               fidelity=_fidelity(placed, "wo", "decode"), dram_sharded=False, act_in_dram=False))
    ops += [small_op_cost("add"), *norm, small_op_cost("reshard")]
    if "w1_w3" in configs:
        ops += [_matmul(configs["w1_w3"], placed, sys, "decode", TILE), small_op_cost("mul"), _matmul(configs["w2"], placed, sys, "decode", TILE)]
    else:  # a Galaxy's MLP below dim 4096: interleaved weights and ttnn's own configs, priced as 1D matmuls on 8x8
        for name, k, n, count in (("w1_w3", args.dim // sys.mesh[1], args.hidden_dim // sys.mesh[0], 2),
                                  ("w2", args.hidden_dim // sys.mesh[0], args.dim // sys.mesh[1], 1)):
            group = "FF1_FF3" if name == "w1_w3" else "FF2"
            ops.append(matmul_cost(name, sys, m=TILE, k=k, n=n, weight_bytes=k * n * tile_bytes(args_format(placed, group)) / 1024,
                                   act_bytes=TILE * k * 2, out_bytes=0, cores=64, fidelity=_fidelity(placed, name, "decode"),
                                   dram_sharded=False, act_in_dram=False, count=count))
            if name == "w1_w3":
                ops.append(small_op_cost("mul"))
    ops.append(small_op_cost("add"))
    ops += _collectives(placed, sys, "decode", batch)
    return ops


def args_format(args: ModelArgs, group: str) -> str:
    return args.optimizations.get_tensor_dtype(group).value


def decode_step(args: ModelArgs, device: str, *, batch: int = 1, context: int = 256, precision: str = "performance") -> list[tuple[str, OpCost]]:
    """Every op of a decode step, each tagged with where it runs ("layer" ops run n_layers times)."""
    sys = system(device)
    placed = mesh_placed(args, sys, batch, precision)
    heads = [op for op in _configs(args, device, "decode", precision=precision) if op.name == "lm_head"]
    step = [("step", small_op_cost("embedding")), ("step", small_op_cost("rms_norm"))]
    step += [("step", _matmul(op, placed, sys, "decode", TILE)) for op in heads]
    if not heads:  # a Galaxy's LM head: one weight, the vocab padded to 128K, split (dim / 4, 128K / 8) over the devices
        k, n = args.dim // 4, 128 * 1024 // 8
        step.append(("step", matmul_cost("lm_head", sys, m=TILE, k=k, n=n, weight_bytes=k * n * tile_bytes("bfloat8_b") / (TILE * TILE),
                                         act_bytes=TILE * k * 2, out_bytes=0, cores=64, fidelity="HiFi2", dram_sharded=False, act_in_dram=False)))
    layer = decode_layer(args, device, batch=batch, context=context, precision=precision)
    tagged = [("layer", op) for op in layer] + step
    check_dram_capacity(args, sys, tagged)
    return tagged


def check_dram_capacity(args: ModelArgs, sys: System, tagged) -> None:
    """A model whose weights do not fit a chip's DRAM does not run there, whatever its configs say."""
    weights = sum(op.count * (args.n_layers if where == "layer" else 1) * _weight_bytes(op) for where, op in tagged)
    weights += args.vocab_size * args.dim * ACTIVATION_BYTES / sys.num_devices  # the embedding table, bfloat16
    if weights > sys.chip.dram_capacity:
        raise OpConfigError(f"{args.model_name} does not fit a {sys.name}: each chip would hold {weights / 1e9:.1f} GB of weights, "
                            f"more than its {sys.chip.dram_capacity / 1e9:.0f} GB of DRAM.")


def _weight_bytes(op: OpCost) -> float:
    """A matmul's weight: what it reads from DRAM in decode (its activation stays in L1)."""
    return op.dram_bytes if op.name in ("wqkv", "wo", "w1_w3", "w2", "lm_head") else 0.0


def predict(args: ModelArgs, device: str, mode: str = "decode", *, batch: int = 1, context: int = 256, seq_len: int = 128,
            precision: str = "performance") -> dict:
    """The per-op table and the totals: decode's tokens/s/user, or prefill's time to first token."""
    sys = system(device)
    if mode == "decode":
        tagged = decode_step(args, device, batch=batch, context=context, precision=precision)
    elif mode == "prefill":
        tagged = [("layer", op) for op in prefill_layer(args, device, seq_len=seq_len, precision=precision)]
    else:
        raise ConfigError(f"mode {mode!r} is not 'decode' or 'prefill'.")
    rows = []
    total = 0.0
    for where, op in tagged:
        times = args.n_layers if where == "layer" else 1
        t = op.time_s(sys) * times
        total += t
        rows.append({**op.as_dict(sys), "where": where, "per_step_us": t * 1e6})
    device_s = total
    if mode == "decode":
        total += sys.host_step_s
    out = {"model": args.model_name, "device": device, "mode": mode, "batch": batch, "precision": precision, "n_layers": args.n_layers,
           "device_time_s": device_s, "host_step_s": sys.host_step_s if mode == "decode" else 0.0, "step_s": total, "ops": rows}
    if mode == "decode":
        out["context"] = context
        out["tokens_per_s_per_user"] = 1.0 / total
    else:
        out["seq_len"] = seq_len
        out["prefill_s"] = total  # the decoder layers' matmuls, attention and collectives
    return out


def prefill_layer(args: ModelArgs, device: str, *, seq_len: int = 128, precision: str = "performance") -> list[OpCost]:
    """One decoder layer of a prefill of seq_len tokens: its matmuls over DRAM activations, flash attention, the
    collectives."""
    sys = system(device)
    placed = mesh_placed(args, sys, 1, precision)
    lay = placed.layout
    ops = []
    for op in _configs(args, device, "prefill", seq_len, precision):
        if op.b is None:
            flops = 2.0 * lay.n_local_heads * seq_len * seq_len * args.head_dim  # causal: half of 4 * S^2 * d per head
            grid = op.sdpa[3]
            rate = sys.chip.flops_per_core_lofi / 4 * grid.x * grid.y  # prefill SDPA runs HiFi4
            kv = 2 * lay.n_local_kv_heads * seq_len * args.head_dim * 2
            cost = OpCost("sdpa", 1, kv, 0.0, 0.0, flops, "HiFi4")
            cost.bound, cost.device_s = max((("compute", flops / rate), ("DRAM", kv / sys.chip.dram_interleaved_bandwidth)), key=lambda kv_: kv_[1])
            ops.append(cost)
        else:
            pieces = max(1, math.prod(op.a.shape[:-1]) // op.a.shape[-2])
            ops.append(dataclasses.replace(_matmul(op, placed, sys, "prefill", op.a.shape[-2]), count=op.count * pieces))
    ops += _collectives(placed, sys, "prefill", seq_len)
    return ops
