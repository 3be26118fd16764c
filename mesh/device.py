"""MeshDevice: a rows x cols grid of JAX devices, as ttnn's MeshDevice.

A tensor on the mesh is a jax.Array of shape (rows, cols, *local) whose block [r, c] lives on
device (r, c): every device holds its own local tensor, the way each TT device holds its
shard. Mesh axis 0 ("rows") and 1 ("cols") are ttnn's cluster axes 0 and 1.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import mesh.processes as processes
from mesh.errors import TTJaxError

AXIS_NAMES = ("rows", "cols")


# The most host devices a mesh may ask XLA for: four Galaxies' worth and then some (each host device is a thread
# pool's share of this CPU, so past this a mesh is only slower), and far below what breaks XLA's client (2^31).
MAX_MESH_DEVICES = 1024


def parse_mesh_shape(text: str) -> tuple[int, int]:
    """'1x8' -> (1, 8)."""
    try:
        rows, cols = (int(p) for p in text.lower().split("x"))
    except ValueError as e:
        raise TTJaxError(f"mesh shape {text!r} is not of the form ROWSxCOLS, like 1x8 or 8x4.") from e
    if rows < 1 or cols < 1:
        raise TTJaxError(f"mesh shape {text!r} needs at least one row and one column.")
    if rows * cols > MAX_MESH_DEVICES:
        raise TTJaxError(f"mesh shape {text!r} has {rows * cols} devices; ttjax emulates at most {MAX_MESH_DEVICES} "
                         "(a Galaxy is 8x4, 32 devices).")
    return rows, cols


def ensure_host_devices(n: int):
    """Ask for at least n CPU host devices. Works until jax's backend starts (the first device query or
    computation); after that MeshDevice reports any shortfall. Never lowers a count set in XLA_FLAGS."""
    if processes.group() is not None:  # a process of a multi-process mesh holds its share (mesh.processes)
        return
    flag = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
    if max(int(flag.group(1)) if flag else 1, jax.config.jax_num_cpu_devices) >= n:
        return
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        pass


class MeshDevice:
    def __init__(self, mesh_shape=(1, 1), devices=None):
        rows, cols = mesh_shape
        if rows < 1 or cols < 1:
            raise TTJaxError(f"mesh shape {mesh_shape} needs at least one row and one column.")
        available = list(devices) if devices is not None else jax.devices()
        if devices is None and jax.process_count() > 1 and rows * cols != len(available):
            # Each process runs every program on its own devices: a mesh that left one out would leave that
            # process nothing to run (and one that took part of another's would leave shares unequal).
            raise TTJaxError(
                f"a {rows}x{cols} mesh uses {rows * cols} devices, but the {jax.process_count()} processes hold "
                f"{len(available)} ({jax.local_device_count()} each); a multi-process mesh spans every device of every process."
            )
        if len(available) < rows * cols:
            raise TTJaxError(
                f"a {rows}x{cols} mesh needs {rows * cols} devices but only {len(available)} are available; on CPU set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={rows * cols} before jax starts."
            )
        self.shape = (rows, cols)
        self.devices = np.array(available[: rows * cols], dtype=object).reshape(rows, cols)
        self.jax_mesh = Mesh(self.devices, AXIS_NAMES)

    def get_num_devices(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def sharding(self) -> NamedSharding:
        """Placement of a mesh tensor: leading (rows, cols) axes over the mesh."""
        return NamedSharding(self.jax_mesh, PartitionSpec(*AXIS_NAMES))

    def local_positions(self) -> list[tuple[int, int]]:
        """The (row, col) of every device this process holds (all of them in a process alone)."""
        me = jax.process_index()
        return [(r, c) for r, c in np.ndindex(*self.shape) if self.devices[r, c].process_index == me]

    def local_blocks(self, blocks, fn=np.asarray) -> list[list]:
        """fn of blocks[r][c] for this process's devices, None for the others': a process converts and encodes only
        the blocks it holds (on a multi-process mesh no process materialises the whole tensor)."""
        rows, cols = self.shape
        mine = set(self.local_positions())
        return [[fn(blocks[r][c]) if (r, c) in mine else None for c in range(cols)] for r in range(rows)]

    def place(self, blocks) -> jax.Array:
        """A mesh tensor from per-device numpy blocks blocks[r][c] (all the same shape); only this process's blocks
        are read (the others may be None)."""
        rows, cols = self.shape
        positions = self.local_positions()
        local = [np.asarray(blocks[r][c]) for r, c in positions]
        arrays = [jax.device_put(b[None, None], self.devices[p]) for p, b in zip(positions, local)]
        return jax.make_array_from_single_device_arrays((rows, cols, *local[0].shape), self.sharding, arrays)

    def blocks(self, tensor: jax.Array) -> list[list[np.ndarray]]:
        """The per-device blocks of a mesh tensor, as numpy, indexed [row][col] (on a multi-process mesh every
        process gathers them all)."""
        rows, cols = self.shape
        if tensor.shape[:2] != (rows, cols):
            raise TTJaxError(f"tensor of shape {tensor.shape} is not on this {rows}x{cols} mesh (its leading dims are not ({rows}, {cols})).")
        if tensor.is_fully_addressable:
            host = np.asarray(tensor)
        else:
            from jax.experimental import multihost_utils

            host = np.asarray(multihost_utils.process_allgather(tensor, tiled=True))
        return [[host[r, c] for c in range(cols)] for r in range(rows)]

    def shard_map(self, fn):
        """Run fn per device: every argument and result leaf is a mesh tensor; fn sees (and returns) the local tensors."""

        def local(*args):
            out = fn(*jax.tree.map(lambda a: a[0, 0], args))
            return jax.tree.map(lambda a: a[None, None], out)

        spec = PartitionSpec(*AXIS_NAMES)
        return jax.shard_map(local, mesh=self.jax_mesh, in_specs=spec, out_specs=spec, check_vma=False)

    def __repr__(self):
        return f"MeshDevice(mesh_shape={self.shape})"
