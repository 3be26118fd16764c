"""Bad input gets one clear error naming the value and the limit, and loses nothing: token ids, requests,
sampling options, page tables, the vLLM interface, and the commands a user types.

Each case asserts the error class and that the message names the offending value. Errors are raised
before anything runs, so none of these compiles a program.
"""

import json
import re
from collections import namedtuple
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from model.checkpoint import dummy_weights
from model.tools.cli import main
from model.config import named_config
from model.serving.engine import Engine, Request
from model.errors import ConfigError, InputFileError, KVCacheError, SequenceLengthError, TokenIdError, TokenizerError
from model.serving.generator import Generator
from model.serving.generator_vllm import LlamaForCausalLM
from model.config import PagedAttentionConfig
from model.serving.sampling import SamplingParams
from tests.conftest import hf_greedy
from ttjax import TTJaxError

VOCAB = 512


@pytest.fixture(scope="module")
def small():
    """A 2-layer random model of SmolLM2's shapes with a 512-token vocabulary, paged: 4 slots, blocks of 32."""
    args = named_config("SmolLM2-135M", n_layers=2, vocab_size=VOCAB, max_seq_len=128, max_batch_size=4)
    args = args.replace(paged_attention_config=PagedAttentionConfig(32, 16))
    return Generator(dummy_weights(args, seed=0), args)


# -- token ids ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, VOCAB, 10**6])
def test_prompt_token_ids_outside_the_vocabulary(small, bad):
    pages = small.new_page_table()
    pages.reserve(0, 64)
    with pytest.raises(TokenIdError, match=rf"token id {bad} at position 2 of the prompt is outside the vocabulary 0\.\.{VOCAB - 1}"):
        small.prefill_forward_text([5, 6, bad, 7], small.allocate_kv_cache(), page_table=pages)
    with pytest.raises(TokenIdError, match=rf"token id {bad} at position 1 of request \d+'s prompt"):
        Engine(small).add_request(Request([5, bad], 4))


def test_decode_token_ids_outside_the_vocabulary(small):
    table = small.new_page_table().array()
    with pytest.raises(TokenIdError, match=rf"token id {VOCAB} at position 3 of the decode tokens"):
        small.decode_forward(np.array([1, 2, 3, VOCAB]), np.zeros(4, np.int32), small.allocate_kv_cache(), table)
    with pytest.raises(TokenIdError, match="the decode tokens holds float64 values; token ids are integers"):
        small.decode_forward(np.array([1.0, 2.5, 3, 4]), np.zeros(4, np.int32), small.allocate_kv_cache(), table)


# -- the Engine -------------------------------------------------------------------------------------------


def test_requests_that_cannot_run(small):
    with pytest.raises(SequenceLengthError, match=r"request \d+ has an empty prompt"):
        Request([], 4)
    for n in (0, -3, 2.5):
        with pytest.raises(SequenceLengthError, match=rf"max_new_tokens = {n}; it must be an integer of at least 1"):
            Request([1, 2], n)
    with pytest.raises(ConfigError, match=r"stop strings \('',\); each must be a non-empty string"):
        Request([1, 2], 4, stop="")
    assert Request([1, 2], 4, stop="\n").stop == ("\n",)  # one stop string, not its characters
    engine = Engine(small)
    with pytest.raises(SequenceLengthError, match=r"prompt \(100 tokens\) plus max_new_tokens \(29\) is 129 tokens, more than max_seq_len = 128"):
        engine.add_request(Request(list(range(100)), 29))
    assert not engine.waiting


