"""Precision configs, after tt_transformers' model_config (TensorGroup, PrecisionSetting, ModelOptimizations).

Each weight group (and the KV cache, and the activations) gets a dtype; a decoder layer
can override a group. tt-metal's settings for Llama 3:
  - "accuracy":    every weight group and the KV cache in bfloat8_b;
  - "performance": as accuracy but w1/w3 (FF1_FF3) in bfloat4_b;
  - activations stay bfloat16, the embedding bfloat16 and the LM head bfloat8_b (tt-metal
    keeps those fixed; here they are the EMBEDDING and LM_HEAD groups).
tt-metal also picks a matmul math fidelity per op (LoFi with bfp4 weights, HiFi2 with bfp8,
HiFi4 with bf16); it is recorded here, while the matmuls themselves multiply exactly and
accumulate in float32.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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


MATH_FIDELITY = {PrecisionSetting.BFP4: "LoFi", PrecisionSetting.BFP8: "HiFi2", PrecisionSetting.BF16: "HiFi4", PrecisionSetting.FP32: "HiFi4"}
WEIGHT_GROUPS = (TensorGroup.WQKV, TensorGroup.WO, TensorGroup.FF1_FF3, TensorGroup.FF2, TensorGroup.EMBEDDING, TensorGroup.LM_HEAD)


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


@dataclass(frozen=True)
class ModelOptimizations:
    """Dtype per tensor group, with per-layer overrides; hashable, so it can sit in jit-static ModelArgs."""

    name: str
    groups: tuple[tuple[TensorGroup, PrecisionSetting], ...]
    layer_overrides: tuple[tuple[int, TensorGroup, PrecisionSetting], ...] = field(default=())

    @classmethod
    def make(cls, name: str, default, **groups) -> ModelOptimizations:
        settings = {g: _setting(default) for g in TensorGroup}
        settings.update({_group(k): _setting(v) for k, v in groups.items()})
        return cls(name, tuple(sorted(settings.items())))

    @classmethod
    def float32(cls):
        return cls.make("float32", "float32")

    @classmethod
    def bfloat16(cls):
        return cls.make("bfloat16", "bfloat16")

    @classmethod
    def accuracy(cls):
        return cls.make("accuracy", "bfloat8_b", ACTIVATION="bfloat16", EMBEDDING="bfloat16")

    @classmethod
    def performance(cls):
        return cls.make("performance", "bfloat8_b", FF1_FF3="bfloat4_b", ACTIVATION="bfloat16", EMBEDDING="bfloat16")

    @classmethod
    def uniform(cls, setting):
        """Every weight group in one dtype (activations bfloat16 unless float32), e.g. to measure memory."""
        s = _setting(setting)
        act = "float32" if s is PrecisionSetting.FP32 else "bfloat16"
        return cls.make(s.value, s, ACTIVATION=act)

    @classmethod
    def named(cls, name: str) -> ModelOptimizations:
        makers = {"float32": cls.float32, "bfloat16": cls.bfloat16, "accuracy": cls.accuracy, "performance": cls.performance}
        if name in makers:
            return makers[name]()
        if name in (s.value for s in PrecisionSetting):
            return cls.uniform(name)
        raise ConfigError(f"precision config {name!r} is not one of {', '.join([*makers, 'bfloat8_b', 'bfloat4_b'])}.")

    def override(self, group, setting, layer: int | None = None) -> ModelOptimizations:
        """A copy with one group set, for every layer (layer=None) or one decoder layer."""
        g, s = _group(group), _setting(setting)
        if layer is None:
            groups = tuple(sorted({**dict(self.groups), g: s}.items()))
            return ModelOptimizations(f"{self.name}+{g.value}={s.value}", groups, self.layer_overrides)
        over = tuple(o for o in self.layer_overrides if o[:2] != (layer, g)) + ((layer, g, s),)
        return ModelOptimizations(f"{self.name}+layers.{layer}.{g.value}={s.value}", self.groups, over)

    def get_tensor_dtype(self, group, decoder_id: int | None = None) -> PrecisionSetting:
        g = _group(group)
        for layer, og, s in self.layer_overrides:
            if layer == decoder_id and og == g:
                return s
        return dict(self.groups)[g]

    def get_math_fidelity(self, group, decoder_id: int | None = None) -> str:
        return MATH_FIDELITY[self.get_tensor_dtype(group, decoder_id)]

    def describe(self) -> dict:
        return {g.value: s.value for g, s in self.groups} | {
            f"layers.{layer}.{g.value}": s.value for layer, g, s in self.layer_overrides
        }


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
