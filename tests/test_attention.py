"""Flash attention, flash decode and the paged KV cache against torch's scaled_dot_product_attention (float32).

Each case is checked at PCC >= 0.99999 and elementwise; paged results must equal contiguous
ones computed from the same values through a shuffled page table that includes block 0.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import ttjax
from model.errors import KVCacheError
from model.paged_attention import BlockAllocator, PagedAttentionConfig, PageTable
from ttjax import SDPAProgramConfig, TTJaxError
from ttjax.metrics import pcc

PCC = 0.99999


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def torch_sdpa(q, k, v, causal=True):
    """The reference: torch's SDPA with grouped-query heads."""
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    out = torch.nn.functional.scaled_dot_product_attention(t(q), t(k), t(v), is_causal=causal, enable_gqa=True)
    return out.numpy()


def assert_close(ours, ref):
    ours = np.asarray(ours)
    assert pcc(ref, ours) >= PCC
    np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("heads", [(8, 8), (8, 2), (9, 3), (4, 1)])
@pytest.mark.parametrize("seq,chunks", [(128, (32, 32)), (256, (64, 128)), (256, (128, 32)), (100, (64, 64)), (512, (256, 256))])
def test_flash_prefill_equals_reference(heads, seq, chunks):
    h, kv = heads
    rng = np.random.default_rng(seq + h)
    q, k, v = _rand(rng, 1, h, seq, 64), _rand(rng, 1, kv, seq, 64), _rand(rng, 1, kv, seq, 64)
    cfg = SDPAProgramConfig(q_chunk_size=chunks[0], k_chunk_size=chunks[1])
    ours = jax.jit(lambda q, k, v: ttjax.scaled_dot_product_attention(q, k, v, program_config=cfg))(q, k, v)
    assert_close(ours, torch_sdpa(q, k, v))


def test_flash_prefill_non_causal_and_uneven_keys():
    rng = np.random.default_rng(1)
    q, k, v = _rand(rng, 2, 6, 70, 32), _rand(rng, 2, 2, 130, 32), _rand(rng, 2, 2, 130, 32)
    ours = ttjax.scaled_dot_product_attention(q, k, v, is_causal=False, program_config=SDPAProgramConfig(32, 64))
    assert_close(ours, torch_sdpa(q, k, v, causal=False))


