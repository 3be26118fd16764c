"""tt_transformers' multi-device placement rules, pinned to what tt-metal computes (models/tt_transformers/tt/):

- T3K's wo: model_config.py sets USE_FUSED_ALL_GATHER_MATMUL = num_devices == 8 and not a Galaxy and
  (dim // tile_size // num_devices) % num_devices == 0; attention.py then shards wo by columns
  (ShardTensor2dMesh dims=(2, 3)) and all-gathers the attention output before it (all_gather_matmul_async in
  decode on a ring, all_gather_async + linear otherwise and in prefill), with no reduction after it.
- TG's reductions: ccl.py's tt_all_reduce on a 2D mesh is all_gather_async + fast_reduce_nc, or with
  use_composite reduce-scatter + all-gather; attention.py / mlp.py / lm_head.py pick use_composite (dim == 8192
  for wo in decode and w2, always for the LM head) and mlp.py reduce-scatters w1 / w3 in prefill or at dim 8192.
- TG's decode users: attention.py's batch_size_per_device_group, one group of users per mesh column.
"""

import numpy as np
import pytest

from mesh import MeshDevice
from model.checkpoint import dummy_weights
from model.config import named_config
from model.errors import ConfigError
from model.model_config import ModelConfig, all_reduce_kind, use_fused_all_gather_matmul
from model.serving.generator import Generator
from model.sharding import abstract_params, mesh_args
from ttjax.metrics import pcc


@pytest.mark.parametrize("name, shape, fused", [
    ("Llama-3.2-1B", (1, 8), True),  # 2048 / 32 / 8 = 8, 8 % 8 == 0
    ("Llama-3.1-8B", (1, 8), True),
    ("Llama-3.1-70B", (1, 8), True),
    ("Llama-3.2-3B", (1, 8), False),  # 3072 / 32 / 8 = 12, 12 % 8 == 4
    ("SmolLM2-135M", (1, 8), False),  # 576 / 32 / 8 = 2
    ("Llama-3.1-8B", (1, 2), False),  # not 8 devices
    ("Llama-3.1-8B", (2, 4), False),  # 8 devices, but a 2D mesh (ttjax's stand-in for a Galaxy)
    ("Llama-3.1-70B", (8, 4), False),
])
def test_fused_all_gather_matmul_rule(name, shape, fused):
    dim = named_config(name).dim
    assert use_fused_all_gather_matmul(dim, shape) is fused
    assert mesh_args(named_config(name, n_layers=1), MeshDevice(shape)).layout.wo_gathered is fused


def test_wo_is_split_by_columns_on_the_fused_path():
    """Every device holds all of wo's (gathered) rows and 1/8 of its columns: [n_heads * head_dim, dim / 8]."""
    mesh = MeshDevice((1, 8))
    base = named_config("Llama-3.2-1B", n_layers=1, max_seq_len=64, vocab_size=1000)
    fused = abstract_params(mesh_args(base, mesh), mesh).layers[0].attention.wo
    rows = abstract_params(mesh_args(base, mesh, all_gather_matmul=False), mesh).layers[0].attention.wo
    assert fused.shape[2:] == (2048, 256) and rows.shape[2:] == (256, 2048)


def test_fused_wo_path_matches_one_device():
    """Llama-3.2-1B's shape (dummy weights, 1 layer) on 1x8 takes the fused path by tt's rule: the same greedy tokens
    as one device, logits PCC >= 0.9999."""
    args = named_config("Llama-3.2-1B", n_layers=1, max_seq_len=128, vocab_size=1000)
    params = dummy_weights(args, seed=3)
    mesh = MeshDevice((1, 8))

    def run(gen):
        cache = gen.allocate_kv_cache()
        ids = [5, 17, 300, 42, 7, 99]
        logits, cache = gen.prefill_forward_text(ids, cache)
        tokens, all_logits = [int(np.argmax(logits))], [np.asarray(logits)]
        tok, pos = np.array(tokens, np.int32), np.array([len(ids)], np.int32)
        for _ in range(6):
            tok, lg, pos, cache = gen.decode_forward(tok, pos, cache)
            tokens.append(int(gen.read(tok)[0]))
            all_logits.append(gen.read(lg)[0])
        return tokens, all_logits

    ref_tokens, ref_logits = run(Generator(params, args, None))
    sharded = mesh_args(args, mesh)
    assert sharded.layout.wo_gathered
    tokens, logits = run(Generator(params, sharded, None, mesh_device=mesh))
    assert tokens == ref_tokens
    assert min(pcc(a, b) for a, b in zip(ref_logits, logits)) >= 0.9999


@pytest.mark.parametrize("dim, mode, expected", [
    (576, "decode", {"qkv": "gather", "wo": "gather", "ff1_ff3": "gather", "ff2": "gather", "lm_head": "composite"}),
    (576, "prefill", {"qkv": "gather", "wo": "gather", "ff1_ff3": "scatter", "ff2": "gather", "lm_head": "composite"}),
    (8192, "decode", {"qkv": "gather", "wo": "composite", "ff1_ff3": "scatter", "ff2": "composite", "lm_head": "composite"}),
    (8192, "prefill", {"qkv": "gather", "wo": "gather", "ff1_ff3": "scatter", "ff2": "composite", "lm_head": "composite"}),
])
def test_tg_all_reduce_choice(dim, mode, expected):
    cfg = ModelConfig(cluster_shape=(8, 4))
    assert {site: all_reduce_kind(cfg, dim, site, mode) for site in expected} == expected
    for ccl, kind in (("reduce_scatter", "composite"), ("all_reduce", "all_reduce")):
        assert {all_reduce_kind(ModelConfig(cluster_shape=(8, 4), ccl=ccl), dim, s, mode) for s in expected} == {kind}


def test_user_groups():
    """One group per mesh column where the batch divides (32 on 8x4: 8 each, tt's batch_size_per_device_group);
    otherwise every device holds every user, unless group_users=True asks for groups."""
    lay = mesh_args(named_config("Llama-3.1-70B", n_layers=1), MeshDevice((8, 4))).layout
    assert (lay.user_groups(32), lay.users_per_group(32)) == (4, 8)
    assert (lay.user_groups(1), lay.users_per_group(1)) == (1, 1)
    assert mesh_args(named_config("Llama-3.1-8B", n_layers=1), MeshDevice((1, 8))).layout.user_groups(32) == 1
    off = mesh_args(named_config("Llama-3.1-70B", n_layers=1), MeshDevice((8, 4)), group_users=False).layout
    assert off.user_groups(32) == 1


def test_placement_options_that_do_not_fit_are_refused():
    smol = named_config("SmolLM2-135M", n_layers=1)
    with pytest.raises(ConfigError, match=r"all_gather_matmul .* is tt's T3K path for a 1D mesh, not a 2x4 mesh"):
        mesh_args(smol, MeshDevice((2, 4)), all_gather_matmul=True)
    with pytest.raises(ConfigError, match="does not go with ccl='all_reduce'"):
        mesh_args(smol, MeshDevice((1, 8)), all_gather_matmul=True, ccl="all_reduce")
    with pytest.raises(ConfigError, match=r"group_users .* the 1x8 mesh is not one"):
        mesh_args(smol, MeshDevice((1, 8)), group_users=True)
    with pytest.raises(ConfigError, match="ccl 'ring' is not one of auto, reduce_scatter, all_reduce"):
        ModelConfig(ccl="ring")
    with pytest.raises(ConfigError, match="group_users 'yes' is not None, True or False"):
        ModelConfig(group_users="yes")
