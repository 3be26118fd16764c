"""ttjax's errors: the project's one exception family (defined in mesh, the bottom layer)."""

from mesh.errors import TTJaxError

__all__ = ["TTJaxError"]
