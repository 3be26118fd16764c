"""JAX's persistent compilation cache for the `ttjax` command (tt-metal's program cache, on disk).

Compiled programs are kept in the user's cache folder, so a second run with the same model, mesh, precision
and shapes loads them instead of compiling: $TTJAX_CACHE_DIR if set, else $XDG_CACHE_HOME/ttjax/xla, else
~/.cache/ttjax/xla; `--compile-cache DIR` overrides it, `--no-compile-cache` (or TTJAX_COMPILE_CACHE=0) turns
it off. JAX keys each entry by the program's HLO, the compile options and the jax / jaxlib versions, so an
upgrade or a changed flag compiles afresh instead of loading a stale program. Beside it, in `executables`,
model.serving.executables keeps the compiled programs themselves, so a second run does not even trace them, and
in `references` model.tools.reference keeps `ttjax accuracy`'s transformers references.
"""

from __future__ import annotations

import os
from pathlib import Path

from model.errors import ConfigError


def default_dir() -> Path:
    return _default()[0]


def _default() -> tuple[Path, str]:
    """The folder and where it came from, for a message that names what the user set."""
    if os.environ.get("TTJAX_CACHE_DIR"):
        return Path(os.environ["TTJAX_CACHE_DIR"]), "$TTJAX_CACHE_DIR"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "ttjax" / "xla", "$XDG_CACHE_HOME"
    return Path(os.path.expanduser("~")) / ".cache" / "ttjax" / "xla", "$HOME"


def _usable(path: Path, source: str) -> None:
    """The folder exists (made if need be) and can be written, else one sentence naming it and where it came from."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"the compile cache {path} (from {source}) is a file, not a folder; pass --compile-cache DIR "
                          "or --no-compile-cache.") from None
    except OSError as e:
        raise ConfigError(f"the compile cache folder {path} (from {source}) cannot be made: {e.strerror.lower()}; pass "
                          "--compile-cache DIR or --no-compile-cache.") from None
    if not path.is_dir():
        raise ConfigError(f"the compile cache {path} (from {source}) is not a folder; pass --compile-cache DIR or "
                          "--no-compile-cache.")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"the compile cache folder {path} (from {source}) is not writable; pass --compile-cache DIR "
                          "or --no-compile-cache.")


def enable(folder: str | os.PathLike | None = None) -> Path | None:
    """Turn the cache on in this process (None when TTJAX_COMPILE_CACHE=0); returns the folder used."""
    from model.serving import executables
    from model.tools import reference

    if folder is None and os.environ.get("TTJAX_COMPILE_CACHE", "1") == "0":
        executables.enable(None)
        reference.enable(None)
        return None
    import jax

    path, source = (Path(folder), "--compile-cache") if folder is not None else _default()
    _usable(path, source)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # every program: startup is many small ones
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    executables.enable(path / "executables")  # whole executables, which skip tracing too (model.serving.executables)
    reference.enable(path / "references")  # transformers' references for `ttjax accuracy` (model.tools.reference)
    return path
