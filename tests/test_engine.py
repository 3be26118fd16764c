"""The generation engine: on-device sampling, continuous batching, the traced and eager step, and the
vLLM-style interface driven by a small block manager.

Continuous batching is held to the strictest standard there is: every request, whatever joins or
leaves the batch around it, gets exactly the tokens it gets alone.
"""

import copy
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

import ttjax

from mesh import MeshDevice
from model.checkpoint import dummy_weights
from model.config import named_config
from model.serving.engine import Engine, Request
from model.errors import ConfigError
from model.serving.generator import Generator
from model.serving.generator_vllm import LlamaForCausalLM
from model.config import PagedAttentionConfig
from model.serving.page_table import BlockAllocator, PageTable
from model.serving.sampling import SamplingBatch, SamplingParams
from model.precision import TensorGroup
from model.sharding import mesh_args
from tests.conftest import PROMPTS, STEPS
from ttjax.metrics import pcc
from ttjax.sampling import sample

# -- sampling ---------------------------------------------------------------------------------------


def _sample(logits, params, positions):
    s = SamplingBatch.of(params)
    return np.asarray(sample(np.asarray(logits, np.float32), np.asarray(positions, np.int32), temperature=s.temperature,
                             top_k=s.top_k, top_p=s.top_p, seed=s.seed))


def test_top_k_1_and_temperature_0_are_argmax():
    logits = np.random.default_rng(0).standard_normal((6, 300))
    params = [SamplingParams(temperature=1.5, top_k=1, seed=i) for i in range(3)] + [SamplingParams(seed=i) for i in range(3)]
    np.testing.assert_array_equal(_sample(logits, params, np.arange(6)), logits.argmax(-1))


def test_sampling_follows_the_distribution_within_top_k_and_top_p():
    """4,000 seeded draws from one row: frequencies match softmax(logits / T) restricted to the top-k / top-p set."""
    logits = np.log(np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]))
    n = 4000
    row = np.tile(logits, (n, 1))

    def freq(params):
        return np.bincount(_sample(row, [params] * n, np.arange(n)), minlength=6) / n

    np.testing.assert_allclose(freq(SamplingParams(temperature=1.0, seed=7)), np.exp(logits), atol=0.03)
    top3 = np.exp(logits[:3]) / np.exp(logits[:3]).sum()
    np.testing.assert_allclose(freq(SamplingParams(temperature=1.0, top_k=3, seed=7))[:3], top3, atol=0.03)
    # top_p 0.6: the smallest prefix reaching 0.6 is {0.4, 0.25}
    f = freq(SamplingParams(temperature=1.0, top_p=0.6, seed=7))
    np.testing.assert_allclose(f[:2], [0.4 / 0.65, 0.25 / 0.65], atol=0.03)
    assert f[2:].sum() == 0
    # a low temperature sharpens toward the argmax
    assert freq(SamplingParams(temperature=0.2, seed=7))[0] > 0.9


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    logits = np.random.default_rng(1).standard_normal((64, 500))
    a = _sample(logits, [SamplingParams(temperature=1.0, seed=5)] * 64, np.arange(64))
    b = _sample(logits, [SamplingParams(temperature=1.0, seed=5)] * 64, np.arange(64))
    c = _sample(logits, [SamplingParams(temperature=1.0, seed=6)] * 64, np.arange(64))
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.5


def test_sampling_params_errors():
    with pytest.raises(ConfigError, match=r"top_k = 64 is outside 1\.\.32"):
        SamplingParams(top_k=64)
    with pytest.raises(ConfigError, match=r"top_p = 0 is outside \(0, 1\]"):
        SamplingParams(top_p=0)
    with pytest.raises(ConfigError, match="temperature = -1"):
        SamplingParams(temperature=-1)


# -- continuous batching on a small random model ----------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    args = named_config("SmolLM2-135M", n_layers=2, vocab_size=512, max_seq_len=128, max_batch_size=32)
    return args, dummy_weights(args, seed=3)


def _requests(rng, n, vocab, sampled=False):
    out = []
    for i in range(n):
        prompt = rng.integers(1, vocab, int(rng.integers(1, 60))).tolist()
        sampling = SamplingParams(temperature=0.8, top_p=0.9, seed=i) if sampled and i % 2 else SamplingParams()
        out.append(Request(prompt, int(rng.integers(1, 24)), sampling, stop_at_eos=False))
    return out


def _solo(gen_factory, req):
    """The same request alone in a fresh engine."""
    return Engine(gen_factory()).run([req])[0].tokens


