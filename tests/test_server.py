"""`ttjax serve`: the OpenAI-compatible server, driven by the official openai client on a free port of 127.0.0.1.

The server runs in this process (a thread) over the shipped SmolLM2 with a paged cache of 8 slots;
what it answers is compared with the engine's own greedy output on the same Generator. One test
runs the `ttjax serve` command itself and stops it with SIGTERM.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx2 as httpx  # the HTTP client the openai package itself uses
import pytest

openai = pytest.importorskip("openai")

KEY = "test-key"
SLOTS = 8
MAX_SEQ_LEN = 256
PROMPTS = ["The capital of France is", "def fibonacci(n):"]
CHAT = [{"role": "user", "content": "Name three colors."}]
N = 12


@pytest.fixture(scope="module")
def gen(ckpt):
    from model.serving.build import build_generator

    return build_generator(ckpt, paged=True, max_batch_size=SLOTS, max_seq_len=MAX_SEQ_LEN)


@pytest.fixture(scope="module")
def expected(gen):
    """The engine's own greedy output, served alone (model.serving.engine.generate)."""
    from model.serving.engine import generate

    tok = gen.tokenizer
    runs = {p: generate(gen, tok.encode(p), N) for p in PROMPTS}
    runs["chat"] = generate(gen, tok.encode_chat(CHAT), N)
    return runs


def start_server(gen, **kw):
    from model.serving.engine import Engine
    from model.serving.engine_loop import EngineLoop
    from model.serving.openai_protocol import ServedModel
    from model.serving.server import Server

    engine = Engine(gen)
    engine.warm_up([[0]], sampled=None)
    served = ServedModel("smollm2", gen.tokenizer, gen.args.max_seq_len, gen.args.vocab_size)
    return Server(EngineLoop(engine, max_queue=kw.pop("max_queue", 64)), served, host="127.0.0.1", port=0, api_key=KEY, **kw).start()


@pytest.fixture(scope="module")
def server(gen, expected):
    s = start_server(gen)
    yield s
    s.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def metrics(server) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+) (\S+)$", text, re.M)}


