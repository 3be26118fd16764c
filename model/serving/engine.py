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

A Request is what a user asks for; its RequestOutput is what came back (tokens, text, why it
ended, timings). A token is credited to the request that owned the slot when the step was
dispatched; a step that ran one token past a request's end is ignored for it. Positions are per
slot, -1 for an empty slot. `generate` is one request served alone, the same way.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import jax
import numpy as np

from model.buckets import get_padded_prefill_len
from model.errors import ConfigError, KVCacheError, SequenceLengthError
from model.serving.checks import check_fits, check_tokens
from model.serving.generator import Generator
from model.serving.sampling import GREEDY, SamplingBatch, SamplingParams, first_token
from model.serving.streaming import IncrementalDetokenizer

_ids = itertools.count()


@dataclass(frozen=True)
class Request:
    """What a user asks for; checked when made (the model-dependent checks come when an Engine takes it)."""

    prompt: tuple[int, ...]
    max_new_tokens: int
    sampling: SamplingParams = GREEDY
    stop: tuple[str, ...] = ()  # stop strings, matched on the decoded text
    stop_at_eos: bool = True
    request_id: int = field(default_factory=lambda: next(_ids))

    def __post_init__(self):
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)  # one stop string, not its characters
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "prompt", tuple(int(t) if isinstance(t, (int, np.integer)) else t for t in self.prompt))
        if not self.prompt:
            raise SequenceLengthError(f"request {self.request_id} has an empty prompt: prefill needs at least one token.")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, (int, np.integer)) or self.max_new_tokens < 1:
            raise SequenceLengthError(f"request {self.request_id} asks for max_new_tokens = {self.max_new_tokens!r}; it must be an integer of at least 1.")
        if "" in stop or not all(isinstance(s, str) for s in stop):
            raise ConfigError(f"request {self.request_id} has stop strings {stop!r}; each must be a non-empty string.")
        if not isinstance(self.sampling, SamplingParams):
            raise ConfigError(f"request {self.request_id} has sampling {self.sampling!r}; pass a SamplingParams.")