@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
def test_100_requests_through_32_slots(small, paged):
    """Mixed prompt lengths and lengths, random arrival steps, greedy and seeded-sampled requests: none is lost
    or duplicated, each gets exactly max_new_tokens tokens, and each gets what it gets alone. The paged pool
    holds fewer blocks than 32 full users need, so admission also waits for blocks."""
    args, params = small
    if paged:
        args = args.replace(paged_attention_config=PagedAttentionConfig(32, 40))
    gen = Generator(params, args)
    rng = np.random.default_rng(11)
    requests = _requests(rng, 100, args.vocab_size, sampled=True)
    arrivals = sorted(rng.integers(0, 60, 100).tolist())
    engine = Engine(gen)
    outputs = engine.run(requests, arrivals)
    assert len(engine.finished) == 100 and len({r.request_id for r in engine.finished}) == 100
    assert [o.request for o in outputs] == requests
    assert all(o.finish_reason == "length" and len(o.tokens) == o.request.max_new_tokens for o in outputs)
    assert all(s is None for s in engine.slots) and not engine.waiting
    if paged:
        assert engine.pages.allocator.num_free == 40  # every block came back
    solo_gen = Generator(params, args)
    for o in outputs[::7]:  # a sample, to keep the test short; each run alone in its own engine
        assert o.tokens == _solo(lambda: solo_gen, o.request), f"request {o.request_id}"


def test_stop_strings_and_eos(ckpt, generator):
    tok = ckpt.tokenizer
    ids = tok.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    full, cut = Engine(generator).run([Request(ids, 40), Request(ids, 40, stop=("Paris",))])
    assert full.finish_reason == "eos" and full.tokens[-1] in tok.eos_ids
    assert "Paris" in full.text and cut.finish_reason == "stop" and "Paris" not in cut.text
    assert full.text.startswith(cut.text) and len(cut.tokens) < len(full.tokens)


def test_stop_strings_are_checked_on_the_new_text_only(ckpt, generator):
    """A request with a stop string decodes a few tokens per new token, not its whole output again each time."""
    decoded = []

    class Counting:
        eos_ids = ckpt.tokenizer.eos_ids

        def decode(self, ids, skip_special_tokens=False):
            decoded.append(len(ids))
            return ckpt.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    gen = copy.copy(generator)  # the session's generator, its programs shared, with a counting tokenizer
    gen.tokenizer = Counting()
    ids = ckpt.tokenizer.encode("Once upon a time")
    out = Engine(gen).run([Request(ids, 60, stop=("never appears",), stop_at_eos=False)])[0]
    assert out.finish_reason == "length" and len(out.tokens) == 60
    assert sum(decoded) < 8 * 60 + 60  # incremental, plus the whole text once at the end (it was 60 * 61 / 2)


# -- the real model ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, paged, async_output",
    [(None, False, True), (None, False, False), ((2, 4), True, True)],  # 1D meshes: test_tensor_parallel's generation
    ids=["1x1", "1x1-sync-output", "2x4-paged"],
)
def test_continuous_batching_real_model_matches_solo(ckpt, reference, shape, paged, async_output):
    """Prompts of different lengths arrive at steps 0, 0, 2, 5 and 9 into 3 slots (so some wait), greedy:
    each gets exactly the reference's tokens for that prompt alone, with the output read one step late (async)
    or at once (sync), on one device or a mesh, contiguous or paged (shuffled blocks, fewer than all need)."""
    args = ckpt.args.replace(max_batch_size=3)
    if paged:
        args = args.replace(paged_attention_config=PagedAttentionConfig(32, 4))
    mesh = MeshDevice(shape) if shape else None
    gen = Generator(ckpt.params, mesh_args(args, mesh) if mesh else args, ckpt.tokenizer, mesh_device=mesh)
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[3], PROMPTS[0]]
    lengths = [12, 20, 8, 16, 10]
    requests = [Request(reference[p][0], n, stop_at_eos=False) for p, n in zip(prompts, lengths)]
    engine = Engine(gen, async_output=async_output)
    if paged:
        engine.pages.allocator = BlockAllocator(4, shuffle=True, seed=4)
    outputs = engine.run(requests, [0, 0, 2, 5, 9])
    for out, prompt, n in zip(outputs, prompts, lengths):
        assert out.tokens == reference[prompt][2][:n], prompt


