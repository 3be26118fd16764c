"""Loaders: the same weights written as Hugging Face safetensors, Meta consolidated shards and GGUF load
to the same params and the same outputs as the reference; bad checkpoints fail with one clear error."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from model.checkpoint import dummy_weights, load_checkpoint
from model.config import NAMED_CONFIGS, named_config
from model.errors import CheckpointError, ConfigError
from model.kv_cache import allocate_kv_cache
from model.rope import precompute_rot_mats
from model.transformer import forward
from tests.checkpoint_writers import (
    hf_state_from_meta,
    meta_params_for_tiny,
    meta_state_from_hf,
    tiny_hf_model,
    write_gguf,
    write_hf,
    write_meta,
)
from ttjax.metrics import pcc

TOKENS = [1, 17, 200, 3, 99, 45, 128, 7, 64, 250, 33, 12]


def all_logits(ck):
    """Logits for every position of TOKENS from a prefill."""
    args = ck.args
    ids = np.asarray([TOKENS], np.int32)
    logits, _ = forward(ck.params, ids, precompute_rot_mats(args), allocate_kv_cache(args), args=args, mode="prefill")
    return np.asarray(logits[0])


def reference_logits(model):
    with torch.no_grad():
        return model(torch.tensor([TOKENS])).logits[0].numpy()


def assert_same_params(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = tiny_hf_model()
    folder = write_hf(model, str(tmp_path_factory.mktemp("hf")))
    return model, folder


@pytest.mark.parametrize("tied", [False, True])
def test_hf_safetensors_matches_reference(tmp_path, tied):
    model = tiny_hf_model(tie_word_embeddings=tied)
    ck = load_checkpoint(write_hf(model, str(tmp_path)), progress=False)
    assert ck.format == "hf" and ck.args.tie_word_embeddings == tied
    ref, ours = reference_logits(model), all_logits(ck)
    assert pcc(ref, ours) >= 0.9999
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_hf_config_in_transformers4_style(tiny, tmp_path):
    """rope_theta + rope_scaling at the top level (transformers 4 configs) read the same."""
    model, folder = tiny
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = rope
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    old_style = load_checkpoint(str(tmp_path), progress=False).args
    assert old_style == load_checkpoint(folder, progress=False).args.replace(model_name=old_style.model_name)
    assert old_style.rope_scaling is not None


def test_meta_consolidated_shards_match_hf(tiny, tmp_path):
    model, folder = tiny
    hf = load_checkpoint(folder, progress=False)
    meta = load_checkpoint(write_meta(meta_state_from_hf(model), meta_params_for_tiny(model), str(tmp_path)), progress=False)
    assert meta.format == "meta"
    assert meta.args.replace(model_name="", max_seq_len=1, max_context_len=1) == hf.args.replace(
        model_name="", max_seq_len=1, max_context_len=1
    )
    assert_same_params(meta.params, hf.params)
    np.testing.assert_array_equal(all_logits(meta), all_logits(hf))


def test_meta_bfloat16_weights(tiny, tmp_path):
    """Meta ships bfloat16: those values arrive exactly, as the bfloat16 rounding of the originals."""
    model, folder = tiny
    state = meta_state_from_hf(model)
    ck = load_checkpoint(write_meta(state, meta_params_for_tiny(model), str(tmp_path), dtype=torch.bfloat16), progress=False)
    expected = torch.from_numpy(state["layers.1.feed_forward.w2.weight"]).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(np.asarray(ck.params.layers[1].feed_forward.w2), expected.T)
    assert pcc(reference_logits(model), all_logits(ck)) >= 0.999


def test_gguf_matches_hf(tiny, tmp_path):
    model, folder = tiny
    hf = load_checkpoint(folder, progress=False)
    path = write_gguf(meta_state_from_hf(model), hf.args, str(tmp_path / "tiny.gguf"))
    ck = load_checkpoint(path, progress=False)
    assert ck.format == "gguf" and ck.tokenizer is None
    assert ck.args.rope_freq_factors is not None  # llama3 scaling arrives as llama.cpp's rope_freqs
    assert_same_params(ck.params, hf.params)
    ours = all_logits(ck)
    assert pcc(reference_logits(model), ours) >= 0.9999
    np.testing.assert_allclose(ours, all_logits(hf), atol=1e-5)


def test_real_model_as_safetensors_loads_identically(ckpt, gguf_path, tmp_path):
    """The shipped GGUF's weights rewritten in HF's layout (rotate-half, HF names) load to the same params."""
    from model.checkpoint.gguf import read_gguf

    args, state, _ = read_gguf(gguf_path, progress=False)
    tensors = hf_state_from_meta(state, args.n_heads, args.n_kv_heads)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    config = dict(
        model_type="llama", hidden_size=args.dim, num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads, intermediate_size=args.hidden_dim, vocab_size=args.vocab_size,
        rms_norm_eps=args.norm_eps, rope_theta=args.rope_theta, max_position_embeddings=args.max_context_len,
        tie_word_embeddings=True,
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    hf = load_checkpoint(str(tmp_path), max_seq_len=256, progress=False)
    assert_same_params(hf.params, ckpt.params)


def test_named_configs_have_reference_shapes():
    """dummy_weights shapes for each named config equal transformers' LlamaForCausalLM of that config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    for name in NAMED_CONFIGS:
        args = named_config(name, n_layers=1, max_seq_len=128)
        config = LlamaConfig(
            hidden_size=args.dim, intermediate_size=args.hidden_dim, num_hidden_layers=1, num_attention_heads=args.n_heads,
            num_key_value_heads=args.n_kv_heads, head_dim=args.head_dim, vocab_size=args.vocab_size,
            tie_word_embeddings=args.tie_word_embeddings,
        )
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}
        params = jax.eval_shape(lambda: dummy_weights(args))
        layer = params.layers[0]
        assert layer.attention.wqkv.shape == (args.dim, shapes["model.layers.0.self_attn.q_proj.weight"][0]
                                              + 2 * shapes["model.layers.0.self_attn.k_proj.weight"][0]), name
        assert layer.attention.wo.shape == shapes["model.layers.0.self_attn.o_proj.weight"][::-1], name
        assert layer.feed_forward.w1.shape == shapes["model.layers.0.mlp.gate_proj.weight"][::-1], name
        assert layer.feed_forward.w2.shape == shapes["model.layers.0.mlp.down_proj.weight"][::-1], name
        assert params.tok_embeddings.shape == shapes["model.embed_tokens.weight"], name
        assert params.output.shape == shapes["lm_head.weight"][::-1], name  # its own weight, tied or not