def _largest_intermediate(jaxpr) -> int:
    sizes = [0]
    for eqn in jaxpr.eqns:
        sizes += [int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape")]
        for p in eqn.params.values():  # the bodies of map / fori_loop
            inner = getattr(p, "jaxpr", None)
            if inner is not None:
                sizes.append(_largest_intermediate(getattr(inner, "jaxpr", inner)))
    return max(sizes)


def test_flash_prefill_never_builds_the_score_matrix():
    """At 2048 tokens in 64-row chunks, no value in the program is anywhere near seq x seq."""
    s, h = 2048, 4
    q = jax.ShapeDtypeStruct((1, h, s, 64), jnp.float32)
    kv = jax.ShapeDtypeStruct((1, 1, s, 64), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda q, k, v: ttjax.scaled_dot_product_attention(q, k, v, program_config=SDPAProgramConfig(64, 64)))(q, kv, kv)
    assert _largest_intermediate(jaxpr.jaxpr) <= h * s * 64  # the output itself; scores would be h * s * s
    naive = h * s * s
    assert _largest_intermediate(jaxpr.jaxpr) < naive // 16


def _decode_reference(q, k_cache, v_cache, cur_pos):
    """Per user: torch SDPA of its one query against cache rows 0..cur_pos."""
    out = np.zeros_like(q)
    for b, p in enumerate(cur_pos):
        if p < 0:
            continue
        out[b] = torch_sdpa(q[b][None, :, None], k_cache[b][None, :, : p + 1], v_cache[b][None, :, : p + 1], causal=False)[0, :, 0]
    return out


RAGGED = np.array([0, 1, 31, 32, 33, 63, 64, 100, 127, 128, 200, 255] + list(range(5, 245, 12)), np.int32)[:32]


@pytest.mark.parametrize("heads", [(8, 8), (8, 2), (9, 3), (32, 8)])
@pytest.mark.parametrize("k_chunk", [32, 64, 256])
def test_flash_decode_equals_reference(heads, k_chunk):
    """Batch 32, every user at its own position (0, tile edges, the last slot, ...)."""
    h, kv = heads
    rng = np.random.default_rng(h * k_chunk)
    b, s, d = 32, 256, 64
    q, kc, vc = _rand(rng, b, h, d), _rand(rng, b, kv, s, d), _rand(rng, b, kv, s, d)
    cfg = SDPAProgramConfig(q_chunk_size=32, k_chunk_size=k_chunk)
    ours = jax.jit(lambda *a: ttjax.scaled_dot_product_attention_decode(*a, program_config=cfg))(q, kc, vc, RAGGED)
    assert_close(ours, _decode_reference(q, kc, vc, RAGGED))


def _paged_copy(contiguous, table, block):
    """The contiguous [B, KV, S, d] values written into a pool through table, user by user with paged_fill_cache."""
    b, kv, s, d = contiguous.shape
    pool = jnp.zeros((int(table.max()) + 1, kv, block, d), jnp.float32)
    for user in range(b):
        pool = ttjax.paged_fill_cache(pool, contiguous[user : user + 1], table, batch_idx=user)
    return pool


def _shuffled_table(batch, blocks_per_user, block=32, seed=0):
    pt = PageTable(PagedAttentionConfig(block, batch * blocks_per_user), batch, blocks_per_user * block,
                   BlockAllocator(batch * blocks_per_user, shuffle=True, seed=seed))
    for user in range(batch):
        pt.reserve(user, blocks_per_user * block)
    return pt.array()


def test_paged_decode_equals_contiguous_with_a_shuffled_page_table():
    rng = np.random.default_rng(3)
    b, h, kv, s, d, block = 32, 9, 3, 256, 64, 32
    q, kc, vc = _rand(rng, b, h, d), _rand(rng, b, kv, s, d), _rand(rng, b, kv, s, d)
    table = _shuffled_table(b, s // block)
    assert 0 in table and not (np.diff(table, axis=1) == 1).all()  # block 0 is used; rows are not in order
    kp, vp = _paged_copy(kc, table, block), _paged_copy(vc, table, block)
    cfg = SDPAProgramConfig(32, 64)
    paged = ttjax.paged_scaled_dot_product_attention_decode(q, kp, vp, RAGGED, table, program_config=cfg)
    contiguous = ttjax.scaled_dot_product_attention_decode(q, kc, vc, RAGGED, program_config=cfg)
    np.testing.assert_array_equal(np.asarray(paged), np.asarray(contiguous))


def test_paged_update_equals_contiguous_update():
    rng = np.random.default_rng(4)
    b, kv, s, d, block = 8, 2, 128, 32, 32
    cache = _rand(rng, b, kv, s, d)
    table = _shuffled_table(b, s // block, seed=5)
    pool = _paged_copy(cache, table, block)
    x = _rand(rng, b, kv, d)
    pos = np.array([0, 31, 32, 127, -1, 64, 5, 100], np.int32)  # -1: an empty slot, left alone
    new_contig = ttjax.update_cache(jnp.asarray(cache), x, pos)
    new_pool = jax.jit(ttjax.paged_update_cache)(pool, x, pos, table)
    np.testing.assert_array_equal(np.asarray(_paged_copy(np.asarray(new_contig), table, block)), np.asarray(new_pool))


def test_chunked_prefill_attention_equals_whole_prefill():
    """A 512-token prompt in 128-token chunks, each reading the earlier chunks' K/V from the paged cache."""
    rng = np.random.default_rng(6)
    h, kv, s, d, block, chunk = 8, 2, 512, 64, 32, 128
    q, k, v = _rand(rng, 1, h, s, d), _rand(rng, 1, kv, s, d), _rand(rng, 1, kv, s, d)
    table = _shuffled_table(2, s // block, seed=7)[1:]  # one user, its blocks scattered over a pool of two users
    pool_k = jnp.zeros((2 * s // block, kv, block, d), jnp.float32)
    pool_v = jnp.zeros_like(pool_k)
    cfg = SDPAProgramConfig(64, 64)
    step = jax.jit(
        lambda pk, pv, qc, kc, vc, start: (
            (pk := ttjax.paged_fill_cache(pk, kc, table, 0, start)),
            (pv := ttjax.paged_fill_cache(pv, vc, table, 0, start)),
            ttjax.chunked_scaled_dot_product_attention(qc, pk, pv, table, start, program_config=cfg),
        )
    )
    outs = []
    for start in range(0, s, chunk):
        pool_k, pool_v, out = step(pool_k, pool_v, *(t[:, :, start : start + chunk] for t in (q, k, v)), start)
        outs.append(np.asarray(out))
    assert_close(np.concatenate(outs, axis=2), torch_sdpa(q, k, v))


def test_padded_prefill_does_not_spill_into_other_blocks():
    """A prompt padded past its last block writes nothing where the page table has no block (-1)."""
    rng = np.random.default_rng(8)
    pool = jnp.asarray(_rand(rng, 4, 1, 32, 16))
    table = np.array([[2, -1, -1, -1]], np.int32)  # the user owns block 2 only; its padded prefill is 128 rows
    new = ttjax.paged_fill_cache(pool, jnp.ones((1, 1, 128, 16)), table)
    np.testing.assert_array_equal(np.asarray(new)[[0, 1, 3]], np.asarray(pool)[[0, 1, 3]])
    assert (np.asarray(new)[2] == 1).all()


def test_paged_errors():
    pool = jnp.zeros((4, 1, 32, 16))
    with pytest.raises(TTJaxError, match=r"page_table entry 7 points outside the block pool of 4 blocks \(0\.\.3\)"):
        ttjax.paged_fill_cache(pool, jnp.ones((1, 1, 32, 16)), np.array([[7]], np.int32))
    with pytest.raises(TTJaxError, match="block 1 appears more than once"):
        ttjax.check_page_table(np.array([[1, 1]]), 4)
    with pytest.raises(TTJaxError, match="position 64 is past the 64 positions a page-table row covers"):
        ttjax.paged_update_cache(pool, jnp.ones((1, 1, 16)), np.array([64], np.int32), np.array([[0, 1]], np.int32))
    alloc = BlockAllocator(4)
    alloc.allocate(3)
    with pytest.raises(KVCacheError, match=r"the KV block pool is exhausted: 2 blocks asked for, 1 of 4 free\."):
        alloc.allocate(2)
    pt = PageTable(PagedAttentionConfig(32, 16), batch=2, max_seq_len=128)
    with pytest.raises(KVCacheError, match=r"position 128 is past max_seq_len = 128"):
        pt.reserve(0, 129)
    with pytest.raises(TTJaxError, match="q_chunk_size = 48 must be a positive multiple of 32"):
        SDPAProgramConfig(q_chunk_size=48)


def test_allocator_reuses_freed_blocks_and_refuses_double_free():
    pt = PageTable(PagedAttentionConfig(32, 4), batch=2, max_seq_len=128)
    pt.reserve(0, 100)  # 4 blocks: the whole pool
    assert sorted(pt.array()[0]) == [0, 1, 2, 3] and pt.allocator.num_free == 0
    pt.release(0)
    pt.reserve(1, 33)
    assert (pt.array()[1][:2] >= 0).all() and (pt.array()[0] == -1).all()
    with pytest.raises(KVCacheError, match="cannot be freed"):
        pt.allocator.free([int(pt.array()[1][0])] * 2)
