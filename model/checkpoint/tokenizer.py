"""Tokenizers read from the checkpoint: GGUF's BPE vocab and merges, HF tokenizer.json, and
Llama 3's tiktoken `tokenizer.model`; chat templates rendered with Jinja like transformers does.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field

from model.errors import TokenizerError

# Pre-tokenizer split patterns by GGUF `tokenizer.ggml.pre` (as llama.cpp defines them).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_PRE = ("llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx")
_GPT2_PRE = ("gpt2", "default", "gpt-2")
# SmolLM's own tokenizer.json (and llama.cpp) split every digit before the GPT-2 regex.
_DIGITS_GPT2_PRE = ("smollm", "starcoder", "refact", "codeshell")
KNOWN_GGUF_PRE = _LLAMA3_PRE + _GPT2_PRE + _DIGITS_GPT2_PRE

_GGUF_CONTROL, _GGUF_USER_DEFINED = 3, 4

LLAMA3_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
LLAMA3_NUM_RESERVED_SPECIAL = 256
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


class _HFBackend:
    def __init__(self, tok):
        self.tok = tok

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str):
        return self.tok.token_to_id(token)

    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)


class _TiktokenBackend:
    def __init__(self, enc, ranks: dict[bytes, int], special: dict[str, int]):
        self.enc, self.ranks, self.special = enc, ranks, special

    def encode(self, text: str) -> list[int]:
        return self.enc.encode(text, allowed_special="all")

    def decode(self, ids, skip_special_tokens: bool) -> str:
        ids = [i for i in ids if not (skip_special_tokens and i >= len(self.ranks))]
        return self.enc.decode(ids)

    def token_to_id(self, token: str):
        return self.special.get(token, self.ranks.get(token.encode()))

    def vocab_size(self) -> int:
        return self.enc.n_vocab


@dataclass
class Tokenizer:
    backend: object
    bos_id: int | None
    eos_ids: frozenset[int]
    add_bos: bool
    chat_template: str | None = None
    special: dict = field(default_factory=dict)  # bos_token / eos_token strings for templates

    def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        add = self.add_bos if add_bos is None else add_bos
        # BOS is added here, in one place, whatever the backend's own post-processor would do.
        ids = self.backend.encode(text)
        if add and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids, *, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(ids, skip_special_tokens)

    def token_to_id(self, token: str):
        return self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size()

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise TokenizerError("this tokenizer has no chat template, so chat messages cannot be formatted.")
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):  # what templates call to refuse a conversation ("roles must alternate", ...)
            raise TokenizerError(f"the chat template refuses these messages: {message}.")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            return env.from_string(self.chat_template).render(
                messages=messages, add_generation_prompt=add_generation_prompt, **self.special
            )
        except TemplateError as e:  # a template that does not parse or render
            raise TokenizerError(f"the chat template cannot be rendered: {e}.") from e

    def encode_chat(self, messages: list[dict], *, add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the formatted conversation; the template supplies any BOS itself."""
        return self.encode(self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt), add_bos=False)