@dataclass
class RequestOutput:
    """What came back for a request, filled in as it runs."""

    request: Request
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None  # "eos" | "stop" | "length" | "abort"
    slot: int | None = None
    arrival_s: float = 0.0
    first_token_s: float = 0.0
    finish_s: float = 0.0

    @property
    def request_id(self) -> int:
        return self.request.request_id

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def time_to_first_token(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def decode_s(self) -> float:
        return self.finish_s - self.first_token_s

    @property
    def decode_tokens_per_s(self) -> float:
        steps = len(self.tokens) - 1
        return steps / self.decode_s if steps and self.decode_s > 0 else 0.0


@jax.jit
def _set_slot(tokens, pos, slot, token, position):
    """One slot of the device-side batch state (the last axis: on a mesh every device holds the batch)."""
    return tokens.at[..., slot].set(token), pos.at[..., slot].set(position)


class Engine:
    """Continuous batching over a Generator's decode batch (args.max_batch_size slots, 32 on TT).

    on_token(request, token) is called for every token as it reaches the host (streaming)."""

    def __init__(self, generator: Generator, *, on_token: Callable[[Request, int], None] | None = None, async_output: bool = True):
        self.gen = generator
        self.batch = generator.args.max_batch_size
        self.on_token = on_token
        self.async_output = async_output
        self.waiting: deque[RequestOutput] = deque()
        self.slots: list[RequestOutput | None] = [None] * self.batch
        self.finished: list[RequestOutput] = []
        self.kv_cache = generator.allocate_kv_cache()
        self.pages = generator.new_page_table() if generator.paged is not None else None
        self.tokens = generator.put(np.zeros(self.batch, np.int32))
        self.pos = generator.put(np.full(self.batch, -1, np.int32))
        self.sampling = SamplingBatch.greedy(self.batch)
        self._sampling_dev = None
        self._table_dev = None if self.pages is None else generator.place_page_table(self.pages)
        self._pending = None  # (device tokens of the last dispatched step, owners when dispatched)
        self._detok: dict[int, IncrementalDetokenizer] = {}  # by id(output), for requests with stop strings
        self.steps = 0
        tok = generator.tokenizer
        self.eos = tok.eos_ids if tok is not None else frozenset()

    # -- requests --------------------------------------------------------------------------------
    def add_request(self, request: Request) -> RequestOutput:
        """Queue a request, after checking everything that could make it fail later (check_request); returns
        its output, filled in as it runs."""
        self.check_request(request)
        out = RequestOutput(request, arrival_s=time.perf_counter())
        self.waiting.append(out)
        return out

    def check_request(self, request: Request) -> None:
        """check_limits, and its id not already being served."""
        self.check_limits(request)
        if any(o is not None and o.request_id == request.request_id for o in (*self.waiting, *self.slots)):
            raise ConfigError(f"request {request.request_id} is already being served; give each request its own id.")

    def check_limits(self, request: Request) -> None:
        """Its token ids against the vocabulary, its length against max_seq_len and, paged, against the whole block
        pool (a request bigger than the pool would wait for blocks forever). It reads no state that serving changes,
        so another thread may call it while the engine steps (the server checks a request before queueing it)."""
        if not isinstance(request, Request):
            raise ConfigError(f"the engine serves Request objects, got {type(request).__name__}.")
        n = len(request.prompt)
        args = self.gen.args
        check_fits(n, request.max_new_tokens, args.max_seq_len)
        check_tokens(request.prompt, args.vocab_size, f"request {request.request_id}'s prompt")
        if self.pages is None and get_padded_prefill_len(n) > args.max_prefill_chunk_size:  # prefill would refuse it mid-step
            raise KVCacheError(
                f"request {request.request_id}'s prompt of {n} tokens pads to {get_padded_prefill_len(n)}, past "
                f"max_prefill_chunk_size = {args.max_prefill_chunk_size}: chunked prefill needs a paged KV cache."
            )
        if self.pages is not None:
            need = self.gen.paged.blocks_for(n + request.max_new_tokens)
            if need > self.pages.allocator.max_num_blocks:  # it would wait for blocks forever
                raise KVCacheError(
                    f"request {request.request_id} needs {need} blocks ({n} prompt + {request.max_new_tokens} new tokens), "
                    f"more than the whole pool of {self.pages.allocator.max_num_blocks}."
                )

    def abort(self, request_id: int) -> RequestOutput | None:
        """Stop serving a request at once (its client went away): out of the queue, or out of its slot with its blocks
        returned, finish_reason "abort". A token of it still in flight is dropped when it arrives. None if the
        request is not being served (it finished already)."""
        for out in self.waiting:
            if out.request_id == request_id:
                self.waiting.remove(out)
                break
        else:
            out = next((o for o in self.slots if o is not None and o.request_id == request_id), None)
            if out is None:
                return None
        self._finish(out, "abort")
        return out

    def pop_finished(self) -> list[RequestOutput]:
        """The requests finished since the last call (a long-running server would otherwise keep every one)."""
        done, self.finished = self.finished, []
        return done

    @property
    def active_slots(self) -> int:
        return sum(r is not None for r in self.slots)

    def has_unfinished(self) -> bool:
        return bool(self.waiting) or any(r is not None for r in self.slots) or self._pending is not None

    def _admit(self):
        free = [i for i, r in enumerate(self.slots) if r is None]
        changed = False
        while free and self.waiting:
            out = self.waiting[0]
            req, slot = out.request, free[0]
            if self.pages is not None:
                need = self.gen.paged.blocks_for(len(req.prompt) + req.max_new_tokens)
                if need > self.pages.allocator.num_free:
                    break  # wait for a finishing request to return blocks
                self.pages.reserve(slot, len(req.prompt) + req.max_new_tokens)
            self.waiting.popleft()
            free.pop(0)
            out.slot = slot
            logits, self.kv_cache = self.gen.prefill_forward_text(req.prompt, self.kv_cache, user_id=slot, page_table=self.pages)
            sampling = None if req.sampling.greedy else SamplingBatch.of([req.sampling])
            first = int(first_token(logits[None], np.array([len(req.prompt)], np.int32), sampling)[0])
            out.first_token_s = time.perf_counter()
            if self._accept(out, first):  # done at its first token: the slot stays free
                free.insert(0, slot)
                continue
            self.slots[slot] = out
            self.sampling = self.sampling.with_slot(slot, req.sampling)
            self.tokens, self.pos = _set_slot(self.tokens, self.pos, slot, first, len(req.prompt))
            changed = True
        if changed:
            self._sampling_dev = jax.tree.map(self.gen.put, self.sampling)
            self._table_dev = None if self.pages is None else self.gen.place_page_table(self.pages)

    def _stop_hit(self, out: RequestOutput, token: int) -> bool:
        """Whether a stop string ends in the text this token adds (only that text and the few characters before it
        are searched: a long generation costs no more per token than a short one)."""
        if not out.request.stop or self.gen.tokenizer is None:
            return False
        detok = self._detok.setdefault(id(out), IncrementalDetokenizer(self.gen.tokenizer))
        new = detok.push(token)
        if not new:
            return False
        window = detok.text[-(len(new) + max(map(len, out.request.stop)) - 1) :]
        return any(s in window for s in out.request.stop)

    def _accept(self, out: RequestOutput, token: int) -> bool:
        """Give a token to its request; True (and the slot freed) when the request is finished."""
        req = out.request
        out.tokens.append(token)
        if self.on_token:
            self.on_token(req, token)
        reason = None
        if req.stop_at_eos and token in self.eos:
            reason = "eos"
        elif self._stop_hit(out, token):
            reason = "stop"
        elif len(out.tokens) >= req.max_new_tokens:
            reason = "length"
        if reason is None:
            return False
        self._finish(out, reason)
        return True

    def _finish(self, out: RequestOutput, reason: str) -> None:
        """End a request: its text, and its slot and blocks free for the next admission."""
        req = out.request
        out.finish_reason, out.finish_s = reason, time.perf_counter()
        self._detok.pop(id(out), None)
        if self.gen.tokenizer is not None:  # the whole text once, exact (the incremental one may hold bytes back)
            out.text = self.gen.tokenizer.decode(out.tokens, skip_special_tokens=True)
            if reason == "stop":
                out.text = out.text[: min(out.text.index(s) for s in req.stop if s in out.text)]
        if out.slot is not None and self.slots[out.slot] is out:
            self.slots[out.slot] = None
            self.tokens, self.pos = _set_slot(self.tokens, self.pos, out.slot, 0, -1)
        if self.pages is not None and out.slot is not None:
            self.pages.release(out.slot)
        self.finished.append(out)

    def warm_up(self, prompts, sampled: bool | None = None) -> None:
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
            sampled = any(r is not None and not r.request.sampling.greedy for r in owners)
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
        host = self.gen.read(tokens)
        for slot, out in enumerate(owners):
            if out is not None and not out.done:
                self._accept(out, int(host[slot]))

    def run(self, requests: list[Request], arrival_steps: list[int] | None = None) -> list[RequestOutput]:
        """Serve requests (request i joins the waiting queue at engine step arrival_steps[i]); returns their outputs,
        in order, all done."""
        steps = [0] * len(requests) if arrival_steps is None else list(arrival_steps)
        if len(steps) != len(requests):
            raise ConfigError(f"run() got {len(steps)} arrival steps for {len(requests)} requests; give one step per request.")
        bad = [a for a in steps if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < 0]
        if bad:
            raise ConfigError(f"arrival step {bad[0]!r} is not a step number (an integer of 0 or more).")
        for req in requests:  # all of them before any runs: a bad one fails the call, not the middle of it
            self.check_request(req)
        ids = [r.request_id for r in requests]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"run() got request id {next(i for i in ids if ids.count(i) > 1)} twice; give each request its own id.")
        outputs: list[RequestOutput | None] = [None] * len(requests)
        queue = deque(sorted(zip(steps, range(len(requests)))))
        while queue or self.has_unfinished():
            while queue and queue[0][0] <= self.steps:
                i = queue.popleft()[1]
                outputs[i] = self.add_request(requests[i])
            self.step()
        return outputs


