"""Same-shape GGUF files: random weights of a named model's shapes (Llama-3.2-1B, Llama-3.1-8B, ...) with the shipped
tokenizer, in a format every engine reads, so that ttjax, llama.cpp and transformers run the same file in one bench.

tt-metal's `dummy_weights` gives ttjax a model's shapes without its weights; a peer needs a file. Q8_0 stores a
weight in 1.0625 bytes, as bfloat8_b does (32 codes of 8 bits and a 16-bit scale; bfloat8_b: 16 codes and an 8-bit
exponent), and Q4_0 in 0.5625, as bfloat4_b: the same bytes per weight for llama.cpp as for ttjax's TT formats.

- Weights are N(0, std) drawn per tensor from numpy's PCG64 seeded by (seed, the tensor's index), then quantized by
  the gguf package; norms are ones (F32). A tied model (Llama-3.2-1B) has no output.weight, as llama.cpp writes it.
- The vocabulary is the shipped SmolLM2 tokenizer's (49,152 tokens, its merges and chat template) padded with
  control tokens `<|reserved_special_token_N|>` up to the model's vocab_size, so the embedding and the LM head have
  the model's own shape (128,256 rows for Llama 3) while text still tokenizes.
- llama3 rope scaling is written as llama.cpp writes it, a `rope_freqs.weight` tensor of head_dim / 2 factors.
- Tensors are written one at a time: writing Llama-3.1-8B holds one weight in float32, never the model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from model.config import ModelArgs, named_config
from model.errors import ConfigError
from model.progress import progress

VERSION = 1  # written into every file; a cached file of another version is written again
FORMATS = ("Q8_0", "Q4_0", "F16", "F32")
_VERSION_KEY = "ttjax.synthetic.version"


def check_format(fmt: str, flag: str = "--gguf-format") -> str:
    name = str(fmt).strip().upper()
    if name not in FORMATS:
        raise ConfigError(f"{flag} {fmt!r} is not a GGUF format ttjax writes; one of {', '.join(FORMATS)}.")
    return name


def _tensors(args: ModelArgs) -> list[tuple[str, tuple[int, ...], bool]]:
    """(GGUF name, numpy shape [rows = out features, cols = in features], is a norm) for every tensor."""
    d, kv = args.dim, args.n_kv_heads * args.head_dim
    out = [("token_embd.weight", (args.vocab_size, d), False)]
    for i in range(args.n_layers):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", (d,), True), (b + "attn_q.weight", (args.n_heads * args.head_dim, d), False),
                (b + "attn_k.weight", (kv, d), False), (b + "attn_v.weight", (kv, d), False),
                (b + "attn_output.weight", (d, args.n_heads * args.head_dim), False),
                (b + "ffn_norm.weight", (d,), True), (b + "ffn_gate.weight", (args.hidden_dim, d), False),
                (b + "ffn_up.weight", (args.hidden_dim, d), False), (b + "ffn_down.weight", (d, args.hidden_dim), False)]
    out.append(("output_norm.weight", (d,), True))
    if not args.tie_word_embeddings:
        out.append(("output.weight", (args.vocab_size, d), False))
    return out


def _rope_factors(args: ModelArgs) -> np.ndarray | None:
    """llama.cpp's rope_freqs for llama3 scaling: the divisor of each base frequency (model.rope.apply_scaling)."""
    if args.rope_scaling is None or args.rope_scaling.rope_type != "llama3":
        return None
    from model.rope import apply_scaling

    exponent = np.arange(0, args.head_dim, 2, dtype=np.float32) / np.float32(args.head_dim)
    base = (1.0 / np.float32(args.rope_theta) ** exponent).astype(np.float32)
    return (base / apply_scaling(base, args.rope_scaling)).astype(np.float32)


