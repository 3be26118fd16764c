"""Long prompts, as a new user sends them: a long document followed by a question, run through the
CLI's own cache sizing and through the Engine, each equal to transformers' greedy tokens on the same ids.

The lengths sit where prefill changes shape: just past one 2048-row chunk (two chunks, the second
running past the CLI's max_seq_len), past 4096 (three chunks, the last starting at 4096 and padded
to 6144), and near the model's 8192-token context. A chunk whose rows run past the rotary tables
once read the angles of other positions (jax.lax.dynamic_slice clamps its start silently): the
first token still matched and the continuation diverged, so each case compares several tokens.
"""

import json

import pytest

from model.tools.accuracy import shipped_text
from model.checkpoint import load_checkpoint
from model.tools.cli import main
from model.serving.engine import Engine, Request
from model.serving.generator import Generator
from model.config import PagedAttentionConfig
from tests.conftest import hf_greedy

QUESTION = "\n\nWho are the people this passage is about? Answer in one sentence."
NEW_TOKENS = 6
LENGTHS = {"past-2048": 2100, "past-4096": 4100, "near-context": 8180}


def long_prompt(tokenizer, n_tokens: int) -> tuple[str, list[int]]:
    """The shipped novel, cut so that it and the question, as a chat turn, encode to n_tokens (give or take a few)."""
    ids = tokenizer.encode(shipped_text())
    overhead = len(tokenizer.encode_chat([{"role": "user", "content": QUESTION}]))
    text = tokenizer.decode(ids[: n_tokens - overhead]) + QUESTION
    out = tokenizer.encode_chat([{"role": "user", "content": text}])
    assert abs(len(out) - n_tokens) <= 8, (len(out), n_tokens)
    return text, out


@pytest.fixture(scope="module")
def cases(ckpt, hf_model):
    """{name: (prompt text, prompt ids, reference greedy tokens)}."""
    out = {}
    for name, n in LENGTHS.items():
        text, ids = long_prompt(ckpt.tokenizer, n)
        out[name] = (text, ids, hf_greedy(hf_model, ids, NEW_TOKENS, ckpt.tokenizer.eos_ids)[0])
    return out


# past-4096 crosses both chunk boundaries; past-2048 and near the context run through the Engine below
@pytest.mark.parametrize("name", ["past-4096"])
def test_long_prompt_through_the_cli_sizing(cases, name, capsys):
    """`ttjax generate` sizes max_seq_len to the request (256-token steps) and pages the cache itself."""
    text, ids, ref = cases[name]
    assert main(["generate", "--prompt", text, "--chat", "--max-new-tokens", str(NEW_TOKENS), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt_tokens"] == len(ids)
    assert out["max_seq_len"] == -(-(len(ids) + NEW_TOKENS) // 256) * 256  # the CLI's own sizing, not a roomy cache
    assert out["tokens"] == ref


@pytest.mark.parametrize("names", [("past-2048", "past-4096"), ("near-context",)], ids=["4352-cache", "8192-cache"])
def test_long_prompts_through_the_engine(gguf_path, cases, names):
    """Continuous batching over a paged cache sized as the CLI sizes it for the longest request (4,352 tokens for
    4,100 + 6: the 6,144-row bucket runs past it; 8,192 near the context), two slots."""
    requests = {name: Request(cases[name][1], NEW_TOKENS) for name in names}
    longest = max(len(r.prompt) for r in requests.values()) + NEW_TOKENS
    max_seq_len = -(-longest // 256) * 256
    ck = load_checkpoint(gguf_path, max_seq_len=max_seq_len, max_batch_size=2, progress=False)
    paged = PagedAttentionConfig(block_size=64, max_num_blocks=2 * -(-max_seq_len // 64))
    gen = Generator(ck.params, ck.args.replace(paged_attention_config=paged), ck.tokenizer)
    outputs = Engine(gen).run(list(requests.values()))
    for name, out in zip(requests, outputs):
        assert out.tokens == cases[name][2], name
