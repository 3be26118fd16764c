"""GGUF checkpoints (llama.cpp): metadata -> ModelArgs, tensors dequantized -> Meta-named state dict.

GGUF stores wq/wk in Meta's interleaved rotary layout already (llama.cpp permutes HF weights
on conversion), so no rotary permutation happens here.
"""

from __future__ import annotations

import os

import numpy as np
from tqdm.auto import tqdm

from model.config import ModelArgs, RopeScaling, require
from model.errors import CheckpointError, ConfigError

_LAYER_NAMES = {
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_gate": "feed_forward.w1",
    "ffn_down": "feed_forward.w2",
    "ffn_up": "feed_forward.w3",
    "attn_norm": "attention_norm",
    "ffn_norm": "ffn_norm",
}
_GLOBAL_NAMES = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}


def open_gguf(path: str):
    import gguf

    try:
        return gguf.GGUFReader(path)
    except Exception as e:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise CheckpointError(f"{path} is not a GGUF file: it starts with {magic!r}, not b'GGUF'.") from e
        size = os.path.getsize(path)
        raise CheckpointError(f"GGUF file {path} ({size} bytes) is truncated or corrupt: {e}.") from e


def metadata(reader) -> dict:
    out = {}
    for key, field in reader.fields.items():
        try:
            out[key] = field.contents()
        except Exception:  # fields the gguf package cannot decode are not ones we read
            continue
    return out


def args_from_metadata(meta: dict, path: str, *, tensor_names: set[str], max_seq_len=None, max_batch_size=1) -> ModelArgs:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"GGUF file {path} holds a {arch!r} model; ttjax runs 'llama' models.")
    src = f"GGUF metadata of {path}"

    def get(key, default=None):
        full = f"llama.{key}"
        return require(meta, full, src) if default is None else meta.get(full, default)

    dim = int(get("embedding_length"))
    n_heads = int(get("attention.head_count"))
    head_dim = int(meta.get("llama.attention.key_length", dim // n_heads))
    context = int(get("context_length"))
    scaling = None
    kind = meta.get("llama.rope.scaling.type", "none")
    if kind == "linear":
        scaling = RopeScaling(rope_type="linear", factor=float(require(meta, "llama.rope.scaling.factor", src)))
    elif kind != "none":  # llama3 scaling arrives as the rope_freqs tensor, with no scaling type
        raise ConfigError(f"{src} asks for rope scaling {kind!r}; supported: 'none', 'linear' (and llama3's rope_freqs).")
    vocab = meta.get("llama.vocab_size", len(meta.get("tokenizer.ggml.tokens", ())))
    if not vocab:
        raise CheckpointError(f"{src} has neither llama.vocab_size nor a tokenizer vocabulary.")
    return ModelArgs(
        dim=dim,
        n_layers=int(get("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(get("attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        hidden_dim=int(get("feed_forward_length")),
        vocab_size=int(vocab),
        norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        max_context_len=context,
        max_seq_len=int(context if max_seq_len is None else max_seq_len),
        max_batch_size=max_batch_size,
        tie_word_embeddings="output.weight" not in tensor_names,
        model_name=str(meta.get("general.name", os.path.basename(path))),
    )


def _meta_name(gguf_name: str) -> str | None:
    base, _, suffix = gguf_name.rpartition(".")
    if base.startswith("blk."):
        _, layer, kind = base.split(".", 2)
        return f"layers.{layer}.{_LAYER_NAMES[kind]}.{suffix}" if kind in _LAYER_NAMES else None
    return f"{_GLOBAL_NAMES[base]}.{suffix}" if base in _GLOBAL_NAMES else None


def read_gguf(path: str, *, max_seq_len=None, max_batch_size=1, progress=True):
    """(ModelArgs, state dict, metadata) from a GGUF file; quantized tensors are dequantized to float32."""
    import gguf

    reader = open_gguf(path)
    meta = metadata(reader)
    names = {t.name for t in reader.tensors}
    args = args_from_metadata(meta, path, tensor_names=names, max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    state = {}
    for t in tqdm(reader.tensors, desc=f"loading {os.path.basename(path)}", disable=None if progress else True):
        if t.name == "rope_freqs.weight":
            args = args.replace(rope_freq_factors=tuple(float(v) for v in np.asarray(t.data, np.float32)))
            continue
        name = _meta_name(t.name)
        if name is None:
            continue
        kind = gguf.GGMLQuantizationType(t.tensor_type)
        try:
            state[name] = gguf.quants.dequantize(t.data, kind).reshape(tuple(int(n) for n in reversed(t.shape)))
        except NotImplementedError as e:
            raise CheckpointError(
                f"tensor {t.name!r} of {path} is stored as {kind.name}, which the gguf package cannot dequantize; "
                "ttjax reads F32, F16, BF16 and the quantizations gguf implements (Q4_0, Q4_1, Q8_0, the K and IQ types)."
            ) from e
        except Exception as e:
            raise CheckpointError(f"tensor {t.name!r} of {path} ({kind.name}) cannot be decoded, so the file is corrupt: {e}.") from e
    return args, state, meta