def test_run_needs_one_arrival_step_per_request(small):
    """Today's bug: zip() dropped the requests past the arrival list, and they came back unfinished."""
    engine = Engine(small)
    requests = [Request([1, 2, 3], 2) for _ in range(3)]
    with pytest.raises(ConfigError, match="run\\(\\) got 2 arrival steps for 3 requests"):
        engine.run(requests, [0, 1])
    with pytest.raises(ConfigError, match=r"arrival step -1 is not a step number"):
        engine.run(requests, [0, -1, 2])
    bad = Request([1, VOCAB], 2)
    with pytest.raises(TokenIdError, match=f"token id {VOCAB}"):
        engine.run([requests[0], bad])  # refused before any request runs
    assert not engine.waiting and not engine.finished and engine.steps == 0
    with pytest.raises(ConfigError, match=rf"run\(\) got request id {requests[0].request_id} twice"):
        engine.run([requests[0], requests[0]])


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(temperature=float("nan")), "temperature = nan must be a finite number"),
        (dict(temperature=float("inf")), "temperature = inf must be a finite number"),
        (dict(top_p=float("nan")), "top_p = nan must be a finite number"),
        (dict(top_p=float("-inf")), "top_p = -inf must be a finite number"),
        (dict(top_k=0), r"top_k = 0 is outside 1\.\.32"),
        (dict(top_k=-4), r"top_k = -4 is outside 1\.\.32"),
        (dict(top_k=3.5), "top_k = 3.5 must be an integer"),
        (dict(seed=-1), r"seed = -1 is outside 0\.\.2\*\*32 - 1"),
        (dict(seed=2**32), r"seed = 4294967296 is outside 0\.\.2\*\*32 - 1"),
    ],
)
def test_sampling_params(kw, message):
    with pytest.raises(ConfigError, match=message):
        SamplingParams(**kw)


# -- page tables ------------------------------------------------------------------------------------------


def test_page_tables_are_checked_whatever_their_type(small):
    """A device array was once trusted as is, so bad entries were silently dropped; now every form is checked."""
    cache, tokens, pos = small.allocate_kv_cache(), np.zeros(4, np.int32), np.zeros(4, np.int32)
    good = small.new_page_table().array()
    good[:, 0] = [3, 0, 7, 9]
    for bad_entry in (16, -2):
        table = good.copy()
        table[2, 1] = bad_entry
        for form in (table, jnp.asarray(table)):
            with pytest.raises(TTJaxError, match=rf"page_table entry {bad_entry} is neither -1 \(no block\) nor a block of the pool of 16"):
                small.decode_forward(tokens, pos, cache, form)
    with pytest.raises(TTJaxError, match=r"page_table must be \[batch, blocks_per_user\], got shape \(4,\)"):
        small.decode_forward(tokens, pos, cache, good[:, 0])
    with pytest.raises(TTJaxError, match="page_table holds float32 values"):
        small.decode_forward(tokens, pos, cache, good.astype(np.float32))
    with pytest.raises(TTJaxError, match="block 7 appears more than once"):
        small.decode_forward(tokens, pos, cache, np.where(good == 9, 7, good))
    with pytest.raises(KVCacheError, match="the page table has 3 rows for a decode batch of 4 users"):
        small.decode_forward(tokens, pos, cache, good[:3])
    with pytest.raises(KVCacheError, match="position 64 is past the 64 positions a page-table row covers"):
        small.decode_forward(tokens, np.array([0, 64, 0, 0]), cache, good[:, :2])
    with pytest.raises(SequenceLengthError, match="current_pos has 3 entries for a batch of 4 tokens"):
        small.decode_forward(tokens, np.zeros(3, np.int32), cache, good)


# -- the vLLM interface -----------------------------------------------------------------------------------------


_Params = namedtuple("_Params", "temperature top_k top_p")  # tt-metal's SamplingParams(temperature, top_k, top_p)


@pytest.fixture(scope="module")
def vllm(gguf_path):
    return LlamaForCausalLM.initialize_vllm_model({}, None, max_batch_size=2, max_seq_len=256, n_layers=1, model_path=gguf_path)


def test_vllm_kv_cache_shape(vllm):
    a = vllm.args
    with pytest.raises(KVCacheError, match=rf"kv_cache_shape \(64, 4, 32, 64\) has 4 KV heads of 64; the model has {a.n_kv_heads} of {a.head_dim}"):
        vllm.allocate_kv_cache((64, 4, 32, 64), np.float32, 1)
    with pytest.raises(KVCacheError, match=rf"has {a.n_kv_heads} KV heads of 128; the model has {a.n_kv_heads} of {a.head_dim}"):
        vllm.allocate_kv_cache((64, a.n_kv_heads, 32, 128), np.float32, 1)
    with pytest.raises(KVCacheError, match="num_layers = 30, but the model has 1 layers"):
        vllm.allocate_kv_cache((64, a.n_kv_heads, 32, a.head_dim), np.float32, 30)
    with pytest.raises(KVCacheError, match=r"kv_cache_shape \(64, 3, 32\) is not \(max_num_blocks, num_kv_heads, block_size, head_size\)"):
        vllm.allocate_kv_cache((64, 3, 32), np.float32, 1)
    with pytest.raises(KVCacheError, match="kv cache dtype bfloat16 differs from this model's float32 .* or a block float"):
        vllm.allocate_kv_cache((64, a.n_kv_heads, 32, a.head_dim), jnp.bfloat16, 1)
    with pytest.raises(KVCacheError, match="kv cache dtype float16 differs from this model's float32"):
        vllm.allocate_kv_cache((64, a.n_kv_heads, 32, a.head_dim), "float16", 1)