def _byte_level_bpe(vocab: dict[str, int], merges: list[str], pre: str):
    from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    if pre not in KNOWN_GGUF_PRE:
        raise TokenizerError(f"unknown GGUF pre-tokenizer {pre!r}; known: {', '.join(KNOWN_GGUF_PRE)}.")
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre in _LLAMA3_PRE))
    if pre in _LLAMA3_PRE:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    elif pre in _DIGITS_GPT2_PRE:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def tokenizer_from_gguf(meta: dict, path: str = "GGUF file") -> Tokenizer:
    """A tokenizer from GGUF metadata (`tokenizer.ggml.*`): byte-level BPE vocab and merges."""
    from tokenizers import AddedToken

    kind = meta.get("tokenizer.ggml.model")
    if kind is None:
        raise TokenizerError(f"{path} has no tokenizer (no tokenizer.ggml.model field).")
    if kind != "gpt2":
        raise TokenizerError(f"{path} has a {kind!r} tokenizer; ttjax reads GGUF byte-level BPE ('gpt2') vocabularies.")
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = list(meta.get("tokenizer.ggml.merges") or [])
    if not merges:
        raise TokenizerError(f"{path} has a BPE vocabulary without merges.")
    tok = _byte_level_bpe({t: i for i, t in enumerate(tokens)}, merges, str(meta.get("tokenizer.ggml.pre", "default")))
    types = list(meta.get("tokenizer.ggml.token_type") or [])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == _GGUF_CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == _GGUF_USER_DEFINED])
    bos = meta.get("tokenizer.ggml.bos_token_id")
    eos = {meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in meta}
    return Tokenizer(
        backend=_HFBackend(tok),
        bos_id=None if bos is None else int(bos),
        eos_ids=frozenset(int(e) for e in eos),
        add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        chat_template=meta.get("tokenizer.chat_template"),
        special={
            "bos_token": tokens[int(bos)] if bos is not None else "",
            "eos_token": tokens[int(meta["tokenizer.ggml.eos_token_id"])] if "tokenizer.ggml.eos_token_id" in meta else "",
        },
    )


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def tokenizer_from_hf(folder: str) -> Tokenizer:
    """A tokenizer from a Hugging Face folder: tokenizer.json (+ tokenizer_config.json, generation_config.json)."""
    from tokenizers import Tokenizer as HFTokenizer

    path = os.path.join(folder, "tokenizer.json")
    try:
        tok = HFTokenizer.from_file(path)
    except Exception as e:
        raise TokenizerError(f"{path} cannot be read as a tokenizers JSON file: {e}.") from e

    def read_json(name):
        p = os.path.join(folder, name)
        if not os.path.exists(p):
            return {}
        with open(p) as f:
            return json.load(f)

    config = read_json("tokenizer_config.json")
    template = config.get("chat_template")
    jinja_path = os.path.join(folder, "chat_template.jinja")
    if template is None and os.path.exists(jinja_path):
        with open(jinja_path) as f:
            template = f.read()
    bos_text, eos_text = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
    bos = tok.token_to_id(bos_text) if bos_text else None
    eos = set()
    if eos_text and tok.token_to_id(eos_text) is not None:
        eos.add(tok.token_to_id(eos_text))
    gen_eos = read_json("generation_config.json").get("eos_token_id")
    eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
    # A post-processor that prepends BOS (Llama 3's TemplateProcessing) means add_bos by default.
    probe = tok.encode("a", add_special_tokens=True).ids
    add_bos = bool(config.get("add_bos_token", bos is not None and probe[:1] == [bos]))
    return Tokenizer(
        backend=_HFBackend(tok),
        bos_id=bos,
        eos_ids=frozenset(int(e) for e in eos),
        add_bos=add_bos,
        chat_template=template,
        special={"bos_token": bos_text or "", "eos_token": eos_text or ""},
    )


def read_tiktoken_ranks(path: str) -> dict[bytes, int]:
    """The mergeable ranks of a tiktoken BPE file: one `base64(token) rank` per line."""
    with open(path, "rb") as f:
        data = f.read()
    ranks = {}
    for number, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as e:
            if data[:1] == b"\n" or b"\x00" in data[:64]:
                raise TokenizerError(
                    f"{path} is a SentencePiece model (Llama 2 style); ttjax reads Llama 3 tiktoken tokenizer.model files, "
                    "GGUF vocabularies and tokenizer.json."
                ) from e
            raise TokenizerError(f"{path} line {number} is not 'base64-token rank', so this is not a tiktoken BPE file.") from e
    return ranks


def tokenizer_from_tiktoken(path: str) -> Tokenizer:
    """Llama 3's tokenizer.model: tiktoken BPE ranks + the 256 special tokens Meta appends."""
    import tiktoken

    ranks = read_tiktoken_ranks(path)
    n = len(ranks)
    names = LLAMA3_SPECIAL_TOKENS + [
        f"<|reserved_special_token_{2 + i}|>" for i in range(LLAMA3_NUM_RESERVED_SPECIAL - len(LLAMA3_SPECIAL_TOKENS))
    ]
    special = {name: n + i for i, name in enumerate(names)}
    enc = tiktoken.Encoding(name=os.path.basename(path), pat_str=LLAMA3_SPLIT, mergeable_ranks=ranks, special_tokens=special)
    return Tokenizer(
        backend=_TiktokenBackend(enc, ranks, special),
        bos_id=special["<|begin_of_text|>"],
        eos_ids=frozenset(special[t] for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")),
        add_bos=True,
        chat_template=LLAMA3_CHAT_TEMPLATE,
        special={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    )


def load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer at a path: a .gguf file, a folder with tokenizer.json or tokenizer.model, or a tokenizer.model file."""
    if os.path.isfile(path) and path.endswith(".gguf"):
        from model.checkpoint.gguf import metadata, open_gguf

        return tokenizer_from_gguf(metadata(open_gguf(path)), path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "tokenizer.json")):
            return tokenizer_from_hf(path)
        for candidate in (os.path.join(path, "tokenizer.model"), os.path.join(path, "original", "tokenizer.model")):
            if os.path.exists(candidate):
                return tokenizer_from_tiktoken(candidate)
        raise TokenizerError(f"no tokenizer found in {path}: expected tokenizer.json or tokenizer.model.")
    if os.path.isfile(path) and os.path.basename(path).endswith(".model"):
        return tokenizer_from_tiktoken(path)
    raise TokenizerError(f"unknown tokenizer {path!r}: expected a .gguf file, a tokenizer.json folder or a tiktoken tokenizer.model.")
