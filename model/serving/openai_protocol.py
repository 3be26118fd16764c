"""OpenAI's completions and chat-completions API: a JSON body checked and turned into an engine Request, and the
engine's tokens turned back into OpenAI's response objects and stream chunks.

Every field is checked before anything runs, each failure a RequestError naming the value and the limit
(HTTP 400, 404 for a model this server does not serve). A field the engine cannot honour (penalties,
logprobs, tools, n > 1) is refused, not ignored: a client that asked for it would otherwise get
something else without a word. ttjax's extensions, as vLLM spells them: top_k, ignore_eos,
return_token_ids (the generated token ids beside the text, in every chunk).

Stop strings: while streaming, the last (longest stop - 1) characters are held back, so no text past
a stop string is ever sent; the final chunk sends the rest of the engine's exact text.
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from dataclasses import dataclass, field

from model.errors import RequestError, TTJaxError
from model.serving.checks import check_tokens
from model.serving.engine import Request, RequestOutput
from model.serving.sampling import SamplingParams
from model.serving.streaming import IncrementalDetokenizer
from ttjax.sampling import MAX_TOP_K

MAX_STOP = 4  # OpenAI's limit on stop strings
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat runs to the end of the context
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "abort": "abort"}  # abort: cut by shutdown (vLLM's word)

# Fields every client library may send, with the values that ask for nothing the engine does not do.
_NEUTRAL = {
    "frequency_penalty": (None, 0.0),
    "presence_penalty": (None, 0.0),
    "logit_bias": (None, {}),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "best_of": (None, 1),
    "echo": (None, False),
    "suffix": (None, ""),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "parallel_tool_calls": (None, True, False),
    "store": (None, False),
    "service_tier": (None, "auto", "default"),
}
_COMMON = {"model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "n", "user",
           "ignore_eos", "return_token_ids", "metadata"}
COMPLETION_FIELDS = _COMMON | {"prompt", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "best_of", "echo", "suffix"}
CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens"} | set(_NEUTRAL) - {"best_of", "echo", "suffix"}
ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass(frozen=True)
class ServedModel:
    """What the server serves: the name clients ask for, and the limits requests are checked against."""

    name: str
    tokenizer: object  # model.checkpoint.tokenizer.Tokenizer
    max_seq_len: int
    vocab_size: int
    created: int = field(default_factory=lambda: int(time.time()))

    def card(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "ttjax", "max_model_len": self.max_seq_len}


@dataclass(frozen=True)
class Completion:
    """A checked request: the engine Request and how to answer it."""

    chat: bool
    request: Request
    stream: bool
    include_usage: bool
    return_token_ids: bool
    model: str
    id: str
    created: int

    @property
    def object(self) -> str:
        return ("chat.completion" if self.chat else "text_completion") + (".chunk" if self.chat and self.stream else "")


def _number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name} = {value!r} is not a number.", param=name)
    if isinstance(value, int) and abs(value) > 1e300:  # JSON integers are unbounded; float() of this one would overflow
        value = math.inf if value > 0 else -math.inf
    if not math.isfinite(value):
        raise RequestError(f"{name} = {value} is not a finite number.", param=name)
    if value > high or value < low or (low_open and value == low):
        raise RequestError(f"{name} = {value} is outside {'(' if low_open else '['}{low:g}, {high:g}].", param=name)
    return float(value)


def _integer(body: dict, name: str, default, low: int, high: int):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} = {value!r} is not an integer.", param=name)
    if not low <= value <= high:
        raise RequestError(f"{name} = {value} is outside {low}..{high}.", param=name)
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"{name} = {value!r} must be true or false.", param=name)
    return value


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError(f"stop = {stop!r} must be a string or a list of strings.", param="stop")
    if len(stops) > MAX_STOP:
        raise RequestError(f"stop has {len(stops)} strings; at most {MAX_STOP} are allowed.", param="stop")
    if "" in stops:
        raise RequestError("stop holds an empty string, which would end every completion at once.", param="stop")
    for s in stops:
        _unicode(s, "stop")
    return tuple(stops)


def _neutral(value, allowed) -> bool:
    """value is one of allowed, type and all (logprobs = 0 asks for something; False does not)."""
    return any(value is a or (type(value) is type(a) and value == a) or (isinstance(a, float) and type(value) is int and value == a)
               for a in allowed)


def _unicode(text: str, what: str) -> str:
    """JSON may carry a lone surrogate ("\\ud800"), which is no Unicode text: the tokenizer would fail on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(f"{what} holds {text[e.start]!a} at character {e.start}, a lone surrogate that is not Unicode text.",
                           param=what.split("[")[0].split(".")[0]) from None
    return text


