"""The kinds of bad input the model, its checkpoints and its serving refuse, each with one sentence naming the
value and the limit. All are ttjax.TTJaxError (a ValueError), the project's one exception family, which
model code imports from here with its kinds."""

from mesh.errors import TTJaxError

__all__ = [
    "TTJaxError", "CheckpointError", "ConfigError", "TokenizerError", "SequenceLengthError", "KVCacheError", "TokenIdError", "InputFileError",
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