def test_dummy_weights_run():
    args = named_config("Llama-3.2-1B", n_layers=2, max_seq_len=128, vocab_size=1024)
    params = dummy_weights(args, seed=1)
    logits, _ = forward(params, np.ones((1, 32), np.int32), precompute_rot_mats(args), allocate_kv_cache(args), args=args, mode="prefill")
    assert logits.shape == (1, 32, 1024) and bool(jnp.isfinite(logits).all())
    again = dummy_weights(args, seed=1)
    assert_same_params(params, again)


# Bad checkpoints: one clear error naming the problem.


def test_truncated_gguf(gguf_path, tmp_path):
    bad = tmp_path / "half.gguf"
    with open(gguf_path, "rb") as f:
        bad.write_bytes(f.read(os.path.getsize(gguf_path) // 2))
    with pytest.raises(CheckpointError, match=r"half\.gguf .* is truncated or corrupt"):
        load_checkpoint(str(bad), progress=False)


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04" + os.urandom(4000))
    with pytest.raises(CheckpointError, match="is not a GGUF file"):
        load_checkpoint(str(bad), progress=False)


def test_truncated_safetensors(tiny, tmp_path):
    _, folder = tiny
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    f = tmp_path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated or corrupt"):
        load_checkpoint(str(tmp_path), progress=False)


def test_corrupt_meta_shard(tiny, tmp_path):
    model, _ = tiny
    folder = write_meta(meta_state_from_hf(model), meta_params_for_tiny(model), str(tmp_path))
    shard = tmp_path / "consolidated.01.pth"
    shard.write_bytes(shard.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="consolidated.01.pth is truncated, corrupt"):
        load_checkpoint(folder, progress=False)


def test_nan_weights(tiny, tmp_path):
    model, _ = tiny
    state = meta_state_from_hf(model)
    state["layers.1.feed_forward.w3.weight"][3, 4] = np.nan
    folder = write_meta(state, meta_params_for_tiny(model), str(tmp_path))
    with pytest.raises(CheckpointError, match=r"'layers.1.feed_forward.w3.weight' .* NaN or inf"):
        load_checkpoint(folder, progress=False)


@pytest.mark.parametrize("field", ["num_hidden_layers", "hidden_size", "vocab_size"])
def test_hf_config_missing_field(tiny, tmp_path, field):
    _, folder = tiny
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    del config[field]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=rf"config.json is missing the field '{field}'"):
        load_checkpoint(str(tmp_path), progress=False)


def test_meta_params_missing_field(tiny, tmp_path):
    model, _ = tiny
    params = meta_params_for_tiny(model)
    del params["dim"]
    folder = write_meta(meta_state_from_hf(model), params, str(tmp_path))
    with pytest.raises(ConfigError, match="params.json is missing the field 'dim'"):
        load_checkpoint(folder, progress=False)


def test_gguf_metadata_missing_field(tiny, tmp_path):
    model, folder = tiny
    path = write_gguf(meta_state_from_hf(model), load_checkpoint(folder, progress=False).args, str(tmp_path / "t.gguf"),
                      drop_keys=("block_count",))
    with pytest.raises(ConfigError, match="missing the field 'llama.block_count'"):
        load_checkpoint(path, progress=False)


def test_weights_that_contradict_the_config(tiny, tmp_path):
    _, folder = tiny
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 256
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'layers.0.feed_forward.w1.weight' has shape \(192, 64\); the config implies \(256, 64\)"):
        load_checkpoint(str(tmp_path), progress=False)


def test_not_a_llama(tiny, tmp_path):
    _, folder = tiny
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="describes a 'gpt2' model"):
        load_checkpoint(str(tmp_path), progress=False)