def _check_fields(body, allowed: set[str], endpoint: str):
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}.")
    for name in body:
        if name not in allowed:
            raise RequestError(f"unknown parameter {name!r} for {endpoint}.", param=name, code="unknown_parameter")
        if name in _NEUTRAL and not _neutral(body[name], _NEUTRAL[name]):
            raise RequestError(f"{name} = {body[name]!r} is not supported by this server (ttjax samples with temperature, top_p, "
                       f"top_k and seed only); leave it out.", param=name, code="unsupported_parameter")


def _model(body: dict, served: ServedModel) -> str:
    model = body.get("model")
    if model is None:
        raise RequestError(f"model is missing; this server serves {served.name!r}.", param="model")
    if model != served.name:
        raise RequestError(f"the model {model!r} does not exist; this server serves {served.name!r} (GET /v1/models).", 404,
                           param="model", code="model_not_found")
    return model


def _prompt_ids(body: dict, served: ServedModel) -> list[int]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if not prompt:
            raise RequestError("prompt is empty: prefill needs at least one token.", param="prompt")
        return served.tokenizer.encode(_unicode(prompt, "prompt"))
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        try:
            return check_tokens(prompt, served.vocab_size, "prompt").tolist()
        except TTJaxError as e:
            raise RequestError(str(e), param="prompt") from None
    if prompt is None:
        raise RequestError("prompt is missing.", param="prompt")
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, (str, list)) for p in prompt):
        raise RequestError(f"prompt holds {len(prompt)} prompts; this server takes one per request (send them as separate requests).", param="prompt")
    raise RequestError("prompt must be a string or a list of token ids.", param="prompt")


def _message_text(i: int, content) -> str:
    if isinstance(content, str):
        return _unicode(content, f"messages[{i}].content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RequestError(f"messages[{i}].content holds a part of type {kind!r}; this model reads text parts only.", param="messages")
            parts.append(_unicode(part["text"], f"messages[{i}].content"))
        return "".join(parts)
    raise RequestError(f"messages[{i}].content must be a string or a list of text parts.", param="messages")


def _chat_ids(body: dict, served: ServedModel) -> list[int]:
    messages = body.get("messages")
    if messages is None:
        raise RequestError('the "messages" field is missing: a chat completion needs at least one message.', param="messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects.", param="messages")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise RequestError(f"messages[{i}] must be an object with a role and a content.", param="messages")
        extra = [k for k, v in m.items() if k not in ("role", "content") and v is not None]
        if extra:  # the chat template shows only role and content: a name or a tool call would vanish without a word
            raise RequestError(f"messages[{i}] has {extra[0]!r}; this server's chat template takes only role and content.",
                               param="messages")
        if m["role"] not in ROLES:
            raise RequestError(f"messages[{i}].role = {m['role']!r} is not one of {', '.join(ROLES)}.", param="messages")
        turns.append({"role": "system" if m["role"] == "developer" else m["role"], "content": _message_text(i, m.get("content"))})
    if served.tokenizer is None:
        raise RequestError("this model has no tokenizer, so it cannot read messages.", param="messages")
    try:
        return served.tokenizer.encode_chat(turns)
    except TTJaxError as e:  # the template refused the conversation ("roles must alternate", ...)
        raise RequestError(str(e), param="messages") from None


def parse(body, served: ServedModel, *, chat: bool) -> Completion:
    """A /v1/completions (chat False) or /v1/chat/completions body -> a Completion, or a RequestError."""
    endpoint = "/v1/chat/completions" if chat else "/v1/completions"
    _check_fields(body, CHAT_FIELDS if chat else COMPLETION_FIELDS, endpoint)
    model = _model(body, served)
    if body.get("n") not in (None, 1):
        raise RequestError(f"n = {body['n']!r}: this server returns one choice per request (n = 1).", param="n")
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not stream:
        raise RequestError("stream_options is only allowed when stream is true.", param="stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise RequestError(f"stream_options = {options!r} may hold only include_usage.", param="stream_options")
    include_usage = _flag(options or {}, "include_usage")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)  # OpenAI's default and range
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
    top_k = _integer(body, "top_k", MAX_TOP_K, 1, MAX_TOP_K)
    seed = _integer(body, "seed", None, 0, 2**32 - 1)
    stop = _stop(body)
    ids = _chat_ids(body, served) if chat else _prompt_ids(body, served)
    what = "messages" if chat else "prompt"
    if not ids:
        raise RequestError(f"{what} is empty once tokenized: prefill needs at least one token.", param=what)
    if len(ids) >= served.max_seq_len:
        raise RequestError(f"the {what} is {len(ids)} tokens, and this server's context is {served.max_seq_len} (--max-seq-len), "
                   "which leaves no room for a new token.", param=what, code="context_length_exceeded")
    names = [n for n in ("max_tokens", "max_completion_tokens") if body.get(n) is not None]
    if len(names) == 2 and body["max_tokens"] != body["max_completion_tokens"]:
        raise RequestError("max_tokens and max_completion_tokens disagree; give one.", param="max_tokens")
    name = names[0] if names else "max_tokens"
    room = served.max_seq_len - len(ids)
    default = room if chat else min(COMPLETIONS_DEFAULT_MAX_TOKENS, room)
    max_tokens = _integer(body, name, default, 1, 2**31 - 1)
    if max_tokens > room:
        raise RequestError(f"the {what} ({len(ids)} tokens) plus {name} ({max_tokens}) is {len(ids) + max_tokens} tokens, more than "
                   f"this server's context of {served.max_seq_len} (--max-seq-len).", param=name, code="context_length_exceeded")
    if seed is None and temperature > 0:
        seed = secrets.randbits(32)  # unseeded sampling differs run to run, as OpenAI's does
    sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed or 0)
    request = Request(tuple(ids), max_tokens, sampling, stop, stop_at_eos=not _flag(body, "ignore_eos"))
    prefix = "chatcmpl-" if chat else "cmpl-"
    return Completion(chat, request, stream, include_usage, _flag(body, "return_token_ids"), model,
                      prefix + uuid.uuid4().hex, int(time.time()))


