"""Tensor-parallel Llama: sharded == unsharded on every mesh (real model, float32), the collectives
each decoder layer compiles to, and the per-device layouts."""

from collections import Counter

import jax
import numpy as np
import pytest

from mesh import MeshDevice
from model.serving.engine import generate
from model.checkpoint import dummy_weights
from model.tools.comm_report import analytic_layer_collectives, comm_report, compiled_program, hlo_collectives
from model.config import named_config
from model.serving.generator import Generator
from model.sharding import abstract_params, mesh_args, shard_params
from tests.conftest import PROMPTS
from ttjax import TTJaxError
from ttjax.metrics import pcc

STEPS = 32
CONFIGS = [
    ((1, 1), {}),
    ((1, 2), {}),
    ((1, 8), {}),
    ((2, 4), {}),
    ((8, 4), {}),
    ((1, 2), {"ccl": "all_reduce", "norm": "distributed"}),
    ((1, 8), {"ccl": "all_reduce"}),
    ((1, 8), {"norm": "distributed"}),
    ((2, 4), {"ccl": "all_reduce"}),
]


def _id(config):
    (rows, cols), extra = config
    return f"{rows}x{cols}" + "".join(f"-{v}" for v in extra.values())


@pytest.fixture(scope="module")
def unsharded(generator, ckpt):
    """Direct (no mesh) prefill logits and 32 greedy decode steps' tokens and logits."""
    out = {}
    for prompt in PROMPTS[:2]:
        ids = ckpt.tokenizer.encode(prompt)
        logits, cache = generator.prefill_forward_text(ids, generator.allocate_kv_cache())
        tokens, step_logits = [int(np.argmax(logits))], []
        tok, pos = np.array([tokens[0]], np.int32), np.array([len(ids)], np.int32)
        for _ in range(STEPS - 1):
            tok, lg, pos, cache = generator.decode_forward(tok, pos, cache)
            step_logits.append(np.asarray(lg)[0])
            tokens.append(int(np.asarray(tok)[0]))
        out[prompt] = (ids, np.asarray(logits), tokens, step_logits)
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_sharded_equals_unsharded(ckpt, unsharded, config):
    """Prefill logits PCC >= 0.9999, then 32 greedy decode steps: identical tokens, logits PCC >= 0.9999."""
    shape, extra = config
    mesh = MeshDevice(shape)
    gen = Generator(ckpt.params, mesh_args(ckpt.args, mesh, **extra), ckpt.tokenizer, mesh_device=mesh)
    for prompt, (ids, ref_logits, ref_tokens, ref_step_logits) in unsharded.items():
        logits, cache = gen.prefill_forward_text(ids, gen.allocate_kv_cache())
        assert pcc(ref_logits, logits) >= 0.9999, "prefill"
        tokens = [int(np.argmax(logits))]
        tok, pos = np.array([tokens[0]], np.int32), np.array([len(ids)], np.int32)
        for step in range(STEPS - 1):
            tok, lg, pos, cache = gen.decode_forward(tok, pos, cache)
            assert pcc(ref_step_logits[step], gen.read(lg)[0]) >= 0.9999, f"decode step {step}"
            tokens.append(int(gen.read(tok)[0]))
        assert tokens == ref_tokens