def wait_idle(server, timeout=60.0) -> dict[str, float]:
    """The metrics once no slot, block or queue place is in use (or as they are at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(server)
        if (m["ttjax_requests_in_flight"] == 0 and m["ttjax_active_slots"] == 0 and m["ttjax_queue_length"] == 0 and m["ttjax_kv_free_blocks"] == m["ttjax_kv_blocks"]) \
                or time.monotonic() > deadline:
            return m
        time.sleep(0.1)


def test_models_lists_the_served_model(client, server):
    assert [m.id for m in client.models.list().data] == ["smollm2"]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}


@pytest.mark.parametrize("prompt", PROMPTS)
def test_completions_equal_the_engines_greedy_output(client, expected, prompt):
    want = expected[prompt]
    kw = dict(model="smollm2", prompt=prompt, max_tokens=N, temperature=0, extra_body={"return_token_ids": True})
    whole = client.completions.create(**kw)
    assert whole.choices[0].token_ids == want.tokens
    assert whole.choices[0].text == want.text
    assert whole.usage.completion_tokens == len(want.tokens) and whole.usage.prompt_tokens == want.prompt_tokens
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert [t for c in chunks if c.choices for t in c.choices[0].token_ids] == want.tokens
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == {"length": "length", "eos": "stop"}[want.stop_reason]
    assert chunks[-1].usage.completion_tokens == len(want.tokens)


def test_chat_equals_the_engines_greedy_output(client, expected):
    want = expected["chat"]
    kw = dict(model="smollm2", messages=CHAT, max_tokens=N, temperature=0, extra_body={"return_token_ids": True})
    whole = client.chat.completions.create(**kw)
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].message.content == want.text
    assert whole.choices[0].token_ids == want.tokens
    chunks = list(client.chat.completions.create(stream=True, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want.text
    assert [t for c in chunks for t in getattr(c.choices[0], "token_ids", None) or []] == want.tokens


def test_seeded_sampling_is_reproducible_through_the_api(client):
    kw = dict(model="smollm2", prompt="Once upon a time", max_tokens=16, temperature=1.0, top_p=0.95, extra_body={"ignore_eos": True})
    runs = [client.completions.create(seed=7, **kw).choices[0].text for _ in range(2)]
    streamed = "".join(c.choices[0].text for c in client.completions.create(seed=7, stream=True, **kw))
    assert runs[0] == runs[1] == streamed
    assert len({client.completions.create(seed=s, **kw).choices[0].text for s in (1, 2, 3)}) > 1  # the seed matters


def test_a_stop_string_ends_the_text_before_it_streamed_or_not(client, expected):
    want = expected[PROMPTS[0]].text  # " Paris. ..." : stop at the first full stop
    stop = want[want.index(".") : want.index(".") + 1]
    kw = dict(model="smollm2", prompt=PROMPTS[0], max_tokens=N, temperature=0, stop=[stop, "never appears"])
    whole = client.completions.create(**kw).choices[0]
    assert (whole.text, whole.finish_reason) == (want[: want.index(stop)], "stop")
    streamed = list(client.completions.create(stream=True, **kw))
    assert "".join(c.choices[0].text for c in streamed) == whole.text
    # One stop string of one character: nothing held back, and still nothing past it is sent.
    for stop in (want[want.index(".")], want.split()[1][:2]):
        kw["stop"] = stop
        whole = client.completions.create(**kw).choices[0]
        assert whole.text == want[: want.index(stop)]
        assert "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw)) == whole.text


def test_64_concurrent_streams_all_complete_with_their_token_counts(server):
    async def one(client, i):
        n = 4 + i % 5
        got, text = 0, ""
        stream = await client.completions.create(model="smollm2", prompt=f"Story number {i}:", max_tokens=n, temperature=0.8, seed=i,
                                                 stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        async for chunk in stream:
            if chunk.usage:
                got = chunk.usage.completion_tokens
            elif chunk.choices:
                text += chunk.choices[0].text
        return n, got

    async def main():
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=300) as client:
            return await asyncio.gather(*(one(client, i) for i in range(64)))

    results = asyncio.run(main())
    assert [got for _, got in results] == [n for n, _ in results]
    m = wait_idle(server)
    assert m["ttjax_active_slots"] == 0 and m["ttjax_kv_free_blocks"] == m["ttjax_kv_blocks"]


def test_clients_that_disconnect_mid_stream_leave_no_slot_or_block_in_use(server):
    before = metrics(server).get('ttjax_requests_finished_total{finish_reason="abort"}', 0.0)

    async def leave(client, i):
        stream = await client.completions.create(model="smollm2", prompt=f"Count to a thousand {i}:", max_tokens=200,
                                                 temperature=0, stream=True, extra_body={"ignore_eos": True})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                break  # mid-stream
        await stream.close()

    async def main():
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=300) as client:
            await asyncio.gather(*(leave(client, i) for i in range(30)))

    start = time.monotonic()
    asyncio.run(main())
    m = wait_idle(server)
    assert m["ttjax_active_slots"] == 0, m
    assert m["ttjax_queue_length"] == 0, m
    assert m["ttjax_kv_free_blocks"] == m["ttjax_kv_blocks"], m
    assert m['ttjax_requests_finished_total{finish_reason="abort"}'] - before == 30, {k: v for k, v in m.items() if "finished" in k or "rejected" in k}
    # 30 requests of 200 tokens each on 8 slots would take ~750 steps run out; leaving stopped them.
    assert m["ttjax_generation_tokens_total"] < 30 * 200
    assert time.monotonic() - start < 120


def test_a_client_that_leaves_before_a_plain_answer_frees_its_slot(server):
    body = {"model": "smollm2", "prompt": "Tell me a long story", "max_tokens": 200, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=1.0)
    m = wait_idle(server, timeout=30)
    assert m["ttjax_active_slots"] == 0 and m["ttjax_kv_free_blocks"] == m["ttjax_kv_blocks"]


BIG = "x" * (3 << 20)
BAD = [  # (endpoint, body, status, words in the message)
    ("completions", b"{not json", 400, "not valid JSON"),
    ("completions", b"[1, 2]", 400, "JSON object"),
    ("completions", b"", 400, "empty"),
    ("completions", json.dumps({"model": "smollm2", "prompt": BIG}).encode(), 413, "--max-body-bytes"),
    ("completions", {"model": "gpt-4", "prompt": "hi"}, 404, "'gpt-4' does not exist"),
    ("completions", {"prompt": "hi"}, 400, "model is missing"),
    ("completions", {"model": "smollm2"}, 400, "prompt is missing"),
    ("completions", {"model": "smollm2", "prompt": ""}, 400, "prompt is empty"),
    ("completions", {"model": "smollm2", "prompt": [1, 999999]}, 400, "outside the vocabulary"),
    ("completions", {"model": "smollm2", "prompt": ["a", "b"]}, 400, "one per request"),
    ("completions", {"model": "smollm2", "prompt": [5] * 300}, 400, "context is 256"),
    ("completions", {"model": "smollm2", "prompt": "hi", "max_tokens": 0}, 400, "max_tokens = 0 is outside 1.."),
    ("completions", {"model": "smollm2", "prompt": "hi", "max_tokens": 1000}, 400, "more than this server's context of 256"),
    ("completions", {"model": "smollm2", "prompt": "hi", "max_tokens": "ten"}, 400, "not an integer"),
    ("completions", {"model": "smollm2", "prompt": "hi", "temperature": 2.5}, 400, "temperature = 2.5 is outside [0, 2]"),
    ("completions", {"model": "smollm2", "prompt": "hi", "temperature": "hot"}, 400, "not a number"),
    ("completions", {"model": "smollm2", "prompt": "hi", "top_p": 0}, 400, "top_p = 0 is outside (0, 1]"),
    ("completions", {"model": "smollm2", "prompt": "hi", "top_p": 1.5}, 400, "top_p = 1.5"),
    ("completions", {"model": "smollm2", "prompt": "hi", "top_k": 33}, 400, "top_k = 33 is outside 1..32"),
    ("completions", {"model": "smollm2", "prompt": "hi", "seed": -1}, 400, "seed = -1"),
    ("completions", {"model": "smollm2", "prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4"),
    ("completions", {"model": "smollm2", "prompt": "hi", "stop": [""]}, 400, "empty string"),
    ("completions", {"model": "smollm2", "prompt": "hi", "stop": 3}, 400, "string or a list of strings"),
    ("completions", {"model": "smollm2", "prompt": "hi", "n": 2}, 400, "n = 1"),
    ("completions", {"model": "smollm2", "prompt": "hi", "logprobs": 5}, 400, "logprobs = 5 is not supported"),
    ("completions", {"model": "smollm2", "prompt": "hi", "logprobs": 0}, 400, "logprobs = 0 is not supported"),
    ("completions", {"model": "smollm2", "prompt": "hi", "frequency_penalty": 0.5}, 400, "frequency_penalty"),
    ("completions", {"model": "smollm2", "prompt": "hi", "temprature": 0}, 400, "unknown parameter 'temprature'"),
    ("completions", {"model": "smollm2", "prompt": "hi", "stream_options": {"include_usage": True}}, 400, "only allowed when stream"),
    ("completions", b'{"model": "smollm2", "prompt": "a\\ud800b"}', 400, "lone surrogate"),
    ("completions", b"[" * 100000, 400, "deeper"),
    ("completions", b'{"model": "smollm2", "prompt": "hi", "temperature": 1' + b"0" * 400 + b"}", 400, "not a finite number"),
    ("chat/completions", {"model": "smollm2", "messages": [{"role": "user", "content": "hi", "name": "bob"}]}, 400, "'name'"),
    ("chat/completions", {"model": "smollm2"}, 400, "the \"messages\" field is missing"),
    ("chat/completions", {"model": "smollm2", "messages": []}, 400, "non-empty list"),
    ("chat/completions", {"model": "smollm2", "messages": [{"role": "robot", "content": "hi"}]}, 400, "role = 'robot'"),
    ("chat/completions", {"model": "smollm2", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "image_url"),
    ("chat/completions", {"model": "smollm2", "messages": CHAT, "max_tokens": -3}, 400, "max_tokens = -3"),
    ("chat/completions", {"model": "smollm2", "messages": [{"role": "user", "content": "go " * 400}]}, 400, "no room"),
]


@pytest.mark.parametrize("endpoint,body,status,words", BAD, ids=[f"{e}-{w}" for e, _, _, w in BAD])
def test_every_bad_input_gets_its_4xx_and_the_next_request_succeeds(server, client, endpoint, body, status, words):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{server.url}/v1/{endpoint}", content=content, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"] and error["message"].count("\n") == 0
    assert set(error) == {"message", "type", "param", "code"}
    ok = client.completions.create(model="smollm2", prompt="Hello", max_tokens=2, temperature=0)
    assert ok.usage.completion_tokens == 2


def test_the_openai_client_raises_its_own_errors(server, client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4", prompt="hi")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="smollm2", messages=CHAT, temperature=-1)
    for key in ("wrong-key", ""):
        other = openai.OpenAI(base_url=server.url + "/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="API key"):
            other.models.list()
    r = httpx.get(server.url + "/v1/models")  # no header at all
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/v2/nothing").status_code == 404
    assert client.completions.create(model="smollm2", prompt="Hello", max_tokens=2, temperature=0).usage.completion_tokens == 2


def test_the_load_test_demo_runs_and_reports(capsys):
    from demos import load_test

    assert load_test.main(["--concurrency", "6", "--requests", "12", "--max-tokens", "5", "--max-batch-size", "4",
                           "--max-seq-len", "256", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["completed"] == out["requests"] == 12 and out["output_tokens_per_s"] > 0
    assert out["ttft_s"]["p50"] <= out["ttft_s"]["p99"] and out["ratio_server_to_engine_alone"] > 0


def test_past_the_bounded_queue_requests_get_429_with_retry_after(gen, server):
    """A server of 8 slots and a queue of 2: the 11th request waiting is refused at once, and served once room frees."""
    small = start_server(gen, max_queue=2)
    try:
        body = {"model": "smollm2", "prompt": "Go on forever", "max_tokens": 200, "temperature": 0, "ignore_eos": True, "stream": True}
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(timeout=120) as http:
            streams = [http.stream("POST", small.url + "/v1/completions", json=body, headers=headers) for _ in range(SLOTS + 2)]
            opened = [s.__enter__() for s in streams]
            assert all(r.status_code == 200 for r in opened)
            full = http.post(small.url + "/v1/completions", json={**body, "stream": False}, headers=headers)
            assert full.status_code == 429 and int(full.headers["Retry-After"]) >= 1
            assert "--max-queue" in full.json()["error"]["message"] and full.json()["error"]["code"] == "queue_full"
            for s in streams:
                s.__exit__(None, None, None)
            m = wait_idle(small)
            assert m["ttjax_active_slots"] == 0 and m['ttjax_requests_rejected_total{status="429"}'] == 1
            ok = http.post(small.url + "/v1/completions", json={**body, "stream": False, "max_tokens": 3}, headers=headers)
            assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    finally:
        small.stop()


def _ttjax(*args, **kw):
    return subprocess.run([sys.executable, "-m", "model.tools.cli", *args], capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize("flags,words", [
    (["--port", "70000"], "--port 70000 is outside 0..65535"),
    (["--kv-blocks", "4"], "add --paged"),
    (["--paged", "--kv-blocks", "2", "--max-seq-len", "256"], "fewer than one request"),
    (["--max-queue", "-1"], "--max-queue -1"),
])
def test_serve_refuses_bad_flags_before_loading(flags, words):
    r = _ttjax("serve", *flags)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_serve_refuses_a_busy_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = _ttjax("serve", "--port", str(s.getsockname()[1]))
    assert r.returncode == 2 and "cannot listen on 127.0.0.1" in r.stderr


def test_serve_command_streams_and_sigterm_ends_it_gracefully_with_status_0():
    """SIGTERM mid-stream: a short stream runs to its end, a long one is ended at --shutdown-timeout with a last chunk
    (finish_reason "abort") and [DONE], and the command exits 0."""
    proc = subprocess.Popen([sys.executable, "-m", "model.tools.cli", "serve", "--port", "0", "--max-batch-size", "2",
                             "--max-seq-len", "512", "--shutdown-timeout", "8"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TTJAX_API_KEY": KEY})
    try:
        line = proc.stderr.readline()
        url = re.search(r"on (http://\S+)/v1", line).group(1)
        assert "API key required" in line
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)
        name = client.models.list().data[0].id
        got = {10: [], 480: []}

        def stream(n):
            for chunk in client.completions.create(model=name, prompt="Once", max_tokens=n, temperature=0, stream=True,
                                                   stream_options={"include_usage": True}, extra_body={"ignore_eos": True}):
                got[n].append(chunk)

        readers = [threading.Thread(target=stream, args=(n,)) for n in got]
        for r in readers:
            r.start()
        while not all(any(c.choices and c.choices[0].text for c in chunks) for chunks in got.values()):
            time.sleep(0.02)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert time.monotonic() - signalled < 8 + 10
        for r in readers:
            r.join(30)
        short, long = ([c for c in got[n] if c.choices] for n in got)
        assert short[-1].choices[0].finish_reason == "length" and got[10][-1].usage.completion_tokens == 10
        assert long[-1].choices[0].finish_reason == "abort" and got[480][-1].usage.completion_tokens < 480
        with pytest.raises(openai.APIConnectionError):
            client.models.list()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_engine_that_fails_answers_500_then_503_and_the_server_stays_up(gen, server):
    """A fault of the engine (not of a request) reaches every client in OpenAI's error shape; /health says so."""
    broken = start_server(gen)
    try:
        def fail():
            raise RuntimeError("device lost")

        broken.loop.engine.step = fail  # the next step fails, as a lost device would
        client = openai.OpenAI(base_url=broken.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
        with pytest.raises(openai.InternalServerError, match="device lost"):
            client.completions.create(model="smollm2", prompt="Hi", max_tokens=4, temperature=0)
        with pytest.raises(openai.APIStatusError, match="engine failed") as refused:
            client.completions.create(model="smollm2", prompt="Hi", max_tokens=4, temperature=0)
        assert refused.value.status_code == 503
        health = httpx.get(broken.url + "/health")
        assert health.status_code == 503 and "device lost" in health.json()["status"]
    finally:
        broken.stop()


def test_a_prompt_that_needs_chunked_prefill_is_refused_by_a_contiguous_engine_before_it_runs(ckpt):
    """Found in review: it used to fail the engine's prefill mid-step, taking every stream down with it."""
    from model.errors import KVCacheError
    from model.serving.build import build_generator
    from model.serving.engine import Engine, Request

    engine = Engine(build_generator(ckpt, max_seq_len=256, max_prefill_chunk_size=128))
    with pytest.raises(KVCacheError, match="pads to 256, past max_prefill_chunk_size = 128: chunked prefill needs a paged"):
        engine.check_limits(Request(tuple([5] * 200), 4))
    engine.check_limits(Request(tuple([5] * 100), 4))
