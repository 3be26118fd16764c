"""Loading straight into compact storage: params built one weight at a time in their precision and placement
(model.checkpoint.placed) are exactly what the whole-model path makes (load in float32, then convert or shard),
and loading holds the compact model plus about one weight of float32, never the float32 model."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from model.checkpoint import dummy_weights, load_checkpoint, load_params, open_checkpoint
from model.config import named_config
from model.params import convert_params, row_chunks
from model.precision import ModelOptimizations
from model.serving.build import build_generator, generator_args
from model.serving.generator import Generator
from model.sharding import mesh_args, shard_params
from ttjax.blockfloat import BlockFloatTensor


def assert_identical(old, new):
    """The same tree, leaf for leaf the same dtype, shape and bits (block floats: codes and exponents)."""
    lo, to = jax.tree.flatten(old)
    ln, tn = jax.tree.flatten(new)
    assert to == tn
    for a, b in zip(lo, ln):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        np.testing.assert_array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))


def with_precision(args, name):
    return args.replace(optimizations=ModelOptimizations.named(name, args.model_name))


@pytest.mark.parametrize("precision", ["performance", "bfloat8_b", "float32"])
def test_smollm2_loads_layer_by_layer_as_the_whole_model_path_converts(precision):
    """The shipped SmolLM2 GGUF read one weight at a time straight into a precision equals the old path: the whole
    model loaded in float32 and converted by the Generator (performance mixes bfloat4_b, bfloat8_b and bfloat16)."""
    ck = load_checkpoint(n_layers=3, progress=False, cache=False)
    args = generator_args(ck.args, precision=precision, max_seq_len=256)
    placed = load_params(open_checkpoint(n_layers=3), args, cache=False)
    assert_identical(Generator(ck.params, args).params, placed)
    assert Generator(placed, args).params.layers[0].feed_forward.w1 is placed.layers[0].feed_forward.w1  # taken as is


def test_build_generator_from_a_path_loads_compact():
    gen = build_generator(None, precision="performance", n_layers=2, max_seq_len=128)
    w1, head = gen.params.layers[1].feed_forward.w1, gen.params.output
    assert isinstance(w1, BlockFloatTensor) and w1.fmt.name == "bfloat4_b" and isinstance(w1.codes, jax.Array)
    assert isinstance(head, list) and [c.shape[1] for c in head] == gen.args.layout.lm_head_splits
    assert gen.tokenizer is not None


@pytest.mark.parametrize("precision", ["bfloat8_b", "bfloat16"])
def test_dummy_params_equal_dummy_weights_converted(precision, monkeypatch):
    """Dummy weights drawn chunk by chunk in their precision equal dummy_weights (the whole tree) converted, with
    weights of several row chunks (a small chunk size; the last chunk not a whole tile) and an LM head of several
    column chunks."""
    import model.params as params_module

    args = with_precision(named_config("Llama-3.2-1B", n_layers=1, dim=256, n_heads=4, n_kv_heads=2, head_dim=64,
                                       hidden_dim=512, vocab_size=1000, max_seq_len=64), precision)
    args = args.replace(model_config=args.model_config.__class__(max_columns_per_device_lm_head=384))
    assert args.layout.lm_head_splits == [384, 384, 232]
    monkeypatch.setattr(params_module, "CHUNK_BYTES", 64 * 256 * 4)  # 64-row chunks of the embedding, 32 of [256, 512]
    assert row_chunks((1000, 256))[-2:] == [(896, 960), (960, 1000)]
    assert_identical(convert_params(dummy_weights(args, seed=5), args), load_params(None, args, seed=5))


def test_dummy_params_on_a_mesh_equal_shard_params():
    from mesh import MeshDevice

    mesh = MeshDevice((1, 2))
    args = mesh_args(with_precision(named_config("SmolLM2-135M", n_layers=1, max_seq_len=64, vocab_size=512), "performance"), mesh)
    placed = load_params(None, args, mesh, seed=2)
    assert_identical(shard_params(dummy_weights(args, seed=2), args, mesh), placed)
    assert shard_params(placed, args, mesh).layers[0].attention.wqkv is placed.layers[0].attention.wqkv  # taken as is


def test_params_cache_maps_the_same_params(tmp_path):
    """A second load finds the converted params in the cache (memory-mapped), the same bits; a changed setting misses."""
    ck = load_checkpoint(n_layers=2, progress=False, cache=tmp_path)
    again = load_checkpoint(n_layers=2, progress=False, cache=tmp_path)
    assert_identical(ck.params, again.params)
    (entry,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    args = generator_args(ck.args, precision="bfloat8_b", max_seq_len=128)
    first = load_params(open_checkpoint(n_layers=2), args, cache=tmp_path)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2
    assert_identical(first, load_params(open_checkpoint(n_layers=2), args, cache=tmp_path))
    assert entry.exists()


MEASURE = r"""
import json, sys
import jax
from model.checkpoint import load_params
from model.config import named_config
from model.params import param_specs, weight_nbytes
from model.precision import ModelOptimizations

args = named_config("Llama-3.1-8B", dim=1024, n_heads=8, n_kv_heads=2, head_dim=128, hidden_dim=3584, vocab_size=16384,
                    n_layers=16, max_seq_len=128)
args = args.replace(optimizations=ModelOptimizations.named(sys.argv[1], args.model_name))
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
# VmHWM, this process's own high-water mark (ru_maxrss would also count the parent's RSS when it forked us).
peak = lambda: next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
jax.block_until_ready(jax.jit(lambda x: x + 1)(jax.numpy.zeros(3)))  # the runtime up before the baseline
before = rss()
params = jax.block_until_ready(load_params(None, args))
specs = jax.tree.leaves(param_specs(args))
print(json.dumps({
    "before": before, "peak": peak(), "compact": weight_nbytes(params),
    "float32": 4 * sum(int(__import__("numpy").prod(s.shape)) for s in specs),
    "largest_float32": 4 * max(int(__import__("numpy").prod(s.shape)) for s in specs),
}))
"""


def test_loading_holds_the_compact_model_plus_one_weight_of_float32():
    """Llama-3.1-8B's proportions (dim : hidden 1 : 3.5, 4 query heads a KV head, head_dim 128) at a quarter of its
    width, 16 layers, every weight bfloat8_b: the load's peak resident memory grows by less than the compact model
    (255 MB) + its largest weight in float32 (64 MB) + 384 MB (the compiled encoders, the runtime's pools, a chunk in
    flight), where the float32 model alone is 960 MB (measured: ~560 MB here; the whole-model path, dummy_weights then
    convert_params, 1.8 GB). Measured in a fresh process by its high-water mark (VmHWM)."""
    done = subprocess.run([sys.executable, "-c", MEASURE, "bfloat8_b"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads(done.stdout.strip().splitlines()[-1])
    growth = m["peak"] - m["before"]
    assert m["float32"] > 3.5 * m["compact"]
    assert growth < m["compact"] + m["largest_float32"] + 384 * 2**20, m
    assert growth < m["float32"], m  # the float32 model never existed
