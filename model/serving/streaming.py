"""Text as tokens arrive: an incremental detokenizer, and a streamer that writes its output.

IncrementalDetokenizer decodes only the last few tokens for each new one (vLLM's scheme: the
text of tokens[prefix:] minus that of tokens[prefix:read]), so a long generation costs the same
per token as a short one; it holds back a byte-level token that ends inside a multi-byte
character until the rest arrives. The Engine checks stop strings on the text it adds.
"""

from __future__ import annotations

import sys


class IncrementalDetokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.text = ""  # the text so far (without a partial character held back)
        self._prefix = 0  # tokens before _prefix are settled; decoding starts there so spacing stays right
        self._read = 0  # tokens before _read are in self.text

    def push(self, token: int) -> str:
        """Add a token; returns the text it completes (may be "")."""
        self.tokens.append(token)
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        settled = decode(self.tokens[self._prefix : self._read])
        now = decode(self.tokens[self._prefix :])
        if len(now) <= len(settled) or now.endswith("\ufffd"):  # nothing new, or a character not finished yet
            return ""
        new = now[len(settled) :]
        self._prefix, self._read = self._read, len(self.tokens)
        self.text += new
        return new


class TextStreamer:
    """Writes generated text to out (stdout) as tokens arrive."""

    def __init__(self, tokenizer, out=None):
        self.detok = IncrementalDetokenizer(tokenizer)
        self.out = out or sys.stdout

    def __call__(self, token: int):
        new = self.detok.push(token)
        if new:
            self.out.write(new)
            self.out.flush()
