"""Compiled programs kept on disk as executables: a second run loads them without tracing or lowering.

JAX's persistent compilation cache (model.tools.compile_cache) skips XLA's compile, but each run still traces
and lowers every program to find its key, about 1.5 s for SmolLM2's prefill and decode. This store keeps the
compiled executable itself (jax.experimental.serialize_executable), keyed by everything the program is made
from without tracing it:
  - the source of ttjax, model and mesh and the native kernels' library (a changed line compiles afresh);
  - the jax and jaxlib versions, the backend's devices and XLA_FLAGS;
  - the program's name and shapes (the Generator's key), the ModelArgs (model, precision, mesh layout) and the
    example arguments' shapes, dtypes and shardings.
It is on when the command's compile cache is (model.tools.compile_cache.enable), in an `executables` folder
beside JAX's cache; a file that fails to load is compiled afresh and replaced.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import pickle
import threading
from pathlib import Path

import jax

import ttjax.native as native

_folder: Path | None = None
_compiling = threading.Lock()


def enable(folder: str | os.PathLike | None) -> None:
    """Keep executables in folder (None: off)."""
    global _folder
    _folder = None if folder is None else Path(folder)
    if _folder is not None:
        _folder.mkdir(parents=True, exist_ok=True)


@functools.cache
def source_digest() -> str:
    """A digest of the code a program is made from: every .py of ttjax, model and mesh, and the native library."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    files = sorted(p for pkg in ("ttjax", "model", "mesh") for p in (root / pkg).rglob("*.py"))
    files += sorted((root / "ttjax").glob("*.so"))
    for path in files:
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _signature(x) -> str:
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
        sharding = getattr(x, "sharding", None)
        return f"{x.shape}:{x.dtype}:{sharding}"
    return repr(x)


def program_key(name, args, example) -> str:
    """The file name of a program: a digest of what it is made from (the module docstring)."""
    leaves, tree = jax.tree.flatten(example)
    devices = [(d.platform, d.id, d.device_kind) for d in jax.devices()]
    # What changes the traced program besides the source: whether the native kernels are in it (TTJAX_NATIVE=0 or
    # a failed build traces the pure-JAX path) and JAX's numerics switches.
    switches = (native.available(), native.isa_levels(), jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)
    parts = [source_digest(), jax.__version__, importlib.metadata.version("jaxlib"), repr(devices), repr(switches), os.environ.get("XLA_FLAGS", ""), repr(name), repr(args), str(tree), *map(_signature, leaves)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load_or_compile(name, args, example, compile_fn):
    """compile_fn()'s compiled program, from the store when it holds one for these inputs."""
    if _folder is None:
        return compile_fn()
    from jax.experimental import serialize_executable

    path = _folder / f"{program_key(name, args, example)}.xla"  # (the key loads and registers the native kernels,
    # which a stored program calls without being traced)
    if path.exists():
        try:
            with open(path, "rb") as f:
                blob, in_tree, out_tree, device_ids = pickle.load(f)
            by_id = {d.id: d for d in jax.devices()}
            return serialize_executable.deserialize_and_load(blob, in_tree, out_tree,
                                                             execution_devices=[by_id[i] for i in device_ids])
        except Exception:  # a file from an interrupted write or another build: compile afresh and replace it
            pass
    with _compiling:  # JAX's cache switch is process-wide: one fresh compile at a time (loads run side by side)
        compiled = _compile_afresh(compile_fn)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump((*serialize_executable.serialize(compiled), [d.id for d in execution_devices(compiled)]), f)
    os.replace(tmp, path)  # atomic: a concurrent run reads a whole file or none
    return compiled


def execution_devices(compiled) -> list:
    """The devices a program runs on, in its device assignment's order (a mesh's, or its one device): loading
    it elsewhere, or on every device of a process with many, would not run."""
    sharding = jax.tree.leaves(compiled.input_shardings)[0]
    mesh = getattr(sharding, "mesh", None)
    return list(mesh.devices.flat) if mesh is not None else sorted(sharding.device_set, key=lambda d: d.id)


def _compile_afresh(compile_fn):
    """compile_fn() with JAX's persistent cache off: an executable JAX loaded from that cache serializes without
    its kernels ("Function wrapped_iota not found" when the copy runs; jaxlib 0.10.2). JAX decides once per
    process whether its cache is used, so the flag is changed between resets of that decision."""
    from jax.experimental.compilation_cache import compilation_cache

    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        return compile_fn()
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
        compilation_cache.reset_cache()