def test_vllm_calls(vllm):
    a = vllm.args
    kv = vllm.allocate_kv_cache((16, a.n_kv_heads, 32, a.head_dim), np.float32, 1)
    table = np.arange(16, dtype=np.int32).reshape(2, 8)
    tokens = np.array([[5, 6, 7, 0], [8, 9, 0, 0]], np.int32)
    with pytest.raises(KVCacheError, match=r"tokens \(2\), page_table \(1\) and prompt_lens \(2\) must have one row per user"):
        vllm.prefill_forward(tokens, table[:1], kv, [3, 2])
    with pytest.raises(KVCacheError, match=r"prompt_lens\[1\] = 5 is outside 1\.\.4, the tokens given per user"):
        vllm.prefill_forward(tokens, table, kv, [3, 5])
    with pytest.raises(KVCacheError, match=r"prompt_lens\[0\] = 0 is outside 1\.\.4"):
        vllm.prefill_forward(tokens, table, kv, [0, 2])
    with pytest.raises(TokenIdError, match=rf"token id {a.vocab_size} at position 1 of user 1's prompt"):
        vllm.prefill_forward(np.array([[5, 6], [8, a.vocab_size]]), table, kv, [2, 2])
    with pytest.raises(TokenIdError, match=r"token id -7 at position 0 of the decode tokens"):
        vllm.decode_forward(np.array([[-7], [1]]), np.array([3, 2]), table, kv)
    with pytest.raises(KVCacheError, match="the page table has 1 rows for a decode batch of 2 users"):
        vllm.decode_forward(np.array([[1], [1]]), np.array([3, 2]), table[:1], kv)
    with pytest.raises(SequenceLengthError, match="position 256 is past max_seq_len = 256"):
        vllm.decode_forward(np.array([[1], [1]]), np.array([256, 2]), table, kv)
    with pytest.raises(KVCacheError, match=r"empty_slots holds slot 2, outside the batch slots 0\.\.1"):
        vllm.prefill_forward(tokens, table, kv, [3, 2], empty_slots=[0, 2])
    with pytest.raises(KVCacheError, match=r"empty_slots must be one integer slot per user \(2\)"):
        vllm.prefill_forward(tokens, table, kv, [3, 2], empty_slots=[0])
    flat = kv[0]  # the per-layer pairs without the per-submesh list
    with pytest.raises(KVCacheError, match=r"kv_cache is not what allocate_kv_cache returns: one list per data-parallel submesh \(here 1\)"):
        vllm.decode_forward(np.array([[1], [1]]), np.array([3, 2]), table, flat)
    with pytest.raises(ConfigError, match="top_k = 40 is outside 1..32"):
        vllm.decode_forward(np.array([[1], [1]]), np.array([3, 2]), table, kv, sampling_params=_Params(1.0, 40, 1.0))
    with pytest.raises(ConfigError, match="sampling_params.temperature has 3 values for a decode batch of 2"):
        vllm.decode_forward(np.array([[1], [1]]), np.array([3, 2]), table, kv, sampling_params=_Params([0.5, 0.5, 0.5], 5, 1.0))
    with pytest.raises(ConfigError, match="sampling_params 0.7 has no temperature"):
        vllm.decode_forward(np.array([[1], [1]]), np.array([3, 2]), table, kv, sampling_params=0.7)
    with pytest.raises(ConfigError, match=r"tt_out has 2 parts; decode_forward gives one per data-parallel submesh \(1\)"):
        vllm.read_decode_output([np.zeros(2), np.zeros(2)], 2, is_tokens=True)


