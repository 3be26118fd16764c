"""Precision configs, as tt_transformers' model_config sets them (TensorGroup, PrecisionSetting, OpGroup,
MathFidelitySetting, ModelOptimizations), per model and per decoder layer.

A config says, for one model:
- the storage dtype of each tensor group (weights, the KV cache, the activations; ttjax adds EMBEDDING
  and LM_HEAD, which tt_transformers fixes in its modules);
- the compute-kernel config of each op group (the matmuls of the MLP, of attention in decode and in
  prefill, the SDPAs, the LM head): a math fidelity, and whether Dst accumulates in FP32. ttjax's
  matmuls compute what the matrix engine computes for it (ttjax.matrix_engine); fidelity "off" makes
  them exact float math instead;
- the format of the activations tt_transformers stores between ops (OutputSite): the SiLU*w3 product,
  Q before prefill SDPA, wo's output in prefill and the LM head's logits in bfloat8_b, and on a Galaxy
  (a 2D mesh here) every QKV / w1 / w3 / wo / w2 output and the all-reduce inputs (ccl_dtype).

Sources (tenstorrent/tt-metal, read at commit 0039cbf): models/tt_transformers/tt/model_config.py
lines 52-91 (the enums), 93-201 (accuracy / performance by model), 251-281 (defaults), 653-695 (the
kernel configs); mlp.py, attention.py and lm_head.py for the output dtypes and the LM head's config.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace

from model.errors import ConfigError


class TensorGroup(str, enum.Enum):
    FF1_FF3 = "FF1_FF3"
    FF2 = "FF2"
    WQKV = "WQKV"
    WO = "WO"
    KV_CACHE = "KV_CACHE"
    ACTIVATION = "ACTIVATION"
    EMBEDDING = "EMBEDDING"
    LM_HEAD = "LM_HEAD"


class PrecisionSetting(str, enum.Enum):
    BFP4 = "bfloat4_b"
    BFP8 = "bfloat8_b"
    BF16 = "bfloat16"
    FP32 = "float32"


class OpGroup(str, enum.Enum):
    """Matmul-like ops that take a compute-kernel config (tt_transformers' OpGroup, plus the LM head)."""

    LI_FF1_FF3 = "LI_FF1_FF3"
    LI_FF2 = "LI_FF2"
    LI_QKV_DECODE = "LI_QKV_DECODE"
    LI_O_DECODE = "LI_O_DECODE"
    SDPA_DECODE = "SDPA_DECODE"
    LI_QKV_PREFILL = "LI_QKV_PREFILL"
    LI_O_PREFILL = "LI_O_PREFILL"
    SDPA_PREFILL = "SDPA_PREFILL"
    LM_HEAD = "LM_HEAD"  # lm_head.py hard-codes HiFi2 without FP32 accumulation
    NORM = "NORM"  # models/common/rmsnorm.py builds its own config (distributed_norm.py another on TG)
    MLP_MUL = "MLP_MUL"  # ttnn.mul(w1_out, w3_out, input_tensor_a_activations=[SILU]) takes binary_ng's defaults
    ROPE = "ROPE"  # ttnn.experimental.rotary_embedding_llama, called without a config: the op's own default


class MathFidelitySetting(str, enum.Enum):
    LOFI = "lofi"
    HIFI2 = "hifi2"
    HIFI2_NA = "hifi2na"  # packer_l1_acc=False and fp32_dest_acc_en=False
    HIFI2_FP16 = "hifi2fp16"  # fp32_dest_acc_en=False
    HIFI4 = "hifi4"
    HIFI4_FP32 = "hifi4fp32"
    # Not tt_transformers' settings: the configs its code passes (or leaves) for ops outside its OpGroup enum.
    RMSNORM = "rmsnorm"  # models/common/rmsnorm.py: HiFi2, math_approx_mode False, FP32 Dst, packer_l1_acc
    RMSNORM_TG = "rmsnorm_tg"  # tt_transformers distributed_norm.py's ln_cfg on a Galaxy: the same with a 16-bit Dst
    BINARY = "binary"  # binary_ng's own config (no compute_kernel_config given): HiFi4, a 16-bit Dst for bf16 / bfp8
    ROPE = "rope"  # rotary_embedding_llama's default (rotary_embedding_llama.cpp): HiFi4, approx, a 16-bit Dst


class OutputSite(str, enum.Enum):
    """Activations tt_transformers writes in a format of their own (the dtype= of the op that makes them)."""

    FF1_FF3 = "FF1_FF3"  # w1 and w3 outputs
    MLP_MUL = "MLP_MUL"  # silu(w1 x) * (w3 x)
    FF2 = "FF2"
    QKV = "QKV"
    Q_PREFILL = "Q_PREFILL"  # Q as prefill SDPA reads it
    WO_DECODE = "WO_DECODE"
    WO_PREFILL = "WO_PREFILL"
    LM_HEAD = "LM_HEAD"  # the logits
    CCL = "CCL"  # all-reduce inputs on a Galaxy (ccl_dtype)


def kernel_config(setting: MathFidelitySetting):
    """The ttjax.WormholeComputeKernelConfig tt_transformers builds for a setting (model_config.py 653-695)."""
    from ttjax.matrix_engine import MathFidelity as F
    from ttjax.matrix_engine import WormholeComputeKernelConfig as C

    return {
        MathFidelitySetting.LOFI: C(F.LoFi, math_approx_mode=False, fp32_dest_acc_en=False, packer_l1_acc=True),
        MathFidelitySetting.HIFI2: C(F.HiFi2, math_approx_mode=True, fp32_dest_acc_en=True, packer_l1_acc=True),
        MathFidelitySetting.HIFI2_NA: C(F.HiFi2, math_approx_mode=False, fp32_dest_acc_en=False, packer_l1_acc=False),
        MathFidelitySetting.HIFI2_FP16: C(F.HiFi2, math_approx_mode=False, fp32_dest_acc_en=False, packer_l1_acc=True),
        MathFidelitySetting.HIFI4: C(F.HiFi4, math_approx_mode=False, fp32_dest_acc_en=True, packer_l1_acc=True),
        MathFidelitySetting.HIFI4_FP32: C(F.HiFi4, math_approx_mode=True, fp32_dest_acc_en=True, packer_l1_acc=True),
        MathFidelitySetting.RMSNORM: C(F.HiFi2, math_approx_mode=False, fp32_dest_acc_en=True, packer_l1_acc=True),
        MathFidelitySetting.RMSNORM_TG: C(F.HiFi2, math_approx_mode=False, fp32_dest_acc_en=False, packer_l1_acc=False),
        MathFidelitySetting.BINARY: C(F.HiFi4, math_approx_mode=False, fp32_dest_acc_en=False, packer_l1_acc=False),
        MathFidelitySetting.ROPE: C(F.HiFi4, math_approx_mode=True, fp32_dest_acc_en=False, packer_l1_acc=False),
    }[setting]


def _setting(value) -> PrecisionSetting:
    try:
        return PrecisionSetting(value.value if isinstance(value, PrecisionSetting) else value)
    except ValueError as e:
        raise ConfigError(f"precision {value!r} is not one of {', '.join(s.value for s in PrecisionSetting)}.") from e


def _group(value) -> TensorGroup:
    try:
        return TensorGroup(value.value if isinstance(value, TensorGroup) else str(value).upper())
    except ValueError as e:
        raise ConfigError(f"tensor group {value!r} is not one of {', '.join(g.value for g in TensorGroup)}.") from e


# tt_transformers' defaults (model_config.py 251-281): every weight bfloat8_b, the MLP in HiFi2 with 16-bit Dst,
# attention HiFi2, prefill SDPA HiFi4; here the activations bfloat16, the embedding bfloat16, the LM head bfloat8_b.
DEFAULT_TENSORS = {
    TensorGroup.FF1_FF3: PrecisionSetting.BFP8, TensorGroup.FF2: PrecisionSetting.BFP8, TensorGroup.WQKV: PrecisionSetting.BFP8,
    TensorGroup.WO: PrecisionSetting.BFP8, TensorGroup.KV_CACHE: PrecisionSetting.BFP8, TensorGroup.ACTIVATION: PrecisionSetting.BF16,
    TensorGroup.EMBEDDING: PrecisionSetting.BF16, TensorGroup.LM_HEAD: PrecisionSetting.BFP8,
}
DEFAULT_FIDELITY = {
    OpGroup.LI_FF1_FF3: MathFidelitySetting.HIFI2_FP16, OpGroup.LI_FF2: MathFidelitySetting.HIFI2_FP16,
    OpGroup.LI_QKV_DECODE: MathFidelitySetting.HIFI2, OpGroup.SDPA_DECODE: MathFidelitySetting.HIFI2,
    OpGroup.LI_O_DECODE: MathFidelitySetting.HIFI2, OpGroup.LI_QKV_PREFILL: MathFidelitySetting.HIFI2,
    OpGroup.SDPA_PREFILL: MathFidelitySetting.HIFI4, OpGroup.LI_O_PREFILL: MathFidelitySetting.HIFI2,
    OpGroup.LM_HEAD: MathFidelitySetting.HIFI2_FP16, OpGroup.NORM: MathFidelitySetting.RMSNORM,
    OpGroup.MLP_MUL: MathFidelitySetting.BINARY, OpGroup.ROPE: MathFidelitySetting.ROPE,
}
# mlp.py, attention.py, lm_head.py: the dtype= of each op off a Galaxy (None: the activation dtype)...
DEFAULT_OUTPUTS = {
    OutputSite.MLP_MUL: PrecisionSetting.BFP8, OutputSite.Q_PREFILL: PrecisionSetting.BFP8,
    OutputSite.WO_PREFILL: PrecisionSetting.BFP8, OutputSite.LM_HEAD: PrecisionSetting.BFP8, OutputSite.CCL: PrecisionSetting.BFP8,
}
# ...and what a Galaxy (TG) writes in bfloat8_b besides.
GALAXY_OUTPUTS = {site: PrecisionSetting.BFP8 for site in (OutputSite.FF1_FF3, OutputSite.FF2, OutputSite.QKV, OutputSite.WO_DECODE)}
ATTENTION_OPS = (OpGroup.LI_QKV_DECODE, OpGroup.LI_QKV_PREFILL, OpGroup.SDPA_DECODE, OpGroup.SDPA_PREFILL, OpGroup.LI_O_DECODE, OpGroup.LI_O_PREFILL)
FIDELITY_OFF = "+fidelity=off"
SFPU_OFF = "+sfpu=off"
EMULATION_SWITCHES = (FIDELITY_OFF, SFPU_OFF)
LARGE_MODELS = ("Llama-3.1-70B", "Llama-3.2-90B", "DeepSeek-R1-Distill-Llama-70B", "Qwen2.5-72B")


def base_model_name(model_name: str) -> str:
    """tt_transformers' get_base_model_name: "Llama-3.1-8B-Instruct" -> "Llama-3.1-8B"."""
    found = re.search(r"(.*?\d+[bB])-", model_name)
    return found.group(1) if found else model_name


@dataclass(frozen=True)
class ModelOptimizations:
    """Dtype per tensor group, compute-kernel setting per op group (empty: exact float math) and output format per
    site, with per-layer tensor overrides; hashable, so it can sit in jit-static ModelArgs."""

    name: str
    groups: tuple[tuple[TensorGroup, PrecisionSetting], ...]
    layer_overrides: tuple[tuple[int, TensorGroup, PrecisionSetting], ...] = field(default=())
    fidelity: tuple[tuple[OpGroup, MathFidelitySetting], ...] = field(default=())
    outputs: tuple[tuple[OutputSite, PrecisionSetting], ...] = field(default=())
    fpu: bool = True  # emulate the matrix engine (fidelity phases, Dst rounding) under each op's config
    sfpu: bool = True  # emulate the SFPU functions (exp, reciprocal, rsqrt, SiLU) as the kernels compute them

    @classmethod
    def make(cls, name: str, default=None, *, fidelity=None, outputs=None, **groups) -> ModelOptimizations:
        """default: every tensor group's setting (None: tt_transformers' defaults); groups override it; fidelity and
        outputs: {OpGroup: setting}, {OutputSite: setting} on top of tt_transformers' (None: no emulation, exact)."""
        settings = {g: _setting(default) for g in TensorGroup} if default is not None else dict(DEFAULT_TENSORS)
        settings.update({_group(k): _setting(v) for k, v in groups.items()})
        ops = {} if fidelity is None else {**DEFAULT_FIDELITY, **fidelity}
        outs = {} if outputs is None else {**DEFAULT_OUTPUTS, **outputs}
        return cls(name, tuple(sorted(settings.items())), (), tuple(sorted(ops.items())), tuple(sorted(outs.items())))

    @classmethod
    def float32(cls):
        """Exact float math in float32: the reference, not a device configuration."""
        return cls.make("float32", "float32")

    @classmethod
    def bfloat16(cls):
        """Every tensor in bfloat16 and every op at the highest fidelity (HiFi4, FP32 Dst); activations kept bfloat16."""
        return cls.make("bfloat16", "bfloat16", fidelity={op: MathFidelitySetting.HIFI4 for op in OpGroup},
                        outputs={site: PrecisionSetting.BF16 for site in OutputSite})

    @classmethod
    def accuracy(cls, model_name: str = ""):
        """tt_transformers' accuracy preset for model_name (ModelOptimizations.accuracy, model_config.py 93-160)."""
        base = base_model_name(model_name)
        if base in LARGE_MODELS:  # "70B+ models still use bfp4 MLPs and BFP8 attention in this configuration"
            return cls.make("accuracy", fidelity={OpGroup.LI_FF1_FF3: MathFidelitySetting.LOFI}, outputs={}, FF1_FF3="bfloat4_b")
        if base.startswith(("Llama-3", "Mistral-7B", "Phi-3-mini", "phi-4")):
            extra = {OpGroup.LI_QKV_PREFILL: MathFidelitySetting.HIFI2_FP16} if model_name.startswith("Phi-3-mini") else {}
            return cls.make("accuracy", fidelity=extra, outputs={})
        return cls.make("accuracy", fidelity={op: MathFidelitySetting.HIFI4 for op in ATTENTION_OPS}, outputs={},
                        WQKV="bfloat16", WO="bfloat16", KV_CACHE="bfloat16")

    @classmethod
    def performance(cls, model_name: str = ""):
        """tt_transformers' performance preset for model_name (ModelOptimizations.performance, model_config.py 162-201)."""
        if base_model_name(model_name) in ("Qwen2.5-7B", "Qwen2.5-VL-7B"):
            return cls.make("performance", fidelity={op: MathFidelitySetting.HIFI4 for op in ATTENTION_OPS}, outputs={},
                            WQKV="bfloat16", WO="bfloat16", KV_CACHE="bfloat16")
        extra = {OpGroup.LI_QKV_PREFILL: MathFidelitySetting.HIFI2_FP16} if model_name.startswith("Phi-3-mini") else {}
        return cls.make("performance", fidelity={OpGroup.LI_FF1_FF3: MathFidelitySetting.LOFI, **extra}, outputs={}, FF1_FF3="bfloat4_b")

    @classmethod
    def uniform(cls, setting):
        """Every weight group in one dtype (activations bfloat16 unless float32), e.g. to measure memory; ops as
        tt_transformers' defaults, LoFi with bfloat4_b weights."""
        s = _setting(setting)
        if s is PrecisionSetting.FP32:
            return cls.float32()
        lofi = {op: MathFidelitySetting.LOFI for op in OpGroup if op.value.startswith("LI_")} if s is PrecisionSetting.BFP4 else {}
        return cls.make(s.value, s, fidelity=lofi, outputs={}, ACTIVATION="bfloat16")

    @classmethod
    def named(cls, name: str, model_name: str = "") -> ModelOptimizations:
        """A config by name; accuracy and performance depend on the model (its name, as tt_transformers matches it).
        A name ending in "+fidelity=off" is that config with exact float matrix-engine math (fidelity_off), one
        ending in "+sfpu=off" with exact float SFPU functions (sfpu_off); one ending in "+GROUP=DTYPE" or
        "+layers.N.GROUP=DTYPE" is that config with the override, the names override() gives."""
        if name.endswith(FIDELITY_OFF):
            return cls.named(name.removesuffix(FIDELITY_OFF), model_name).fidelity_off()
        if name.endswith(SFPU_OFF):
            return cls.named(name.removesuffix(SFPU_OFF), model_name).sfpu_off()
        base, plus, last = name.rpartition("+")
        if plus:
            ((group, setting, layer),) = parse_overrides([last])
            return cls.named(base, model_name).override(group, setting, layer)
        if name in ("accuracy", "performance"):
            return getattr(cls, name)(model_name)
        makers = {"float32": cls.float32, "bfloat16": cls.bfloat16}
        if name in makers:
            return makers[name]()
        if name in (s.value for s in PrecisionSetting):
            return cls.uniform(name)
        raise ConfigError(f"precision config {name!r} is not one of float32, bfloat16, accuracy, performance, bfloat8_b, bfloat4_b.")

    def override(self, group, setting, layer: int | None = None) -> ModelOptimizations:
        """A copy with one tensor group set, for every layer (layer=None) or one decoder layer."""
        g, s = _group(group), _setting(setting)
        if layer is None:
            groups = tuple(sorted({**dict(self.groups), g: s}.items()))
            return replace(self, name=f"{self.name}+{g.value}={s.value}", groups=groups)
        over = tuple(o for o in self.layer_overrides if o[:2] != (layer, g)) + ((layer, g, s),)
        return replace(self, name=f"{self.name}+layers.{layer}.{g.value}={s.value}", layer_overrides=over)

    def fidelity_off(self) -> ModelOptimizations:
        """The same config with exact float math on the matrix engine (its dtypes, activation formats and SFPU kept):
        the cost of fidelity alone is the difference."""
        return replace(self, name=self.name + FIDELITY_OFF, fpu=False)

    def sfpu_off(self) -> ModelOptimizations:
        """The same config with exact float32 SFPU functions (exp, reciprocal, rsqrt, SiLU) in softmax, the norms and
        the MLP: the cost of the SFPU alone is the difference."""
        return replace(self, name=self.name + SFPU_OFF, sfpu=False)

    def get_tensor_dtype(self, group, decoder_id: int | None = None) -> PrecisionSetting:
        g = _group(group)
        for layer, og, s in self.layer_overrides:
            if layer == decoder_id and og == g:
                return s
        return dict(self.groups)[g]

    def get_math_fidelity(self, op: OpGroup) -> MathFidelitySetting | None:
        """The op's setting; None when the matmuls are exact float math (float32, or fidelity off)."""
        return dict(self.fidelity).get(OpGroup(op)) if self.fpu else None

    def compute_kernel_config(self, op: OpGroup):
        """The matmul config of an op: what the matrix engine is emulated at (None: exact float math)."""
        setting = self.get_math_fidelity(op)
        return None if setting is None else kernel_config(setting)

    def emulation(self, op: OpGroup) -> "Emulation | None":
        """For ops that run both halves of a Tensix (the norms, SDPA, the MLP multiply): the op's config and which
        halves are emulated under it; None for an op without a config (float32: exact float math throughout)."""
        setting = dict(self.fidelity).get(OpGroup(op))
        if setting is None or not (self.fpu or self.sfpu):
            return None
        return Emulation(kernel_config(setting), self.fpu, self.sfpu)

    def output_setting(self, site: OutputSite, galaxy: bool = False) -> PrecisionSetting | None:
        """The format an op writes at this site (None: the activation dtype, unrounded)."""
        outs = dict(self.outputs)
        site = OutputSite(site)
        if galaxy and site in GALAXY_OUTPUTS and outs.get(OutputSite.CCL) is PrecisionSetting.BFP8:  # a tt_transformers preset
            return GALAXY_OUTPUTS[site]
        return outs.get(site)

    def describe(self) -> dict:
        return (
            {g.value: s.value for g, s in self.groups}
            | {f"layers.{layer}.{g.value}": s.value for layer, g, s in self.layer_overrides}
            | {f"op.{op.value}": s.value for op, s in self.fidelity}
            | {f"out.{site.value}": s.value for site, s in self.outputs}
            | ({"emulated": "+".join(h for h, on in (("fpu", self.fpu), ("sfpu", self.sfpu)) if on) or "none"}
               if self.fidelity else {})
        )


@dataclass(frozen=True)
class Emulation:
    """An op's compute kernel config and which halves of the Tensix ttjax emulates under it: fpu (the matrix engine's
    fidelity and Dst rounding) and sfpu (exp, reciprocal, rsqrt, SiLU as tt-llk computes them). The intermediate
    formats of the op's kernel follow the config either way. Passed on to ttjax's ops as keyword arguments."""

    config: object  # ttjax.WormholeComputeKernelConfig
    fpu: bool = True
    sfpu: bool = True

    def kwargs(self) -> dict:
        return {"compute_kernel_config": self.config, "fpu": self.fpu, "sfpu": self.sfpu}


def parse_overrides(spec: list[str]) -> list[tuple[TensorGroup, PrecisionSetting, int | None]]:
    """'FF1_FF3=bfloat16' or 'layers.3.WO=bfloat16' -> (group, setting, layer)."""
    out = []
    for item in spec:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not GROUP=DTYPE or layers.N.GROUP=DTYPE.")
        layer = None
        if key.startswith("layers."):
            parts = key.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit():
                raise ConfigError(f"override {item!r} is not layers.N.GROUP=DTYPE with N a layer number.")
            layer, key = int(parts[1]), parts[2]
        out.append((_group(key), _setting(value), layer))
    return out


def storage_dtype(setting: PrecisionSetting):
    """jnp dtype, or ttjax.bfloat8_b / bfloat4_b, for a setting."""
    import jax.numpy as jnp

    from ttjax.blockfloat import FORMATS

    return FORMATS.get(setting.value) or jnp.dtype(setting.value)


def weight_dtype(args, group, layer: int | None = None):
    """The storage dtype of a weight group (for one decoder layer)."""
    return storage_dtype(args.optimizations.get_tensor_dtype(group, layer))


def compute_kernel_config(args, op: OpGroup):
    """ttjax.WormholeComputeKernelConfig for an op of this model (None: exact float math)."""
    return args.optimizations.compute_kernel_config(op)


def emulation_kwargs(args, op: OpGroup) -> dict:
    """compute_kernel_config / fpu / sfpu for a ttjax op that runs both halves of a Tensix ({} for exact float math).
    The norm on a 2D mesh takes tt's Galaxy config (distributed_norm.py's ln_cfg: a 16-bit Dst)."""
    em = args.optimizations.emulation(op)
    if em is None:
        return {}
    if OpGroup(op) is OpGroup.NORM and args.model_config.is_2d and dict(args.optimizations.fidelity)[OpGroup.NORM] is \
            MathFidelitySetting.RMSNORM:
        em = Emulation(kernel_config(MathFidelitySetting.RMSNORM_TG), em.fpu, em.sfpu)
    return em.kwargs()


def output_dtype(args, site: OutputSite):
    """The dtype= an op writes at this site for this model and mesh: a storage dtype, or None for the activation
    dtype unrounded. A 2D mesh stands for a Galaxy (TG), which writes more sites in bfloat8_b."""
    setting = args.optimizations.output_setting(site, galaxy=args.model_config.is_2d)
    return None if setting is None else storage_dtype(setting)


def to_output(x, args, site: OutputSite):
    """x as the op that makes it writes it at this site: rounded to bfloat8_b / bfloat4_b or cast, held in x's
    dtype; unchanged where the site keeps the activation dtype."""
    dtype = output_dtype(args, site)
    if dtype is None:
        return x
    from ttjax.blockfloat import block_format, quantize

    # written by an op on the device: the Tensix packer's rounding (ttjax.blockfloat.DEVICE_PACKER)
    return quantize(x, dtype, device=True) if block_format(dtype) is not None else x.astype(dtype).astype(x.dtype)
