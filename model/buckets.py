"""Prefill buckets: the padded lengths prefill is compiled for, and the chunks a long prompt is cut into
(tt_transformers' common.py: get_padded_prefill_len, get_max_prefill_chunk_size).

A prompt of n tokens is padded to its bucket, 128 for short prompts, else the smaller of the next
power of two and the next multiple of 2048 (ttjax computes a prompt of up to 64 tokens on 8, 32 or 64 rows:
compute_prefill_len); a bucket longer than max_prefill_chunk_size is
prefilled in chunks of the largest tile multiple up to that size that divides it. The padding
can run past max_seq_len (a 4,100-token prompt pads to 6,144 whatever the cache holds), so every
table a prefill program indexes by position covers prefill_extent(max_seq_len) rows.
"""

from __future__ import annotations

import math

from model.config import TILE_SIZE, ModelArgs

FEW_ROWS = 8  # the native kernels' kFewRows: up to this many rows share one pass over the weights


def get_padded_prefill_len(seq_len: int) -> int:
    """tt-metal's prefill buckets: 128 for short prompts, else the smaller of the next power of two and the next
    multiple of 2048."""
    if seq_len <= 128:
        return 128
    return min(2 ** math.ceil(math.log2(seq_len)), 2048 * math.ceil(seq_len / 2048))


def compute_prefill_len(seq_len: int) -> int:
    """The rows ttjax's prefill programs compute for a prompt of seq_len tokens: tt's bucket, except that a prompt
    of up to 64 tokens computes only its own rows where tt pads it to 128: 8 for up to 8 tokens (the matmuls then
    stream the weights once for all of them, as a decode step does: ttjax/csrc/tensix_gemv_block.inc), else 32 or
    64. The rows past the prompt are padding nobody reads: matmuls and norms go row by row, causal attention never
    lets a prompt token attend to a later row, and decode writes a position's K/V before attending to it; so the
    prompt's logits and K/V come out the same, bit for bit (tests/test_buckets.py), while a 5-token prompt computes
    a sixteenth of the rows."""
    if seq_len <= FEW_ROWS:
        return FEW_ROWS
    if seq_len <= 2 * TILE_SIZE:
        return TILE_SIZE if seq_len <= TILE_SIZE else 2 * TILE_SIZE
    return get_padded_prefill_len(seq_len)


def get_max_prefill_chunk_size(padded_len: int, max_prefill_chunk_size: int) -> int:
    """The chunk for a padded prompt: the largest tile multiple up to max_prefill_chunk_size that divides it
    (tt-metal takes the largest multiple of 2048 that does)."""
    return next(c for c in range(min(padded_len, max_prefill_chunk_size), 0, -TILE_SIZE) if padded_len % c == 0)


def prefill_buckets(args: ModelArgs) -> list[int]:
    """Every prefill length that gets its own program: buckets up to the chunk limit, then the chunk sizes."""
    lens = {get_padded_prefill_len(n) for n in range(1, args.max_seq_len + 1)}
    return sorted({n if n <= args.max_prefill_chunk_size else get_max_prefill_chunk_size(n, args.max_prefill_chunk_size) for n in lens})


def prefill_extent(max_seq_len: int) -> int:
    """Rows a prefill program can touch for any prompt that fits max_seq_len: the padded length of the longest
    (buckets grow with the prompt, and a chunked prompt's last chunk ends at its padded length)."""
    return max(max_seq_len, get_padded_prefill_len(max_seq_len))


def get_last_token(last_idx: int) -> int:
    """Start row of the 32-row tile that holds position last_idx."""
    return (last_idx // TILE_SIZE) * TILE_SIZE
