"""Writers of synthetic checkpoints for the loader tests: a real transformers LlamaForCausalLM
saved as safetensors, and the same weights as Meta consolidated shards and as a GGUF file."""

import json
import os

import numpy as np
import torch

from model.checkpoint.hf import HF_GLOBAL_NAMES, HF_LAYER_NAMES
from model.checkpoint.rotary_layout import hf_to_meta, meta_to_hf
from model.rope import inv_frequencies

META_TO_GGUF = {
    "tok_embeddings": "token_embd",
    "norm": "output_norm",
    "output": "output",
    "attention.wq": "attn_q",
    "attention.wk": "attn_k",
    "attention.wv": "attn_v",
    "attention.wo": "attn_output",
    "feed_forward.w1": "ffn_gate",
    "feed_forward.w2": "ffn_down",
    "feed_forward.w3": "ffn_up",
    "attention_norm": "attn_norm",
    "ffn_norm": "ffn_norm",
}

TINY = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
)
LLAMA3_ROPE = dict(
    rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)


def tiny_hf_model(tie_word_embeddings=False, rope=LLAMA3_ROPE, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**TINY, tie_word_embeddings=tie_word_embeddings, rope_parameters=dict(rope))
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # random norms, so a norm applied in the wrong place shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return model


def write_hf(model, folder):
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def meta_state_from_hf(model) -> dict[str, np.ndarray]:
    """The model's weights with Meta's names and rotary layout."""
    cfg = model.config
    out = {}
    for name, t in model.state_dict().items():
        a = t.detach().float().numpy().copy()
        base = name.rsplit(".", 1)[0]
        if base in HF_GLOBAL_NAMES:
            out[f"{HF_GLOBAL_NAMES[base]}.weight"] = a
            continue
        _, _, layer, kind = base.split(".", 3)
        if kind == "self_attn.q_proj":
            a = hf_to_meta(a, cfg.num_attention_heads)
        elif kind == "self_attn.k_proj":
            a = hf_to_meta(a, cfg.num_key_value_heads)
        out[f"layers.{layer}.{HF_LAYER_NAMES[kind]}.weight"] = a
    if cfg.tie_word_embeddings:
        out.pop("output.weight", None)
    return out


def hf_state_from_meta(state: dict, n_heads: int, n_kv_heads: int) -> dict[str, np.ndarray]:
    """Inverse of meta_state_from_hf: HF names, rotate-half rotary layout."""
    globals_ = {v: k for k, v in HF_GLOBAL_NAMES.items()}
    layers = {v: k for k, v in HF_LAYER_NAMES.items()}
    out = {}
    for name, a in state.items():
        base = name.rsplit(".", 1)[0]
        if base in globals_:
            out[f"{globals_[base]}.weight"] = a
            continue
        _, layer, kind = base.split(".", 2)
        if kind == "attention.wq":
            a = meta_to_hf(a, n_heads)
        elif kind == "attention.wk":
            a = meta_to_hf(a, n_kv_heads)
        out[f"model.layers.{layer}.{layers[kind]}.weight"] = np.ascontiguousarray(a)
    return out


# How Meta's reference code parallelises each weight, by the fairscale class it builds it with
# (fairscale.nn.model_parallel.layers, used by meta-llama/llama, meta-llama/llama3 and
# llama-models' models/llama3/reference_impl/model.py). Written here from that published code, not
# from the loader's table, so a wrong axis in the loader fails the Meta tests instead of being mirrored.
#   ColumnParallelLinear: splits the output features; torch weight [out, in] -> axis 0.
#   RowParallelLinear: splits the input features -> axis 1.
#   VocabParallelEmbedding (Llama 3: meta-llama/llama3, llama-models): splits the vocab,
#     weight [vocab, dim] -> axis 0.
#   ParallelEmbedding (Llama 1/2: meta-llama/llama): splits the embedding dim -> axis 1.
#   RMSNorm is a plain nn.Module: replicated, every shard holds the full copy.
# (transformers' convert_llama_weights_to_hf.py joins tok_embeddings on dim 0 for Llama 3, 1 before.)
META_MODULE_CLASS = {
    "tok_embeddings": "embedding",  # the release's embedding class, see write_meta(embedding=)
    "attention.wq": "ColumnParallelLinear",
    "attention.wk": "ColumnParallelLinear",
    "attention.wv": "ColumnParallelLinear",
    "attention.wo": "RowParallelLinear",
    "feed_forward.w1": "ColumnParallelLinear",
    "feed_forward.w3": "ColumnParallelLinear",
    "feed_forward.w2": "RowParallelLinear",
    "output": "ColumnParallelLinear",
    "attention_norm": "RMSNorm",
    "ffn_norm": "RMSNorm",
    "norm": "RMSNorm",
}
# Split axis of the torch weight for each fairscale class; None = replicated.
SPLIT_AXIS = {
    "ColumnParallelLinear": 0,
    "RowParallelLinear": 1,
    "VocabParallelEmbedding": 0,
    "ParallelEmbedding": 1,
    "RMSNorm": None,
}
LLAMA3_EMBEDDING = "VocabParallelEmbedding"
LLAMA2_EMBEDDING = "ParallelEmbedding"


