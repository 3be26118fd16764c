"""Host-side checks of what goes into the programs. Inside a compiled program an out-of-range index is clamped
or dropped without a word, so token ids, positions, prompt lengths and page tables are checked here first,
each failure one sentence naming the value and the limit."""

from __future__ import annotations

import numpy as np

from model.errors import KVCacheError, SequenceLengthError, TokenIdError
from model.serving.page_table import PlacedPageTable


def check_tokens(tokens, vocab_size: int, what: str = "the prompt") -> np.ndarray:
    """Token ids as int32, each in the vocabulary (the embedding lookup would otherwise read NaN or a clamped row)."""
    ids = np.asarray(tokens)
    if ids.size and ids.dtype.kind not in "iu":
        raise TokenIdError(f"{what} holds {ids.dtype} values; token ids are integers.")
    bad = np.argwhere((ids < 0) | (ids >= vocab_size))
    if bad.size:
        where = ", ".join(str(int(i)) for i in bad[0])
        raise TokenIdError(f"token id {int(ids[tuple(bad[0])])} at position {where} of {what} is outside the vocabulary 0..{vocab_size - 1}.")
    return ids.astype(np.int32)


def check_fits(prompt_len: int, max_new_tokens: int, max_seq_len: int):
    if prompt_len == 0:
        raise SequenceLengthError("the prompt is empty: prefill needs at least one token.")
    if prompt_len > max_seq_len:
        raise SequenceLengthError(f"the prompt has {prompt_len} tokens, longer than max_seq_len = {max_seq_len}.")
    if prompt_len + max_new_tokens > max_seq_len:
        raise SequenceLengthError(
            f"the prompt ({prompt_len} tokens) plus max_new_tokens ({max_new_tokens}) is {prompt_len + max_new_tokens} "
            f"tokens, more than max_seq_len = {max_seq_len}."
        )


def check_prefill_rows(start: int, length: int, rot):
    """A prefill program reads the rotary rows [start, start + length) with a traced start, which dynamic_slice
    would clamp without a word: prove it in range."""
    rows = rot.cos.shape[-2]
    if start + length > rows:
        raise SequenceLengthError(f"prefill rows {start}..{start + length - 1} are past the rotary tables' {rows} positions.")


def checked_positions(current_pos, batch: int, max_seq_len: int) -> np.ndarray:
    """Decode positions as int32, one per user, each below max_seq_len (negative: an empty slot)."""
    pos = np.asarray(current_pos)
    if pos.size and pos.dtype.kind not in "iu":
        raise SequenceLengthError(f"current_pos holds {pos.dtype} values; positions are integers.")
    pos = pos.astype(np.int32).reshape(-1)
    if pos.shape[0] != batch:
        raise SequenceLengthError(f"current_pos has {pos.shape[0]} entries for a batch of {batch} tokens.")
    if (pos >= max_seq_len).any():
        raise SequenceLengthError(f"position {int(pos.max())} is past max_seq_len = {max_seq_len} (positions 0..{max_seq_len - 1}).")
    return pos


def check_decode_table(placed: PlacedPageTable, batch: int, host_pos: np.ndarray | None, max_seq_len: int):
    """Every slot has a page-table row, and every position a row reaches has an entry: a write past the row would be
    dropped and the token's own K/V lost."""
    if placed.shape[0] != batch:
        raise KVCacheError(f"the page table has {placed.shape[0]} rows for a decode batch of {batch} users.")
    if host_pos is not None:
        over = host_pos[host_pos >= placed.positions]
        if over.size:
            raise KVCacheError(f"position {int(over[0])} is past the {placed.positions} positions a page-table row covers.")
    elif placed.positions < max_seq_len:
        raise KVCacheError(
            f"page-table rows cover {placed.positions} positions, fewer than max_seq_len = {max_seq_len}, and the "
            "positions are on device where they cannot be checked: give rows that cover max_seq_len."
        )
