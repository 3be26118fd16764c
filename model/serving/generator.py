"""The Generator: the model's compiled programs and the host-side checks around them.

It holds the placed params, the rotary tables and one compiled program per shape (TT's traces):
prefill once per bucket or chunk size, the decode step once per batch (model.serving.programs).
`prefill_forward_text` prefills one user (chunk by chunk when the prompt's bucket is longer than
args.max_prefill_chunk_size, through the paged cache) and `decode_forward` runs one step for every
slot; both check every input on the host first (model.serving.checks), since inside the programs
an out-of-range index is clamped or dropped without a word. Placement (one device or a mesh) is model.serving.placement;
continuous batching and single-user generation are model.serving.engine.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mesh import MeshDevice, processes
from model.buckets import FEW_ROWS, compute_prefill_len, get_max_prefill_chunk_size, get_padded_prefill_len, prefill_extent
from model.config import ModelArgs, PagedAttentionConfig
from model.errors import KVCacheError
from model.params import TransformerParams
from model.rope import precompute_rot_mats
from model.serving import executables, programs
from model.serving.checks import check_decode_table, check_fits, check_prefill_rows, check_tokens, checked_positions
from model.serving.page_table import BlockAllocator, PageTable, PlacedPageTable, checked_page_table
from model.serving.placement import Placement
from model.serving.sampling import SamplingBatch


class Generator:
    """Prefill and decode for a model. With a mesh_device the params are split over it and every program runs
    per device; without one, on the default device."""

    def __init__(self, params: TransformerParams, args: ModelArgs, tokenizer=None, mesh_device: MeshDevice | None = None):
        self.placement = Placement(args, mesh_device)
        self.args = self.placement.args
        self.tokenizer = tokenizer
        self.params = self.placement.params(params)
        self.rot = jax.tree.map(self.placement.put, precompute_rot_mats(self.args))
        self.programs: dict = {}  # compiled programs by shape
        self.compile_s = 0.0

    @property
    def mesh_device(self) -> MeshDevice | None:
        return self.placement.mesh_device

    @property
    def paged(self) -> PagedAttentionConfig | None:
        return self.args.paged_attention_config

    def with_paged_attention(self, config: PagedAttentionConfig | None) -> Generator:
        """The same placed model over another KV-cache layout (its programs compile anew)."""
        new = copy.copy(self)
        new.args = self.args.replace(paged_attention_config=config)
        new.placement = self.placement.with_args(new.args)
        new.programs, new.compile_s = {}, 0.0
        return new

    # -- placement, for the Engine and the vLLM interface ------------------------------------------
    def put(self, x) -> jax.Array:
        return self.placement.put(x)

    def read(self, x) -> np.ndarray:
        """A program output (tokens, logits) on the host, as one device holds it."""
        with processes.waiting("a program's output"):  # on a multi-process mesh, watched against a lost peer
            return np.asarray(self.placement.local(x))

    def allocate_kv_cache(self, batch: int | None = None):
        return self.placement.kv_cache(batch)

    # -- programs ------------------------------------------------------------------------------------
    def compile_program(self, key, fn, *example):
        """The program for these shapes, compiled once ahead of time (so compile time is measured apart).
        example may hold arrays or jax.ShapeDtypeStructs: compiling needs only shapes."""
        if key not in self.programs:
            t = time.perf_counter()
            build = lambda: programs.build_program(fn, self.args, self.placement).lower(*example).compile()  # noqa: E731
            with processes.working("compiling"):  # a peer waiting meanwhile is no fault (mesh.processes)
                self.programs[key] = executables.load_or_compile(key, self.args, example, build)
            self.compile_s += time.perf_counter() - t
        return self.programs[key]

    def prefill_program(self, padded_len: int, kv_cache=None, table_shape=None, chunked: bool = False):
        """The compiled prefill for one padded length (a bucket, or a chunk), for caches shaped like kv_cache;
        table_shape is the page table's [batch, blocks] for a paged cache."""
        spec = self.placement.spec
        cache = self.placement.kv_cache_spec() if kv_cache is None else kv_cache
        scalar, tokens = spec(()), spec((1, padded_len))
        if self.paged is None:
            batch = jax.tree.leaves(cache)[0].shape[-4]
            return self.compile_program(("prefill", padded_len, batch), programs.prefill, self.params, tokens, self.rot, cache, scalar, scalar)
        table_shape = table_shape or (self.args.max_batch_size, self.paged.blocks_for(padded_len))
        key = ("prefill-paged", padded_len, table_shape, chunked)
        return self.compile_program(
            key, programs.prefill, self.params, tokens, self.rot, cache, scalar, scalar, spec(table_shape), scalar if chunked else None
        )

    def decode_program(self, batch: int | None = None, table_shape=None, sampled: bool = False):
        """The compiled decode step for a batch of slots (paged: a page table of table_shape; sampled: it takes
        a SamplingBatch, else it is greedy). Called as run(params, tokens, pos, rot, cache, page_table, sampling),
        with None for the page table of a contiguous cache and for the sampling of a greedy step."""
        spec = self.placement.spec
        batch = batch or self.args.max_batch_size
        vec = spec((batch,))
        table = None
        if self.paged is not None:
            table = spec(table_shape or (batch, self.paged.blocks_for(self.args.max_seq_len)))
        sampling = None
        if sampled:
            sampling = SamplingBatch(spec((batch,), jnp.float32), vec, spec((batch,), jnp.float32), spec((batch,), jnp.uint32))
        key = ("decode", batch, None if table is None else table.shape[-2:], sampled)
        if key in self.programs:  # every decode step asks: the cache's abstract shapes (an eval_shape) only to compile
            return self.programs[key]
        cache = self.placement.kv_cache_spec(batch)
        return self.compile_program(key, programs.decode, self.params, vec, vec, self.rot, cache, table, sampling)

    def compile_for(self, prompt_len: int, batch: int | None = None, table_shape=None, sampled: bool = False):
        """Compile (once) the prefill and decode programs a prompt of prompt_len tokens will use; table_shape is
        the [batch, blocks_per_user] page table of a paged cache."""
        batch = batch or self.args.max_batch_size
        padded = self.prefill_rows(prompt_len)
        if self.paged is None:
            prefill = partial(self.prefill_program, padded)
            decode = partial(self.decode_program, batch, None, sampled)
        else:
            chunk = get_max_prefill_chunk_size(padded, self.args.max_prefill_chunk_size)
            width = self.prefill_table_width(padded, chunk < padded)
            prefill = partial(self.prefill_program, chunk, None, (table_shape[0], width), chunk < padded)
            decode = partial(self.decode_program, batch, table_shape, sampled)
        # Side by side: loading a stored executable runs mostly outside the GIL (two load in 0.47 s, not 0.65 s).
        before, start = self.compile_s, time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            for done in [pool.submit(prefill), pool.submit(decode)]:
                done.result()
        self.compile_s = before + time.perf_counter() - start  # wall time, not the two threads' sum

    def prefill_rows(self, n: int) -> int:
        """Rows a prompt of n tokens is prefilled on: its own tiles when short (model.buckets.compute_prefill_len),
        tt's bucket where a paged cache's blocks do not divide them."""
        rows = compute_prefill_len(n)
        if self.paged is not None and rows % self.paged.block_size:  # a paged prefill writes whole blocks
            rows = compute_prefill_len(max(n, FEW_ROWS + 1))
            return get_padded_prefill_len(n) if rows % self.paged.block_size else rows
        return rows

    def prefill_table_width(self, padded: int, chunked: bool) -> int:
        """Page-table blocks a prefill program reads: the padded prompt's, or for chunked prefill those of the longest
        prompt (prefill_extent), so one program serves every chunk of every long prompt (attention stops at the
        causal limit, so the extra entries cost nothing). Entries past the user's row are -1: not written."""
        return self.paged.blocks_for(prefill_extent(self.args.max_seq_len) if chunked else padded)

    def new_page_table(self, batch: int | None = None, allocator: BlockAllocator | None = None) -> PageTable:
        """A page table over this model's block pool, for batch user slots."""
        if self.paged is None:
            raise KVCacheError("this model's KV cache is contiguous (args.paged_attention_config is None): it has no page table.")
        return PageTable(self.paged, batch or self.args.max_batch_size, self.args.max_seq_len, allocator)

    def place_page_table(self, page_table) -> PlacedPageTable:
        """Check a page table on the host once and place it for the decode programs (the Engine re-places it only
        when an admission or a retirement changes it)."""
        table = checked_page_table(page_table, self.paged)
        return PlacedPageTable(self.put(table), table.shape, table.shape[1] * self.paged.block_size)

    # -- prefill and decode --------------------------------------------------------------------------------
    def prefill_forward_text(self, tokens, kv_cache, user_id: int = 0, page_table=None):
        """Prefill one user's prompt into cache slot user_id (paged: into the blocks of its page-table row).
        Returns (last-token logits [vocab] on device, kv_cache).

        A prompt whose bucket is longer than args.max_prefill_chunk_size is prefilled in chunks; each
        chunk writes its K/V to the user's pages and attends to the earlier chunks through them."""
        n = len(tokens)
        check_fits(n, 0, self.args.max_seq_len)
        tokens = check_tokens(tokens, self.args.vocab_size)
        padded = self.prefill_rows(n)
        ids = np.zeros((1, padded), np.int32)
        ids[0, :n] = tokens
        put = self.put
        if self.paged is None:
            if padded > self.args.max_prefill_chunk_size:
                raise KVCacheError(
                    f"a prompt of {n} tokens pads to {padded}, past max_prefill_chunk_size = {self.args.max_prefill_chunk_size}: "
                    "chunked prefill needs a paged KV cache (set args.paged_attention_config)."
                )
            slots = jax.tree.leaves(kv_cache)[0].shape[-4]
            if not 0 <= user_id < slots:
                raise KVCacheError(f"user_id {user_id} is outside the cache's slots 0..{slots - 1}.")
            check_prefill_rows(0, padded, self.rot)
            run = self.prefill_program(padded, kv_cache)
            logits, kv_cache = run(self.params, put(ids), self.rot, kv_cache, put(np.int32(user_id)), put(np.int32(n - 1)))
            return self.placement.local(logits)[0, 0], kv_cache

        table = checked_page_table(page_table, self.paged, user_id, n)
        chunk = get_max_prefill_chunk_size(padded, self.args.max_prefill_chunk_size)
        chunked = chunk < padded
        # The padded prompt's pages: entries past the user's row (or -1) are not written (see ttjax.paged_cache).
        width = self.prefill_table_width(padded, chunked)
        table = np.pad(table, ((0, 0), (0, max(0, width - table.shape[1]))), constant_values=-1)[:, :width]
        run = self.prefill_program(chunk, kv_cache, table.shape, chunked)
        put_table, put_user = put(table), put(np.int32(user_id))
        for start in range(0, n, chunk):  # chunks past the last token hold only padding
            check_prefill_rows(start, chunk, self.rot)
            last = (n - 1) - start if start + chunk >= n else 0  # the last token's row, in the chunk that holds it
            inputs = (put(ids[:, start : start + chunk]), self.rot, kv_cache, put_user, put(np.int32(last)), put_table)
            logits, kv_cache = run(self.params, *inputs, put(np.int32(start)) if chunked else None)
        return self.placement.local(logits)[0, 0], kv_cache

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
            tokens = check_tokens(tokens, self.args.vocab_size, "the decode tokens").reshape(-1)
        host_pos = None if isinstance(current_pos, jax.Array) else checked_positions(current_pos, tokens.shape[-1], self.args.max_seq_len)
        if host_pos is not None:
            current_pos = host_pos
        tokens, current_pos = (x if self.placement.is_placed(x) else self.put(x) for x in (tokens, current_pos))
        batch = tokens.shape[-1]
        table = None
        if self.paged is not None:
            placed = page_table if isinstance(page_table, PlacedPageTable) else self.place_page_table(page_table)
            check_decode_table(placed, batch, host_pos, self.args.max_seq_len)
            table = placed.array
        if sampling is not None and not isinstance(sampling.seed, jax.Array):
            sampling = jax.tree.map(self.put, sampling)
        if not enable_trace:
            with jax.disable_jit():
                step = self.placement.wrap(partial(programs.decode, args=self.args))
                return step(self.params, tokens, current_pos, self.rot, kv_cache, table, sampling)
        run = self.decode_program(batch, None if table is None else table.shape[-2:], sampling is not None)
        return run(self.params, tokens, current_pos, self.rot, kv_cache, table, sampling)