# -- answers ---------------------------------------------------------------------------------------------
def usage(c: Completion, out: RequestOutput) -> dict:
    n, m = len(c.request.prompt), len(out.tokens)
    return {"prompt_tokens": n, "completion_tokens": m, "total_tokens": n + m}


def _choice(c: Completion, text: str, finish_reason: str | None, token_ids: list[int] | None, *, delta: bool) -> dict:
    if c.chat:
        message = ({"content": text} if text else {}) if delta else {"role": "assistant", "content": text}
        body = {"index": 0, "delta" if delta else "message": message, "logprobs": None, "finish_reason": finish_reason}
    else:
        body = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    if c.return_token_ids and token_ids is not None:
        body["token_ids"] = token_ids
    return body


def _envelope(c: Completion, choices: list, **extra) -> dict:
    return {"id": c.id, "object": c.object, "created": c.created, "model": c.model, "choices": choices, **extra}


def response(c: Completion, out: RequestOutput) -> dict:
    """The whole answer of a request that did not stream."""
    return _envelope(c, [_choice(c, out.text, FINISH_REASONS[out.finish_reason], out.tokens, delta=False)], usage=usage(c, out))


class ChunkWriter:
    """The chunks of one streamed answer, as server-sent events ("data: {json}\\n\\n", then "data: [DONE]")."""

    def __init__(self, c: Completion, tokenizer):
        self.c = c
        self.detok = IncrementalDetokenizer(tokenizer)
        self.hold = max(map(len, c.request.stop), default=1) - 1
        self.sent = 0  # characters of text sent
        self.pending: list[int] = []  # token ids not yet sent (their text is held back or incomplete)

    @staticmethod
    def event(payload) -> str:
        import json

        return f"data: {payload if isinstance(payload, str) else json.dumps(payload, separators=(',', ':'))}\n\n"

    def first(self) -> str:
        """Chat streams open with the assistant's role, as OpenAI's do."""
        if not self.c.chat:
            return ""
        start = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        return self.event(_envelope(self.c, [start]))

    def tokens(self, ids: list[int]) -> str:
        """The chunk for tokens that just arrived ("" while their text is held back)."""
        self.pending += ids
        for t in ids:
            self.detok.push(t)
        text = self.detok.text
        upto = len(text) - self.hold
        # The token that completes a stop string ends the request; the text from the stop on is never sent.
        found = [i for i in (text.find(s, max(0, self.sent - len(s) + 1)) for s in self.c.request.stop) if i >= 0]
        upto = min([upto, *found])
        if upto <= self.sent:
            return ""
        text, self.sent = text[self.sent : upto], upto
        ids, self.pending = self.pending, []
        return self.event(_envelope(self.c, [_choice(self.c, text, None, ids, delta=True)]))

    def done(self, out: RequestOutput) -> str:
        """The last chunk (the rest of the exact text, and why it ended), usage if asked, and [DONE]."""
        rest = out.text[self.sent :]
        last = self.event(_envelope(self.c, [_choice(self.c, rest, FINISH_REASONS[out.finish_reason], self.pending, delta=True)]))
        if self.c.include_usage:
            last += self.event(_envelope(self.c, [], usage=usage(self.c, out)))
        return last + self.event("[DONE]")