def write_gguf(args: ModelArgs, fmt: str, path: str | os.PathLike, *, seed: int = 0, std: float = 0.02,
               tokenizer_from: str | None = None, show_progress: bool = True) -> Path:
    """A GGUF file of args' shapes at path (written beside, then renamed: an interrupted write leaves no file)."""
    import gguf
    from gguf.quants import quantize

    from model.checkpoint import default_model_path

    fmt = check_format(fmt)
    qtype = gguf.GGMLQuantizationType[fmt]
    src = gguf.GGUFReader(tokenizer_from or default_model_path())
    tokens = list(src.fields["tokenizer.ggml.tokens"].contents())
    if args.vocab_size < len(tokens):
        raise ConfigError(f"vocab_size {args.vocab_size} is smaller than the tokenizer's {len(tokens)} tokens.")
    pad = args.vocab_size - len(tokens)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    w = gguf.GGUFWriter(part, "llama")
    w.add_name(args.model_name)  # the name the precision presets key on (tt_transformers' base model name)
    w.add_description(f"{args.model_name}'s shapes with random weights in {fmt} and SmolLM2's tokenizer (ttjax)")
    w.add_uint32(_VERSION_KEY, VERSION)
    for add, value in ((w.add_context_length, args.max_context_len), (w.add_embedding_length, args.dim),
                       (w.add_block_count, args.n_layers), (w.add_feed_forward_length, args.hidden_dim),
                       (w.add_head_count, args.n_heads), (w.add_head_count_kv, args.n_kv_heads),
                       (w.add_key_length, args.head_dim), (w.add_value_length, args.head_dim),
                       (w.add_rope_dimension_count, args.head_dim), (w.add_rope_freq_base, args.rope_theta),
                       (w.add_layer_norm_rms_eps, args.norm_eps), (w.add_vocab_size, args.vocab_size)):
        add(value)
    w.add_file_type({"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7}[fmt])
    for key, field in src.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        if key == "tokenizer.ggml.tokens":
            value = tokens + [f"<|reserved_special_token_{i}|>" for i in range(pad)]
        elif key == "tokenizer.ggml.token_type":
            value = list(value) + [int(gguf.TokenType.CONTROL)] * pad
        sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, value, field.types[0], sub_type=sub)

    specs = _tensors(args)
    factors = _rope_factors(args)
    for name, shape, norm in specs:
        if norm or qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) or shape[-1] % 32:
            kind, dtype, nbytes = (gguf.GGMLQuantizationType.F32, np.float32, 4 * int(np.prod(shape))) if norm or fmt == "F32" \
                else (gguf.GGMLQuantizationType.F16, np.float16, 2 * int(np.prod(shape)))
            w.add_tensor_info(name, shape, np.dtype(dtype), nbytes, raw_dtype=kind)
        else:
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            w.add_tensor_info(name, (shape[0], shape[1] // block * size), np.dtype(np.uint8),  # its bytes' shape
                              shape[0] * shape[1] // block * size, raw_dtype=qtype)
    if factors is not None:
        w.add_tensor_info("rope_freqs.weight", factors.shape, np.dtype(np.float32), factors.nbytes,
                          raw_dtype=gguf.GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for index, (name, shape, norm) in enumerate(progress(specs, f"writing {path.name}", enabled=show_progress, unit="tensor")):
        if norm:
            w.write_tensor_data(np.ones(shape, np.float32))
            continue
        rng = np.random.Generator(np.random.PCG64([seed, index]))
        rows = []
        for r0 in range(0, shape[0], 8192):  # in row chunks: one float32 chunk at a time besides the quantized rows
            x = rng.standard_normal((min(8192, shape[0] - r0), shape[1]), dtype=np.float32) * np.float32(std)
            rows.append(x if fmt == "F32" else x.astype(np.float16) if fmt == "F16" else quantize(x, qtype))
        w.write_tensor_data(np.concatenate(rows))
    if factors is not None:
        w.write_tensor_data(factors)
    w.close()
    os.replace(part, path)
    return path


def cache_folder() -> Path:
    """Where same-shape files are kept: $TTJAX_CACHE_DIR/models, else $XDG_CACHE_HOME/ttjax/models or ~/.cache/..."""
    if os.environ.get("TTJAX_CACHE_DIR"):
        return Path(os.environ["TTJAX_CACHE_DIR"]) / "models"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ttjax" / "models"


def synthetic_path(name: str, fmt: str = "Q8_0", n_layers: int | None = None, folder=None) -> Path:
    """Where the same-shape file of the named model (any name of model.config.MODEL_NAMES) is kept."""
    args = named_config(name)
    layers = "" if n_layers is None else f"-{n_layers}L"
    return Path(folder or cache_folder()) / f"{args.model_name}{layers}-{check_format(fmt)}.gguf"


def is_current(path: str | os.PathLike) -> bool:
    """Whether path is a same-shape file this version of ttjax wrote."""
    import gguf

    try:
        field = gguf.GGUFReader(path).fields.get(_VERSION_KEY)
        return field is not None and int(field.contents()) == VERSION
    except (ValueError, OSError):
        return False


def synthetic_gguf(name: str, fmt: str = "Q8_0", n_layers: int | None = None, folder=None) -> str:
    """The same-shape GGUF of the named model, written on first use and kept: ~1.3 GB and half a minute for
    Llama-3.2-1B in Q8_0, ~8.5 GB and a few minutes for Llama-3.1-8B. n_layers: its first n_layers layers."""
    path = synthetic_path(name, fmt, n_layers, folder)
    if not is_current(path):
        try:
            write_gguf(named_config(name, **({} if n_layers is None else {"n_layers": n_layers})), fmt, path)
        except OSError as e:  # a full disk or a folder that cannot be written: say which, leave no partial file
            try:
                path.with_name(path.name + ".part").unlink(missing_ok=True)
            except OSError:
                pass  # no folder to hold one
            raise ConfigError(f"the same-shape file {path} cannot be written ({e.strerror or e}); free space there or set "
                              "$TTJAX_CACHE_DIR to another folder.") from None
    return str(path)
