"""`ttjax precision`: the per-op precision table of a model in a mode, as tt_transformers' model_config sets it:
for each op group its weight dtype, the format it writes, its compute-kernel config, the SFPU functions it runs, and
what ttjax emulates of it."""

from __future__ import annotations

from model.precision import MathFidelitySetting, ModelOptimizations, OpGroup, OutputSite, TensorGroup, kernel_config

# op group -> (the tensor group of its weight, or of the KV cache it reads; the output site it writes)
OPS = {
    OpGroup.LI_FF1_FF3: (TensorGroup.FF1_FF3, OutputSite.FF1_FF3),
    OpGroup.LI_FF2: (TensorGroup.FF2, OutputSite.FF2),
    OpGroup.LI_QKV_DECODE: (TensorGroup.WQKV, OutputSite.QKV),
    OpGroup.LI_QKV_PREFILL: (TensorGroup.WQKV, OutputSite.QKV),
    OpGroup.SDPA_DECODE: (TensorGroup.KV_CACHE, None),
    OpGroup.SDPA_PREFILL: (TensorGroup.KV_CACHE, None),
    OpGroup.LI_O_DECODE: (TensorGroup.WO, OutputSite.WO_DECODE),
    OpGroup.LI_O_PREFILL: (TensorGroup.WO, OutputSite.WO_PREFILL),
    OpGroup.LM_HEAD: (TensorGroup.LM_HEAD, OutputSite.LM_HEAD),
}


# What each op runs on the SFPU (tt-llk's functions, ttjax.sfpu), by its compute kernel config. The SDPA programs
# take tt_transformers' exp_approx_mode=False; decode with at most 16 Q heads a device takes the approximate exp anyway
# (the kernel's half-tile rule).
def sfpu_functions(op: OpGroup, cfg) -> str:
    recip = "approx" if cfg.math_approx_mode else "accurate"
    if op is OpGroup.SDPA_DECODE:
        return f"exp accurate (approx at <=16 Q heads), correction exp polynomial, reciprocal {recip}"
    if op is OpGroup.SDPA_PREFILL:
        exp = "accurate" if cfg.fp32_dest_acc_en else "approx (streaming path)"
        return f"exp {exp}, correction exp polynomial, reciprocal {recip}"
    if op is OpGroup.NORM:
        return f"1/N multiply, rsqrt {recip}"
    if op is OpGroup.MLP_MUL:
        return "silu"
    return "-"


SFPU_OPS = (OpGroup.SDPA_DECODE, OpGroup.SDPA_PREFILL, OpGroup.NORM, OpGroup.MLP_MUL)
NORM_WEIGHT, MUL_OUTPUT = "-", OutputSite.MLP_MUL


def op_table(opt: ModelOptimizations, galaxy: bool = False) -> list[dict]:
    """One row per op group (the matmuls, the SDPAs, the norms, the MLP's multiply; then Q into prefill SDPA): weight
    dtype, output format ("-": the activation dtype), the config's setting and kernel config, what the op runs on the
    SFPU, and which halves of the Tensix ttjax emulates for it (fpu: the matrix engine's fidelity and Dst; sfpu: tt-llk's
    exp / reciprocal / rsqrt / SiLU). ROPE is the rotary embedding, on the matrix engine only."""
    act = opt.get_tensor_dtype(TensorGroup.ACTIVATION).value
    settings = dict(opt.fidelity)
    rows = []
    for op in (*OPS, OpGroup.NORM, OpGroup.MLP_MUL, OpGroup.ROPE):
        group, site = OPS.get(op, (None, MUL_OUTPUT if op is OpGroup.MLP_MUL else None))
        setting = settings.get(op)
        if op is OpGroup.NORM and galaxy and setting is MathFidelitySetting.RMSNORM:
            setting = MathFidelitySetting.RMSNORM_TG  # distributed_norm.py's ln_cfg on a Galaxy
        row = {"op": op.value, "weight": opt.get_tensor_dtype(group).value if group else NORM_WEIGHT,
               "output": (opt.output_setting(site, galaxy) or act) if site else "-", "setting": setting.value if setting else "exact"}
        if setting is not None:
            cfg = kernel_config(setting)
            halves = [h for h, on, used in (("fpu", opt.fpu, True), ("sfpu", opt.sfpu, op in SFPU_OPS)) if on and used]
            row |= {"math_fidelity": cfg.math_fidelity.name, "fp32_dest_acc_en": cfg.fp32_dest_acc_en,
                    "packer_l1_acc": cfg.packer_l1_acc, "math_approx_mode": cfg.math_approx_mode,
                    "sfpu": sfpu_functions(op, cfg), "emulated": "+".join(halves) or "none"}
        rows.append(row)
    rows.append({"op": "Q into SDPA_PREFILL", "weight": "-",
                 "output": getattr(opt.output_setting(OutputSite.Q_PREFILL, galaxy), "value", act), "setting": "-"})
    return [{k: (v.value if hasattr(v, "value") else v) for k, v in row.items()} for row in rows]


def format_table(model_name: str, mode: str, rows: list[dict], galaxy: bool) -> str:
    head = f"{model_name}, {mode}{' (Galaxy)' if galaxy else ''}: per-op precision as tt_transformers' model_config sets it"
    cols = ("op", "weight", "output", "setting", "math_fidelity", "fp32_dest_acc_en", "packer_l1_acc", "math_approx_mode",
            "emulated", "sfpu")
    width = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = [head, "  ".join(c.ljust(width[c]) for c in cols).rstrip()]
    lines += ["  ".join(str(r.get(c, "")).ljust(width[c]) for c in cols).rstrip() for r in rows]
    lines.append("emulated: the halves of a Tensix ttjax computes as the chip does for the op (fpu: the matrix engine's "
                 "fidelity and Dst; sfpu: the SFPU functions in the sfpu column, as tt-llk's kernels compute them); "
                 "none: exact float math in the op's formats.")
    return "\n".join(lines)
