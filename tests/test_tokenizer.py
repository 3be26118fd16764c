"""Tokenizers from the checkpoint: GGUF BPE (against transformers' tokenizer of the same file), HF
tokenizer.json, Llama 3 tiktoken tokenizer.model, chat templates, and clear errors for unknown ones."""

import base64

import pytest

from model.errors import TokenizerError
from model.checkpoint.tokenizer import (
    LLAMA3_SPECIAL_TOKENS,
    load_tokenizer,
    tokenizer_from_gguf,
    tokenizer_from_hf,
    tokenizer_from_tiktoken,
)

TEXTS = [
    "The capital of France is",
    "Hello, world! How's it going?\n\nFine.",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Ünïcödé — naïve café, 東京, emoji 🙂 and tabs\tend",
    "<|im_start|>user\nWhat is 'Paris'?<|im_end|>\n",
    "   leading spaces and trailing   ",
]
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


@pytest.mark.parametrize("text", TEXTS)
def test_gguf_tokenizer_matches_reference(ckpt, hf_tokenizer, text):
    ours = ckpt.tokenizer.encode(text)
    assert ours == hf_tokenizer.encode(text, add_special_tokens=False)
    assert ckpt.tokenizer.decode(ours) == text


def test_known_prompt_ids(ckpt):
    assert ckpt.tokenizer.encode("The capital of France is") == [504, 3575, 282, 4649, 314]
    assert ckpt.tokenizer.bos_id == 1 and 2 in ckpt.tokenizer.eos_ids


def test_digits_are_split_one_by_one(ckpt):
    """SmolLM's tokenizer.json and llama.cpp (pre 'smollm') split every digit; transformers' GGUF
    converter does not, so digits are checked here rather than against it."""
    tok = ckpt.tokenizer
    ids = tok.encode("in 2024")
    assert [tok.decode([i]) for i in ids[-4:]] == ["2", "0", "2", "4"]
    assert tok.decode(ids) == "in 2024"


def test_chat_template_matches_reference(ckpt, hf_tokenizer):
    ours = ckpt.tokenizer.apply_chat_template(CONVERSATION)
    assert ours == hf_tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert ours.endswith("<|im_start|>assistant\n")
    ids = ckpt.tokenizer.encode_chat(CONVERSATION)
    assert ids.count(ckpt.tokenizer.token_to_id("<|im_start|>")) == 5  # special tokens stay whole


def test_hf_tokenizer_json(ckpt, hf_tokenizer, tmp_path):
    hf_tokenizer.save_pretrained(str(tmp_path))
    tok = tokenizer_from_hf(str(tmp_path))
    for text in TEXTS:
        assert tok.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)
    assert tok.chat_template == ckpt.tokenizer.chat_template
    assert tok.apply_chat_template(CONVERSATION) == ckpt.tokenizer.apply_chat_template(CONVERSATION)
    assert tok.eos_ids == frozenset({2})
    assert load_tokenizer(str(tmp_path)).encode(TEXTS[0]) == tok.encode(TEXTS[0])


def _write_tiktoken(path):
    """A small tiktoken BPE file: the 256 bytes, then merges in rank order."""
    ranks = [bytes([b]) for b in range(256)]
    for merged in [b"th", b"the", b" t", b" the", b"in", b"an", b" a", b"is", b" is", b"er", b"Pa", b"ri", b"Pari", b"Paris"]:
        ranks.append(merged)
    path.write_bytes(b"".join(base64.b64encode(t) + b" " + str(i).encode() + b"\n" for i, t in enumerate(ranks)))
    return len(ranks)


def test_llama3_tiktoken(tmp_path):
    n = _write_tiktoken(tmp_path / "tokenizer.model")
    tok = load_tokenizer(str(tmp_path))
    assert tok.bos_id == n  # <|begin_of_text|> follows the BPE ranks
    assert tok.token_to_id("<|eot_id|>") == n + LLAMA3_SPECIAL_TOKENS.index("<|eot_id|>")
    assert tok.vocab_size == n + 256
    ids = tok.encode("the capital is Paris")
    assert ids[0] == tok.bos_id
    assert tok.decode(ids, skip_special_tokens=True) == "the capital is Paris"
    assert tok.token_to_id("the") in ids and tok.token_to_id(" is") in ids  # merges applied
    chat = tok.encode_chat([{"role": "user", "content": "Hi"}])
    assert chat[:2] == [tok.bos_id, tok.token_to_id("<|start_header_id|>")]
    assert tok.decode(chat) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    assert tok.token_to_id("<|eot_id|>") in tok.eos_ids


def test_sentencepiece_model_is_refused_clearly(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\n\x0e\n\x05<unk>\x15\x00\x00\x00\x00\x18\x02" + bytes(range(200)))
    with pytest.raises(TokenizerError, match="SentencePiece model"):
        tokenizer_from_tiktoken(str(tmp_path / "tokenizer.model"))


def test_unknown_gguf_pretokenizer(gguf_path):
    from model.checkpoint.gguf import metadata, open_gguf

    meta = metadata(open_gguf(gguf_path))
    meta["tokenizer.ggml.pre"] = "klingon"
    with pytest.raises(TokenizerError, match="unknown GGUF pre-tokenizer 'klingon'"):
        tokenizer_from_gguf(meta)
    meta["tokenizer.ggml.model"] = "rwkv"
    with pytest.raises(TokenizerError, match="has a 'rwkv' tokenizer"):
        tokenizer_from_gguf(meta)


def test_unknown_tokenizer_path(tmp_path):
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(TokenizerError, match="unknown tokenizer"):
        load_tokenizer(str(tmp_path / "vocab.txt"))
    with pytest.raises(TokenizerError, match="no tokenizer found"):
        load_tokenizer(str(tmp_path))


def test_chat_template_refusals_are_tokenizer_errors(ckpt):
    """A template that refuses a conversation, or does not parse, is one TokenizerError, not a jinja traceback."""
    import dataclasses

    from model.errors import TokenizerError

    strict = dataclasses.replace(ckpt.tokenizer, chat_template="{{ raise_exception('Conversation roles must alternate') }}")
    with pytest.raises(TokenizerError, match="the chat template refuses these messages: Conversation roles must alternate"):
        strict.encode_chat(CONVERSATION)
    broken = dataclasses.replace(ckpt.tokenizer, chat_template="{% for m in messages %}")
    with pytest.raises(TokenizerError, match="the chat template cannot be rendered"):
        broken.encode_chat(CONVERSATION)