def meta_split_axis(name: str, embedding: str = LLAMA3_EMBEDDING) -> int | None:
    """The axis Meta's model-parallel shards split weight `name` on (None: replicated)."""
    parts = name.split(".")
    module = ".".join(parts[2:-1] if parts[0] == "layers" else parts[:-1])
    cls = META_MODULE_CLASS[module]  # an unknown weight is an error, not silently replicated
    return SPLIT_AXIS[embedding if cls == "embedding" else cls]


def write_meta(state, params: dict, folder, shards=2, dtype=torch.float32, embedding=LLAMA3_EMBEDDING):
    """Meta consolidated layout, split into `shards` model-parallel files the way Meta's reference
    code splits them (META_MODULE_CLASS). `embedding` is the release's tok_embeddings class:
    "VocabParallelEmbedding" (Llama 3, the default) or "ParallelEmbedding" (Llama 1/2)."""
    if embedding not in (LLAMA3_EMBEDDING, LLAMA2_EMBEDDING):
        raise ValueError(f"embedding must be {LLAMA3_EMBEDDING!r} or {LLAMA2_EMBEDDING!r}, not {embedding!r}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "params.json"), "w") as f:
        json.dump(params, f)
    for i in range(shards):
        part = {}
        for name, a in state.items():
            axis = meta_split_axis(name, embedding)
            if axis is not None:
                assert a.shape[axis] % shards == 0, (name, a.shape, axis, shards)
                a = np.split(a, shards, axis=axis)[i]  # fairscale: contiguous equal chunks, rank i gets chunk i
            part[name] = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
        torch.save(part, os.path.join(folder, f"consolidated.{i:02d}.pth"))
    return folder


def meta_params_for_tiny(model):
    cfg = model.config
    return dict(
        dim=cfg.hidden_size,
        n_layers=cfg.num_hidden_layers,
        n_heads=cfg.num_attention_heads,
        n_kv_heads=cfg.num_key_value_heads,
        vocab_size=cfg.vocab_size,
        multiple_of=64,
        norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_parameters["rope_theta"],
        use_scaled_rope=cfg.rope_parameters.get("rope_type") == "llama3",
        rope_scaling_factor=cfg.rope_parameters.get("factor"),
    )


def write_gguf(state, args, path, *, drop_keys=(), arch="llama", metadata=None, raw_types=None):
    """A llama GGUF (F32 tensors) from a Meta-layout state; llama3 rope scaling goes in as rope_freqs,
    as llama.cpp's converter writes it. For the error tests: another architecture name, extra metadata
    ({key: str value}), and raw_types {gguf tensor name: GGMLQuantizationType} to store a tensor as that type
    (zero bytes of the right size)."""
    import gguf

    w = gguf.GGUFWriter(path, arch)
    for key, value in (metadata or {}).items():
        w.add_string(key, value)
    fields = {
        "block_count": lambda: w.add_block_count(args.n_layers),
        "context_length": lambda: w.add_context_length(args.max_context_len),
        "embedding_length": lambda: w.add_embedding_length(args.dim),
        "feed_forward_length": lambda: w.add_feed_forward_length(args.hidden_dim),
        "head_count": lambda: w.add_head_count(args.n_heads),
        "head_count_kv": lambda: w.add_head_count_kv(args.n_kv_heads),
        "rope_freq_base": lambda: w.add_rope_freq_base(args.rope_theta),
        "layer_norm_rms_eps": lambda: w.add_layer_norm_rms_eps(args.norm_eps),
        "vocab_size": lambda: w.add_vocab_size(args.vocab_size),
    }
    for key, add in fields.items():
        if key not in drop_keys:
            add()
    if args.rope_scaling is not None:
        factors = inv_frequencies(args.replace(rope_scaling=None)) / inv_frequencies(args)
        w.add_tensor("rope_freqs.weight", factors.astype(np.float32))
    for name, a in state.items():
        parts = name.split(".")
        if parts[0] == "layers":
            gname = f"blk.{parts[1]}.{META_TO_GGUF['.'.join(parts[2:-1])]}.{parts[-1]}"
        else:
            gname = f"{META_TO_GGUF[parts[0]]}.{parts[1]}"
        kind = (raw_types or {}).get(gname)
        if kind is None:
            w.add_tensor(gname, np.ascontiguousarray(a, dtype=np.float32))
        else:
            block, nbytes = gguf.GGML_QUANT_SIZES[kind]
            raw = np.zeros((*a.shape[:-1], a.shape[-1] // block * nbytes), np.uint8)
            w.add_tensor(gname, raw, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def first_layers_gguf(src, path, n_layers: int):
    """The GGUF file src cut to its first n_layers decoder layers: every other field (the tokenizer, the chat
    template, rope) and every tensor kept byte for byte in its own type. A model that compiles in seconds where a
    test needs the real one's files, vocabulary and formats but not its depth."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(path, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # the header's own, written by the writer
        value = n_layers if key == f"{arch}.block_count" else field.contents()
        sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, value, field.types[0], sub_type=sub)
    for t in reader.tensors:
        if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= n_layers:
            continue
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)  # quantized: its bytes, their shape says the rest
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