@pytest.mark.parametrize("shape", [(1, 8), (2, 4)])
def test_paged_chunked_prefill_on_a_mesh(ckpt, generator, shape):
    """Paged cache on every device (its KV heads' share of each block) and a 150-token prompt prefilled in
    64-token chunks: the unsharded, contiguous, whole-prefill tokens."""
    from model.config import PagedAttentionConfig
    from model.serving.page_table import BlockAllocator

    ids = ckpt.tokenizer.encode("It was the best of times, it was the worst of times, " * 12)[:150]
    ref = generate(generator, ids, 6, stop_at_eos=False).tokens
    mesh = MeshDevice(shape)
    args = ckpt.args.replace(paged_attention_config=PagedAttentionConfig(32, 16), max_prefill_chunk_size=64)
    gen = Generator(ckpt.params, mesh_args(args, mesh), ckpt.tokenizer, mesh_device=mesh)
    pages = gen.new_page_table(allocator=BlockAllocator(16, shuffle=True, seed=3))
    pages.reserve(0, 160)
    logits, cache = gen.prefill_forward_text(ids, gen.allocate_kv_cache(), page_table=pages)
    tokens = [int(np.argmax(logits))]
    tok, pos = np.array([tokens[0]], np.int32), np.array([len(ids)], np.int32)
    for _ in range(5):
        tok, _, pos, cache = gen.decode_forward(tok, pos, cache, pages)
        tokens.append(int(gen.read(tok)[0]))
    assert tokens == ref


EXPECTED_PER_LAYER = {
    # 1x8 (T3K): norm all-gathers the fractured stream, wo / w2 reduce-scatter
    ((1, 8), ()): {("all-gather", 8): 2, ("reduce-scatter", 8): 2},
    ((1, 8), (("ccl", "all_reduce"),)): {("all-reduce", 8): 2},
    ((1, 8), (("norm", "distributed"),)): {("all-gather", 8): 4, ("reduce-scatter", 8): 2},
    # 2x4: stats all-gather over the 4 columns per norm; wqkv and (merged by XLA) w1+w3 all-reduce
    # over the columns; wo / w2 reduce-scatter + all-gather over the 2 rows
    ((2, 4), ()): {("all-gather", 4): 2, ("all-reduce", 4): 2, ("reduce-scatter", 2): 2, ("all-gather", 2): 2},
    ((2, 4), (("ccl", "all_reduce"),)): {("all-gather", 4): 2, ("all-reduce", 4): 2, ("all-reduce", 2): 2},
}


@pytest.mark.parametrize("mode", ["prefill", "decode"])
@pytest.mark.parametrize("key", list(EXPECTED_PER_LAYER), ids=lambda k: f"{k[0][0]}x{k[0][1]}{''.join('-' + v for _, v in k[1])}")
def test_collectives_per_decoder_layer(key, mode):
    """The compiled program holds exactly these collectives (kind, devices per group) in every decoder layer."""
    shape, extra = key
    mesh = MeshDevice(shape)
    args = mesh_args(named_config("SmolLM2-135M", n_layers=3, max_seq_len=128), mesh, **dict(extra))
    found = hlo_collectives(compiled_program(args, mesh, mode, batch=4).as_text())
    for layer in range(3):
        assert Counter((c.kind, c.group) for c in found if c.layer == layer) == EXPECTED_PER_LAYER[key], f"layer {layer}"


@pytest.mark.parametrize("shape", [(1, 8), (2, 4), (8, 4)])
def test_comm_report_bytes_match_analytic(shape):
    rep = comm_report(named_config("SmolLM2-135M", n_layers=2, max_seq_len=128), MeshDevice(shape), "decode", batch=32)
    for row in rep["layers"]:
        assert row["bytes_per_token"] == pytest.approx(rep["analytic_per_layer"]["bytes_per_token"])
    assert rep["outside_layers"]["ops"]["all-gather"] >= 1  # the vocab slices of the logits


