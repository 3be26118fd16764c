"""The engine in its own thread, stepping while requests arrive: what the server drives.

Request handlers (on the server's event loop) submit a Request with a sink, a function the engine
thread calls with ("token", id) for every token as it reaches the host and ("done", RequestOutput)
at the end, or ("error", message) if the engine itself fails. Only the engine thread touches the
Engine: submissions and aborts go through an inbox under a lock, and the thread takes them between
steps. An abort (a client that went away) frees the request's slot and blocks before the next step.

Admission is bounded: at most max_batch_size running plus max_queue waiting; past that a request is
refused with 429 and a Retry-After at once instead of queueing without end. While draining (after
SIGTERM) or stopping, new requests get 503.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from model.errors import RequestError
from model.serving.engine import Engine, Request, RequestOutput
from model.serving.metrics import ServerMetrics

Sink = Callable[[str, object], None]


@dataclass
class _Stream:
    request: Request
    sink: Sink
    arrival_s: float
    last_token_s: float | None = None


class EngineLoop:
    def __init__(self, engine: Engine, *, max_queue: int):
        self.engine = engine
        self.max_queue = max_queue
        self.error: str | None = None  # set if the engine failed: the server then answers 503
        self._cond = threading.Condition()
        self._inbox: list[_Stream] = []
        self._aborts: list[int] = []
        self._streams: dict[int, _Stream] = {}  # accepted and not finished, by request id
        self._stopping = False
        self._deadline: float | None = None  # set by drain(): when whatever still runs is aborted
        self._step_s = 0.0  # a moving average of one engine step, for Retry-After
        engine.on_token = self._on_token
        gen = engine.gen
        per_slot = -(-gen.args.max_seq_len // 32)
        if engine.pages is not None:
            alloc = engine.pages.allocator
            free, total = (lambda: alloc.num_free), alloc.max_num_blocks
        else:  # a contiguous cache: each slot owns max_seq_len rows, counted in blocks of 32
            free, total = (lambda: (engine.batch - engine.active_slots) * per_slot), engine.batch * per_slot
        self.metrics = ServerMetrics(in_flight=lambda: self.in_flight, queue_length=lambda: self.queue_length,
                                     active_slots=lambda: engine.active_slots, slots=engine.batch, free_blocks=free, total_blocks=total)
        self._thread = threading.Thread(target=self._run, name="ttjax-engine", daemon=True)

    @property
    def capacity(self) -> int:
        return self.engine.batch + self.max_queue

    @property
    def queue_length(self) -> int:
        return len(self._inbox) + len(self.engine.waiting)

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def start(self) -> EngineLoop:
        self._thread.start()
        return self

    def submit(self, request: Request, sink: Sink) -> None:
        """Queue a request, checked against the model's limits first (a TTJaxError here is the client's fault);
        RequestError 429 when the queue is full, 503 when the server is stopping or its engine failed."""
        self.engine.check_limits(request)
        with self._cond:
            if self.error is not None:
                raise RequestError(f"the engine failed ({self.error}); restart the server.", 503, code="engine_failed")
            if self._stopping or self._deadline is not None:
                raise RequestError("the server is shutting down and takes no new requests.", 503, code="shutting_down", retry_after=1)
            if len(self._streams) >= self.capacity:
                # A slot frees about every (a request's steps / slots) steps; a second is the floor HTTP allows.
                wait = max(1, math.ceil(self._step_s * request.max_new_tokens / max(1, self.engine.batch)))
                raise RequestError(
                    f"the server is full: {len(self._streams)} requests are running or queued, its limit of "
                    f"{self.engine.batch} slots (--max-batch-size) plus {self.max_queue} waiting (--max-queue); retry later.",
                    429, code="queue_full", retry_after=wait,
                )
            stream = _Stream(request, sink, time.perf_counter())
            self._streams[request.request_id] = stream
            self._inbox.append(stream)
            self.metrics.prompt_tokens.inc(len(request.prompt))
            self._cond.notify()

    def abort(self, request_id: int) -> None:
        """Stop a request (its client went away); nothing if it has finished."""
        with self._cond:
            if request_id in self._streams:
                self._aborts.append(request_id)
                self._cond.notify()

    def drain(self, timeout: float) -> None:
        """Take no new requests; those in flight run on for up to timeout seconds, then end with finish_reason
        "abort" (their streams close cleanly, with a last chunk saying so)."""
        with self._cond:
            self._deadline = time.monotonic() + timeout
            self._cond.notify()

    def stop(self, timeout: float = 10.0) -> None:
        """Abort whatever still runs and end the thread."""
        with self._cond:
            self._stopping = True
            self._aborts.extend(self._streams)
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the engine thread ---------------------------------------------------------------------------
    def _on_token(self, request: Request, token: int) -> None:
        stream = self._streams.get(request.request_id)
        if stream is None:
            return
        now = time.perf_counter()
        if stream.last_token_s is None:
            self.metrics.ttft.observe(now - stream.arrival_s)
        else:
            self.metrics.tpot.observe(now - stream.last_token_s)
        stream.last_token_s = now
        self.metrics.generation_tokens.inc()
        stream.sink("token", token)

    def _finished(self, out: RequestOutput) -> None:
        with self._cond:
            stream = self._streams.pop(out.request_id, None)
        if stream is None:
            return
        self.metrics.finished.labels(out.finish_reason).inc()
        if out.finish_reason != "abort":
            self.metrics.e2e.observe(time.perf_counter() - stream.arrival_s)
        stream.sink("done", out)

    def _run(self) -> None:
        engine = self.engine
        try:
            while True:
                with self._cond:
                    while not (self._inbox or self._aborts or engine.has_unfinished() or self._stopping):
                        self._cond.wait()
                    if self._deadline is not None and time.monotonic() >= self._deadline:
                        self._aborts.extend(self._streams)  # the drain's time is up
                        self._deadline = math.inf
                    inbox, self._inbox = self._inbox, []
                    aborts, self._aborts = self._aborts, []
                    if self._stopping and not inbox and not aborts and not engine.has_unfinished():
                        return
                for stream in inbox:
                    engine.add_request(stream.request)
                for request_id in aborts:
                    engine.abort(request_id)
                if engine.has_unfinished():
                    t = time.perf_counter()
                    engine.step()
                    self._step_s = 0.9 * self._step_s + 0.1 * (time.perf_counter() - t)
                for out in engine.pop_finished():
                    self._finished(out)
        except BaseException as e:  # a fault of the engine, not of a request: tell every client, keep the process up
            self.error = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=sys.stderr)
            with self._cond:
                streams, self._streams = list(self._streams.values()), {}
            for stream in streams:
                stream.sink("error", self.error)
