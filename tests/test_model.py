"""The whole model against transformers' LlamaForCausalLM on the same GGUF, float32.

- last-token logits of prefill: PCC >= 0.999 and the same top-1, on several prompts;
- 32 greedy tokens on three prompts, identical, through decode and through prefill (teacher
  forced: one prefill over prompt + reference tokens predicts every next token);
- per-step decode logits PCC >= 0.999;
- users decoding together in one batch, at different positions and slots, each get exactly
  the tokens they get alone.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.serving.engine import generate
from model.buckets import get_padded_prefill_len
from model.serving.generator import Generator
from model.transformer import forward
from tests.conftest import PROMPTS
from ttjax.metrics import pcc

from tests.conftest import STEPS
GREEDY_PROMPTS = PROMPTS[:3]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_prefill_last_token_logits(generator, reference, prompt):
    ids, ref_logits, _, _ = reference[prompt]
    logits, _ = generator.prefill_forward_text(ids, generator.allocate_kv_cache())
    logits = np.asarray(logits)
    assert pcc(ref_logits, logits) >= 0.999
    assert logits.argmax() == ref_logits.argmax()


@pytest.mark.parametrize("prompt", GREEDY_PROMPTS)
def test_greedy_decode_matches_reference(generator, reference, prompt):
    ids, _, ref_tokens, _ = reference[prompt]
    result = generate(generator, ids, STEPS, stop_at_eos=False)
    assert result.tokens == ref_tokens


@pytest.fixture(scope="module")
def prefill_all_logits(ckpt):
    """Prefill that returns logits for every position (get_last_token=None), compiled once per bucket."""
    args = ckpt.args
    run = jax.jit(partial(forward, args=args, mode="prefill"), donate_argnames="kv_cache")
    gen = Generator(ckpt.params, args)

    def call(ids):
        padded = np.zeros((1, get_padded_prefill_len(len(ids))), np.int32)
        padded[0, : len(ids)] = ids
        logits, _ = run(ckpt.params, padded, gen.rot, gen.allocate_kv_cache())
        return np.asarray(logits[0, : len(ids)])

    return call


@pytest.mark.parametrize("prompt", GREEDY_PROMPTS)
def test_greedy_prefill_matches_reference(prefill_all_logits, reference, prompt):
    ids, _, ref_tokens, ref_step_logits = reference[prompt]
    logits = prefill_all_logits(ids + ref_tokens[:-1])
    n = len(ids)
    assert logits[n - 1 :].argmax(-1).tolist() == ref_tokens
    assert min(pcc(r, o) for r, o in zip(ref_step_logits, logits[n - 1 :])) >= 0.999


def test_decode_logits_match_reference(ckpt, generator, reference):
    ids, _, ref_tokens, ref_step_logits = reference[PROMPTS[0]]
    step = jax.jit(partial(forward, args=ckpt.args, mode="decode"), donate_argnames="kv_cache")
    _, cache = generator.prefill_forward_text(ids, generator.allocate_kv_cache())
    pccs = []
    for i in range(1, STEPS):
        # teacher forced: the reference's token in, its next logits to compare
        logits, cache = step(ckpt.params, jnp.array([ref_tokens[i - 1]]), generator.rot, cache, current_pos=jnp.array([len(ids) + i - 1]))
        pccs.append(pcc(ref_step_logits[i], logits[0, 0]))
    assert min(pccs) >= 0.999, pccs


def test_batched_users_match_their_solo_runs(ckpt, reference):
    """Three users prefilled into slots 0, 1 and 3 of a batch of 4 (slot 2 empty) decode together,
    each at its own position, and each gets the reference's greedy tokens."""
    args = ckpt.args.replace(max_batch_size=4)
    gen = Generator(ckpt.params, args, ckpt.tokenizer)
    cache = gen.allocate_kv_cache()
    slots = {0: GREEDY_PROMPTS[0], 1: GREEDY_PROMPTS[1], 3: GREEDY_PROMPTS[2]}
    tokens = np.zeros(4, np.int32)
    pos = np.full(4, -1, np.int32)
    for slot, prompt in slots.items():
        ids = reference[prompt][0]
        logits, cache = gen.prefill_forward_text(ids, cache, user_id=slot)
        tokens[slot], pos[slot] = int(jnp.argmax(logits)), len(ids)
    out = {slot: [int(tokens[slot])] for slot in slots}
    tokens, pos = jnp.asarray(tokens), jnp.asarray(pos)
    for _ in range(STEPS - 1):
        tokens, _, pos, cache = gen.decode_forward(tokens, pos, cache)
        host = np.asarray(tokens)
        for slot in slots:
            out[slot].append(int(host[slot]))
    for slot, prompt in slots.items():
        assert out[slot] == reference[prompt][2], f"slot {slot}"
    assert int(np.asarray(pos)[2]) == -1, "the empty slot must stay empty"
