"""The one exception family of the project, defined at the bottom layer (mesh) so every layer can raise it."""


class TTJaxError(ValueError):
    """Bad input: the message names the offending value and the limit it broke."""
