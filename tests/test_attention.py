"""Flash attention, flash decode and the paged KV cache against torch's scaled_dot_product_attention (float32).

Flash decode is also checked against plain softmax attention written here in numpy (float64), and
with garbage in the cache past every user's position. Each case is checked at PCC >= 0.99999 and
elementwise; paged results must equal contiguous ones computed from the same values through a
shuffled page table that includes block 0. Paged pools are built and read back by a plain numpy
reference of the paged layout (_np_write, _np_read), never by ttjax's own paged writes, so a layout
bug shared by ttjax's paged writes and reads cannot cancel.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import ttjax
from model.errors import KVCacheError
from model.config import PagedAttentionConfig
from model.serving.page_table import BlockAllocator, PageTable
from ttjax import CoreCoord, SDPAProgramConfig, TTJaxError
from ttjax.metrics import pcc
from ttjax.flash_decode import read_rows

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
    cfg = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=chunks[0], k_chunk_size=chunks[1])
    ours = jax.jit(lambda q, k, v: ttjax.scaled_dot_product_attention(q, k, v, program_config=cfg))(q, k, v)
    assert_close(ours, torch_sdpa(q, k, v))


def test_flash_prefill_non_causal_and_uneven_keys():
    rng = np.random.default_rng(1)
    q, k, v = _rand(rng, 2, 6, 70, 32), _rand(rng, 2, 2, 130, 32), _rand(rng, 2, 2, 130, 32)
    ours = ttjax.scaled_dot_product_attention(q, k, v, is_causal=False, program_config=SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=64))
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
    jaxpr = jax.make_jaxpr(lambda q, k, v: ttjax.scaled_dot_product_attention(q, k, v, program_config=SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=64, k_chunk_size=64)))(q, kv, kv)
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
    cfg = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=k_chunk)
    ours = jax.jit(lambda *a: ttjax.scaled_dot_product_attention_decode(*a, program_config=cfg))(q, kc, vc, RAGGED)
    assert_close(ours, _decode_reference(q, kc, vc, RAGGED))


def _np_write(pool, table, user, pos, row):
    """The paged layout by its definition, in numpy (no ttjax): user's position pos is row pos % block of
    block table[user, pos // block]. A negative position, one past the row, or a -1 entry writes nothing."""
    block = pool.shape[2]
    if 0 <= pos < table.shape[1] * block and table[user, pos // block] >= 0:
        pool[table[user, pos // block], :, pos % block] = row


def _np_fill(pool, table, user, start, x):
    """x [KV, seq, d] written at user's positions start .. start + seq - 1, one position at a time."""
    for i in range(x.shape[1]):
        _np_write(pool, table, user, start + i, x[:, i])


def _np_read(pool, table, length):
    """[B, KV, length, d]: every user's positions 0 .. length - 1 read back by the definition (zeros where
    the page table has no block)."""
    _, kv, block, d = pool.shape
    out = np.zeros((table.shape[0], kv, length, d), pool.dtype)
    for user in range(table.shape[0]):
        for p in range(length):
            if table[user, p // block] >= 0:
                out[user, :, p] = pool[table[user, p // block], :, p % block]
    return out


def _paged_copy(contiguous, table, block):
    """The contiguous [B, KV, S, d] values written into a pool through table by the numpy writer (not by
    ttjax.paged_fill_cache, whose bugs would then be shared by both sides). Rows no position maps to hold
    noise, so reading one shows."""
    b, kv, s, d = contiguous.shape
    pool = _rand(np.random.default_rng(0), int(table.max()) + 1, kv, block, d)
    for user in range(b):
        _np_fill(pool, table, user, 0, contiguous[user])
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
    cfg = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=64)
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


# Blocks in shuffled order, block 0 in use; user 1 owns two blocks and then none (-1); blocks 6, 10, 12
# and 13 of a 14-block pool belong to nobody.
TABLE = np.array([[5, 0, 9, 2], [7, 3, -1, -1], [1, 11, 4, 8]], np.int32)


def test_paged_fill_equals_numpy_reference():
    """Whole prompts, a prompt in two chunks (start_pos > 0) and a padded prompt whose padding runs into -1
    entries: the WHOLE pool, blocks of nobody included, equals the numpy writer's. The pool starts as noise,
    so a write in the wrong place or a dropped write shows."""
    rng = np.random.default_rng(9)
    pool = _rand(rng, 14, 2, 32, 16)
    ref = pool.copy()
    fill = jax.jit(ttjax.paged_fill_cache)  # batch_idx and start_pos traced, as in chunked prefill
    xs = {}
    for user, start, seq in [(0, 0, 128), (1, 0, 128), (2, 0, 64), (2, 64, 64)]:
        xs[user, start] = x = _rand(rng, 1, 2, seq, 16)
        pool = fill(pool, x, TABLE, user, start)
        _np_fill(ref, TABLE, user, start, x[0])
    np.testing.assert_array_equal(np.asarray(pool), ref)
    # The reference itself, by hand: user 0's position 33 is row 1 of block TABLE[0, 1] = 0, user 2's
    # position 64 (first of the later chunk) is row 0 of block TABLE[2, 2] = 4.
    np.testing.assert_array_equal(ref[0, :, 1], xs[0, 0][0, :, 33])
    np.testing.assert_array_equal(ref[4, :, 0], xs[2, 64][0, :, 0])


def test_paged_update_equals_numpy_reference():
    """Decode steps at block edges (0, block - 1, block, the row's last position 127), empty slots
    (position -1) and a position whose page-table entry is -1 (user 1 at 64): after each step the whole
    pool equals the numpy writer's."""
    rng = np.random.default_rng(10)
    pool = _rand(rng, 14, 2, 32, 16)
    ref = pool.copy()
    update = jax.jit(ttjax.paged_update_cache)
    for pos in ([0, 0, 31], [31, -1, 32], [127, 63, 127], [64, 64, -1]):
        x = _rand(rng, 3, 2, 16)
        pool = update(pool, x, np.array(pos, np.int32), TABLE)
        for user, p in enumerate(pos):
            _np_write(ref, TABLE, user, p, x[user])
        np.testing.assert_array_equal(np.asarray(pool), ref, err_msg=f"positions {pos}")


def test_paged_decode_equals_torch_on_a_numpy_built_pool():
    """Paged flash decode against torch SDPA on K/V read back by the numpy reader, from a pool the numpy
    writer built: a layout bug shared by ttjax's paged writes and reads cannot cancel. Each row ends in -1
    entries past its user's position (read as block 0, and masked), and unowned blocks hold noise."""
    rng = np.random.default_rng(11)
    b, h, kv, s, d, block = 32, 9, 3, 256, 64, 32
    table = _shuffled_table(b, s // block, seed=12)
    table[np.arange(s // block) > RAGGED[:, None] // block] = -1  # no block past the user's position
    assert 0 in table and (table == -1).any()
    q, k, v = _rand(rng, b, h, d), _rand(rng, b, kv, s, d), _rand(rng, b, kv, s, d)
    pool_k, pool_v = _paged_copy(k, table, block), _paged_copy(v, table, block)
    cfg = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=64)
    ours = jax.jit(lambda *a: ttjax.paged_scaled_dot_product_attention_decode(*a, program_config=cfg))(q, pool_k, pool_v, RAGGED, table)
    assert_close(ours, _decode_reference(q, _np_read(pool_k, table, s), _np_read(pool_v, table, s), RAGGED))


def _softmax_decode(q, k, v, cur_pos, n_read):
    """Plain softmax attention, per user and query head, in float64: q [B, H, d] against its KV head's rows
    0..cur_pos of k / v [B, KV, S, d]. An empty slot (cur_pos < 0) masks every row alike, so it gets the
    uniform average of the rows the op reads, 0 .. n_read - 1."""
    b, h, d = q.shape
    group = h // k.shape[1]
    out = np.zeros((b, h, d))
    for user, p in enumerate(cur_pos):
        for head in range(h):
            kh, vh = (np.float64(c[user, head // group]) for c in (k, v))
            if p < 0:
                out[user, head] = vh[:n_read].mean(0)
                continue
            s = kh[: p + 1] @ np.float64(q[user, head]) / np.sqrt(d)
            w = np.exp(s - s.max())
            out[user, head] = w @ vh[: p + 1] / w.sum()
    return out


def _rows_read(cur_pos, k_chunk, s):
    """The rows flash decode reads: whole chunks up to the furthest user, at least one."""
    return min(s, k_chunk * max(1, -(-(max(cur_pos) + 1) // k_chunk)))


def _decode_positions(s, k_chunk, case):
    """Ragged positions: the first row, a chunk's last and (when there is one) the next chunk's first row, an
    empty slot (-1), and either the cache's last row (every chunk read) or only early rows (the rest unread)."""
    if case == "empty":
        return np.array([-1, -1, -1], np.int32)
    pos = [0, k_chunk - 1, -1, 100, 7] + ([k_chunk] if k_chunk < s else [])
    return np.array(pos + ([s - 1] if case == "last" else []), np.int32)


@pytest.mark.parametrize("case", ["last", "early", "empty"])
@pytest.mark.parametrize("k_chunk", [32, 96, 128, 384])
def test_flash_decode_equals_softmax_reference(k_chunk, case):
    """Ragged users against plain softmax attention, with every chunk read or only the early ones."""
    rng = np.random.default_rng(k_chunk)
    h, kv, s, d = 9, 3, 384, 64
    pos = _decode_positions(s, k_chunk, case)
    q, k, v = _rand(rng, len(pos), h, d), _rand(rng, len(pos), kv, s, d), _rand(rng, len(pos), kv, s, d)
    cfg = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=k_chunk)
    ours = jax.jit(lambda *a: ttjax.scaled_dot_product_attention_decode(*a, program_config=cfg))(q, k, v, pos)
    assert_close(ours, _softmax_decode(q, k, v, pos, _rows_read(pos, read_rows(k_chunk), s)))


@pytest.mark.parametrize("case", ["last", "early", "empty"])
@pytest.mark.parametrize("block,k_chunk", [(32, 128), (64, 32), (64, 96), (128, 96), (128, 384)])
def test_paged_flash_decode_equals_softmax_reference(block, k_chunk, case):
    """Chunks of whole blocks, blocks of whole chunks, and chunks that start inside a block (96 over 64 and
    128), read through a shuffled page table."""
    rng = np.random.default_rng(block + k_chunk)
    h, kv, s, d = 9, 3, 384, 64
    pos = _decode_positions(s, k_chunk, case)
    q, k, v = _rand(rng, len(pos), h, d), _rand(rng, len(pos), kv, s, d), _rand(rng, len(pos), kv, s, d)
    table = _shuffled_table(len(pos), s // block, block, seed=block)
    assert not (np.diff(table, axis=1) == 1).all()
    cfg = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=k_chunk)
    attend = jax.jit(lambda *a: ttjax.paged_scaled_dot_product_attention_decode(*a, program_config=cfg))
    ours = attend(q, _paged_copy(k, table, block), _paged_copy(v, table, block), pos, table)
    assert_close(ours, _softmax_decode(q, k, v, pos, _rows_read(pos, read_rows(k_chunk), s)))


@pytest.mark.parametrize("paged", [False, True])
def test_flash_decode_ignores_the_cache_past_every_users_position(paged):
    """Huge values past each user's position in the chunks read (masked) and NaN in every chunk past the
    furthest user (which would poison the output if read, 0 * NaN being NaN): the output is unchanged."""
    rng = np.random.default_rng(14)
    h, kv, s, d, block, k_chunk = 9, 3, 512, 64, 32, 64
    pos = np.array([0, 70, -1, 150, 127], np.int32)
    n_read = _rows_read(pos, k_chunk, s)
    assert n_read == 192
    q, k, v = _rand(rng, len(pos), h, d), _rand(rng, len(pos), kv, s, d), _rand(rng, len(pos), kv, s, d)
    dirty_k, dirty_v = k.copy(), v.copy()
    for user, p in enumerate(pos):
        for c in (dirty_k, dirty_v):
            if p >= 0:  # an empty slot averages the rows read: those stay as they are
                c[user, :, p + 1 : n_read] = 1e30
            c[user, :, n_read:] = np.nan
    cfg = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=k_chunk)
    if paged:
        table = _shuffled_table(len(pos), s // block, block, seed=15)
        attend = jax.jit(lambda k, v: ttjax.paged_scaled_dot_product_attention_decode(q, k, v, pos, table, program_config=cfg))
        k, v, dirty_k, dirty_v = (_paged_copy(c, table, block) for c in (k, v, dirty_k, dirty_v))
    else:
        attend = jax.jit(lambda k, v: ttjax.scaled_dot_product_attention_decode(q, k, v, pos, program_config=cfg))
    clean, dirty = np.asarray(attend(k, v)), np.asarray(attend(dirty_k, dirty_v))
    assert np.isfinite(dirty).all()
    np.testing.assert_array_equal(dirty, clean)


def test_paged_flash_decode_gathers_one_chunk_at_a_time():
    """At 8192 positions, no value in the program is near the [B * KV, S, d] a whole gathered cache would be."""
    b, h, kv, s, d, block = 4, 9, 3, 8192, 64, 32
    pool = jax.ShapeDtypeStruct((b * s // block, kv, block, d), jnp.float32)
    args = (jax.ShapeDtypeStruct((b, h, d), jnp.float32), pool, pool, jax.ShapeDtypeStruct((b,), jnp.int32),
            jax.ShapeDtypeStruct((b, s // block), jnp.int32))
    attend = lambda q, k, v, p, t: ttjax.paged_scaled_dot_product_attention_decode(q, k, v, p, t, program_config=SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=128))  # noqa: E731
    assert _largest_intermediate(jax.make_jaxpr(attend)(*args).jaxpr) <= b * kv * 128 * d


def test_chunked_prefill_equals_torch_on_a_numpy_built_pool():
    """Each 128-token chunk of a 384-token prompt against torch SDPA over the whole prompt read back by the
    numpy reader. The numpy writer put the whole prompt in the pool up front, so only the causal mask hides
    later positions; the row's last 4 entries are -1, and the other blocks hold noise."""
    rng = np.random.default_rng(13)
    h, kv, s, d, block, chunk = 8, 2, 384, 64, 32, 128
    q, k, v = _rand(rng, 1, h, s, d), _rand(rng, 1, kv, s, d), _rand(rng, 1, kv, s, d)
    table = rng.permutation(24)[None, :16].astype(np.int32)  # 16 of 24 blocks, shuffled
    table[:, s // block :] = -1
    assert 0 in table
    pool_k, pool_v = _paged_copy(k, table, block), _paged_copy(v, table, block)
    ref = torch_sdpa(q, _np_read(pool_k, table, s), _np_read(pool_v, table, s))
    cfg = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=64, k_chunk_size=64)
    attend = jax.jit(lambda qc, *a: ttjax.chunked_scaled_dot_product_attention(qc, *a, program_config=cfg))
    for start in range(0, s, chunk):
        assert_close(attend(q[:, :, start : start + chunk], pool_k, pool_v, table, start), ref[:, :, start : start + chunk])


def test_chunked_prefill_attention_equals_whole_prefill():
    """A 512-token prompt in 128-token chunks, each reading the earlier chunks' K/V from the paged cache."""
    rng = np.random.default_rng(6)
    h, kv, s, d, block, chunk = 8, 2, 512, 64, 32, 128
    q, k, v = _rand(rng, 1, h, s, d), _rand(rng, 1, kv, s, d), _rand(rng, 1, kv, s, d)
    table = _shuffled_table(2, s // block, seed=7)[1:]  # one user, its blocks scattered over a pool of two users
    pool_k = jnp.zeros((2 * s // block, kv, block, d), jnp.float32)
    pool_v = jnp.zeros_like(pool_k)
    cfg = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=64, k_chunk_size=64)
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
    with pytest.raises(TTJaxError, match=r"page_table entry 7 is neither -1 \(no block\) nor a block of the pool of 4 \(0\.\.3\)"):
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
    # ttnn's config takes any chunk size (as ttnn's constructor does); the op refuses one that is not whole tiles
    odd = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=48, k_chunk_size=64)
    q = jnp.ones((1, 1, 64, 32), jnp.bfloat16)
    with pytest.raises(TTJaxError, match="q_chunk_size must be divisible by TILE_SIZE. Got q_chunk_size: 48"):
        ttjax.scaled_dot_product_attention(q, q, q, program_config=odd)
    with pytest.raises(TypeError):
        SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=48)


def test_allocator_reuses_freed_blocks_and_refuses_double_free():
    pt = PageTable(PagedAttentionConfig(32, 4), batch=2, max_seq_len=128)
    pt.reserve(0, 100)  # 4 blocks: the whole pool
    assert sorted(pt.array()[0]) == [0, 1, 2, 3] and pt.allocator.num_free == 0
    pt.release(0)
    pt.reserve(1, 33)
    assert (pt.array()[1][:2] >= 0).all() and (pt.array()[0] == -1).all()
    with pytest.raises(KVCacheError, match="cannot be freed"):
        pt.allocator.free([int(pt.array()[1][0])] * 2)


def test_indices_out_of_range_are_refused_or_dropped():
    """dynamic_update_slice clamps an out-of-range start and would write into the last position or slot without a
    word: concrete indices are refused, and positions past the cache that arrive traced leave it as it was."""
    rng = np.random.default_rng(5)
    cache = jnp.asarray(_rand(rng, 2, 1, 64, 16))
    row = jnp.ones((2, 1, 16))
    with pytest.raises(TTJaxError, match=r"position 64 is past max_seq_len = 64 \(positions 0\.\.63\)"):
        ttjax.update_cache(cache, row, np.array([3, 64], np.int32))
    traced = jax.jit(ttjax.update_cache)(cache, row, jnp.array([3, 64], jnp.int32))
    expected = np.asarray(cache).copy()
    expected[0, :, 3] = 1
    np.testing.assert_array_equal(np.asarray(traced), expected)  # user 1's last row untouched
    with pytest.raises(TTJaxError, match=r"batch_idx 2 is outside the cache's slots 0\.\.1"):
        ttjax.fill_cache(cache, jnp.ones((1, 1, 32, 16)), 2)
    with pytest.raises(TTJaxError, match=r"start_pos 64 is outside the cache's positions 0\.\.63"):
        ttjax.fill_cache(cache, jnp.ones((1, 1, 32, 16)), 0, 64)
    pool, table = jnp.asarray(_rand(rng, 4, 1, 32, 16)), np.array([[2, 0], [1, 3]], np.int32)
    with pytest.raises(TTJaxError, match=r"batch_idx 2 is outside the page table's rows 0\.\.1"):
        ttjax.paged_fill_cache(pool, jnp.ones((1, 1, 32, 16)), table, batch_idx=2)
    with pytest.raises(TTJaxError, match=r"positions 32\.\.95 are not whole blocks within the 64 positions a page-table row covers"):
        ttjax.paged_fill_cache(pool, jnp.ones((1, 1, 64, 16)), table, start_pos=32)
    dropped = jax.jit(ttjax.paged_update_cache)(pool, jnp.ones((2, 1, 16)), jnp.array([64, 100], jnp.int32), jnp.asarray(table))
    np.testing.assert_array_equal(np.asarray(dropped), np.asarray(pool))  # not clamped onto position 63


@pytest.mark.parametrize("paged", [False, True])
def test_native_kv_rows_equal_the_xla_path(paged, monkeypatch):
    """bfloat16 caches are written and read by the native row kernels (ttjax/csrc/kv_rows.cc): the caches after a
    decode step's writes and the attention output are bit-identical to XLA's path, with ragged users, an empty
    slot, a user at the last position and (paged) a missing block whose write is dropped."""
    if not ttjax.native.available():
        pytest.fail("the native kernels are not built: run `make setup` (ttjax.native.build() prints the compiler's error)")
    rng = np.random.default_rng(11 + paged)
    b, h, kv, s, d, block = 5, 9, 3, 384, 64, 32
    pos = jnp.array([0, -1, 131, s - 1, 200], jnp.int32)
    q, x = jnp.asarray(_rand(rng, b, h, d)), jnp.asarray(_rand(rng, b, kv, d))
    cfg = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=128)
    if paged:
        table = _shuffled_table(b, s // block, block, seed=3)
        table[4, 200 // block] = -1  # user 4's write has no block
        k, v = (jnp.asarray(_paged_copy(_rand(rng, b, kv, s, d), table, block), jnp.bfloat16) for _ in range(2))

        def step(k, v):
            k, v = (ttjax.paged_update_cache(c, x * (i + 1), pos, jnp.asarray(table)) for i, c in enumerate((k, v)))
            return k, v, ttjax.paged_scaled_dot_product_attention_decode(q, k, v, pos, jnp.asarray(table), program_config=cfg)
    else:
        k, v = (jnp.asarray(_rand(rng, b, kv, s, d), jnp.bfloat16) for _ in range(2))

        def step(k, v):
            k, v = (ttjax.update_cache(c, x * (i + 1), pos) for i, c in enumerate((k, v)))
            return k, v, ttjax.scaled_dot_product_attention_decode(q, k, v, pos, program_config=cfg)

    native = [np.asarray(a, np.float32) for a in jax.jit(step)(k, v)]
    program = jax.jit(step).lower(k, v).as_text()
    assert "ttjax_gather_rows" in program and "ttjax_scatter_rows" in program  # the kernels did run
    monkeypatch.setattr(ttjax.native, "rows_kernels_for", lambda cache: False)
    xla = [np.asarray(a, np.float32) for a in jax.jit(step)(k, v)]
    for ours, ref in zip(native, xla):
        np.testing.assert_array_equal(ours, ref)