def test_seeded_sampling_on_the_real_model_alone_and_in_a_batch(ckpt, reference):
    """Seeded requests draw the same tokens whatever slot they take and whoever shares the batch, and again on a
    second run; greedy requests beside them keep the reference's tokens."""
    gen = Generator(ckpt.params, ckpt.args.replace(max_batch_size=3), ckpt.tokenizer)
    sampled = [SamplingParams(temperature=0.9, top_p=0.95, seed=11), SamplingParams(temperature=1.2, top_k=8, seed=12)]

    def requests():
        return [
            Request(reference[PROMPTS[0]][0], 12, sampled[0], stop_at_eos=False),
            Request(reference[PROMPTS[1]][0], 12, stop_at_eos=False),
            Request(reference[PROMPTS[3]][0], 12, sampled[1], stop_at_eos=False),
            Request(reference[PROMPTS[2]][0], 12, stop_at_eos=False),
        ]

    first = Engine(gen).run(requests(), [0, 0, 1, 3])
    second = Engine(gen).run(requests(), [2, 0, 0, 0])  # other slots, other neighbours
    assert [r.tokens for r in first] == [r.tokens for r in second]
    for out in (first[0], first[2]):
        assert Engine(gen).run([out.request])[0].tokens == out.tokens  # alone
    assert first[1].tokens == reference[PROMPTS[1]][2][:12] and first[3].tokens == reference[PROMPTS[2]][2][:12]
    assert first[0].tokens != reference[PROMPTS[0]][2][:12] or first[2].tokens != reference[PROMPTS[3]][2][:12]  # it sampled


@pytest.mark.parametrize("shape, data_parallel", [(None, 1), ((1, 2), 2)], ids=["1x1", "1x2-dp2"])
def test_vllm_block_manager_allocates_and_frees_during_decode(ckpt, hf_model, reference, shape, data_parallel):
    """vLLM's scheduler hands out blocks as sequences grow: a user holds blocks for its prompt, gets another when its
    next position crosses into a new block, and gives them all back when it finishes; the next waiting prompt is
    prefilled into blocks a finished user held. Two slots, four requests, a pool of 4 blocks of 32 (fewer than the
    8 the four requests use in all): every request gets the reference's tokens. With tt_data_parallel = 2 each slot
    is its own 1x1 submesh with its own pool (empty_slots sends each prefill to its slot's submesh)."""
    mesh = MeshDevice(shape) if shape else None
    model = LlamaForCausalLM.initialize_vllm_model(hf_model.config, mesh, max_batch_size=2, max_seq_len=256, tt_data_parallel=data_parallel)
    assert model.data_parallel == data_parallel and model.max_batch_size == 2
    block = 32
    kv_cache = model.allocate_kv_cache((4, ckpt.args.n_kv_heads, block, ckpt.args.head_dim), np.float32, ckpt.args.n_layers)
    assert len(kv_cache) == data_parallel and all(len(sub) == ckpt.args.n_layers for sub in kv_cache)
    manager = PageTable(PagedAttentionConfig(block, 4), 2, 256, BlockAllocator(4, shuffle=True, seed=5))
    waiting = [(PROMPTS[i], n) for i, n in enumerate([32, 20, 30, 24])]
    slots, out, pos, owners_of_block = [None, None], {}, np.full(2, -1, np.int32), {}
    grown = 0
    while waiting or any(slots):
        for s in range(2):
            if slots[s] is None and waiting:
                prompt, n = waiting.pop(0)
                ids = reference[prompt][0]
                manager.reserve(s, len(ids))
                logits = model.prefill_forward(np.array([ids]), manager.array()[[s]], kv_cache, [len(ids)], empty_slots=[s])
                assert logits.shape == (1, 1, ckpt.args.vocab_size)
                slots[s], out[prompt], pos[s] = (prompt, n), [int(logits[0, 0].argmax())], len(ids)
        for s in range(2):
            if slots[s] is not None:
                before = len(manager.rows[s])
                manager.reserve(s, int(pos[s]) + 1)  # the block the next position lands in
                grown += len(manager.rows[s]) > before
                for b in manager.rows[s]:
                    owners_of_block.setdefault(b, set()).add(slots[s][0])
        tokens = np.array([[out[slot[0]][-1]] if slot else [0] for slot in slots], np.int32)
        logits = model.decode_forward(tokens, pos, manager.array(), kv_cache)
        for s, slot in enumerate(slots):
            if slot is None:
                continue
            out[slot[0]].append(int(logits[s, 0].argmax()))
            pos[s] += 1
            if len(out[slot[0]]) == slot[1]:
                manager.release(s)
                slots[s], pos[s] = None, -1
    assert grown >= 2 and max(len(users) for users in owners_of_block.values()) >= 2  # grew during decode; blocks reused
    assert manager.allocator.num_free == 4
    for i, n in enumerate([32, 20, 30, 24]):
        assert out[PROMPTS[i]] == reference[PROMPTS[i]][2][:n], PROMPTS[i]


