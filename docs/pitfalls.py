"""The pitfalls table of docs/llms.md (section 4.10): each pitfall is triggered here, and its row carries the error
ttjax actually raises, word for word, beside its cause and what to do. Nothing in the table is typed by hand but the
cause and the remedy; tests/test_docs_figures.py runs every trigger, so a changed message changes the table.

    python docs/pitfalls.py        # prints the markdown table
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from ttjax.wormhole import WORMHOLE_B0  # noqa: E402


@dataclass(frozen=True)
class Pitfall:
    name: str  # as the report's outline names it
    trigger: Callable[[], object]  # must raise
    cause: str
    remedy: str


def _l1_at_long_sequence():
    from model.op_configs import matmul_config
    from ttjax.memory_config import DRAM_MEMORY_CONFIG, TensorSpec
    from ttjax.op_validation import validate_matmul

    validate_matmul("wqkv", TensorSpec((1, 1, 8192, 4096), "bfloat16"), TensorSpec((4096, 6144), "bfloat8_b"),
                    matmul_config(8192, 4096, 6144, (8, 8), fuse_batch=True), DRAM_MEMORY_CONFIG)


def _dram_sharded(per_core_M=1, shard=None):
    from model.op_configs import create_dram_sharded_mem_config, dram_matmul_config, width_sharded
    from ttjax.memory_config import L1_WIDTH_SHARDED_MEMORY_CONFIG, BufferType, CoreGrid, MemoryConfig, ShardSpec, TensorMemoryLayout, TensorSpec
    from ttjax.op_validation import validate_matmul

    grid = CoreGrid(8, 8)
    a_mc = width_sharded(32, 4096, grid) if shard is None else MemoryConfig(
        TensorMemoryLayout.WIDTH_SHARDED, BufferType.L1, ShardSpec(CoreGrid(8, 4).core_range_set(), shard))
    cfg = dram_matmul_config(32, 4096, 14336, 64)
    cfg = type(cfg)(in0_block_w=cfg.in0_block_w, per_core_M=per_core_M, per_core_N=cfg.per_core_N)
    validate_matmul("w1", TensorSpec((1, 1, 32, 4096), "bfloat16", a_mc), TensorSpec((4096, 14336), "bfloat4_b",
                    create_dram_sharded_mem_config(4096, 14336)), cfg, L1_WIDTH_SHARDED_MEMORY_CONFIG)


def _grid_past_device():
    from model.op_configs import matmul_config
    from ttjax.memory_config import DRAM_MEMORY_CONFIG, CoreCoord, TensorSpec
    from ttjax.op_validation import validate_matmul
    import dataclasses

    cfg = dataclasses.replace(matmul_config(1024, 4096, 14336, (8, 8)), compute_with_storage_grid_size=CoreCoord(8, 10))
    validate_matmul("w1", TensorSpec((1, 1, 1024, 4096), "bfloat16"), TensorSpec((4096, 14336), "bfloat4_b"), cfg, DRAM_MEMORY_CONFIG)


def _collective_outside_a_mesh_program():
    import jax.numpy as jnp

    import ttjax

    ttjax.all_gather(jnp.ones((1, 1, 32, 64)), dim=3, cluster_axis=1)


def _negative_dim():
    import numpy as np

    import ttjax
    from mesh import MeshDevice, ShardTensorToMesh

    mesh = MeshDevice((1, 1))  # a mesh of one: the check is the same on any
    x = ttjax.from_numpy(np.zeros((1, 1, 32, 64), np.float32), mesh_mapper=ShardTensorToMesh(mesh, dim=3))
    ttjax.all_gather(x, dim=-1)


def _host_read_in_a_trace():
    import jax
    import jax.numpy as jnp

    jax.jit(lambda x: float(x.sum()))(jnp.ones(4))  # a host round trip inside the captured program


def _prompt_past_the_cache():
    from model.serving.checks import check_fits

    check_fits(300, 16, 256)


def _token_outside_the_vocabulary():
    from model.serving.checks import check_tokens

    check_tokens([1, 2, 49152], 49152)


def _block_pool_exhausted():
    from model.serving.page_table import BlockAllocator

    BlockAllocator(8).allocate(9)


def _past_the_trained_context():
    from model.config import named_config
    from model.serving.build import check_context

    check_context(named_config("Llama-3.2-1B"), 200_000)


PITFALLS = [
    Pitfall("Running out of L1", _l1_at_long_sequence,
            f"a 2D matmul config sized for 8,192 rows at once: its per-core output block and input slices outgrow a core's "
            f"{WORMHOLE_B0.l1_size:,} B of L1",
            "cut the sequence into pieces (tt_transformers runs wqkv on 2,048-row pieces) or lower per_core_M, in0_block_w and the subblocks"),
    Pitfall("Shard spec and program config mismatch", lambda: _dram_sharded(per_core_M=2),
            "per_core_M says 2 tiles of rows, the activation's shard holds 1",
            "derive the program config from the shard spec: per_core_M = shard height / 32 (tt's dram_matmul_config does)"),
    Pitfall("Shard spec mismatch", lambda: _dram_sharded(shard=(32, 64)),
            "a width-sharded activation whose 32 shards of 64 columns cover 2,048 of its 4,096",
            "shard width = width / cores, on a grid that divides the tensor (tt pads nothing)"),
    Pitfall("A grid larger than the device", _grid_past_device,
            "compute_with_storage_grid_size 8x10 on a Wormhole, whose compute grid is 8x8", "take the grid from the device, at most 8x8"),
    Pitfall("A collective outside a mesh program", _collective_outside_a_mesh_program,
            "ttjax.all_gather called on a plain array, with no mesh axes around it",
            "run it inside MeshDevice.shard_map, or pass a mesh tensor placed with ttjax.as_tensor"),
    Pitfall("-1 as a collective's dim", _negative_dim,
            "ttnn.all_gather(x, dim=-1): ttnn's collectives take the dimension counted from 0, and on TT the call fails to "
            "match the op's signature", "pass the dimension itself (3 for the last of a 4D tensor)"),
    Pitfall("Hangs: host communication in a trace", _host_read_in_a_trace,
            "a value read on the host inside a captured program (on TT a read in a trace hangs the device; JAX refuses to trace it)",
            "keep the step on device: feed its output tokens straight back (ttjax's decode does), read them after the step"),
    Pitfall("A prompt past the cache", _prompt_past_the_cache, "300 prompt tokens + 16 new ones in a 256-position cache",
            "raise --max-seq-len, or shorten the prompt"),
    Pitfall("A token id outside the vocabulary", _token_outside_the_vocabulary,
            "an id equal to vocab_size: the embedding lookup would read a clamped row without a word", "encode with the model's own tokenizer"),
    Pitfall("The KV block pool runs out", _block_pool_exhausted, "a request needing 9 blocks of a pool of 8",
            "more blocks (--kv-blocks), fewer or shorter requests at once; the Engine waits for blocks rather than fail"),
    Pitfall("Past the trained context", _past_the_trained_context, "a 200,000-position cache for a model trained on 131,072",
            "stay within the context, or pass --allow-past-context to run there on purpose"),
]


def rows() -> list[dict]:
    """Each pitfall triggered: its error's kind and message."""
    out = []
    for p in PITFALLS:
        try:
            p.trigger()
        except Exception as e:  # the point: whatever it raises goes in the table as raised
            message = str(e).strip().splitlines()[0]
            out.append({"pitfall": p.name, "error": type(e).__name__, "message": message, "cause": p.cause, "remedy": p.remedy})
        else:  # a trigger that no longer fails: the test flags it
            out.append({"pitfall": p.name, "error": None, "message": "(nothing raised)", "cause": p.cause, "remedy": p.remedy})
    return out


def markdown(table: list[dict]) -> str:
    cell = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| pitfall | what ttjax raises | cause | what to do |", "|---|---|---|---|"]
    lines += [f"| {r['pitfall']} | `{r['error']}`: {cell(r['message'])} | {cell(r['cause'])} | {cell(r['remedy'])} |" for r in table]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(rows()))
