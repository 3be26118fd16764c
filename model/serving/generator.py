"""Greedy generation: prefill one user, then decode with a jitted step that keeps everything on device.

Compiled programs are the stand-in for TT's traces: prefill is compiled once per padded length
(bucket), the decode step once per batch shape; both donate the KV cache so it is updated in
place. The prefill buckets (get_padded_prefill_len) are 128, then powers of two up to
args.max_prefill_chunk_size; a longer prompt is prefilled chunk by chunk (chunked prefill, which
needs the paged cache) by one program for the chunk size, whatever the chunk's start. The decode step takes its argmax on device and its output token is the next step's
input with no host round trip; the host reads each token one step late, while the next step
runs, to check for EOS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from model.buckets import get_last_token, get_max_prefill_chunk_size, get_padded_prefill_len, prefill_buckets, prefill_extent  # noqa: F401
from model.config import ModelArgs
from model.errors import KVCacheError, SequenceLengthError, TokenIdError
from model.kv_cache import allocate_kv_cache
from model.config import PagedAttentionConfig
from model.serving.page_table import BlockAllocator, PageTable
from ttjax.paged_cache import check_page_table
from ttjax.sampling import sample
from model.params import TransformerParams
from ttjax.errors import TTJaxError
from model.params import convert_params
from model.rope import precompute_rot_mats
from model.serving.sampling import SamplingBatch
from model.sharding import allocate_mesh_kv_cache, mesh_args, replicate, shard_params
from mesh import MeshDevice
from model.transformer import forward


# Positional arguments throughout (shard_map maps positional arguments); the cache is argument 3 of
# prefill and 4 of decode, and is donated. page_table is None for a contiguous cache; chunk_start None
# for a whole (not chunked) prefill.
def _prefill(params, tokens, rot, kv_cache, user_id, last_tile, page_table=None, chunk_start=None, *, args):
    return forward(
        params, tokens, rot, kv_cache, args=args, mode="prefill", user_id=user_id, get_last_token=last_tile,
        page_table=page_table, chunk_start_idx=chunk_start,
    )


def _decode_step(params, tokens, current_pos, rot, kv_cache, page_table=None, sampling=None, *, args):
    """One decode step for every slot. The next token is chosen on device (argmax, or sampled with each
    user's SamplingBatch options) and positions advance on device, so the outputs feed the next step
    directly: no host round trip between steps."""
    logits, kv_cache = forward(params, tokens, rot, kv_cache, args=args, mode="decode", current_pos=current_pos, page_table=page_table)
    logits = logits[:, 0, :]
    if sampling is None:
        next_tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
        next_tokens = sample(
            logits, current_pos + 1, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p, seed=sampling.seed
        )
    # Empty slots (negative positions) stay empty, and a slot that reaches max_seq_len becomes empty rather than
    # write past the cache (host-given positions are checked; these advance on device).
    advanced = jnp.where((current_pos >= 0) & (current_pos + 1 < args.max_seq_len), current_pos + 1, -1)
    return next_tokens, logits, jnp.where(current_pos >= 0, advanced, current_pos), kv_cache


def build_program(fn, args: ModelArgs, mesh_device: MeshDevice | None = None):
    """fn (_prefill or _decode_step) jitted for args, per device under shard_map on a mesh, cache donated."""
    body = partial(fn, args=args)
    if mesh_device is not None:
        body = mesh_device.shard_map(body)
    return jax.jit(body, donate_argnums=3 if fn is _prefill else 4)


@dataclass(frozen=True)
class PlacedPageTable:
    """A page table checked on the host and placed for the decode programs (Generator.place_page_table)."""

    array: jax.Array
    shape: tuple[int, int]  # [batch, blocks_per_user]
    positions: int  # positions a row covers: blocks_per_user * block_size


@dataclass
class GenerationResult:
    tokens: list[int]  # the new tokens, the first one from prefill
    text: str
    prompt_tokens: int
    prefill_s: float
    decode_s: float
    compile_s: float
    stop_reason: str  # "eos" | "length"

    @property
    def decode_tokens_per_s(self) -> float:
        steps = len(self.tokens) - 1
        return steps / self.decode_s if steps and self.decode_s > 0 else 0.0


@dataclass
class Generator:
    """Drives prefill and decode. With a mesh_device the params are placed on it (model.sharding) and
    every program runs per device under MeshDevice.shard_map; without one, on the default device."""

    params: TransformerParams
    args: ModelArgs
    tokenizer: object | None = None
    mesh_device: MeshDevice | None = None
    _compiled: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.compile_s = 0.0
        rot = precompute_rot_mats(self.args)
        if self.mesh_device is None:
            self.params = convert_params(self.params, self.args)
            self.rot = rot
            return
        if self.args.model_config.cluster_shape != self.mesh_device.shape:
            self.args = mesh_args(self.args, self.mesh_device)
        self.params = shard_params(self.params, self.args, self.mesh_device)
        self.rot = jax.tree.map(self._put, rot)

    def _put(self, x):
        """An input for the programs: on the mesh, replicated to every device."""
        return jnp.asarray(x) if self.mesh_device is None else replicate(x, self.mesh_device)

    def _local(self, x):
        """A program output as one device sees it (outputs are replicated across the mesh)."""
        return x if self.mesh_device is None else x[0, 0]

    def _spec(self, shape, dtype=jnp.int32):
        if self.mesh_device is None:
            return jax.ShapeDtypeStruct(shape, dtype)
        return jax.ShapeDtypeStruct((*self.mesh_device.shape, *shape), dtype, sharding=self.mesh_device.sharding)

    def allocate_kv_cache(self, batch: int | None = None):
        if self.mesh_device is None:
            return allocate_kv_cache(self.args, batch)
        return allocate_mesh_kv_cache(self.args, self.mesh_device, batch)

    def _executable(self, key, fn, *example):
        """The program for these shapes, compiled once ahead of time (so compile time is measured apart).

        example may hold arrays or jax.ShapeDtypeStructs: compiling needs only shapes."""
        if key not in self._compiled:
            t = time.perf_counter()
            self._compiled[key] = build_program(fn, self.args, self.mesh_device).lower(*example).compile()
            self.compile_s += time.perf_counter() - t
        return self._compiled[key]

    def _cache_spec(self, batch=None):
        return jax.eval_shape(lambda: Generator.allocate_kv_cache(self, batch))

    @property
    def paged(self) -> PagedAttentionConfig | None:
        return self.args.paged_attention_config

    def prefill_program(self, padded_len: int, kv_cache=None, table_shape=None, chunked: bool = False):
        """The compiled prefill for one padded length (a bucket, or a chunk), for caches shaped like kv_cache;
        table_shape is the page table's [batch, blocks] for a paged cache."""
        cache = self._cache_spec() if kv_cache is None else kv_cache
        scalar, tokens = self._spec(()), self._spec((1, padded_len))
        if self.paged is None:
            batch = jax.tree.leaves(cache)[0].shape[-4]
            return self._executable(("prefill", padded_len, batch), _prefill, self.params, tokens, self.rot, cache, scalar, scalar)
        table_shape = table_shape or (self.args.max_batch_size, self.paged.blocks_for(padded_len))
        table = self._spec(table_shape)
        key = ("prefill-paged", padded_len, table_shape, chunked)
        return self._executable(key, _prefill, self.params, tokens, self.rot, cache, scalar, scalar, table, scalar if chunked else None)

    def decode_program(self, batch: int | None = None, table_shape=None, sampled: bool = False):
        """The compiled decode step for a batch of slots (paged: a page table of table_shape; sampled: it takes
        a SamplingBatch, else it is greedy). Called as run(params, tokens, pos, rot, cache, page_table, sampling),
        with None for the page table of a contiguous cache and for the sampling of a greedy step."""
        batch = batch or self.args.max_batch_size
        vec = self._spec((batch,))
        table = None
        if self.paged is not None:
            table = self._spec(table_shape or (batch, self.paged.blocks_for(self.args.max_seq_len)))
        sampling = None
        if sampled:
            sampling = SamplingBatch(self._spec((batch,), jnp.float32), vec, self._spec((batch,), jnp.float32), self._spec((batch,), jnp.uint32))
        key = ("decode", batch, None if table is None else table.shape[-2:], sampled)
        return self._executable(key, _decode_step, self.params, vec, vec, self.rot, self._cache_spec(batch), table, sampling)

    def new_page_table(self, batch: int | None = None, allocator: BlockAllocator | None = None) -> PageTable:
        """A page table over this model's block pool, for batch user slots."""
        if self.paged is None:
            raise KVCacheError("this model's KV cache is contiguous (args.paged_attention_config is None): it has no page table.")
        return PageTable(self.paged, batch or self.args.max_batch_size, self.args.max_seq_len, allocator)

    def _checked_page_table(self, page_table, user_id: int | None = None, n_positions: int = 0) -> np.ndarray:
        """The page table on the host, checked against the pool (and, for a user, that it covers n_positions).

        Accepts numpy, lists, a PageTable, or a device array (read back once to be checked)."""
        if page_table is None:
            raise KVCacheError("the KV cache is paged (args.paged_attention_config is set): pass a page_table.")
        if isinstance(page_table, PlacedPageTable):
            raise KVCacheError("prefill reads the page table on the host: pass the PageTable or numpy table, not a placed one.")
        table = page_table.array() if isinstance(page_table, PageTable) else np.asarray(page_table)
        check_page_table(table, self.paged.max_num_blocks)
        table = table.astype(np.int32)
        if user_id is not None:
            if not 0 <= user_id < table.shape[0]:
                raise KVCacheError(f"user_id {user_id} is outside the page table's rows 0..{table.shape[0] - 1}.")
            need = self.paged.blocks_for(n_positions)
            have = int(np.argmin(np.append(table[user_id] >= 0, False)))  # blocks before the first -1
            if have < need:
                raise KVCacheError(
                    f"user {user_id}'s page-table row has blocks for {have * self.paged.block_size} positions; "
                    f"the prompt needs {n_positions}."
                )
        return table

    def place_page_table(self, page_table) -> PlacedPageTable:
        """Check a page table on the host once and place it for the decode programs (the Engine re-places it only
        when an admission or a retirement changes it)."""
        table = self._checked_page_table(page_table)
        return PlacedPageTable(self._put(table), table.shape, table.shape[1] * self.paged.block_size)

    def check_tokens(self, tokens, what: str = "the prompt") -> np.ndarray:
        """Token ids on the host as int32, each checked to be in the vocabulary (the embedding lookup would
        otherwise read NaN or a clamped row without a word)."""
        ids = np.asarray(tokens)
        if ids.size and ids.dtype.kind not in "iu":
            raise TokenIdError(f"{what} holds {ids.dtype} values; token ids are integers.")
        bad = np.argwhere((ids < 0) | (ids >= self.args.vocab_size))
        if bad.size:
            where = ", ".join(str(int(i)) for i in bad[0])
            raise TokenIdError(
                f"token id {int(ids[tuple(bad[0])])} at position {where} of {what} is outside the vocabulary 0..{self.args.vocab_size - 1}."
            )
        return ids.astype(np.int32)

    def check_fits(self, prompt_len: int, max_new_tokens: int = 0):
        if prompt_len == 0:
            raise SequenceLengthError("the prompt is empty: prefill needs at least one token.")
        if prompt_len > self.args.max_seq_len:
            raise SequenceLengthError(f"the prompt has {prompt_len} tokens, longer than max_seq_len = {self.args.max_seq_len}.")
        if prompt_len + max_new_tokens > self.args.max_seq_len:
            raise SequenceLengthError(
                f"the prompt ({prompt_len} tokens) plus max_new_tokens ({max_new_tokens}) is {prompt_len + max_new_tokens} "
                f"tokens, more than max_seq_len = {self.args.max_seq_len}."
            )

    def prefill_forward_text(self, tokens, kv_cache, user_id: int = 0, page_table=None):
        """Prefill one user's prompt into cache slot user_id (paged: into the blocks of its page-table row).
        Returns (last-token logits [vocab] on device, kv_cache).

        A prompt whose bucket is longer than args.max_prefill_chunk_size is prefilled in chunks; each
        chunk writes its K/V to the user's pages and attends to the earlier chunks through them."""
        n = len(tokens)
        self.check_fits(n)
        tokens = self.check_tokens(tokens)
        padded = get_padded_prefill_len(n)
        last_tile = get_last_token(n - 1)
        if self.paged is None:
            if padded > self.args.max_prefill_chunk_size:
                raise KVCacheError(
                    f"a prompt of {n} tokens pads to {padded}, past max_prefill_chunk_size = {self.args.max_prefill_chunk_size}: "
                    "chunked prefill needs a paged KV cache (set args.paged_attention_config)."
                )
            slots = jax.tree.leaves(kv_cache)[0].shape[-4]
            if not 0 <= user_id < slots:
                raise TTJaxError(f"user_id {user_id} is outside the cache's slots 0..{slots - 1}.")
            ids = np.zeros((1, padded), np.int32)
            ids[0, :n] = tokens
            self._check_rows(0, padded)
            run = self.prefill_program(padded, kv_cache)
            inputs = (self._put(ids), self.rot, kv_cache, self._put(np.int32(user_id)), self._put(np.int32(last_tile)))
            logits, kv_cache = run(self.params, *inputs)
            return self._local(logits)[0, (n - 1) - last_tile], kv_cache

        table = self._checked_page_table(page_table, user_id, n)
        # The padded prompt's pages: entries past the user's row (or -1) are not written (see ttjax.paged_cache).
        chunk = get_max_prefill_chunk_size(padded, self.args.max_prefill_chunk_size)
        chunked = chunk < padded
        width = self._prefill_table_width(padded, chunked)
        table = np.pad(table, ((0, 0), (0, max(0, width - table.shape[1]))), constant_values=-1)[:, :width]
        ids = np.zeros((1, padded), np.int32)
        ids[0, :n] = tokens
        run = self.prefill_program(chunk, kv_cache, table.shape, chunked)
        put_table, put_user = self._put(table), self._put(np.int32(user_id))
        for start in range(0, last_tile + 1, chunk):  # chunks past the last token hold only padding
            self._check_rows(start, chunk)
            tail = last_tile - start if start + chunk > last_tile else 0
            inputs = (self._put(ids[:, start : start + chunk]), self.rot, kv_cache, put_user, self._put(np.int32(tail)), put_table)
            logits, kv_cache = run(self.params, *inputs, self._put(np.int32(start)) if chunked else None)
        return self._local(logits)[0, (n - 1) - last_tile], kv_cache

    def _check_rows(self, start: int, length: int):
        """A prefill program reads the rotary rows [start, start + length) with a traced start, which dynamic_slice
        would clamp without a word: prove it in range on the host."""
        rows = self.rot.cos.shape[-2]
        if start + length > rows:
            raise SequenceLengthError(f"prefill rows {start}..{start + length - 1} are past the rotary tables' {rows} positions.")

    def decode_forward(self, tokens, current_pos, kv_cache, page_table=None, sampling: SamplingBatch | None = None, enable_trace: bool = True):
        """One decode step for every slot: (next tokens, logits, positions + 1, kv_cache), all left on device.

        tokens and current_pos are [batch]: host arrays (numpy or lists, checked: ids in the vocabulary, positions
        below max_seq_len and within the page table), or device arrays a previous step returned, whose positions
        advance on device (a slot that reaches max_seq_len becomes empty, -1, rather than write past the cache).
        A paged cache needs the page table: a PageTable, a [batch, blocks_per_user] array (checked), or a
        PlacedPageTable from place_page_table. sampling (per-slot options) samples on device; None is greedy.
        enable_trace=False runs the same step op by op, dispatching every op from Python (what decode costs
        without a trace)."""
        if not isinstance(tokens, jax.Array):
            tokens = self.check_tokens(tokens, "the decode tokens").reshape(-1)
        host_pos = not isinstance(current_pos, jax.Array)
        if host_pos:
            current_pos = self._checked_positions(current_pos, tokens.shape[-1])
        if self.mesh_device is not None:
            tokens, current_pos = (self._put(x) if x.ndim == 1 else x for x in (tokens, current_pos))
        batch = tokens.shape[-1]
        table = None
        if self.paged is not None:
            placed = page_table if isinstance(page_table, PlacedPageTable) else self.place_page_table(page_table)
            self._check_decode_table(placed, batch, current_pos if host_pos else None)
            table = placed.array
        if sampling is not None and not isinstance(sampling.seed, jax.Array):
            sampling = jax.tree.map(self._put, sampling)
        if not enable_trace:
            step = partial(_decode_step, args=self.args)
            if self.mesh_device is not None:
                step = self.mesh_device.shard_map(step)
            with jax.disable_jit():
                return step(self.params, tokens, current_pos, self.rot, kv_cache, table, sampling)
        run = self.decode_program(batch, None if table is None else table.shape[-2:], sampling is not None)
        return run(self.params, tokens, current_pos, self.rot, kv_cache, table, sampling)

    def _checked_positions(self, current_pos, batch: int) -> np.ndarray:
        pos = np.asarray(current_pos)
        if pos.size and pos.dtype.kind not in "iu":
            raise SequenceLengthError(f"current_pos holds {pos.dtype} values; positions are integers.")
        pos = pos.astype(np.int32).reshape(-1)
        if pos.shape[0] != batch:
            raise SequenceLengthError(f"current_pos has {pos.shape[0]} entries for a batch of {batch} tokens.")
        if (pos >= self.args.max_seq_len).any():
            raise SequenceLengthError(
                f"position {int(pos.max())} is past max_seq_len = {self.args.max_seq_len} (positions 0..{self.args.max_seq_len - 1})."
            )
        return pos

    def _check_decode_table(self, placed: PlacedPageTable, batch: int, host_pos: np.ndarray | None):
        """Every slot has a page-table row, and every position a row reaches has an entry: a write past the row
        would be dropped and the token's own K/V lost."""
        if placed.shape[0] != batch:
            raise KVCacheError(f"the page table has {placed.shape[0]} rows for a decode batch of {batch} users.")
        if host_pos is not None:
            over = host_pos[host_pos >= placed.positions]
            if over.size:
                raise KVCacheError(f"position {int(over[0])} is past the {placed.positions} positions a page-table row covers.")
        elif placed.positions < self.args.max_seq_len:
            raise KVCacheError(
                f"page-table rows cover {placed.positions} positions, fewer than max_seq_len = {self.args.max_seq_len}, and the "
                "positions are on device where they cannot be checked: give rows that cover max_seq_len."
            )

    def read_tokens(self, tokens) -> np.ndarray:
        """A decode step's tokens (or logits) on the host, as one device holds them."""
        return np.asarray(self._local(tokens))

    def generate(
        self,
        prompt_tokens: list[int],
        max_new_tokens: int,
        *,
        stop_at_eos: bool = True,
        on_token: Callable[[int], None] | None = None,
    ) -> GenerationResult:
        """Greedy generation for one user (slot 0 of a max_batch_size batch)."""
        n = len(prompt_tokens)
        if max_new_tokens < 1:
            raise SequenceLengthError(f"max_new_tokens = {max_new_tokens} must be at least 1.")
        self.check_fits(n, max_new_tokens)
        eos = self.tokenizer.eos_ids if (stop_at_eos and self.tokenizer is not None) else frozenset()
        batch = self.args.max_batch_size
        compile_before = self.compile_s
        pages = None
        if self.paged is not None:
            pages = self.new_page_table(batch)
            pages.reserve(0, n + max_new_tokens)
        kv_cache = self.allocate_kv_cache()
        self.compile_for(n, batch, None if pages is None else pages.array().shape)  # before the clock starts
        t0 = time.perf_counter()
        logits, kv_cache = self.prefill_forward_text(prompt_tokens, kv_cache, page_table=pages)
        first = int(jnp.argmax(logits))
        prefill_s = time.perf_counter() - t0

        out = [first]
        if on_token:
            on_token(first)
        stop = "eos" if first in eos else "length"
        t1 = time.perf_counter()
        if stop != "eos" and max_new_tokens > 1:
            tokens = self._put(np.array([first] + [0] * (batch - 1), np.int32))
            pos = self._put(np.array([n] + [-1] * (batch - 1), np.int32))
            table = None if pages is None else self.place_page_table(pages)
            pending = None
            for _ in range(max_new_tokens - 1):
                tokens, _, pos, kv_cache = self.decode_forward(tokens, pos, kv_cache, table)
                if pending is not None and self._accept(self.read_tokens(pending), out, eos, on_token):
                    stop = "eos"
                    break
                pending = tokens
            else:
                if self._accept(self.read_tokens(pending), out, eos, on_token):
                    stop = "eos"
            jax.block_until_ready(kv_cache)
        decode_s = time.perf_counter() - t1
        text = self.tokenizer.decode(out, skip_special_tokens=True) if self.tokenizer is not None else ""
        return GenerationResult(out, text, n, prefill_s, decode_s, self.compile_s - compile_before, stop)

    def compile_for(self, prompt_len: int, batch: int | None = None, table_shape=None, sampled: bool = False):
        """Compile (once) the prefill and decode programs a prompt of prompt_len tokens will use; table_shape is
        the [batch, blocks_per_user] page table of a paged cache."""
        batch = batch or self.args.max_batch_size
        padded = get_padded_prefill_len(prompt_len)
        if self.paged is None:
            self.prefill_program(padded)
            self.decode_program(batch, None, sampled)
            return
        chunk = get_max_prefill_chunk_size(padded, self.args.max_prefill_chunk_size)
        self.prefill_program(chunk, None, (table_shape[0], self._prefill_table_width(padded, chunk < padded)), chunk < padded)
        self.decode_program(batch, table_shape, sampled)

    def _prefill_table_width(self, padded: int, chunked: bool) -> int:
        """Page-table blocks a prefill program reads: the padded prompt's, or for chunked prefill those of the longest
        prompt (prefill_extent), so one program serves every chunk of every long prompt (attention stops at the
        causal limit, so the extra entries cost nothing). Entries past the user's row are -1: not written."""
        return self.paged.blocks_for(prefill_extent(self.args.max_seq_len) if chunked else padded)

    @staticmethod
    def _accept(step_tokens, out: list[int], eos, on_token) -> bool:
        """Read slot 0's token of a finished step; True when it is EOS."""
        token = int(step_tokens[0])
        out.append(token)
        if on_token:
            on_token(token)
        return token in eos
