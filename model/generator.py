"""Greedy generation: prefill one user, then decode with a jitted step that keeps everything on device.

Compiled programs are the stand-in for TT's traces: prefill is compiled once per padded length
(bucket), the decode step once per batch shape; both donate the KV cache so it is updated in
place. The decode step takes its argmax on device and its output token is the next step's
input with no host round trip; the host reads each token one step late, while the next step
runs, to check for EOS.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from model.config import TILE_SIZE, ModelArgs
from model.errors import SequenceLengthError
from model.kv_cache import allocate_kv_cache
from model.params import TransformerParams
from ttjax.errors import TTJaxError
from model.precision import convert_params
from model.rope import precompute_rot_mats
from model.sharding import allocate_mesh_kv_cache, mesh_args, replicate, shard_params
from mesh import MeshDevice
from model.transformer import forward


def get_padded_prefill_len(seq_len: int) -> int:
    """tt-metal's prefill buckets: 128 for short prompts, else the smaller of the next power of two
    and the next multiple of 2048."""
    if seq_len <= 128:
        return 128
    return min(2 ** math.ceil(math.log2(seq_len)), 2048 * math.ceil(seq_len / 2048))


def get_last_token(last_idx: int) -> int:
    """Start row of the 32-row tile that holds position last_idx."""
    return (last_idx // TILE_SIZE) * TILE_SIZE


# Positional arguments throughout (shard_map maps positional arguments); the cache is argument 3 of
# prefill and 4 of decode, and is donated.
def _prefill(params, tokens, rot, kv_cache, user_id, last_tile, *, args):
    return forward(params, tokens, rot, kv_cache, args=args, mode="prefill", user_id=user_id, get_last_token=last_tile)


def _decode_greedy(params, tokens, current_pos, rot, kv_cache, *, args):
    logits, kv_cache = forward(params, tokens, rot, kv_cache, args=args, mode="decode", current_pos=current_pos)
    logits = logits[:, 0, :]
    next_tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    # Empty slots (negative positions) stay empty.
    return next_tokens, logits, jnp.where(current_pos >= 0, current_pos + 1, current_pos), kv_cache


def build_program(fn, args: ModelArgs, mesh_device: MeshDevice | None = None):
    """fn (_prefill or _decode_greedy) jitted for args, per device under shard_map on a mesh, cache donated."""
    body = partial(fn, args=args)
    if mesh_device is not None:
        body = mesh_device.shard_map(body)
    return jax.jit(body, donate_argnums=3 if fn is _prefill else 4)


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
        return jax.eval_shape(lambda: self.allocate_kv_cache(batch))

    def prefill_program(self, padded_len: int, kv_cache=None):
        """The compiled prefill for one padded length (a bucket), for caches shaped like kv_cache."""
        cache = self._cache_spec() if kv_cache is None else kv_cache
        batch = jax.tree.leaves(cache)[0].shape[-4]
        scalar, tokens = self._spec(()), self._spec((1, padded_len))
        return self._executable(("prefill", padded_len, batch), _prefill, self.params, tokens, self.rot, cache, scalar, scalar)

    def decode_program(self, batch: int | None = None):
        """The compiled greedy decode step for a batch of slots."""
        batch = batch or self.args.max_batch_size
        vec = self._spec((batch,))
        return self._executable(("decode", batch), _decode_greedy, self.params, vec, vec, self.rot, self._cache_spec(batch))

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

    def prefill_forward_text(self, tokens, kv_cache, user_id: int = 0):
        """Prefill one user's prompt into cache slot user_id. Returns (last-token logits [vocab] on device, kv_cache)."""
        n = len(tokens)
        self.check_fits(n)
        slots = jax.tree.leaves(kv_cache)[0].shape[-4]
        if not 0 <= user_id < slots:
            raise TTJaxError(f"user_id {user_id} is outside the cache's slots 0..{slots - 1}.")
        padded = get_padded_prefill_len(n)
        ids = np.zeros((1, padded), np.int32)
        ids[0, :n] = tokens
        last_tile = get_last_token(n - 1)
        run = self.prefill_program(padded, kv_cache)
        inputs = (self._put(ids), self.rot, kv_cache, self._put(np.int32(user_id)), self._put(np.int32(last_tile)))
        logits, kv_cache = run(self.params, *inputs)
        return self._local(logits)[0, (n - 1) - last_tile], kv_cache

    def decode_forward(self, tokens, current_pos, kv_cache):
        """One greedy decode step for every slot: (next tokens, logits, positions + 1, kv_cache), all left on device.

        tokens and current_pos are [batch] arrays, or on a mesh, what a previous step returned (or _put made)."""
        if self.mesh_device is not None and tokens.ndim == 1:
            tokens, current_pos = self._put(tokens), self._put(current_pos)
        return self.decode_program(tokens.shape[-1])(self.params, tokens, current_pos, self.rot, kv_cache)

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
        # Compile both programs (once) before the clock starts.
        self.prefill_program(get_padded_prefill_len(n))
        self.decode_program(batch)

        kv_cache = self.allocate_kv_cache()
        t0 = time.perf_counter()
        logits, kv_cache = self.prefill_forward_text(prompt_tokens, kv_cache)
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
            pending = None
            for _ in range(max_new_tokens - 1):
                tokens, _, pos, kv_cache = self.decode_forward(tokens, pos, kv_cache)
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

    @staticmethod
    def _accept(step_tokens, out: list[int], eos, on_token) -> bool:
        """Read slot 0's token of a finished step; True when it is EOS."""
        token = int(step_tokens[0])
        out.append(token)
        if on_token:
            on_token(token)
        return token in eos
