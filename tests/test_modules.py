"""Each module against the same module of transformers' LlamaForCausalLM, float32: PCC >= 0.9999
and, elementwise, within a per-module tolerance (PCC alone is blind to a scale or an offset).

Inputs are the reference's own activations, captured with forward hooks while it runs a real
prompt, so every module sees realistic data. Decode is checked by prefilling positions < p and
decoding position p, which must equal row p of the reference's (causal) prefill output.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from model.attention import attention
from model.checkpoint.rotary_layout import hf_to_meta
from model.decoder import decoder
from model.embedding import embedding
from model.kv_cache import allocate_kv_cache
from model.lm_head import lm_head
from model.mlp import mlp
from model.norm import norm_for_matmul
from model.rope import inv_frequencies, precompute_rot_mats
from ttjax import rotary_embedding_llama
from ttjax.metrics import pcc

PCC = 0.9999
TEXT = "In the beginning the Universe was created. This has made a lot of people very angry and been widely regarded as a bad move."
LAYERS = [0, 14, 29]
N_LAYERS = 30  # SmolLM2-135M; both norms of every layer are checked
DECODE_POSITIONS = [0, 7, 23]


# Elementwise tolerance per module, for assert_matches: |ours - ref| <= tol * (|ref| + rms(ref)).
# Measured in float32 on this prompt, as the smallest tol that passes (worst over the tested
# layers; in brackets, worst over all 30 layers), then ~3-6x headroom. A 1% scale error needs
# tol > 5e-3 to pass; an offset of 0.01 needs tol * rms(ref) > 0.01 (rms(ref) <= 170 here).
TOL = {
    "embedding": 0.0,  # a row gather: bit-exact
    "norm": 1e-6,  # measured 1.9e-7 (2.8e-7 over all 60 layer norms); final norm 1.8e-7
    "mlp": 2e-5,  # measured 3.2e-6 (5.3e-6)
    "attention_prefill": 3e-5,  # measured 4.6e-6 (1.4e-5)
    "attention_decode": 2e-5,  # measured 5.3e-6 (7.1e-6)
    "decoder": 1e-5,  # measured 2.4e-6 (5.1e-6); prefill and decode
    "lm_head": 1e-5,  # measured 3.0e-6
}


def assert_matches(ref, ours, tol):
    """pcc >= PCC, and allclose with rtol=tol, atol=tol * rms(ref): the absolute part is scaled to
    the tensor's magnitude (the residual stream grows from rms ~2 to ~170 over the layers)."""
    ref, ours = np.asarray(ref, dtype=np.float32), np.asarray(ours, dtype=np.float32)
    assert ours.shape == ref.shape, f"shape {ours.shape} != reference {ref.shape}"
    p = pcc(ref, ours)
    assert p >= PCC, f"PCC {p:.6f} < {PCC}"
    rms = float(np.sqrt(np.mean(np.square(ref, dtype=np.float64))))
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * rms, err_msg=f"PCC {p:.8f} passed; values differ (tol {tol:g}, rms {rms:.4g})")


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.fixture(scope="module")
def captured(hf_model, ckpt):
    """{(module, layer): (input, output)} from one reference forward pass."""
    ids = ckpt.tokenizer.encode(TEXT)
    rec, hooks = {}, []

    def hook(key):
        def fn(mod, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            rec[key] = (x.detach().numpy().copy(), _first(out).detach().numpy().copy())

        return fn

    m = hf_model.model
    targets = {("embed", None): m.embed_tokens, ("final_norm", None): m.norm, ("lm_head", None): hf_model.lm_head}
    for i in LAYERS:
        layer = m.layers[i]
        targets.update({("decoder", i): layer, ("attention", i): layer.self_attn, ("mlp", i): layer.mlp})
    for i, layer in enumerate(m.layers):
        targets.update({("attention_norm", i): layer.input_layernorm, ("ffn_norm", i): layer.post_attention_layernorm})
    hooks = [mod.register_forward_hook(hook(key), with_kwargs=True) for key, mod in targets.items()]
    try:
        with torch.no_grad():
            hf_model(torch.tensor([ids]))
    finally:
        for h in hooks:
            h.remove()
    return rec


@pytest.fixture(scope="module")
def rot(ckpt):
    return precompute_rot_mats(ckpt.args)


def _one_layer_cache(args):
    return allocate_kv_cache(args.replace(n_layers=1))[0]


def test_embedding(ckpt, captured):
    ids, ref = captured[("embed", None)]
    assert_matches(ref, embedding(ckpt.params, jnp.asarray(ids)), TOL["embedding"])


def test_every_layer_is_covered(hf_model, ckpt):
    assert len(hf_model.model.layers) == ckpt.args.n_layers == N_LAYERS


@pytest.mark.parametrize("layer", range(N_LAYERS))
@pytest.mark.parametrize("name", ["attention_norm", "ffn_norm"])  # HF input_layernorm, post_attention_layernorm
def test_rms_norm(ckpt, captured, name, layer):
    x, ref = captured[(name, layer)]
    ours = norm_for_matmul(jnp.asarray(x), getattr(ckpt.params.layers[layer], name), ckpt.args, "prefill")
    assert_matches(ref, ours, TOL["norm"])


@pytest.mark.parametrize("layer", LAYERS)
def test_mlp(ckpt, captured, layer):
    x, ref = captured[("mlp", layer)]
    assert_matches(ref, mlp(ckpt.params.layers[layer].feed_forward, jnp.asarray(x), ckpt.args), TOL["mlp"])


@pytest.mark.parametrize("layer", LAYERS)
def test_attention_prefill(ckpt, captured, rot, layer):
    x, ref = captured[("attention", layer)]
    args = ckpt.args
    out, (k, v) = attention(ckpt.params.layers[layer].attention, jnp.asarray(x), rot, _one_layer_cache(args), args=args, mode="prefill")
    assert_matches(ref, out, TOL["attention_prefill"])
    assert np.abs(np.asarray(k)[0, :, x.shape[1] :]).max() == 0, "prefill wrote past the prompt"


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("pos", DECODE_POSITIONS)
def test_attention_decode(ckpt, captured, rot, layer, pos):
    x, ref = captured[("attention", layer)]
    args, p = ckpt.args, ckpt.params.layers[layer].attention
    cache = _one_layer_cache(args)
    if pos:
        _, cache = attention(p, jnp.asarray(x[:, :pos]), rot, cache, args=args, mode="prefill")
    out, _ = attention(p, jnp.asarray(x[:, pos : pos + 1]), rot, cache, args=args, mode="decode", current_pos=jnp.array([pos]))
    assert_matches(ref[:, pos], out[:, 0], TOL["attention_decode"])


@pytest.mark.parametrize("layer", LAYERS)
def test_decoder_prefill_and_decode(ckpt, captured, rot, layer):
    x, ref = captured[("decoder", layer)]
    args, p = ckpt.args, ckpt.params.layers[layer]
    out, cache = decoder(p, jnp.asarray(x[:, :-1]), rot, _one_layer_cache(args), args=args, mode="prefill")
    assert_matches(ref[:, :-1], out, TOL["decoder"])
    last = x.shape[1] - 1
    out, _ = decoder(p, jnp.asarray(x[:, last:]), rot, cache, args=args, mode="decode", current_pos=jnp.array([last]))
    assert_matches(ref[:, last], out[:, 0], TOL["decoder"])


def test_final_norm_and_lm_head(ckpt, captured):
    x, normed = captured[("final_norm", None)]
    ours = norm_for_matmul(jnp.asarray(x), ckpt.params.norm, ckpt.args, "prefill")
    assert_matches(normed, ours, TOL["norm"])
    _, logits = captured[("lm_head", None)]
    assert_matches(logits, lm_head(ours, ckpt.params.output, ckpt.args), TOL["lm_head"])


def _to_meta(x_hf):
    """A head vector in HF's rotate-half order -> Meta's interleaved order (last axis)."""
    hd = x_hf.shape[-1]
    return x_hf.reshape(*x_hf.shape[:-1], 2, hd // 2).swapaxes(-1, -2).reshape(x_hf.shape)


def test_rope_matches_reference(hf_model, ckpt):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    args = ckpt.args
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, args.n_heads, 200, args.head_dim)).astype(np.float32)
    k = rng.standard_normal((1, args.n_kv_heads, 200, args.head_dim)).astype(np.float32)
    positions = torch.arange(200)[None]
    cos, sin = hf_model.model.rotary_emb(torch.from_numpy(q), positions)
    q_ref, k_ref = apply_rotary_pos_emb(torch.from_numpy(q), torch.from_numpy(k), cos, sin)
    rot = precompute_rot_mats(args)
    ours_q = rotary_embedding_llama(jnp.asarray(_to_meta(q)), rot.cos[:200], rot.sin[:200])
    ours_k = rotary_embedding_llama(jnp.asarray(_to_meta(k)), rot.cos[:200], rot.sin[:200])
    np.testing.assert_allclose(np.asarray(ours_q), _to_meta(q_ref.numpy()), atol=5e-5)
    np.testing.assert_allclose(np.asarray(ours_k), _to_meta(k_ref.numpy()), atol=5e-5)


def test_weight_permutation_matches_vector_layout():
    """hf_to_meta on weight rows equals the per-head vector reordering the rotary test uses."""
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)  # 2 heads of 8
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(hf_to_meta(w, 2) @ x, _to_meta((w @ x).reshape(2, 8)).ravel())


@pytest.mark.parametrize("name", ["Llama-3.2-1B", "Llama-3.1-8B"])
def test_llama3_rope_scaling_matches_reference(name):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from model.config import named_config

    args = named_config(name, n_layers=1, max_seq_len=64)
    s = args.rope_scaling
    config = LlamaConfig(
        hidden_size=args.dim,
        num_attention_heads=args.n_heads,
        head_dim=args.head_dim,
        max_position_embeddings=args.max_context_len,
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=args.rope_theta,
            factor=s.factor,
            low_freq_factor=s.low_freq_factor,
            high_freq_factor=s.high_freq_factor,
            original_max_position_embeddings=s.original_max_position_embeddings,
        ),
    )
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    np.testing.assert_allclose(inv_frequencies(args), inv_freq.numpy(), rtol=1e-6)
    assert not np.allclose(inv_frequencies(args), inv_frequencies(args.replace(rope_scaling=None)))