def test_vllm_interface_with_a_block_manager(ckpt, hf_model, reference):
    """initialize_vllm_model / allocate_kv_cache / prefill_forward / decode_forward as vLLM calls them, with a
    small block manager handing out shuffled blocks: greedy tokens from the returned logits are the reference's.
    prefill_forward's [batch, 1, vocab] rows are each user's last-token logits from the model's own Generator. The
    eager step (enable_trace=False) gives the traced step's logits, and an async read the same values."""
    model = LlamaForCausalLM.initialize_vllm_model(hf_model.config, None, max_batch_size=4, max_seq_len=256)
    block, n_blocks = 32, 32
    kv_cache = model.allocate_kv_cache((n_blocks, ckpt.args.n_kv_heads, block, ckpt.args.head_dim), np.float32, ckpt.args.n_layers)
    manager = PageTable(PagedAttentionConfig(block, n_blocks), 4, 256, BlockAllocator(n_blocks, shuffle=True, seed=9))
    prompts = PROMPTS[:3]
    ids = [reference[p][0] for p in prompts]
    for user, seq in enumerate(ids):
        manager.reserve(user, len(seq) + STEPS)
    tokens = np.zeros((3, max(map(len, ids))), np.int32)
    for user, seq in enumerate(ids):
        tokens[user, : len(seq)] = seq
    logits = model.prefill_forward(tokens, manager.array()[:3], kv_cache, [len(s) for s in ids])
    assert logits.shape == (3, 1, ckpt.args.vocab_size) and logits.dtype == np.float32
    gen = model.generator
    for user, seq in enumerate(ids):  # the same program on a fresh pool: the same logits, in the user's row
        own, _ = gen.prefill_forward_text(seq, gen.allocate_kv_cache(), user_id=user, page_table=manager.array()[:3])
        np.testing.assert_array_equal(logits[user, 0], np.asarray(own))
    out = [[int(t)] for t in logits[:, 0].argmax(-1)]
    pos = np.array([len(s) for s in ids] + [-1], np.int32)
    for step in range(STEPS - 1):
        step_tokens = np.array([o[-1] for o in out] + [0], np.int32)[:, None]
        if step == 3:  # the same step three ways
            eager = model.decode_forward(step_tokens, pos, manager.array(), [[list(kv) for kv in sub] for sub in kv_cache], enable_trace=False)
            handle = model.decode_forward(step_tokens, pos, manager.array(), kv_cache, read_from_device=False)
            step_logits = model.read_decode_output(handle, 4)
            assert min(pcc(a[0], b[0]) for a, b in zip(eager[:3], step_logits[:3])) >= 0.99999
        else:
            step_logits = model.decode_forward(step_tokens, pos, manager.array(), kv_cache)
        assert step_logits.shape == (4, 1, ckpt.args.vocab_size)
        for user in range(3):
            out[user].append(int(step_logits[user, 0].argmax()))
        pos[:3] += 1
    for user, prompt in enumerate(prompts):
        assert out[user] == reference[prompt][2], prompt


def _snapshot(kv_cache):
    """A copy of a vLLM cache: a traced step donates the pools it is given."""
    return [[[jnp.array(k, copy=True), jnp.array(v, copy=True)] for k, v in sub] for sub in kv_cache]


