"""Paged attention bookkeeping on the host: a free-block allocator and page tables (the layout itself is
model.config.PagedAttentionConfig).

The device side is ttjax.paged_cache (writes) and ttjax.flash_decode / flash_attention (reads).
A paged KV cache is, per layer, K and V pools of [max_num_blocks, n_kv_heads, block_size,
head_dim]; a user owns a list of blocks, and its page-table row lists them in position order
(position p is in block row[p // block_size]). Blocks are handed out in any order, so a row is
usually not sorted: the model must not care, and the tests shuffle it on purpose. Every block,
block 0 included, is usable; -1 marks "no block".
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from model.config import PagedAttentionConfig
from model.errors import KVCacheError
from ttjax.paged_cache import check_page_table


class BlockAllocator:
    """A free list over the pool's block ids. shuffle=True hands blocks out in a random order (tests use it to
    make sure nothing assumes a user's blocks are contiguous)."""

    def __init__(self, max_num_blocks: int, *, shuffle: bool = False, seed: int = 0):
        order = np.arange(max_num_blocks)
        if shuffle:
            np.random.default_rng(seed).shuffle(order)
        self.max_num_blocks = max_num_blocks
        self._free = [int(b) for b in order[::-1]]  # pop() from the end

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise KVCacheError(
                f"the KV block pool is exhausted: {n} blocks asked for, {len(self._free)} of {self.max_num_blocks} free."
            )
        return [self._free.pop() for _ in range(n)]

    def free(self, blocks) -> None:
        held = set(self._free)
        for b in blocks:
            if not 0 <= b < self.max_num_blocks or b in held:
                raise KVCacheError(f"block {b} cannot be freed: it is not an allocated block of the pool of {self.max_num_blocks}.")
            held.add(b)
        self._free.extend(reversed(list(blocks)))


class PageTable:
    """Which blocks each user slot owns. reserve(user, n) grows the user's row to cover positions 0..n-1;
    release(user) returns its blocks to the allocator. array() is the int32 [batch, blocks_per_user]
    page_table the model reads, -1 where a user has no block."""

    def __init__(self, config: PagedAttentionConfig, batch: int, max_seq_len: int, allocator: BlockAllocator | None = None):
        self.config, self.batch, self.max_seq_len = config, batch, max_seq_len
        self.blocks_per_user = config.blocks_for(max_seq_len)
        self.allocator = allocator or BlockAllocator(config.max_num_blocks)
        self.rows: list[list[int]] = [[] for _ in range(batch)]

    def _check_user(self, user: int):
        if not 0 <= user < self.batch:
            raise KVCacheError(f"user slot {user} is outside the page table's slots 0..{self.batch - 1}.")

    def reserve(self, user: int, n_positions: int) -> None:
        self._check_user(user)
        if n_positions > self.max_seq_len:
            raise KVCacheError(f"position {n_positions - 1} is past max_seq_len = {self.max_seq_len} (positions 0..{self.max_seq_len - 1}).")
        need = self.config.blocks_for(n_positions) - len(self.rows[user])
        if need > 0:
            self.rows[user].extend(self.allocator.allocate(need))

    def release(self, user: int) -> None:
        self._check_user(user)
        self.allocator.free(self.rows[user])
        self.rows[user] = []

    def array(self) -> np.ndarray:
        table = np.full((self.batch, self.blocks_per_user), -1, np.int32)
        for user, row in enumerate(self.rows):
            table[user, : len(row)] = row
        return table


@dataclass(frozen=True)
class PlacedPageTable:
    """A page table checked on the host and placed for the decode programs (Generator.place_page_table)."""

    array: jax.Array
    shape: tuple[int, int]  # [batch, blocks_per_user]
    positions: int  # positions a row covers: blocks_per_user * block_size


def checked_page_table(page_table, config: PagedAttentionConfig, user_id: int | None = None, n_positions: int = 0) -> np.ndarray:
    """The page table on the host as int32, checked against the pool (ttjax.check_page_table) and, for a user, that
    its row covers n_positions. Accepts numpy, lists, a PageTable, or a device array (read back once)."""
    if page_table is None:
        raise KVCacheError("the KV cache is paged (args.paged_attention_config is set): pass a page_table.")
    if isinstance(page_table, PlacedPageTable):
        raise KVCacheError("prefill reads the page table on the host: pass the PageTable or numpy table, not a placed one.")
    table = page_table.array() if isinstance(page_table, PageTable) else np.asarray(page_table)
    check_page_table(table, config.max_num_blocks)
    table = table.astype(np.int32)
    if user_id is not None:
        if not 0 <= user_id < table.shape[0]:
            raise KVCacheError(f"user_id {user_id} is outside the page table's rows 0..{table.shape[0] - 1}.")
        have = int(np.argmin(np.append(table[user_id] >= 0, False)))  # blocks before the first -1
        if have < config.blocks_for(n_positions):
            raise KVCacheError(
                f"user {user_id}'s page-table row has blocks for {have * config.block_size} positions; the prompt needs {n_positions}."
            )
    return table
