"""Continuous batching: a decode batch of slots that requests join and leave while the others keep decoding.

Each engine step
  1. admits waiting requests into free slots: prefills the prompt into the slot (or into blocks
     the page table assigns it), picks the first token, and writes token, position and sampling
     options into that slot of the device-side batch state;
  2. dispatches one decode step for the whole batch. Its output tokens stay on device and are
     the next step's input (output feedback, no host round trip); their copy to the host starts
     at once (copy_to_host_async, the second command queue of the report);
  3. reads the previous step's tokens, which arrived while this step ran (async output), hands
     them to their requests and retires the requests that hit EOS, a stop string or their length:
     their slots (and blocks) are free for the next admission.

A token is credited to the request that owned the slot when the step was dispatched; a step that
ran one token past a request's end is ignored for it. Positions are per slot, -1 for an empty slot.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from model.errors import ConfigError, KVCacheError, SequenceLengthError
from model.serving.generator import Generator
from model.serving.sampling import GREEDY, SamplingBatch, SamplingParams
from ttjax.sampling import sample

_ids = itertools.count()


@dataclass
class Request:
    prompt: list[int]
    max_new_tokens: int
    sampling: SamplingParams = GREEDY
    stop: tuple[str, ...] = ()  # stop strings, matched on the decoded text
    stop_at_eos: bool = True
    request_id: int = field(default_factory=lambda: next(_ids))
    # Filled in as it runs.
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None  # "eos" | "stop" | "length"
    slot: int | None = None
    arrival_s: float = 0.0
    first_token_s: float = 0.0
    finish_s: float = 0.0

    def __post_init__(self):
        if isinstance(self.stop, str):  # one stop string, not its characters
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        if not len(self.prompt):
            raise SequenceLengthError(f"request {self.request_id} has an empty prompt: prefill needs at least one token.")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, (int, np.integer)) or self.max_new_tokens < 1:
            raise SequenceLengthError(f"request {self.request_id} asks for max_new_tokens = {self.max_new_tokens!r}; it must be an integer of at least 1.")
        if "" in self.stop or not all(isinstance(s, str) for s in self.stop):
            raise ConfigError(f"request {self.request_id} has stop strings {self.stop!r}; each must be a non-empty string.")
        if not isinstance(self.sampling, SamplingParams):
            raise ConfigError(f"request {self.request_id} has sampling {self.sampling!r}; pass a SamplingParams.")

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def time_to_first_token(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def decode_tokens_per_s(self) -> float:
        steps = len(self.tokens) - 1
        span = self.finish_s - self.first_token_s
        return steps / span if steps and span > 0 else 0.0


@jax.jit
def _set_slot(tokens, pos, slot, token, position):
    """One slot of the device-side batch state (the last axis: on a mesh every device holds the batch)."""
    return tokens.at[..., slot].set(token), pos.at[..., slot].set(position)


_sample = jax.jit(sample)  # the first token of a sampled request, one compiled op instead of a dozen dispatches


class Engine:
    """Continuous batching over a Generator's decode batch (args.max_batch_size slots, 32 on TT).

    on_token(request, token) is called for every token as it reaches the host (streaming)."""

    def __init__(self, generator: Generator, *, on_token: Callable[[Request, int], None] | None = None, async_output: bool = True):
        self.gen = generator
        self.batch = generator.args.max_batch_size
        self.on_token = on_token
        self.async_output = async_output
        self.waiting: deque[Request] = deque()
        self.slots: list[Request | None] = [None] * self.batch
        self.finished: list[Request] = []
        self.kv_cache = generator.allocate_kv_cache()
        self.pages = generator.new_page_table() if generator.paged is not None else None
        self.tokens = generator._put(np.zeros(self.batch, np.int32))
        self.pos = generator._put(np.full(self.batch, -1, np.int32))
        self.sampling = SamplingBatch.greedy(self.batch)
        self._sampling_dev = None
        self._table_dev = None if self.pages is None else generator.place_page_table(self.pages)
        self._pending = None  # (device tokens of the last dispatched step, owners when dispatched)
        self.steps = 0
        tok = generator.tokenizer
        self.eos = tok.eos_ids if tok is not None else frozenset()

    # -- requests --------------------------------------------------------------------------------
    def add_request(self, request: Request) -> Request:
        """Queue a request, after checking everything that could make it fail later (check_request)."""
        self.check_request(request)
        request.arrival_s = time.perf_counter()
        self.waiting.append(request)
        return request

    def check_request(self, request: Request) -> None:
        """Its token ids against the vocabulary, its length against max_seq_len and, paged, against the whole block
        pool (a request bigger than the pool would wait for blocks forever); not already queued or served."""
        if request.done or request.tokens or any(r is request for r in (*self.waiting, *self.slots)):
            raise ConfigError(f"request {request.request_id} has already been added to an engine; make a new Request.")
        n = len(request.prompt)
        self.gen.check_fits(n, request.max_new_tokens)
        self.gen.check_tokens(request.prompt, f"request {request.request_id}'s prompt")
        if self.pages is not None:
            need = self.gen.paged.blocks_for(n + request.max_new_tokens)
            if need > self.pages.allocator.max_num_blocks:  # it would wait for blocks forever
                raise KVCacheError(
                    f"request {request.request_id} needs {need} blocks ({n} prompt + {request.max_new_tokens} new tokens), "
                    f"more than the whole pool of {self.pages.allocator.max_num_blocks}."
                )

    def has_unfinished(self) -> bool:
        return bool(self.waiting) or any(r is not None for r in self.slots) or self._pending is not None

    def _admit(self):
        free = [i for i, r in enumerate(self.slots) if r is None]
        changed = False
        while free and self.waiting:
            req = self.waiting[0]
            slot = free[0]
            if self.pages is not None:
                need = self.gen.paged.blocks_for(len(req.prompt) + req.max_new_tokens)
                if need > self.pages.allocator.num_free:
                    break  # wait for a finishing request to return blocks
                self.pages.reserve(slot, len(req.prompt) + req.max_new_tokens)
            self.waiting.popleft()
            free.pop(0)
            req.slot = slot
            logits, self.kv_cache = self.gen.prefill_forward_text(req.prompt, self.kv_cache, user_id=slot, page_table=self.pages)
            first = self._first_token(logits, req)
            req.first_token_s = time.perf_counter()
            if self._accept(req, first):  # done at its first token: the slot stays free
                free.insert(0, slot)
                continue
            self.slots[slot] = req
            self.sampling = self.sampling.with_slot(slot, req.sampling)
            self.tokens, self.pos = _set_slot(self.tokens, self.pos, slot, first, len(req.prompt))
            changed = True
        if changed:
            self._sampling_dev = jax.tree.map(self.gen._put, self.sampling)
            self._table_dev = None if self.pages is None else self.gen.place_page_table(self.pages)

    def _first_token(self, logits, req: Request) -> int:
        if req.sampling.greedy:
            return int(jnp.argmax(logits))
        s = SamplingBatch.of([req.sampling])
        pos = jnp.array([len(req.prompt)], jnp.int32)
        return int(_sample(logits[None], pos, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, seed=s.seed)[0])

    def _accept(self, req: Request, token: int) -> bool:
        """Give a token to its request; True (and the slot freed) when the request is finished."""
        req.tokens.append(token)
        if self.on_token:
            self.on_token(req, token)
        reason = None
        if req.stop_at_eos and token in self.eos:
            reason = "eos"
        elif req.stop and self.gen.tokenizer is not None:
            text = self.gen.tokenizer.decode(req.tokens, skip_special_tokens=True)
            hit = [text.index(s) for s in req.stop if s in text]
            if hit:
                req.text, reason = text[: min(hit)], "stop"
        if reason is None and len(req.tokens) >= req.max_new_tokens:
            reason = "length"
        if reason is None:
            return False
        req.finish_reason, req.finish_s = reason, time.perf_counter()
        if not req.text and self.gen.tokenizer is not None:
            req.text = self.gen.tokenizer.decode(req.tokens, skip_special_tokens=True)
        if req.slot is not None and self.slots[req.slot] is req:
            self.slots[req.slot] = None
            self.tokens, self.pos = _set_slot(self.tokens, self.pos, req.slot, 0, -1)
        if self.pages is not None and req.slot is not None:
            self.pages.release(req.slot)
        self.finished.append(req)
        return True

    def warm_up(self, prompts: list[list[int]], sampled: bool | None = None) -> None:
        """Compile every program these prompts will use, before the clock starts (sampled: the sampling step
        too; None compiles both)."""
        table = None if self.pages is None else self.pages.array().shape
        for n in sorted({len(p) for p in prompts}):
            for s in (False, True) if sampled is None else (sampled,):
                self.gen.compile_for(n, self.batch, table, s)

    # -- stepping --------------------------------------------------------------------------------
    def step(self) -> None:
        self._admit()
        owners = list(self.slots)
        dispatched = None
        if any(r is not None for r in owners):
            sampled = any(r is not None and not r.sampling.greedy for r in owners)
            out, _, self.pos, self.kv_cache = self.gen.decode_forward(
                self.tokens, self.pos, self.kv_cache, self._table_dev, self._sampling_dev if sampled else None
            )
            self.tokens = out
            if self.async_output:
                out.copy_to_host_async()
            dispatched = (out, owners)
        self.steps += 1
        if self.async_output:
            previous, self._pending = self._pending, dispatched
            if previous is not None:
                self._deliver(*previous)
        elif dispatched is not None:
            self._deliver(*dispatched)

    def _deliver(self, tokens, owners):
        host = self.gen.read_tokens(tokens)
        for slot, req in enumerate(owners):
            if req is not None and not req.done:
                self._accept(req, int(host[slot]))

    def run(self, requests: list[Request], arrival_steps: list[int] | None = None) -> list[Request]:
        """Serve requests (request i joins the waiting queue at engine step arrival_steps[i]); returns them all, done."""
        steps = [0] * len(requests) if arrival_steps is None else list(arrival_steps)
        if len(steps) != len(requests):
            raise ConfigError(f"run() got {len(steps)} arrival steps for {len(requests)} requests; give one step per request.")
        bad = [a for a in steps if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < 0]
        if bad:
            raise ConfigError(f"arrival step {bad[0]!r} is not a step number (an integer of 0 or more).")
        for req in requests:  # all of them before any runs: a bad one fails the call, not the middle of it
            self.check_request(req)
        if len({id(r) for r in requests}) != len(requests):
            raise ConfigError("run() got the same Request object twice; make one Request per generation.")
        arrivals = sorted(zip(steps, range(len(requests))))
        queue = deque(arrivals)
        while queue or self.has_unfinished():
            while queue and queue[0][0] <= self.steps:
                self.add_request(requests[queue.popleft()[1]])
            self.step()
        return requests