def test_vllm_decode_with_sampling_params(ckpt, hf_model, reference):
    """decode_forward(sampling_params=...) returns the next tokens [batch] instead of logits, as tt-metal's
    decode_forward_text: greedy params give the argmax of the logits step from the same state, read now or later
    (read_decode_output(..., is_tokens=True)); per-user lists (tt-metal's / vLLM's form: top_k -1 is no limit, the
    slots past the list greedy) give the tokens ttjax's sampling draws from those logits. A read with the wrong
    is_tokens is refused."""
    model = LlamaForCausalLM.initialize_vllm_model(hf_model.config, None, max_batch_size=4, max_seq_len=256)
    kv_cache = model.allocate_kv_cache((16, ckpt.args.n_kv_heads, 32, ckpt.args.head_dim), np.float32, ckpt.args.n_layers)
    table = np.arange(16, dtype=np.int32).reshape(4, 4)
    ids = [reference[p][0] for p in PROMPTS]
    tokens = np.zeros((4, max(map(len, ids))), np.int32)
    for user, seq in enumerate(ids):
        tokens[user, : len(seq)] = seq
    first = model.prefill_forward(tokens, table, kv_cache, [len(s) for s in ids])[:, 0].argmax(-1)[:, None].astype(np.int32)
    pos = np.array([len(s) for s in ids], np.int32)

    greedy = model.decode_forward(first, pos, table, _snapshot(kv_cache), sampling_params=SamplingParams())
    handle = model.decode_forward(first, pos, table, _snapshot(kv_cache), read_from_device=False, sampling_params=SamplingParams())
    per_user = SimpleNamespace(temperature=[0.9, 0.0, 1.3], top_k=[20, 5, -1], top_p=[0.95, 1.0, 0.9], seed=[3, 4, None])
    sampled = model.decode_forward(first, pos, table, _snapshot(kv_cache), sampling_params=per_user)
    logits = model.decode_forward(first, pos, table, kv_cache)[:, 0]

    assert greedy.shape == (4,) and greedy.dtype == np.int32
    np.testing.assert_array_equal(greedy, logits.argmax(-1))
    np.testing.assert_array_equal(model.read_decode_output(handle, 4, is_tokens=True), greedy)
    np.testing.assert_array_equal(model.read_decode_output(handle, 2, is_tokens=True), greedy[:2])
    with pytest.raises(ConfigError, match=r"read_decode_output\(is_tokens=False\) expects logits \[batch, vocab\], but tt_out holds tokens of shape \(4,\)"):
        model.read_decode_output(handle, 4)
    users = [SamplingParams(0.9, 20, 0.95, 3), SamplingParams(0.0, 5, 1.0, 4), SamplingParams(1.3, 32, 0.9, 0), SamplingParams(0.0, 1, 1.0, 0)]
    np.testing.assert_array_equal(sampled, _sample(logits, users, pos + 1))
    assert sampled[1] == greedy[1] and sampled[3] == greedy[3] and (sampled != greedy).any()  # greedy slots; the others sampled


def test_vllm_kv_cache_defaults_to_bfloat8_b(gguf_path):
    """allocate_kv_cache's default dtype is bfloat8_b, as tt-metal's: every K/V value the cache holds after a prefill
    and a decode step is one bfloat8_b can hold (rounding it again changes nothing), which a float32 cache's values
    are not; the logits move a little, not far."""
    model = LlamaForCausalLM.initialize_vllm_model({}, None, max_batch_size=1, max_seq_len=256, n_layers=2, model_path=gguf_path)
    shape = (4, model.args.n_kv_heads, 32, model.args.head_dim)
    tokens, table = np.array([[1, 504, 3458, 282, 4649, 314]], np.int32), np.arange(4, dtype=np.int32)[None]
    out = {}
    for name, dtype in (("bfloat8_b", None), ("float32", np.float32)):
        kv = model.allocate_kv_cache(shape, num_layers=2) if dtype is None else model.allocate_kv_cache(shape, dtype, 2)
        logits = model.prefill_forward(tokens, table, kv, [6])
        model.decode_forward(np.array([[7]]), np.array([6]), table, kv)
        held = np.stack([np.asarray(x) for sub in kv for layer in sub for x in layer])
        assert (np.abs(held[:, 0, :, :7]).max(axis=-1) > 0).all()  # positions 0..6 (block 0) were written
        out[name] = (logits, held, model.args.optimizations.get_tensor_dtype(TensorGroup.KV_CACHE).value)
    assert out["bfloat8_b"][2] == "bfloat8_b" and out["float32"][2] == "float32"
    np.testing.assert_array_equal(np.asarray(ttjax.typecast(out["bfloat8_b"][1], ttjax.bfloat8_b)), out["bfloat8_b"][1])
    assert not np.array_equal(np.asarray(ttjax.typecast(out["float32"][1], ttjax.bfloat8_b)), out["float32"][1])
    a, b = out["bfloat8_b"][0][0, 0], out["float32"][0][0, 0]
    assert not np.array_equal(a, b) and pcc(a, b) >= 0.999


def test_engine_and_vllm_bad_input(small, tmp_path):
    """A request bigger than the whole block pool is refused at once (it would wait forever); a vLLM config whose
    checkpoint folder cannot be told apart is refused rather than swapped for another model."""
    from model.errors import CheckpointError, KVCacheError

    args, params = small
    engine = Engine(Generator(params, args.replace(paged_attention_config=PagedAttentionConfig(32, 2))))
    with pytest.raises(KVCacheError, match=r"needs 3 blocks \(50 prompt \+ 30 new tokens\), more than the whole pool of 2"):
        engine.add_request(Request(list(range(1, 51)), 30))
    assert not engine.waiting
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"holds 2 \.gguf files and no config\.json / params\.json; pass model_path"):
        LlamaForCausalLM.initialize_vllm_model({"_name_or_path": str(tmp_path)}, None, max_batch_size=1)
