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
from model.precision import ModelOptimizations
from model.serving.generator import Generator
from model.sharding import abstract_params, mesh_args, shard_params
from tests.conftest import PROMPTS
from ttjax import TTJaxError
from ttjax.metrics import pcc

STEPS = 12  # greedy steps per prompt: a placement error shows in the first; more only cost time on 32 devices
# Each mesh shape and each placement choice at least once (a config is a compile of both steps on its mesh).
CONFIGS = [
    ((1, 1), {}),
    ((1, 8), {}),
    ((2, 4), {}),
    ((8, 4), {}),
    ((1, 2), {"ccl": "all_reduce", "norm": "distributed"}),
    ((1, 8), {"ccl": "all_reduce"}),
    ((1, 8), {"all_gather_matmul": True}),  # T3K's wo: all-gather + column-parallel (SmolLM2's dim is off by tt's rule)
    ((2, 4), {"ccl": "all_reduce"}),
    ((2, 4), {"ccl": "reduce_scatter"}),
]


def _id(config):
    (rows, cols), extra = config
    return f"{rows}x{cols}" + "".join(f"-{v}" for v in extra.values())


@pytest.fixture(scope="module")
def unsharded(generator, ckpt):
    """Direct (no mesh) prefill logits and STEPS greedy decode steps' tokens and logits."""
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
    """Prefill logits PCC >= 0.9999, then STEPS greedy decode steps: identical tokens, logits PCC >= 0.9999."""
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


def _greedy_batch(gen, ids_per_user, steps, page_table=None):
    """Prefill each user into its slot, then `steps` greedy decode steps of the whole batch: each step's tokens."""
    cache = gen.allocate_kv_cache()
    first = []
    for user, ids in enumerate(ids_per_user):
        if page_table is not None:
            page_table.reserve(user, len(ids) + steps + 1)
        logits, cache = gen.prefill_forward_text(ids, cache, user_id=user, page_table=page_table)
        first.append(int(np.argmax(logits)))
    tok, pos = np.array(first, np.int32), np.array([len(i) for i in ids_per_user], np.int32)
    out = [first]
    for _ in range(steps):
        tok, _, pos, cache = gen.decode_forward(tok, pos, cache, page_table)
        out.append([int(t) for t in gen.read(tok)])
    return out, cache


@pytest.fixture(scope="module")
def batch_of_four(ckpt):
    ids = [ckpt.tokenizer.encode(p) for p in PROMPTS]
    gen = Generator(ckpt.params, ckpt.args.replace(max_batch_size=4), ckpt.tokenizer)
    return ids, _greedy_batch(gen, ids, 8)[0]


@pytest.mark.parametrize("shape, paged", [((2, 4), False), ((8, 4), False), ((2, 4), True)], ids=["2x4", "8x4", "2x4-paged"])
def test_grouped_decode_users_match_unsharded(ckpt, batch_of_four, shape, paged):
    """tt's TG attention: a decode batch of 4 on a mesh of 4 columns is 4 groups of one user, each column computing
    attention for its own. Every user gets the unsharded batch's greedy tokens, and each device's contiguous cache
    holds only its column's user (the other slots are never written)."""
    from model.config import PagedAttentionConfig
    from model.serving.page_table import BlockAllocator

    ids, ref = batch_of_four
    mesh = MeshDevice(shape)
    args = ckpt.args.replace(max_batch_size=4)
    if paged:
        args = args.replace(paged_attention_config=PagedAttentionConfig(32, 16))
    args = mesh_args(args, mesh, group_users=True)
    assert args.layout.user_groups(4) == 4 and args.layout.users_per_group(4) == 1
    gen = Generator(ckpt.params, args, ckpt.tokenizer, mesh_device=mesh)
    pages = gen.new_page_table(allocator=BlockAllocator(16, shuffle=True, seed=2)) if paged else None
    tokens, cache = _greedy_batch(gen, ids, 8, pages)
    assert tokens == ref
    if not paged:
        k = np.asarray(cache[0][0])  # [rows, cols, slots, kv heads, positions, head_dim]
        for col in range(4):
            written = np.abs(k[:, col]).sum(axis=(0, 2, 3, 4)) > 0
            assert written.tolist() == [slot == col for slot in range(4)], f"column {col}"


