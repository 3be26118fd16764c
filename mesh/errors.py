"""The one exception family of the project, defined at the bottom layer (mesh) so every layer can raise it.

mesh/ and ttjax/ raise TTJaxError itself; model.errors holds the kinds the model and its serving raise
(ConfigError, CheckpointError, ...), all subclasses of it. Users catch ttjax.TTJaxError."""


class TTJaxError(ValueError):
    """Bad input: the message names the offending value and the limit it broke."""


class OpConfigError(TTJaxError):
    """An op config the chip would refuse: a program config whose blocks do not fit the shapes, a shard spec that
    disagrees with its memory config or the grid, a grid larger than the device, circular buffers past L1."""