def test_missing_paths(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nowhere"), progress=False)
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(str(tmp_path), progress=False)


def test_missing_tensor(tiny, tmp_path):
    from safetensors.numpy import load_file

    model, folder = tiny
    shutil.copytree(folder, tmp_path / "hf", dirs_exist_ok=True)
    weights = load_file(str(tmp_path / "hf" / "model.safetensors"))
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, str(tmp_path / "hf" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"checkpoint has no tensor 'layers\.1\.feed_forward\.w3\.weight'"):
        load_checkpoint(str(tmp_path / "hf"), progress=False)
    folder = write_meta(meta_state_from_hf(model), meta_params_for_tiny(model), str(tmp_path / "meta"))
    shard = torch.load(tmp_path / "meta" / "consolidated.01.pth")
    del shard["layers.0.attention.wo.weight"]
    torch.save(shard, tmp_path / "meta" / "consolidated.01.pth")
    with pytest.raises(CheckpointError, match=r"tensor 'layers\.0\.attention\.wo\.weight' is in consolidated\.00\.pth but missing from consolidated\.01\.pth"):
        load_checkpoint(folder, progress=False)


def test_invalid_json_config(tiny, tmp_path):
    model, folder = tiny
    shutil.copytree(folder, tmp_path / "hf", dirs_exist_ok=True)
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "llama",\n "hidden_size": 64,,\n}')
    with pytest.raises(ConfigError, match=r"config\.json is not valid JSON: Expecting property name enclosed in double quotes at line 2, column 20"):
        load_checkpoint(str(tmp_path / "hf"), progress=False)
    folder = write_meta(meta_state_from_hf(model), meta_params_for_tiny(model), str(tmp_path / "meta"))
    (tmp_path / "meta" / "params.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"params\.json holds a JSON list, not the object of fields a model config is"):
        load_checkpoint(folder, progress=False)


def _edit_config(folder, tmp_path, **changes):
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(changes)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_unsupported_rope_type(tiny, tmp_path):
    model, folder = tiny
    yarn = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=512)
    with pytest.raises(ConfigError, match=r"config\.json asks for rope scaling 'yarn'; supported: 'llama3', 'linear'"):
        load_checkpoint(_edit_config(folder, tmp_path / "hf", rope_parameters=yarn), progress=False)
    args = load_checkpoint(folder, progress=False).args
    path = write_gguf(meta_state_from_hf(model), args, str(tmp_path / "yarn.gguf"), metadata={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(ConfigError, match=r"yarn\.gguf asks for rope scaling 'yarn'; supported: 'none', 'linear'"):
        load_checkpoint(path, progress=False)


def test_heads_not_a_multiple_of_kv_heads(tiny, tmp_path):
    _, folder = tiny
    with pytest.raises(ConfigError, match="n_heads = 4 is not a multiple of n_kv_heads = 3"):
        load_checkpoint(_edit_config(folder, tmp_path, num_key_value_heads=3), progress=False)


def test_gguf_of_another_architecture(tiny, tmp_path):
    model, folder = tiny
    path = write_gguf(meta_state_from_hf(model), load_checkpoint(folder, progress=False).args, str(tmp_path / "q.gguf"), arch="qwen2")
    with pytest.raises(CheckpointError, match=r"q\.gguf holds a 'qwen2' model; ttjax runs 'llama' models"):
        load_checkpoint(path, progress=False)


def test_gguf_quantization_the_reader_cannot_dequantize(tiny, tmp_path):
    import gguf

    model, folder = tiny
    path = write_gguf(meta_state_from_hf(model), load_checkpoint(folder, progress=False).args, str(tmp_path / "q81.gguf"),
                      raw_types={"blk.0.ffn_up.weight": gguf.GGMLQuantizationType.Q8_1})
    with pytest.raises(CheckpointError, match=r"tensor 'blk\.0\.ffn_up\.weight' of .*q81\.gguf is stored as Q8_1, which the gguf package cannot dequantize"):
        load_checkpoint(path, progress=False)


def test_n_layers_beyond_the_checkpoint(tiny):
    _, folder = tiny
    with pytest.raises(ConfigError, match=r"n_layers = 5 is outside 1\.\.2, the layers .* holds"):
        load_checkpoint(folder, n_layers=5, progress=False)


# The GGUF reader: ttjax parses the header itself (the gguf package's reader takes seconds over a tokenizer's strings)
# and dequantizes Q4_0 / Q4_1 / Q8_0 / F16 / BF16 itself; both must agree with the gguf package exactly.


def test_gguf_header_and_tensors_as_the_gguf_package_reads_them(gguf_path):
    import gguf

    from model.checkpoint.gguf import metadata, open_gguf

    ref = gguf.GGUFReader(gguf_path)
    expected = {}
    for key, field in ref.fields.items():
        try:
            expected[key] = field.contents()
        except Exception:
            continue
    ours = open_gguf(gguf_path)
    meta = metadata(ours)
    assert meta.keys() == expected.keys()
    for key, value in expected.items():
        assert meta[key] == value and type(meta[key]) is type(value), key
    assert [(t.name, int(t.tensor_type), tuple(reversed(t.shape.tolist())), int(t.data_offset), int(t.n_bytes)) for t in ref.tensors] == [
        (t.name, t.tensor_type, t.shape, t.data_offset, t.n_bytes) for t in ours.tensors
    ]
    kinds = set()
    for a, b in zip(ref.tensors, ours.tensors):
        kinds.add(a.tensor_type.name)
        want = gguf.quants.dequantize(a.data, a.tensor_type).reshape(b.shape)
        got = ours.read(b)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=b.name)
    assert kinds == {"Q4_1", "Q8_0", "F32"}


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0", "F16", "BF16"])
def test_dequantization_equals_the_gguf_package(kind):
    import gguf

    from model.checkpoint.gguf import dequantize

    qtype = gguf.GGMLQuantizationType[kind]
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((70, 96)) * np.exp(rng.standard_normal((70, 1)))).astype(np.float32)
    stored = gguf.quants.quantize(x, qtype) if kind not in ("F16", "BF16") else (
        x.astype(np.float16) if kind == "F16" else (x.view(np.uint32) >> 16).astype(np.uint16))
    raw = np.ascontiguousarray(stored).view(np.uint8).reshape(-1)
    want = gguf.quants.dequantize(np.ascontiguousarray(stored).view(np.uint8).reshape(70, -1), qtype).reshape(70, 96)
    np.testing.assert_array_equal(dequantize(raw, qtype.value, (70, 96)).view(np.uint32), want.view(np.uint32))


def test_gguf_args_without_weights_hold_llama3_rope_freqs(tiny, tmp_path):
    """load_args reads the few bytes of rope_freqs, so a GGUF's config alone has llama3 scaling (the Generator built
    from a path takes its args from there)."""
    from model.checkpoint import load_args

    model, folder = tiny
    path = write_gguf(meta_state_from_hf(model), load_checkpoint(folder, progress=False).args, str(tmp_path / "t.gguf"))
    args = load_checkpoint(path, progress=False).args
    assert args.rope_freq_factors is not None
    assert load_args(path).rope_freq_factors == args.rope_freq_factors