def test_vllm_tt_data_parallel(gguf_path):
    """tt_data_parallel splits the mesh into equal submeshes of equal batches, or is refused before anything loads."""
    from mesh import MeshDevice

    def init(mesh, n, batch=2):
        return LlamaForCausalLM.initialize_vllm_model({}, mesh, max_batch_size=batch, n_layers=1, tt_data_parallel=n, model_path=gguf_path)

    with pytest.raises(ConfigError, match=r"tt_data_parallel = 2 needs a mesh_device of 2 or more devices to split"):
        init(None, 2)
    with pytest.raises(ConfigError, match=r"tt_data_parallel = 3 does not split the 1x4 mesh's 4 devices into equal submeshes"):
        init(MeshDevice((1, 4)), 3)
    with pytest.raises(ConfigError, match=r"max_batch_size = 3 does not split evenly over tt_data_parallel = 2 submeshes"):
        init(MeshDevice((1, 2)), 2, batch=3)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match=rf"tt_data_parallel = {re.escape(repr(bad))} must be a whole number of model copies"):
            init(None, bad)
    dp = init(MeshDevice((1, 2)), 2)
    kv = dp.allocate_kv_cache((8, dp.args.n_kv_heads, 32, dp.args.head_dim), np.float32, 1)
    assert len(kv) == 2 and dp.args.max_batch_size == 1
    with pytest.raises(ConfigError, match=r"a decode batch of 1 users; with tt_data_parallel = 2 it must be max_batch_size = 2 \(1 slots on each"):
        dp.decode_forward(np.array([[1]]), np.array([3]), np.arange(4, dtype=np.int32)[None], kv)


def test_vllm_max_seq_len_past_the_context(gguf_path):
    with pytest.raises(ConfigError, match="max_seq_len = 100000 is past the model's trained context of 8192 tokens"):
        LlamaForCausalLM.initialize_vllm_model({}, None, max_batch_size=1, max_seq_len=100000, n_layers=1, model_path=gguf_path)


# -- the commands ------------------------------------------------------------------------------------------


def ttjax_error(argv, capsys) -> str:
    """Run `ttjax ...`: it must exit 2 with one line on stderr and no traceback; the line, without its prefix."""
    capsys.readouterr()  # what earlier steps printed
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ttjax: error: ") and err.count("\n") == 1, err
    return err.removeprefix("ttjax: error: ").strip()


def test_generate_bad_flags(capsys):
    base = ["generate", "--prompt", "The capital of France is"]
    assert ttjax_error([*base, "--max-new-tokens", "-5"], capsys) == "--max-new-tokens -5 must be at least 1."
    msg = ttjax_error([*base, "--override", "layers.99.FF2=bfloat16"], capsys)
    assert msg == "precision override layers.99.FF2=bfloat16 names layer 99; the model has layers 0..29."
    msg = ttjax_error([*base, "--override", "layers.x.FF2=bfloat16"], capsys)
    assert msg == "--override 'layers.x.FF2=bfloat16' is not layers.N.GROUP=DTYPE with N a layer number."
    msg = ttjax_error([*base, "--max-seq-len", "100000"], capsys)
    assert msg == "--max-seq-len 100000 is past the model's trained context of 8192 tokens; pass --allow-past-context to run there anyway."
    assert "--allow-past-context" in subprocess.run(
        [sys.executable, "-m", "model.tools.cli", "generate", "--help"], capture_output=True, text=True, check=True
    ).stdout
    # the messages that were already good stay so
    assert ttjax_error([*base, "--mesh", "abc"], capsys) == "--mesh: mesh shape 'abc' is not of the form ROWSxCOLS, like 1x8 or 8x4."
    assert ttjax_error([*base, "--override", "BOGUS=bfloat16"], capsys).startswith("--override: tensor group 'BOGUS' is not one of")


def test_generate_with_a_checkpoint_that_has_no_tokenizer(tmp_path, capsys):
    from tests.checkpoint_writers import tiny_hf_model, write_hf

    folder = write_hf(tiny_hf_model(), str(tmp_path))
    msg = ttjax_error(["generate", "--model", folder, "--prompt", "hello"], capsys)
    assert msg.startswith(f"{folder} has no tokenizer") and msg.endswith("so text cannot be encoded.")
    with pytest.raises(TokenizerError):
        from model.checkpoint import load_checkpoint

        load_checkpoint(folder, progress=False).require_tokenizer()


