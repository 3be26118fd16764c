"""A cache of converted params on disk, beside JAX's persistent compilation cache: a second run with the same
checkpoint maps its params from .npy files instead of reading, dequantizing and converting the checkpoint.

An entry is keyed by the checkpoint's files (absolute path, size and modification time of each) and the
conversion (the dtype, the layers kept, or for params in a precision every weight's shape, storage dtype and
layout), so a changed file or setting misses and builds a new entry; an entry for a path whose files changed is
removed when its successor is stored. Each weight is one .npy (block floats: their codes and exponents), loaded
memory-mapped, or read into the process's own memory on huge pages when it is large (_resident): on the CPU
jax.device_put takes those pages without a copy, so a warm entry costs little. Entries are written to a temporary
folder and renamed into place, never changed after.

Where: `cache=` of the loaders. None (the default) follows the process: on beside the compilation cache when a
command turned that on (the `ttjax` command does unless --no-compile-cache; --compile-cache DIR puts this one in
DIR/../params), else off; TTJAX_PARAMS_CACHE_DIR overrides the folder and TTJAX_PARAMS_CACHE=0 turns it off.
True: on in the default folder ($XDG_CACHE_HOME/ttjax/params or ~/.cache/ttjax/params); False: off; a path: there.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import mmap
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from model.config import ModelArgs
from model.errors import CheckpointError
from model.params import TransformerParams, param_specs

VERSION = 1  # bump when what an entry holds, or how a checkpoint converts, changes


def cache_dir(setting=None) -> Path | None:
    """The folder of the params cache for a loader's cache= setting, or None when it is off."""
    if setting is False:
        return None
    if isinstance(setting, (str, os.PathLike)):
        return Path(setting)
    if os.environ.get("TTJAX_PARAMS_CACHE", "1") == "0":
        return None
    if os.environ.get("TTJAX_PARAMS_CACHE_DIR"):
        return Path(os.environ["TTJAX_PARAMS_CACHE_DIR"])
    if setting is True:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ttjax" / "params"
    compiled = jax.config.jax_compilation_cache_dir  # set by model.tools.compile_cache.enable
    return Path(compiled).parent / "params" if compiled else None


def fingerprint(path: str) -> list:
    """[absolute path, size, mtime_ns] of the checkpoint file, or of every file directly in its folder."""
    path = os.path.abspath(path)
    files = [path] if os.path.isfile(path) else sorted(os.path.join(path, n) for n in os.listdir(path))
    out = []
    for f in files:
        if os.path.isfile(f):
            st = os.stat(f)
            out.append([f, st.st_size, st.st_mtime_ns])
    return out


def conversion(args: ModelArgs) -> list:
    """What params in args' precision are made of: every weight's shape, storage dtype and layout, the LM head's
    chunks."""
    specs = jax.tree.leaves(param_specs(args))
    return [[list(s.shape), str(getattr(s.dtype(args), "name", s.dtype(args))), s.layout] for s in specs] + [
        list(args.layout.lm_head_splits)
    ]


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps([VERSION, key], sort_keys=True, default=str).encode()).hexdigest()[:32]


def _pieces(value) -> list:
    return value if isinstance(value, list) else [value]


def _save(folder: Path, name: str, a) -> dict:
    from ttjax.blockfloat import BlockFloatTensor

    if isinstance(a, BlockFloatTensor):
        np.save(folder / f"{name}.codes.npy", np.asarray(a.codes))
        np.save(folder / f"{name}.exps.npy", np.asarray(a.exps).view(np.uint8))
        return {"kind": "block", "fmt": a.fmt.name, "shape": list(a.shape)}
    a = np.asarray(a)
    np.save(folder / f"{name}.npy", a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "V" else a)  # ml_dtypes as raw bits
    return {"kind": "array", "dtype": a.dtype.name}


MADV_HUGEPAGE = 14
MADV_POPULATE_READ = 22  # Linux 5.14+ (Python's mmap module does not name it before 3.13)
HUGE_PAGE = 2 << 20


def _mapped(path: Path, a: np.ndarray | None = None) -> np.ndarray:
    """The .npy file memory-mapped (a: its mapping, when the caller has it), its page tables filled in one call: left
    to page faults, the first step that reads the weights takes one for every 4 KB (35 ms of a 0.36 s first prefill
    for SmolLM2's 538 MB, measured). Where madvise or the flag is missing (not Linux, a kernel before 5.14) the call
    fails and faults it is."""
    a = np.load(path, mmap_mode="r") if a is None else a
    madvise = _madvise()
    if a.nbytes and madvise is not None:
        start = a.ctypes.data & ~(mmap.PAGESIZE - 1)
        madvise(ctypes.c_void_p(start), ctypes.c_size_t(a.ctypes.data + a.nbytes - start), MADV_POPULATE_READ)
    return a