def test_grouped_users_need_a_batch_that_divides(ckpt):
    """group_users=True refuses a batch that does not split into one group per mesh column, naming both."""
    mesh = MeshDevice((2, 4))
    with pytest.raises(TTJaxError, match=r"a decode batch of 3 users does not divide into the 4 user groups of the 2x4 mesh"):
        mesh_args(ckpt.args.replace(max_batch_size=3), mesh, group_users=True)
    args = mesh_args(ckpt.args.replace(max_batch_size=4), mesh, group_users=True)
    with pytest.raises(TTJaxError, match=r"a decode batch of 6 users does not divide into the 4 user groups .* multiple of 4"):
        compiled_program(args, mesh, "decode", batch=6)
    assert mesh_args(ckpt.args.replace(max_batch_size=3), mesh).layout.user_groups(3) == 1  # None: every user everywhere


def _both(counts):
    return {"prefill": counts, "decode": counts}


EXPECTED_PER_LAYER = {
    # 1x8 (T3K): norm all-gathers the fractured stream, wo / w2 reduce-scatter
    ((1, 8), ()): _both({("all-gather", 8): 2, ("reduce-scatter", 8): 2}),
    ((1, 8), (("ccl", "all_reduce"),)): _both({("all-reduce", 8): 2}),
    ((1, 8), (("norm", "distributed"),)): _both({("all-gather", 8): 4, ("reduce-scatter", 8): 2}),
    # tt's all_gather_matmul: the heads all-gathered before a column-parallel wo, no reduce-scatter after it
    ((1, 8), (("all_gather_matmul", True),)): _both({("all-gather", 8): 3, ("reduce-scatter", 8): 1}),
    # 2x4 as tt's TG (batch 4: one user per mesh column in decode): stats all-gather over the 4 columns per norm;
    # every all-reduce an all-gather + local sum (wqkv, w1, w3 over the columns, wo and w2 over the 2 rows); decode
    # all-gathers the columns' users before wo; prefill reduce-scatters w1 and w3 and all-gathers their product
    ((2, 4), ()): {
        "prefill": {("all-gather", 4): 4, ("reduce-scatter", 4): 2, ("all-gather", 2): 2},
        "decode": {("all-gather", 4): 6, ("all-gather", 2): 2},
    },
    ((2, 4), (("group_users", False),)): {
        "prefill": {("all-gather", 4): 4, ("reduce-scatter", 4): 2, ("all-gather", 2): 2},
        "decode": {("all-gather", 4): 5, ("all-gather", 2): 2},
    },
    # every reduction one all-reduce (XLA merges w1's and w3's)
    ((2, 4), (("ccl", "all_reduce"),)): {
        "prefill": {("all-gather", 4): 2, ("all-reduce", 4): 2, ("all-reduce", 2): 2},
        "decode": {("all-gather", 4): 3, ("all-reduce", 4): 2, ("all-reduce", 2): 2},
    },
    # every reduction reduce-scatter + all-gather
    ((2, 4), (("ccl", "reduce_scatter"),)): {
        "prefill": {("all-gather", 4): 5, ("reduce-scatter", 4): 3, ("reduce-scatter", 2): 2, ("all-gather", 2): 2},
        "decode": {("all-gather", 4): 6, ("reduce-scatter", 4): 3, ("reduce-scatter", 2): 2, ("all-gather", 2): 2},
    },
}


@pytest.mark.parametrize("mode", ["prefill", "decode"])
@pytest.mark.parametrize("key", list(EXPECTED_PER_LAYER), ids=lambda k: f"{k[0][0]}x{k[0][1]}{''.join(f'-{v}' for _, v in k[1])}")
def test_collectives_per_decoder_layer(key, mode):
    """The compiled program holds exactly these collectives (kind, devices per group) in every decoder layer."""
    shape, extra = key
    mesh = MeshDevice(shape)
    args = mesh_args(named_config("SmolLM2-135M", n_layers=3, max_seq_len=128), mesh, **dict(extra))
    found = hlo_collectives(compiled_program(args, mesh, mode, batch=4).as_text())
    for layer in range(3):
        assert Counter((c.kind, c.group) for c in found if c.layer == layer) == EXPECTED_PER_LAYER[key][mode], f"layer {layer}"


