"""Hugging Face checkpoints: config.json + *.safetensors, renamed to Meta's names.

HF stores q_proj/k_proj in the rotate-half layout; they are permuted here, once, into Meta's
interleaved pairs (rotary_layout.hf_to_meta), the layout the model uses.
"""

from __future__ import annotations

import glob
import os
from functools import partial

from model.progress import progress as progress_of

from model.checkpoint.rotary_layout import hf_to_meta
from model.checkpoint.state_dict import LazyTensor, materialize
from model.config import ModelArgs, RopeScaling, read_json_config, require
from model.errors import CheckpointError, ConfigError

HF_LAYER_NAMES = {
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
}
HF_GLOBAL_NAMES = {"model.embed_tokens": "tok_embeddings", "model.norm": "norm", "lm_head": "output"}
LLAMA_MODEL_TYPES = ("llama", "mistral")


def rope_scaling_from_hf(config: dict, source: str) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from a transformers 4 (rope_theta + rope_scaling) or 5 (rope_parameters) config."""
    params = config.get("rope_parameters") or {}
    theta = float(params.get("rope_theta", config.get("rope_theta", 10000.0)))
    scaling = config.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return theta, None
    if kind not in ("llama3", "linear"):
        raise ConfigError(f"{source} asks for rope scaling {kind!r}; supported: 'llama3', 'linear'.")
    return theta, RopeScaling(
        rope_type=kind,
        factor=float(require(scaling, "factor", f"{source} (rope scaling)")),
        original_max_position_embeddings=int(scaling.get("original_max_position_embeddings", 8192)),
        low_freq_factor=float(scaling.get("low_freq_factor", 1.0)),
        high_freq_factor=float(scaling.get("high_freq_factor", 4.0)),
    )


def args_from_hf_config(config: dict, source: str, *, max_seq_len=None, max_batch_size=1) -> ModelArgs:
    model_type = config.get("model_type", "llama")
    if model_type not in LLAMA_MODEL_TYPES:
        raise ConfigError(f"{source} describes a {model_type!r} model; ttjax runs {', '.join(LLAMA_MODEL_TYPES)} models.")
    dim = int(require(config, "hidden_size", source))
    n_heads = int(require(config, "num_attention_heads", source))
    theta, scaling = rope_scaling_from_hf(config, source)
    context = int(config.get("max_position_embeddings", 2048))
    return ModelArgs(
        dim=dim,
        n_layers=int(require(config, "num_hidden_layers", source)),
        n_heads=n_heads,
        n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
        head_dim=int(config.get("head_dim") or dim // n_heads),
        hidden_dim=int(require(config, "intermediate_size", source)),
        vocab_size=int(require(config, "vocab_size", source)),
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_context_len=context,
        max_seq_len=int(context if max_seq_len is None else max_seq_len),
        max_batch_size=max_batch_size,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        model_name=str(config.get("_name_or_path") or "llama"),
    )


def _meta_name(hf_name: str) -> str | None:
    base, _, suffix = hf_name.rpartition(".")
    if base.startswith("model.layers."):
        _, _, layer, kind = base.split(".", 3)
        return f"layers.{layer}.{HF_LAYER_NAMES[kind]}.{suffix}" if kind in HF_LAYER_NAMES else None
    return f"{HF_GLOBAL_NAMES[base]}.{suffix}" if base in HF_GLOBAL_NAMES else None


def lazy_hf(folder: str, *, max_seq_len=None, max_batch_size=1):
    """(ModelArgs, state dict of LazyTensors, config.json): the safetensors headers read, no weights."""
    from safetensors import safe_open

    config_path = os.path.join(folder, "config.json")
    config = read_json_config(config_path)
    args = args_from_hf_config(config, config_path, max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise CheckpointError(f"{folder} has a config.json but no *.safetensors weights.")
    heads = {"attention.wq": args.n_heads, "attention.wk": args.n_kv_heads}

    def load(path, hf_name, name):
        try:
            with safe_open(path, framework="numpy") as f:
                a = f.get_tensor(hf_name)
        except Exception as e:
            raise CheckpointError(f"safetensors file {path} is truncated or corrupt: {e}.") from e
        kind = ".".join(name.split(".")[2:-1])  # layers.{i}.attention.wq.weight -> attention.wq
        return hf_to_meta(a, heads[kind]) if name.startswith("layers.") and kind in heads else a

    state = {}
    for path in files:
        try:
            with safe_open(path, framework="numpy") as f:
                for hf_name in f.keys():
                    name = _meta_name(hf_name)
                    if name is not None:
                        state[name] = LazyTensor(f.get_slice(hf_name).get_shape(), partial(load, path, hf_name, name))
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"safetensors file {path} is truncated or corrupt: {e}.") from e
    if args.model_name == "llama":
        args = args.replace(model_name=os.path.basename(os.path.abspath(folder)))
    return args, state, config


def read_hf(folder: str, *, max_seq_len=None, max_batch_size=1, progress=True):
    """(ModelArgs, Meta-named state dict) from a Hugging Face folder."""
    args, state, config = lazy_hf(folder, max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    names = progress_of(list(state), f"loading {os.path.basename(os.path.abspath(folder))}", enabled=progress, unit="tensor")
    return args, materialize({k: state[k] for k in names}), config