def test_comm_report_cli(capsys):
    import json

    from model.tools.cli import main

    assert main(["comm-report", "--mesh", "2x4", "--mode", "decode", "--n-layers", "2", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["mesh"] == "2x4" and len(rep["layers"]) == 2
    assert rep["layers"][0]["ops"] == {"all-gather": 4, "all-reduce": 2, "reduce-scatter": 2}


def test_analytic_figure_counts_each_collective_once():
    """The analytic list names every reduction; XLA merges w1+w3 on 2D meshes, so it has one more all-reduce."""
    mesh = MeshDevice((2, 4))
    args = mesh_args(named_config("SmolLM2-135M", n_layers=1, max_seq_len=128), mesh)
    assert Counter(c.kind for c in analytic_layer_collectives(args, "decode", 1)) == {
        "all-gather": 4, "all-reduce": 3, "reduce-scatter": 2
    }


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (1, 8), (2, 4), (8, 4)])
def test_head_padding_layout(shape):
    """SmolLM2's 9 heads / 3 KV heads on each mesh: KV heads padded, replicated when fewer than devices."""
    lay = mesh_args(named_config("SmolLM2-135M", n_layers=1), MeshDevice(shape)).layout
    expected = {  # (padded KV heads, KV heads per device, replicas, query heads per device)
        (1, 1): (3, 3, 1, 9), (1, 2): (4, 2, 1, 6), (1, 8): (4, 1, 2, 2), (2, 4): (4, 2, 1, 6), (8, 4): (4, 1, 2, 2),
    }
    assert (lay.kv_padded, lay.n_local_kv_heads, lay.kv_replicas, lay.n_local_heads) == expected[shape]
    assert lay.n_local_heads * lay.n_shards >= 9 and lay.vocab_local * lay.n_shards == 49152


def test_llama_70b_on_galaxy_layout():
    lay = mesh_args(named_config("Llama-3.1-70B", n_layers=1), MeshDevice((8, 4))).layout
    assert (lay.n_local_heads, lay.n_local_kv_heads, lay.kv_replicas) == (8, 1, 1)  # one KV head per row, as tt-metal
    assert (lay.dim_local, lay.hidden_local, lay.vocab_local) == (2048, 3584, 16032)


def test_lm_head_chunks_and_abstract_params_match_placement():
    """max_columns_per_device splits each device's vocab slice into chunks; abstract_params has the placed shapes."""
    mesh = MeshDevice((1, 2))
    args = mesh_args(named_config("Llama-3.2-1B", n_layers=1, max_seq_len=64, vocab_size=1000), mesh,
                     max_columns_per_device_lm_head=192)
    assert args.layout.lm_head_splits == [192, 192, 116]
    params = dummy_weights(args.replace(model_config=type(args.model_config)()), seed=3)
    placed = shard_params(params, args, mesh)
    abstract = abstract_params(args, mesh)
    assert jax.tree.map(lambda a: a.shape, placed) == jax.tree.map(lambda a: a.shape, abstract)
    assert [w.shape[-1] for w in placed.output] == [192, 192, 116]


def test_dim_that_does_not_divide_the_mesh():
    with pytest.raises(TTJaxError, match=r"dim 576 does not divide over the 5 devices of mesh axis 1 \(mesh 1x5\)"):
        mesh_args(named_config("SmolLM2-135M", n_layers=1), MeshDevice((1, 5)))


def test_readme_comm_report_figures(capsys):
    """The README's comm-report figures for SmolLM2 on 1x8 (batch 32) are what the compiled program moves."""
    import json
    import re
    from pathlib import Path

    from model.tools.cli import main

    readme = Path(__file__).parent.parent.joinpath("README.md").read_text()
    sentence = (
        r"`ttjax comm-report --mesh 1x8 --mode decode` on SmolLM2 \(batch 32\): per layer (\d+) all-gather \+ (\d+) reduce-scatter, "
        r"([\d,]+) bytes per token per device; the logits all-gather outside the layers moves ([\d,]+)"
    )
    found = re.search(sentence.replace(" ", r"\s+"), readme)
    assert found, "the README's comm-report sentence changed; update this test with it"
    gathers, scatters, per_layer, outside = (int(g.replace(",", "")) for g in found.groups())
    assert main(["comm-report", "--mesh", "1x8", "--mode", "decode", "--n-layers", "2", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    for row in rep["layers"]:
        assert row["ops"] == {"all-gather": gathers, "reduce-scatter": scatters}
        assert row["bytes_per_token"] == per_layer
    assert rep["outside_layers"]["bytes_per_token"] == outside