def _case_id(v):
    if isinstance(v, tuple):
        return "x".join(map(str, v))
    return "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else str(v)


@pytest.mark.parametrize("mode", ["decode", "prefill"])
@pytest.mark.parametrize(
    "shape, precision, extra",
    [((1, 8), None, {}), ((1, 8), None, {"all_gather_matmul": True}), ((2, 4), None, {}), ((8, 4), None, {}),
     ((2, 4), "accuracy", {}), ((8, 4), "accuracy", {}), ((2, 4), "accuracy", {"ccl": "reduce_scatter"}),
     ((8, 4), "bfloat16", {})],
    ids=_case_id,
)
def test_comm_report_bytes_match_analytic(shape, precision, extra, mode):
    """Measured (the compiled program) == predicted (the placement rules), per layer; on a 2D mesh with a device
    precision config the wqkv / wo / w2 reductions count at the CCL format's size."""
    args = named_config("SmolLM2-135M", n_layers=2, max_seq_len=128)
    if precision:
        args = args.replace(optimizations=ModelOptimizations.named(precision, "SmolLM2-135M"))
    rep = comm_report(args, MeshDevice(shape), mode, batch=32, **extra)
    for row in rep["layers"]:
        assert row["ops"] == rep["layers"][0]["ops"]
        assert row["bytes_per_token"] == pytest.approx(rep["analytic_per_layer"]["bytes_per_token"])
    assert rep["outside_layers"]["ops"]["all-gather"] >= 1  # the vocab slices of the logits
    assert rep["ccl_format"] == {None: None, "accuracy": "bfloat8_b", "bfloat16": "bfloat16"}[precision if shape[0] > 1 else None]


def test_tg_ccl_payloads_count_at_bfloat8_b():
    """8x4, tt's accuracy preset (ccl_dtype bfloat8_b): the wqkv, wo and w2 reductions (all-gather + local sum) carry
    1088 bytes per 1024 values; the rest (norm statistics, the users' gather, w1 / w3) the activation dtype's."""
    mesh = MeshDevice((8, 4))
    args = named_config("SmolLM2-135M", n_layers=1, max_seq_len=128, max_batch_size=32)
    args = mesh_args(args.replace(optimizations=ModelOptimizations.named("accuracy", "SmolLM2-135M")), mesh)
    found = [c for c in hlo_collectives(compiled_program(args, mesh, "decode", batch=32).as_text()) if c.layer == 0]
    lay, per_value = args.layout, 1088 / 1024
    qkv = (lay.n_local_heads + 2 * lay.n_local_kv_heads) * args.head_dim  # gathered from the 4 columns, 32 users
    residual = args.dim // 4  # wo / w2 outputs gathered from the 8 rows
    assert sorted(c.payload_bytes for c in found if c.fmt == "bfloat8_b") == sorted(
        [4 * 32 * qkv * per_value, 8 * 32 * residual * per_value, 8 * 32 * residual * per_value])
    assert {c.fmt for c in found} == {"bfloat8_b", "bfloat16", "float32"}  # float32: the norm statistics
    assert comm_report(args, mesh, "decode", batch=32)["ccl_format"] == "bfloat8_b"


def test_comm_report_cli(capsys):
    import json

    from model.tools.cli import main

    assert main(["comm-report", "--mesh", "2x4", "--mode", "decode", "--n-layers", "2", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["mesh"] == "2x4" and len(rep["layers"]) == 2 and rep["user_groups"] == 4
    assert rep["layers"][0]["ops"] == {"all-gather": 8}  # tt's TG all-reduces: all-gather + local sum


def test_analytic_figure_counts_each_collective_once():
    """The analytic list names every reduction; XLA merges the w1 and w3 all-reduces on 2D meshes (ccl="all_reduce"),
    so it has one more all-reduce than the program."""
    mesh = MeshDevice((2, 4))
    args = mesh_args(named_config("SmolLM2-135M", n_layers=1, max_seq_len=128), mesh, ccl="all_reduce")
    assert Counter(c.kind for c in analytic_layer_collectives(args, "decode", 1)) == {"all-gather": 2, "all-reduce": 5}
    found = hlo_collectives(compiled_program(args, mesh, "decode", batch=1).as_text())
    assert Counter(c.kind for c in found if c.layer == 0) == {"all-gather": 2, "all-reduce": 4}


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
