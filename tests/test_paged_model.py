"""The real model on a paged KV cache, with chunked prefill and the fused rotary, against transformers
and against the contiguous path.

- users on shuffled pages (block 0 included) decode exactly the reference's greedy tokens;
- a 1,000-token passage prefilled in 256-token chunks gives the reference's logits and the same
  tokens as a whole prefill; an 8,000-token passage (first layers) gives the whole prefill's logits;
- rotary with TT's transformation matrix equals the rotate-pairs form;
- an exhausted pool, a short page table, a contiguous cache asked to chunk, a position past
  max_seq_len: each a clear error.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from model.serving.engine import generate
from model.tools.accuracy import shipped_text
from model.checkpoint import load_checkpoint
from model.errors import KVCacheError, SequenceLengthError
from model.serving.generator import Generator
from model.config import PagedAttentionConfig
from model.serving.page_table import BlockAllocator
from tests.conftest import PROMPTS, STEPS
from ttjax import TTJaxError
from ttjax.metrics import pcc

PAGED = PagedAttentionConfig(block_size=32, max_num_blocks=24)  # 3 users x 8 blocks of 32 = max_seq_len 256


def _solo_tokens(reference, prompt):
    return reference[prompt][2]


def test_paged_batch_on_shuffled_pages_matches_reference(ckpt, reference):
    """Three users in slots 0, 2 and 3 of a batch of 4, their blocks handed out in random order from a pool
    exactly big enough (so block 0 is used), decode together; each gets its solo reference tokens."""
    gen = Generator(ckpt.params, ckpt.args.replace(max_batch_size=4, paged_attention_config=PAGED), ckpt.tokenizer)
    pages = gen.new_page_table(allocator=BlockAllocator(PAGED.max_num_blocks, shuffle=True, seed=1))
    cache = gen.allocate_kv_cache()
    slots = {0: PROMPTS[0], 2: PROMPTS[1], 3: PROMPTS[2]}
    tokens, pos = np.zeros(4, np.int32), np.full(4, -1, np.int32)
    for slot, prompt in slots.items():
        ids = reference[prompt][0]
        pages.reserve(slot, ckpt.args.max_seq_len)
        logits, cache = gen.prefill_forward_text(ids, cache, user_id=slot, page_table=pages)
        tokens[slot], pos[slot] = int(jnp.argmax(logits)), len(ids)
    table = pages.array()
    assert 0 in table and pages.allocator.num_free == 0
    out = {slot: [int(tokens[slot])] for slot in slots}
    tokens, pos = jnp.asarray(tokens), jnp.asarray(pos)
    for _ in range(STEPS - 1):
        tokens, _, pos, cache = gen.decode_forward(tokens, pos, cache, table)
        host = np.asarray(tokens)
        for slot in slots:
            out[slot].append(int(host[slot]))
    for slot, prompt in slots.items():
        assert out[slot] == _solo_tokens(reference, prompt), f"slot {slot}"


@pytest.mark.parametrize("rotary_impl", ["rotate_pairs", "transformation_mat"])
def test_generate_paged_equals_contiguous(ckpt, generator, reference, rotary_impl):
    args = ckpt.args.replace(paged_attention_config=PagedAttentionConfig(64, 4), rotary_impl=rotary_impl)
    gen = Generator(ckpt.params, args, ckpt.tokenizer)
    ids, _, ref_tokens, _ = reference[PROMPTS[0]]
    paged = generate(gen, ids, 16, stop_at_eos=False)
    assert paged.tokens == generate(generator, ids, 16, stop_at_eos=False).tokens == ref_tokens[:16]


def test_rotary_transformation_matrix_equals_rotate_pairs(ckpt, generator):
    ids = ckpt.tokenizer.encode(PROMPTS[3])
    fused = Generator(ckpt.params, ckpt.args.replace(rotary_impl="transformation_mat"), ckpt.tokenizer)
    a, _ = generator.prefill_forward_text(ids, generator.allocate_kv_cache())
    b, _ = fused.prefill_forward_text(ids, fused.allocate_kv_cache())
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


@pytest.fixture(scope="module")
def passage(ckpt):
    return ckpt.tokenizer.encode(shipped_text())


def test_chunked_prefill_matches_reference_and_whole_prefill(ckpt, hf_model, passage):
    """1,000 tokens: whole prefill (bucket 1024, contiguous) and four 256-token chunks through shuffled pages."""
    ids = passage[:1000]
    args = ckpt.args.replace(max_seq_len=1024)
    whole = Generator(ckpt.params, args, ckpt.tokenizer)
    paged = PagedAttentionConfig(block_size=64, max_num_blocks=16)
    chunked = Generator(ckpt.params, args.replace(paged_attention_config=paged, max_prefill_chunk_size=256), ckpt.tokenizer)
    pages = chunked.new_page_table(allocator=BlockAllocator(16, shuffle=True, seed=2))
    pages.reserve(0, 1024)
    with torch.no_grad():
        ref = hf_model(torch.tensor([ids])).logits[0, -1].numpy()
    a, cache_a = whole.prefill_forward_text(ids, whole.allocate_kv_cache())
    b, cache_b = chunked.prefill_forward_text(ids, chunked.allocate_kv_cache(), page_table=pages)
    assert pcc(ref, np.asarray(b)) >= 0.999 and int(np.argmax(b)) == int(ref.argmax())
    assert pcc(np.asarray(a), np.asarray(b)) >= 0.99999
    # and they decode on the same way
    ta, tb = [int(jnp.argmax(a))], [int(jnp.argmax(b))]
    pos = np.array([len(ids)], np.int32)
    tok_a, pos_a, tok_b, pos_b = jnp.asarray(ta), jnp.asarray(pos), jnp.asarray(tb), jnp.asarray(pos)
    for _ in range(8):
        tok_a, _, pos_a, cache_a = whole.decode_forward(tok_a, pos_a, cache_a)
        tok_b, _, pos_b, cache_b = chunked.decode_forward(tok_b, pos_b, cache_b, pages)
        ta.append(int(tok_a[0]))
        tb.append(int(tok_b[0]))
    assert ta == tb


def test_8000_token_prompt_in_chunks_equals_whole(gguf_path, passage):
    """8,000 tokens of the shipped text through the first 2 layers: chunks of 2048 through pages == one 8192 prefill."""
    ck = load_checkpoint(gguf_path, max_seq_len=8192, n_layers=2, progress=False)
    ids = passage[:8000]
    paged = PagedAttentionConfig(block_size=64, max_num_blocks=128)
    results = []
    for chunk in (8192, 2048):
        gen = Generator(ck.params, ck.args.replace(paged_attention_config=paged, max_prefill_chunk_size=chunk))
        pages = gen.new_page_table()
        pages.reserve(0, 8000)
        logits, _ = gen.prefill_forward_text(ids, gen.allocate_kv_cache(), page_table=pages)
        results.append(np.asarray(logits))
        assert sum(k[0] == "prefill-paged" for k in gen.programs) == 1  # one program, whatever the chunk's start
    assert pcc(*results) >= 0.99999


def test_long_context_errors(ckpt, passage):
    args = ckpt.args.replace(max_seq_len=1024, max_prefill_chunk_size=256)
    contiguous = Generator(ckpt.params, args)
    with pytest.raises(KVCacheError, match=r"a prompt of 600 tokens pads to 1024, past max_prefill_chunk_size = 256: chunked prefill needs a paged KV cache"):
        contiguous.prefill_forward_text(passage[:600], contiguous.allocate_kv_cache())
    gen = Generator(ckpt.params, args.replace(paged_attention_config=PagedAttentionConfig(64, 8)))
    pages = gen.new_page_table(batch=2)
    pages.reserve(0, 300)
    with pytest.raises(KVCacheError, match=r"user 0's page-table row has blocks for 320 positions; the prompt needs 600"):
        gen.prefill_forward_text(passage[:600], gen.allocate_kv_cache(), page_table=pages)
    with pytest.raises(KVCacheError, match=r"pass a page_table"):
        gen.prefill_forward_text(passage[:10], gen.allocate_kv_cache())
    with pytest.raises(KVCacheError, match=r"the KV block pool is exhausted: 6 blocks asked for, 3 of 8 free"):
        pages.reserve(1, 384)
    with pytest.raises(TTJaxError, match=r"page_table entry 8 is neither -1 \(no block\) nor a block of the pool of 8"):
        gen.decode_forward(np.zeros(1, np.int32), np.zeros(1, np.int32), gen.allocate_kv_cache(), np.array([[8]], np.int32))
    with pytest.raises(SequenceLengthError, match=r"position 1024 is past max_seq_len = 1024"):
        gen.decode_forward(np.zeros(2, np.int32), np.array([1024, 0], np.int32), gen.allocate_kv_cache(), pages)
