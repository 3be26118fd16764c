"""JAX's persistent compilation cache for the `ttjax` command (tt-metal's program cache, on disk).

Compiled programs are kept in the user's cache folder, so a second run with the same model, mesh, precision
and shapes loads them instead of compiling: $TTJAX_CACHE_DIR if set, else $XDG_CACHE_HOME/ttjax/xla, else
~/.cache/ttjax/xla; `--compile-cache DIR` overrides it, `--no-compile-cache` (or TTJAX_COMPILE_CACHE=0) turns
it off. JAX keys each entry by the program's HLO, the compile options and the jax / jaxlib versions, so an
upgrade or a changed flag compiles afresh instead of loading a stale program. Beside it, in `executables`,
model.serving.executables keeps the compiled programs themselves, so a second run does not even trace them.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_dir() -> Path:
    if os.environ.get("TTJAX_CACHE_DIR"):
        return Path(os.environ["TTJAX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ttjax" / "xla"


def enable(folder: str | os.PathLike | None = None) -> Path | None:
    """Turn the cache on in this process (None when TTJAX_COMPILE_CACHE=0); returns the folder used."""
    from model.serving import executables

    if folder is None and os.environ.get("TTJAX_COMPILE_CACHE", "1") == "0":
        executables.enable(None)
        return None
    import jax

    path = Path(folder) if folder is not None else default_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # every program: startup is many small ones
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    executables.enable(path / "executables")  # whole executables, which skip tracing too (model.serving.executables)
    return path
