"""The one exception family ttjax raises for bad input: a sentence naming the value and the limit."""


class TTJaxError(ValueError):
    """Bad input to ttjax: the message names the offending value and the limit it broke."""