@dataclass
class GenerationResult:
    """One request served alone: the new tokens (the first from prefill) and where the time went."""

    tokens: list[int]
    text: str
    prompt_tokens: int
    prefill_s: float  # arrival to first token
    decode_s: float
    compile_s: float  # before the clock started
    stop_reason: str  # "eos" | "stop" | "length"

    @property
    def decode_tokens_per_s(self) -> float:
        steps = len(self.tokens) - 1
        return steps / self.decode_s if steps and self.decode_s > 0 else 0.0


def generate(
    generator: Generator,
    prompt_tokens,
    max_new_tokens: int,
    *,
    sampling: SamplingParams = GREEDY,
    stop: tuple[str, ...] = (),
    stop_at_eos: bool = True,
    on_token: Callable[[int], None] | None = None,
) -> GenerationResult:
    """One user's generation, served by the Engine on its own (slot 0 of the generator's batch); the programs are
    compiled before the clock starts."""
    request = Request(prompt_tokens, max_new_tokens, sampling, stop, stop_at_eos)
    engine = Engine(generator, on_token=None if on_token is None else lambda _, token: on_token(token))
    engine.check_request(request)
    compile_before = generator.compile_s
    engine.warm_up([request.prompt], sampled=not sampling.greedy)
    out = engine.run([request])[0]
    return GenerationResult(
        out.tokens, out.text, len(request.prompt), out.time_to_first_token, out.decode_s, generator.compile_s - compile_before,
        out.finish_reason,
    )
