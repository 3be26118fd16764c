"""Every index the compiled programs use is in range at the edges: checked by running the Generator's own
prefill and decode programs under checkify's index checks (which flag any gather, scatter, dynamic_slice or
dynamic_update_slice whose index JAX would clamp or drop without a word).

The edges are where a bucket runs past the cache: a 4,100-token prompt padded to 6,144 with max_seq_len
4,352 (the last 2,048-row chunk starts at 4,096 and once read clamped rotary rows), a 150-token prompt padded
to 256 in a 200-token cache, and decode at the last position. Page tables here give every padded position a
block, since a -1 entry is dropped on purpose (out of range by design) and checkify would flag it.
"""

from functools import partial

import jax
import numpy as np
import pytest
from jax.experimental import checkify

from model.checkpoint import dummy_weights
from model.config import named_config
from model.serving import programs
from model.serving import generator as generator_module
from model.serving.generator import Generator
from model.config import PagedAttentionConfig


class IndexCheckedGenerator(Generator):
    """The Generator with each program compiled under checkify.index_checks; an out-of-range index raises.

    Not the contiguous decode step: checkify's scatter rule (jax 0.10.2) fails to trace the batched
    dynamic_update_slice of ttjax.update_cache, whose index is clipped into range on the line before it."""

    def compile_program(self, key, fn, *example):
        if fn is programs.decode and self.paged is None:
            return super().compile_program(key, fn, *example)
        if key not in self.programs:
            checked = jax.jit(checkify.checkify(partial(fn, args=self.args), errors=checkify.index_checks))
            compiled = checked.lower(*example).compile()

            def run(*inputs):
                err, out = compiled(*inputs)
                err.throw()
                return out

            self.programs[key] = run
        return self.programs[key]


def small_args(max_seq_len, **kw):
    return named_config("SmolLM2-135M", n_layers=2, vocab_size=512, max_seq_len=max_seq_len, **kw)


def test_checked_generator_catches_a_clamped_slice(monkeypatch):
    """The harness can fail: rotary tables one chunk too short make the last chunk's slice out of range."""
    args = small_args(4352, paged_attention_config=PagedAttentionConfig(32, 192))
    gen = IndexCheckedGenerator(dummy_weights(args, seed=1), args)
    gen.rot = jax.tree.map(lambda t: t[:4352] if t.shape[0] > 32 else t, gen.rot)  # the tables before the fix
    monkeypatch.setattr(generator_module, "check_prefill_rows", lambda start, length, rot: None)  # and without the host check
    table = np.arange(192, dtype=np.int32)[None]
    with pytest.raises(checkify.JaxRuntimeError, match="out-of-bounds"):
        gen.prefill_forward_text([5] * 4100, gen.allocate_kv_cache(), page_table=table)


def test_chunked_prefill_past_the_cache_and_last_position_decode():
    args = small_args(4352, paged_attention_config=PagedAttentionConfig(32, 192))
    gen = IndexCheckedGenerator(dummy_weights(args, seed=1), args)
    table = np.random.default_rng(0).permutation(192).astype(np.int32)[None]  # covers the whole 6,144-row bucket
    cache = gen.allocate_kv_cache()
    ids = np.random.default_rng(1).integers(1, 512, 4100).tolist()
    logits, cache = gen.prefill_forward_text(ids, cache, page_table=table)
    assert bool(np.isfinite(np.asarray(logits)).all())
    for pos in (4100, 4351):
        _, logits, _, cache = gen.decode_forward(np.array([7]), np.array([pos]), cache, table)
        assert bool(np.isfinite(np.asarray(logits)).all())


def test_bucket_longer_than_a_contiguous_cache():
    args = small_args(200, max_batch_size=2)
    gen = IndexCheckedGenerator(dummy_weights(args, seed=2), args)
    cache = gen.allocate_kv_cache()
    ids = np.random.default_rng(3).integers(1, 512, 150).tolist()
    _, cache = gen.prefill_forward_text(ids, cache, user_id=1)
    _, logits, pos, cache = gen.decode_forward(np.array([3, 4]), np.array([-1, 199]), cache)
    assert bool(np.isfinite(np.asarray(logits)[1]).all())
    assert np.asarray(pos).tolist() == [-1, -1]  # the slot that reached max_seq_len is empty now, not past the cache
