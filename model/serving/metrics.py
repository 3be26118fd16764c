"""The server's metrics in Prometheus' text format (GET /metrics), named after vLLM's where the concept is the same.

Gauges are read when scraped, from the engine loop's state (queue, slots, KV blocks); counters and
histograms are fed as tokens reach the host. Latencies are what a client sees: time to first token
counts from the request's arrival at the server (queueing included), time per output token is the
gap between two tokens of one request as the engine hands them over.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # the *_created series (process start times) only double what a scrape shows

# Buckets in seconds: vLLM's, which span a fast decode step (ms) to a long queue wait.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0)


class ServerMetrics:
    CONTENT_TYPE = CONTENT_TYPE_LATEST

    def __init__(self, *, in_flight: Callable[[], float], queue_length: Callable[[], float], active_slots: Callable[[], float], slots: int,
                 free_blocks: Callable[[], float], total_blocks: int):
        r = self.registry = CollectorRegistry()  # one per server: two servers in one process keep apart
        gauge = lambda name, doc, fn: Gauge(name, doc, registry=r).set_function(fn)  # noqa: E731
        gauge("ttjax_requests_in_flight", "Requests accepted and not yet finished (queued or in a slot).", in_flight)
        gauge("ttjax_queue_length", "Requests accepted and waiting for a slot (or for KV blocks).", queue_length)
        gauge("ttjax_active_slots", "Decode-batch slots serving a request.", active_slots)
        gauge("ttjax_slots", "Decode-batch slots (--max-batch-size).", lambda: slots)
        gauge("ttjax_kv_free_blocks", "Free KV-cache blocks of 32 positions (a contiguous cache counts a free slot's rows).", free_blocks)
        gauge("ttjax_kv_blocks", "KV-cache blocks of 32 positions in all.", lambda: total_blocks)
        self.prompt_tokens = Counter("ttjax_prompt_tokens", "Prompt tokens prefilled.", registry=r)
        self.generation_tokens = Counter("ttjax_generation_tokens", "Tokens generated and handed to clients.", registry=r)
        self.finished = Counter("ttjax_requests_finished", "Requests that ended, by why.", ["finish_reason"], registry=r)
        self.rejected = Counter("ttjax_requests_rejected", "Requests refused before they ran, by HTTP status.", ["status"], registry=r)
        self.ttft = Histogram("ttjax_time_to_first_token_seconds", "Arrival to first token.", buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("ttjax_time_per_output_token_seconds", "Gap between two tokens of a request.", buckets=TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("ttjax_e2e_request_latency_seconds", "Arrival to last token.", buckets=E2E_BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
