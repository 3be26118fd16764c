"""Precision configs (tt_transformers' model_config), compact block-float weights, and the KV cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mesh import MeshDevice
from model.serving.engine import generate
from model.checkpoint import dummy_weights
from model.config import named_config
from model.serving.generator import Generator
from model.params import convert_params, weight_nbytes
from model.precision import MathFidelitySetting, ModelOptimizations, OpGroup, PrecisionSetting, TensorGroup, parse_overrides
from model.sharding import mesh_args
from ttjax import BlockFloatTensor, TTJaxError, bfloat4_b, bfloat8_b, typecast
from ttjax.metrics import pcc

G, P, F = TensorGroup, PrecisionSetting, MathFidelitySetting


def test_configs_follow_tt_transformers():
    """The presets by model name (model_config.py @0039cbf, ModelOptimizations.accuracy / .performance, 93-201)."""
    perf, acc = ModelOptimizations.performance("Llama-3.1-8B"), ModelOptimizations.accuracy("Llama-3.1-8B-Instruct")
    assert perf.get_tensor_dtype(G.FF1_FF3) is P.BFP4 and perf.get_math_fidelity(OpGroup.LI_FF1_FF3) is F.LOFI
    for group in (G.FF2, G.WQKV, G.WO, G.KV_CACHE, G.LM_HEAD):
        assert perf.get_tensor_dtype(group) is P.BFP8 and acc.get_tensor_dtype(group) is P.BFP8
    assert acc.get_tensor_dtype(G.FF1_FF3) is P.BFP8 and acc.get_math_fidelity(OpGroup.LI_QKV_DECODE) is F.HIFI2
    for opt in (perf, acc):  # tt-metal keeps these in bfloat16
        assert opt.get_tensor_dtype(G.ACTIVATION) is P.BF16 and opt.get_tensor_dtype(G.EMBEDDING) is P.BF16
    assert all(s is P.FP32 for _, s in ModelOptimizations.float32().groups)
    assert ModelOptimizations.float32().compute_kernel_config(OpGroup.LI_FF2) is None  # the float reference: exact
    # 70B-class models keep bfloat4_b w1/w3 even for accuracy; models other than Llama 3 / Mistral / Phi keep bf16 attention
    assert ModelOptimizations.accuracy("Llama-3.1-70B-Instruct").get_tensor_dtype(G.FF1_FF3) is P.BFP4
    other = ModelOptimizations.accuracy("Qwen3-8B")
    assert other.get_tensor_dtype(G.WQKV) is P.BF16 and other.get_math_fidelity(OpGroup.SDPA_DECODE) is F.HIFI4
    off = perf.fidelity_off()
    assert off.name == "performance+fidelity=off" and off.compute_kernel_config(OpGroup.LI_FF1_FF3) is None
    assert off.groups == perf.groups and ModelOptimizations.named("performance+fidelity=off", "Llama-3.1-8B") == off


# tt_transformers' per-op tables, models/tt_transformers/tt/model_config.py @0039cbf (presets 93-201, defaults 251-281,
# kernel configs 653-695), mlp.py / attention.py / lm_head.py (output dtypes): (weight, output, setting) per op.
PERFORMANCE = {  # Llama-3.1-8B and Llama-3.1-70B in performance mode, and 70B in accuracy mode
    "LI_FF1_FF3": ("bfloat4_b", "bfloat16", "lofi"), "LI_FF2": ("bfloat8_b", "bfloat16", "hifi2fp16"),
    "LI_QKV_DECODE": ("bfloat8_b", "bfloat16", "hifi2"), "LI_QKV_PREFILL": ("bfloat8_b", "bfloat16", "hifi2"),
    "SDPA_DECODE": ("bfloat8_b", "-", "hifi2"), "SDPA_PREFILL": ("bfloat8_b", "-", "hifi4"),
    "LI_O_DECODE": ("bfloat8_b", "bfloat16", "hifi2"), "LI_O_PREFILL": ("bfloat8_b", "bfloat8_b", "hifi2"),
    "LM_HEAD": ("bfloat8_b", "bfloat8_b", "hifi2fp16"),
    "NORM": ("-", "-", "rmsnorm"), "MLP_MUL": ("-", "bfloat8_b", "binary"), "ROPE": ("-", "-", "rope"), "Q into SDPA_PREFILL": ("-", "bfloat8_b", "-"),
}
ACCURACY_8B = PERFORMANCE | {"LI_FF1_FF3": ("bfloat8_b", "bfloat16", "hifi2fp16")}
KERNELS = {  # setting -> (math_fidelity, fp32_dest_acc_en, packer_l1_acc, math_approx_mode)
    "lofi": ("LoFi", False, True, False), "hifi2": ("HiFi2", True, True, True),
    "hifi2fp16": ("HiFi2", False, True, False), "hifi4": ("HiFi4", True, True, False),
    "rmsnorm": ("HiFi2", True, True, False), "binary": ("HiFi4", False, False, False), "rope": ("HiFi4", False, False, True),
}


@pytest.mark.parametrize(
    "model_name, mode, expected",
    [("Llama-3.1-8B", "performance", PERFORMANCE), ("Llama-3.1-8B", "accuracy", ACCURACY_8B),
     ("Llama-3.1-70B", "performance", PERFORMANCE), ("Llama-3.1-70B", "accuracy", PERFORMANCE)],
)
def test_precision_table_matches_tt_transformers(model_name, mode, expected, capsys):
    import json

    from model.tools.cli import main

    assert main(["precision", "--model-name", model_name, "--mode", mode, "--json"]) == 0
    rows = {r["op"]: r for r in json.loads(capsys.readouterr().out)["ops"]}
    assert set(rows) == set(expected)
    for op, (weight, output, setting) in expected.items():
        row = rows[op]
        assert (row["weight"], row["output"], row["setting"]) == (weight, output, setting), op
        if setting in KERNELS:
            assert (row["math_fidelity"], row["fp32_dest_acc_en"], row["packer_l1_acc"], row["math_approx_mode"]) == KERNELS[setting], op


def test_precision_table_marks_what_is_emulated():
    from model.tools.precision_table import op_table

    sfpu_ops = {"SDPA_DECODE", "SDPA_PREFILL", "NORM", "MLP_MUL"}
    for name, with_sfpu, matmuls in (("accuracy", "fpu+sfpu", "fpu"), ("accuracy+sfpu=off", "fpu", "fpu"),
                                     ("accuracy+fidelity=off", "sfpu", "none"), ("accuracy+fidelity=off+sfpu=off", "none", "none")):
        rows = {r["op"]: r for r in op_table(ModelOptimizations.named(name, "Llama-3.1-8B"))}
        for op, row in rows.items():
            if "emulated" in row:
                assert row["emulated"] == (with_sfpu if op in sfpu_ops else matmuls), (name, op)
                assert (row["sfpu"] != "-") == (op in sfpu_ops)
    rows = {r["op"]: r for r in op_table(ModelOptimizations.accuracy("Llama-3.1-8B"), galaxy=True)}
    assert rows["NORM"]["setting"] == "rmsnorm_tg" and rows["NORM"]["fp32_dest_acc_en"] is False
    assert "approx at <=16 Q heads" in rows["SDPA_DECODE"]["sfpu"] and "rsqrt accurate" in rows["NORM"]["sfpu"]
    assert all("emulated" not in r for r in op_table(ModelOptimizations.float32()))


def test_per_layer_and_per_group_overrides():
    args = named_config("SmolLM2-135M", n_layers=3, max_seq_len=64, vocab_size=512)
    opt = ModelOptimizations.performance().override("WO", "bfloat16", layer=1).override("FF2", "bfloat4_b")
    params = convert_params(dummy_weights(args), args.replace(optimizations=opt))
    wo = [layer.attention.wo for layer in params.layers]
    assert isinstance(wo[0], BlockFloatTensor) and wo[0].fmt is bfloat8_b
    assert not isinstance(wo[1], BlockFloatTensor) and wo[1].dtype == jnp.bfloat16
    assert all(layer.feed_forward.w2.fmt is bfloat4_b for layer in params.layers)
    assert params.tok_embeddings.dtype == jnp.bfloat16 and isinstance(params.output[0], BlockFloatTensor)
    assert opt.describe()["layers.1.WO"] == "bfloat16"


def test_a_config_name_with_overrides_is_the_config_override_gives():
    opt = ModelOptimizations.performance("Llama-3.1-8B").override("FF1_FF3", "bfloat8_b").override("WO", "bfloat16", layer=2)
    assert ModelOptimizations.named(opt.name, "Llama-3.1-8B") == opt
    off = ModelOptimizations.named(opt.name + "+fidelity=off", "Llama-3.1-8B")
    assert off == opt.fidelity_off() and off.get_math_fidelity("LI_FF1_FF3") is None
    with pytest.raises(TTJaxError, match="tensor group 'FF4' is not one of"):
        ModelOptimizations.named("accuracy+FF4=bfloat16")
    with pytest.raises(TTJaxError, match="precision config 'fast' is not one of"):
        ModelOptimizations.named("fast+WO=bfloat16")


def test_override_parsing_errors():
    assert parse_overrides(["layers.3.wqkv=bfloat16", "FF1_FF3=bfloat8_b"]) == [(G.WQKV, P.BF16, 3), (G.FF1_FF3, P.BFP8, None)]
    with pytest.raises(TTJaxError, match="tensor group 'FF4' is not one of"):
        parse_overrides(["FF4=bfloat16"])
    with pytest.raises(TTJaxError, match="precision 'int3' is not one of"):
        parse_overrides(["WO=int3"])
    with pytest.raises(TTJaxError, match="is not GROUP=DTYPE"):
        parse_overrides(["WO"])


def test_resident_weight_memory_bfp8_below_0_6_of_bfloat16(ckpt):
    """Every weight group in bfloat8_b (embedding and LM head too) against all in bfloat16, as placed for the run."""
    sizes = {}
    for name in ("bfloat16", "bfloat8_b", "bfloat4_b"):
        gen = Generator(ckpt.params, ckpt.args.replace(optimizations=ModelOptimizations.named(name)))
        sizes[name] = weight_nbytes(gen.params)
    assert sizes["bfloat8_b"] / sizes["bfloat16"] < 0.6
    assert sizes["bfloat4_b"] / sizes["bfloat16"] < 0.35


@pytest.fixture(scope="module")
def accuracy_generator(ckpt):
    return Generator(ckpt.params, ckpt.args.replace(optimizations=ModelOptimizations.accuracy("Llama-3.2-1B")), ckpt.tokenizer)


def test_accuracy_config_tracks_float32(generator, accuracy_generator, ckpt):
    """Full-model logits of the accuracy config stay within tt-metal's ~0.99 PCC of float32."""
    ids = ckpt.tokenizer.encode("The capital of France is")
    ref, _ = generator.prefill_forward_text(ids, generator.allocate_kv_cache())
    ours, cache = accuracy_generator.prefill_forward_text(ids, accuracy_generator.allocate_kv_cache())
    assert pcc(ref, ours) >= 0.99
    assert int(jnp.argmax(ours)) == int(jnp.argmax(ref))
    k = np.asarray(cache[5][0][0, :, : len(ids)], np.float32)  # layer 5 keys written by prefill
    np.testing.assert_array_equal(typecast(k, bfloat8_b), k)  # the KV cache holds bfloat8_b values
    assert cache[5][0].dtype == jnp.bfloat16


