"""The kinds of bad input the model, its checkpoints and its serving refuse, each with one sentence naming the
value and the limit. All are ttjax.TTJaxError (a ValueError), the project's one exception family, which
model code imports from here with its kinds."""

from contextlib import contextmanager

from mesh.errors import OpConfigError, TTJaxError

__all__ = [
    "TTJaxError", "CheckpointError", "ConfigError", "TokenizerError", "SequenceLengthError", "KVCacheError", "TokenIdError", "InputFileError",
    "RequestError", "OpConfigError", "naming",
]


class CheckpointError(TTJaxError):
    """A checkpoint file or folder that cannot be read as a Llama model."""


class ConfigError(TTJaxError):
    """A config or an option that is wrong: a missing field, an impossible value, a flag the model cannot take."""


class TokenizerError(TTJaxError):
    """A tokenizer that is missing or of a kind ttjax does not know."""


class SequenceLengthError(TTJaxError):
    """A prompt (plus the tokens asked for) that does not fit in max_seq_len."""


class KVCacheError(TTJaxError):
    """A KV cache, block pool or page table that cannot serve a request."""


class TokenIdError(TTJaxError):
    """A token id outside the model's vocabulary."""


class InputFileError(TTJaxError):
    """A file the user passed (a prompt file, say) that is missing or not in the expected format."""


class RequestError(TTJaxError):
    """A request the server refuses, as OpenAI's API refuses it: the HTTP status (400 bad input, 401 wrong key, 404
    unknown model, 413 too big, 429 queue full, 503 shutting down), the parameter at fault, and OpenAI's error type
    and code."""

    TYPES = {401: "authentication_error", 404: "invalid_request_error", 429: "rate_limit_exceeded", 503: "service_unavailable"}

    def __init__(self, message: str, status: int = 400, *, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.param, self.code, self.retry_after = status, param, code, retry_after

    @property
    def body(self) -> dict:
        """OpenAI's error shape."""
        kind = self.TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


@contextmanager
def naming(flag: str):
    """A refusal from below, re-worded for the command line: it starts from the flag the user typed (as argparse's
    "argument --flag: ..." does) unless it names the flag already."""
    try:
        yield
    except TTJaxError as e:
        text = str(e)
        if flag in text:
            raise
        word = flag.lstrip("-")
        # "override 'x' is not ..." reads "--override 'x' is not ..."; anything else gets the flag in front
        raise type(e)(flag + text[len(word):] if text.startswith(f"{word} '") else f"{flag}: {text}") from None
