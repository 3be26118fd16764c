"""TextStreamer: writes generated text as tokens arrive, holding back a partial UTF-8 character."""

from __future__ import annotations

import sys


class TextStreamer:
    def __init__(self, tokenizer, out=None):
        self.tokenizer = tokenizer
        self.out = out or sys.stdout
        self.tokens: list[int] = []
        self.shown = ""

    def __call__(self, token: int):
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        # A byte-level token can end inside a multi-byte character; wait for the rest.
        if text.endswith("\ufffd") or not text.startswith(self.shown):
            return
        self.out.write(text[len(self.shown) :])
        self.out.flush()
        self.shown = text
