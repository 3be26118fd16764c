"""A short prompt's prefill computes its own tiles (model.buckets.compute_prefill_len), where tt pads to 128 rows, and
only its last token's row goes through the LM head, where tt takes that row's 32-row tile (get_last_token): the
prompt's logits and K/V are the same bit for bit as tt's shapes give (padding rows and the tile's other rows are
never read)."""


import jax
import numpy as np

from model.buckets import compute_prefill_len, get_last_token, get_padded_prefill_len
from model.serving.build import build_generator
from model.transformer import forward


def test_short_prompts_compute_their_own_tiles():
    assert [compute_prefill_len(n) for n in (1, 5, 8, 9, 32, 33, 64, 65, 128, 129, 3000)] == [8, 8, 8, 32, 32, 64, 64, 128, 128, 256, 4096]
    assert all(compute_prefill_len(n) == get_padded_prefill_len(n) for n in range(65, 5000, 37))


def test_the_prompt_rows_are_those_of_tts_shapes():
    """Against tt's shapes (the 128-row bucket, the last token's tile through the LM head), in the performance
    preset (bfloat4_b FF1/FF3 in LoFi beside bfloat8_b weights in HiFi2): the last token's logits and every prompt
    position's K and V, bit for bit."""
    # The first two layers: which rows a prefill computes is the same question in every layer (and a 30-layer model
    # compiles three programs for minutes).
    gen = build_generator(None, None, "performance", max_batch_size=1, max_seq_len=256, n_layers=2)
    tt = jax.jit(lambda params, ids, cache, tile: forward(params, ids, gen.rot, cache, args=gen.args, mode="prefill",
                                                           get_last_token=tile))
    for n in (5, 40):
        ids = np.arange(300, 300 + n, dtype=np.int32)
        ours, our_cache = gen.prefill_forward_text(ids.tolist(), gen.allocate_kv_cache())
        padded = np.zeros((1, get_padded_prefill_len(n)), np.int32)
        padded[0, :n] = ids
        tile = get_last_token(n - 1)
        theirs, their_cache = tt(gen.params, padded, gen.allocate_kv_cache(), np.int32(tile))
        assert padded.shape[1] == 128 and np.asarray(theirs).shape[1] == 32
        np.testing.assert_array_equal(np.asarray(ours).view(np.uint32), np.asarray(theirs)[0, n - 1 - tile].view(np.uint32))
        for a, b in zip(jax.tree.leaves(our_cache), jax.tree.leaves(their_cache)):
            a, b = np.asarray(a)[..., :n, :], np.asarray(b)[..., :n, :]
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