def test_a_max_seq_len_that_is_not_a_bucket_multiple(ckpt, hf_model, capsys):
    """140 words pad to the 256 bucket, longer than a 200-token cache: the padding is dropped at the cache's end
    and the rotary tables cover the bucket (it once died in dynamic_slice). transformers' greedy tokens."""
    prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 14)  # 140 words
    assert main(["generate", "--prompt", prompt, "--max-new-tokens", "4", "--max-seq-len", "200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ids = ckpt.tokenizer.encode(prompt)
    assert out["prompt_tokens"] == len(ids) and 128 < len(ids) <= 196 and out["max_seq_len"] == 200
    assert out["tokens"] == hf_greedy(hf_model, ids, 4, ckpt.tokenizer.eos_ids)[0]


def test_demo_prompt_file_that_is_not_json(tmp_path):
    """Through the command a user types: which file, that it is not JSON, where; exit status 2."""
    bad = tmp_path / "prompts.json"
    bad.write_text('[{"prompt": "What is 2 + 2?"},\n {"prompt": "Name a color." \n]')
    proc = subprocess.run([sys.executable, "demos/demo.py", "--input", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == f"demo: error: prompt file {bad} is not valid JSON: Expecting ',' delimiter at line 3, column 1.\n"


def test_demo_prompt_file_errors(tmp_path):
    from demos.demo import load_prompts

    with pytest.raises(InputFileError, match=f"prompt file {tmp_path / 'none.json'} cannot be read: No such file or directory"):
        load_prompts(str(tmp_path / "none.json"))
    for content, message in [
        ("{}", "must hold a non-empty JSON list"),
        ('[{"text": "hi"}]', 'entry 0 has no non-empty "prompt" string'),
        ('[{"prompt": "hi", "max_length": "ten"}]', "entry 0 has max_length 'ten'; it must be a positive number of characters"),
    ]:
        path = tmp_path / "p.json"
        path.write_text(content)
        with pytest.raises(InputFileError, match=message):
            load_prompts(str(path))


# What the sweep of every user-facing command found: each a sentence and exit status 2, not a traceback.
SWEEP = [
    ("ttjax", ["accuracy", "--prefill-len", "0", "--configs", "float32"], "--prefill-len 0 must be at least 1"),
    ("ttjax", ["accuracy", "--decode-steps", "-2", "--configs", "float32"], "--decode-steps -2 must be 0 or more"),
    ("ttjax", ["accuracy", "--configs", ""], "--configs '' names no precision config."),
    ("ttjax", ["accuracy", "--pcc-threshold", "nan"], r"--pcc-threshold nan is outside -1\.\.1"),
    ("ttjax", ["comm-report", "--mesh", "1x8", "--n-layers", "0"], r"--n-layers 0 is outside 1\.\.30"),
    ("ttjax", ["comm-report", "--mesh", "1x8", "--n-layers", "31"], r"--n-layers 31 is outside 1\.\.30"),
    ("demo", ["--stream-user", "50"], r"--stream-user 50 is not a user: 0\.\.9, or -1 for nobody\."),
    ("demo", ["--max-seq-len", "100000"], "--max-seq-len 100000 is past the model's trained context of 8192 tokens"),
    ("demo", ["--max-new-tokens", "0"], r"request \d+ asks for max_new_tokens = 0"),
    ("chat", ["--max-seq-len", "40"], r"the conversation is \d+ tokens, max_seq_len = 40; start a new one\."),
    ("benchmark_long_prefill", ["--tokens", "9000"], "--tokens 9000 is past 8192"),
    ("benchmark_long_prefill", ["--chunk", "100"], "--chunk 100 is not a multiple of 32"),
]


@pytest.mark.parametrize("prog, argv, message", SWEEP, ids=[f"{p} {' '.join(a)}" for p, a, _ in SWEEP])
def test_every_command_answers_bad_input_with_a_sentence(prog, argv, message, capsys):
    import io

    from demos import benchmark_long_prefill, chat, demo

    run = {
        "ttjax": main,
        "demo": demo.main,
        "chat": lambda a: chat.main(a, stdin=io.StringIO("Tell me everything about the history of France, please. " * 3 + "\n")),
        "benchmark_long_prefill": benchmark_long_prefill.main,
    }[prog]
    capsys.readouterr()
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"{prog}: error: ")
    assert re.search(message, err), err


@pytest.mark.parametrize("script", ["benchmark", "benchmark_trace", "benchmark_long_prefill"])
def test_benchmark_counts_must_be_positive(script, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(f"demos.{script}").main(["--runs", "0"])
    assert exit_.value.code == 2 and "argument --runs: 0 must be at least 1" in capsys.readouterr().err
