"""Errors for bad checkpoints, configs, tokenizers and requests: one sentence naming the value and the limit."""

from ttjax.errors import TTJaxError


class CheckpointError(TTJaxError):
    """A checkpoint file or folder that cannot be read as a Llama model."""


class ConfigError(TTJaxError):
    """A model config that lacks a field or holds an impossible value."""


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