def test_tt_presets_run_the_sfpu():
    """Under the TT presets the norms, the MLP's SiLU and both SDPAs run tt-llk's SFPU functions: turning the SFPU off
    (+sfpu=off) changes the logits of prefill and of every decode step, by a little. (The kernels' sequences are
    tested op by op in tests/test_kernel_sequences.py; here, that the performance preset's model runs them.)"""
    from tests import host_digest

    ck = host_digest.load()
    on, off = host_digest.logits(ck, "performance"), host_digest.logits(ck, "performance+sfpu=off")
    for a, b in zip(on, off):
        assert (a != b).any() and pcc(a, b) > 0.99


def test_sharded_block_float_equals_unsharded(ckpt):
    """Each device encodes its own tiles; on 2x4 (row- and column-split weights) the blocks line up with the
    unsharded ones, so the sharded model computes the same (PCC >= 0.9999, same greedy tokens)."""
    opt = ModelOptimizations.make("bfp8-f32", "bfloat8_b", ACTIVATION="float32", EMBEDDING="float32", KV_CACHE="float32")
    args = ckpt.args.replace(optimizations=opt)
    ids = ckpt.tokenizer.encode("The capital of France is")
    direct = Generator(ckpt.params, args, ckpt.tokenizer)
    ref = generate(direct, ids, 3, stop_at_eos=False)
    ref_logits, _ = direct.prefill_forward_text(ids, direct.allocate_kv_cache())
    for shape in [(2, 4)]:
        mesh = MeshDevice(shape)
        gen = Generator(ckpt.params, mesh_args(args, mesh), ckpt.tokenizer, mesh_device=mesh)
        assert isinstance(gen.params.layers[0].feed_forward.w1, BlockFloatTensor)
        logits, _ = gen.prefill_forward_text(ids, gen.allocate_kv_cache())
        assert pcc(ref_logits, logits) >= 0.9999
        assert generate(gen, ids, 3, stop_at_eos=False).tokens == ref.tokens


def test_abstract_params_know_block_floats():
    from model.sharding import abstract_params, shard_params

    mesh = MeshDevice((1, 2))
    args = mesh_args(named_config("SmolLM2-135M", n_layers=2, max_seq_len=64, vocab_size=512), mesh)
    args = args.replace(optimizations=ModelOptimizations.performance().override("WO", "bfloat16", layer=1))
    placed = shard_params(dummy_weights(named_config("SmolLM2-135M", n_layers=2, max_seq_len=64, vocab_size=512)), args, mesh)
    shapes = lambda t: jax.tree.map(lambda a: (a.shape, a.dtype), t)  # noqa: E731
    assert shapes(placed) == shapes(abstract_params(args, mesh))  # per-layer overrides included
    assert abstract_params(args, mesh).layers[1].attention.wo.dtype == jnp.bfloat16
