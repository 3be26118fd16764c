"""`ttjax precision`: the per-op precision table of a model in a mode, as tt_transformers' model_config sets it:
for each op group its weight dtype, the format it writes, and its compute-kernel config."""

from __future__ import annotations

from model.precision import ModelOptimizations, OpGroup, OutputSite, TensorGroup, kernel_config

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


SDPA_OPS = (OpGroup.SDPA_DECODE, OpGroup.SDPA_PREFILL)


def op_table(opt: ModelOptimizations, galaxy: bool = False) -> list[dict]:
    """One row per op group (and the SiLU * w3 product, Q into prefill SDPA): weight dtype, output format ("-": the
    activation dtype), fidelity setting and its kernel config."""
    act = opt.get_tensor_dtype(TensorGroup.ACTIVATION).value
    rows = []
    for op, (group, site) in OPS.items():
        setting = opt.get_math_fidelity(op)
        row = {"op": op.value, "weight": opt.get_tensor_dtype(group).value,
               "output": (opt.output_setting(site, galaxy) or act) if site else "-", "setting": setting.value if setting else "exact"}
        if setting is not None:
            cfg = kernel_config(setting)
            row |= {"math_fidelity": cfg.math_fidelity.name, "fp32_dest_acc_en": cfg.fp32_dest_acc_en,
                    "packer_l1_acc": cfg.packer_l1_acc, "math_approx_mode": cfg.math_approx_mode,
                    # the matmuls compute what the matrix engine does; SDPA's settings are recorded, and ttjax's
                    # flash attention computes in float32 (its intermediate formats and SFPU exp are not emulated)
                    "emulated": op not in SDPA_OPS}
        rows.append(row)
    for site, what in ((OutputSite.MLP_MUL, "MLP silu(w1) * w3"), (OutputSite.Q_PREFILL, "Q into SDPA_PREFILL")):
        rows.append({"op": what, "weight": "-", "output": getattr(opt.output_setting(site, galaxy), "value", act), "setting": "-"})
    return [{k: (v.value if hasattr(v, "value") else v) for k, v in row.items()} for row in rows]


def format_table(model_name: str, mode: str, rows: list[dict], galaxy: bool) -> str:
    head = f"{model_name}, {mode}{' (Galaxy)' if galaxy else ''}: per-op precision as tt_transformers' model_config sets it"
    cols = ("op", "weight", "output", "setting", "math_fidelity", "fp32_dest_acc_en", "packer_l1_acc", "math_approx_mode",
            "emulated")
    width = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = [head, "  ".join(c.ljust(width[c]) for c in cols)]
    lines += ["  ".join(str(r.get(c, "")).ljust(width[c]) for c in cols).rstrip() for r in rows]
    if any(r.get("emulated") is False for r in rows):
        lines.append("emulated False: the setting is tt_transformers'; ttjax's SDPA computes in float32 (not emulated)")
    return "\n".join(lines)