def _resident(path: Path) -> np.ndarray:
    """The .npy file's array: a weight of a few huge pages or more read into the process's own memory, on 2 MB pages
    where the kernel gives them (advised before the first touch), smaller ones mapped (_mapped). Every decode step
    reads every weight once, and over a mapped file's 4 KB pages the page-table walks cost a fifth of a step at
    Llama-3.1-8B's shapes (bfloat8_b 1.6 tokens/s mapped, 2.0 read: 8.5 GB of weights have 17 MB of page tables,
    past the caches); reading costs about a second a 4 GB from the page cache."""
    a = np.load(path, mmap_mode="r")
    madvise = _madvise()
    if a.nbytes < 4 * HUGE_PAGE or madvise is None:
        return _mapped(path, a)
    whole = np.empty(a.nbytes + HUGE_PAGE, np.uint8)  # untouched: only the pages read into count
    start = -whole.ctypes.data % HUGE_PAGE
    buf = whole[start : start + a.nbytes]
    madvise(ctypes.c_void_p(buf.ctypes.data), ctypes.c_size_t(a.nbytes), MADV_HUGEPAGE)
    view, done = memoryview(buf), 0
    with open(path, "rb") as f:
        f.seek(a.offset)
        while done < a.nbytes:  # a read returns at most 2 GB
            got = f.readinto(view[done:])
            if not got:
                raise CheckpointError(f"{path} ends {a.nbytes - done} bytes short of its array ({a.nbytes} bytes).")
            done += got
    buf.flags.writeable = False  # device_put may then take it as it is
    return buf.view(a.dtype).reshape(a.shape)


@functools.cache
def _madvise():
    """The C library's madvise, or None where there is none to call."""
    try:
        return getattr(ctypes.CDLL(None), "madvise", None)
    except (OSError, TypeError):  # no C library by that name (Windows takes no None)
        return None


def _load(folder: Path, name: str, entry: dict):
    from ttjax.blockfloat import E8M0, FORMATS, BlockFloatTensor

    put = jax.device_put  # of an aligned host array: on the CPU it takes its memory, no copy
    if entry["kind"] == "block":
        codes = _resident(folder / f"{name}.codes.npy")
        exps = _resident(folder / f"{name}.exps.npy").view(E8M0)
        return BlockFloatTensor(put(codes), put(exps), tuple(entry["shape"]), FORMATS[entry["fmt"]])
    return put(_resident(folder / f"{name}.npy").view(jnp.dtype(entry["dtype"])))


def load(root: Path | None, key: dict, args: ModelArgs) -> TransformerParams | None:
    """The params stored under key, or None (no entry, or one that does not read: it is removed)."""
    if root is None:
        return None
    folder = root / _digest(key)
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return None
    try:
        entries = json.loads(manifest.read_text())["weights"]
        specs, tree = jax.tree.flatten(param_specs(args))
        if len(entries) != len(specs):
            raise CheckpointError(f"{len(entries)} weights stored, {len(specs)} expected")
        values = []
        for i, (spec, pieces) in enumerate(zip(specs, entries)):
            loaded = [_load(folder, f"{i}.{j}", e) for j, e in enumerate(pieces["pieces"])]
            values.append(loaded if pieces["list"] else loaded[0])
        return jax.tree.unflatten(tree, values)
    except Exception:  # a damaged entry is a miss (and goes), never an error
        shutil.rmtree(folder, ignore_errors=True)
        return None


def store(root: Path | None, key: dict, params: TransformerParams, args: ModelArgs, source: str):
    """Keep params under key (best effort: a full disk or a race with another process stores nothing)."""
    if root is None:
        return
    folder = root / _digest(key)
    if (folder / "manifest.json").exists():
        return
    tmp = root / f".{folder.name}.{os.getpid()}.tmp"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        weights = []
        for i, value in enumerate(jax.tree.structure(param_specs(args)).flatten_up_to(params)):
            pieces = [_save(tmp, f"{i}.{j}", p) for j, p in enumerate(_pieces(value))]
            weights.append({"list": isinstance(value, list), "pieces": pieces})
        (tmp / "manifest.json").write_text(json.dumps({"source": os.path.abspath(source), "key": key, "weights": weights}))
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    _remove_stale(root, folder.name, os.path.abspath(source), key)


def _remove_stale(root: Path, keep: str, source: str, key: dict):
    """Entries for the same checkpoint path whose files have since changed."""
    for manifest in root.glob("*/manifest.json"):
        if manifest.parent.name == keep:
            continue
        try:
            old = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if old.get("source") == source and old.get("key", {}).get("files") != key.get("files"):
            shutil.rmtree(manifest.parent, ignore_errors=True)
