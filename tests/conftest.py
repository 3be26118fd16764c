"""Shared fixtures: the shipped SmolLM2 GGUF loaded by ttjax and, as the reference, by
transformers' LlamaForCausalLM (float32, same file)."""

import os

HOST_DEVICES = 32  # for meshes up to 8x4 (Galaxy)


def with_host_devices(xla_flags: str, n: int) -> str:
    """XLA_FLAGS asking for at least n host devices: added to flags already set (not skipped because some are);
    a larger count already asked for is kept."""
    flag = "--xla_force_host_platform_device_count="
    counts = [int(f[len(flag):]) for f in xla_flags.split() if f.startswith(flag)]
    kept = [f for f in xla_flags.split() if not f.startswith(flag)]
    return " ".join([*kept, f"{flag}{max([n, *counts])}"])


# Must be set before jax is imported anywhere.
os.environ["XLA_FLAGS"] = with_host_devices(os.environ.get("XLA_FLAGS", ""), HOST_DEVICES)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TTJAX_COMPILE_CACHE", "0")  # in-process `ttjax` calls keep nothing in the user's cache folder
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI runs hypothesis derandomized: the same examples every run, so a red run reproduces. HYPOTHESIS_PROFILE=dev
# explores new examples locally.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PROMPTS = [
    "The capital of France is",
    "The three primary colors are",
    "def fibonacci(n):",
    "Once upon a time, in a small village, there lived",
]
STEPS = 32  # greedy tokens compared with the reference


@pytest.fixture(scope="session")
def gguf_path():
    from model.checkpoint import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def first_two_layers(gguf_path, tmp_path_factory) -> str:
    """The shipped model cut to its first 2 layers (checkpoint_writers.first_layers_gguf): the same files, vocabulary,
    formats and code paths, compiled in seconds, for tests of plumbing rather than of the model's answers."""
    from pathlib import Path

    from tests.checkpoint_writers import first_layers_gguf

    return first_layers_gguf(gguf_path, str(tmp_path_factory.mktemp("first-2-layers") / Path(gguf_path).name), 2)


@pytest.fixture(scope="session")
def ckpt(gguf_path):
    from model.checkpoint import load_checkpoint

    return load_checkpoint(gguf_path, max_seq_len=256, progress=False)


@pytest.fixture(scope="session")
def generator(ckpt):
    from model.serving.generator import Generator

    return Generator(ckpt.params, ckpt.args, ckpt.tokenizer)


@pytest.fixture(scope="session")
def hf_model(gguf_path):
    """transformers' float32 model of the shipped GGUF. transformers reads a GGUF file's metadata value by value
    (14 s of a 16 s load for SmolLM2, most of it the vocabulary), so the model it makes is kept (its config and
    state dict, which load in 2 s and give the same logits bit for bit) for the other test worker and later runs,
    keyed by the file and the versions of what reads and dequantizes it; a newer key replaces the file's older copy.
    The copy is a convenience: where it cannot be read or written the GGUF is loaded as it always was."""
    import hashlib
    import importlib.metadata
    import json
    import shutil
    from pathlib import Path

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.set_num_threads(2)
    st = os.stat(gguf_path)
    versions = [importlib.metadata.version(n) for n in ("transformers", "torch", "gguf", "numpy")]
    source = os.path.realpath(gguf_path)
    key = json.dumps([source, st.st_size, st.st_mtime_ns, versions])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ttjax" / "hf-reference"
    kept = cache / hashlib.sha256(key.encode()).hexdigest()[:20]
    if (kept / "model.pt").exists():
        try:
            config = AutoConfig.for_model(**json.loads((kept / "config.json").read_text()))
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(torch.load(kept / "model.pt"))
            return model.eval()
        except Exception:  # a partial or unreadable copy: load the GGUF and keep it afresh
            shutil.rmtree(kept, ignore_errors=True)
    folder, name = os.path.split(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    tmp = cache / f"{kept.name}.{os.getpid()}.tmp"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "config.json").write_text(json.dumps({k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}))
        (tmp / "source.txt").write_text(source)
        torch.save(model.state_dict(), tmp / "model.pt")
        os.replace(tmp, kept)  # whole or not at all
        for old in cache.iterdir():  # this file's copies under older keys (0.5 GB each)
            if old != kept and old.suffix != ".tmp" and (old / "source.txt").is_file() and (old / "source.txt").read_text() == source:
                shutil.rmtree(old, ignore_errors=True)
    except OSError:  # another worker's copy landed first, or the disk is full or read-only
        shutil.rmtree(tmp, ignore_errors=True)
    return model


@pytest.fixture(scope="session")
def hf_tokenizer(gguf_path):
    from transformers import AutoTokenizer

    folder, name = os.path.split(gguf_path)
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)


def hf_greedy(hf_model, ids: list[int], steps: int, eos=frozenset()) -> tuple[list[int], list]:
    """transformers' own prefill + KV-cache decode loop, greedy: (tokens, each step's logits), stopping after an
    end-of-sequence token in eos."""
    import torch

    tokens, step_logits, past, cur = [], [], None, torch.tensor([ids])
    with torch.no_grad():
        while len(tokens) < steps and not (tokens and tokens[-1] in eos):
            res = hf_model(input_ids=cur, past_key_values=past, use_cache=True)
            step_logits.append(res.logits[0, -1].numpy().copy())
            tokens.append(int(step_logits[-1].argmax()))
            past, cur = res.past_key_values, torch.tensor([[tokens[-1]]])
    return tokens, step_logits


@pytest.fixture(scope="session")
def reference(hf_model, ckpt):
    """{prompt: (prompt ids, last-token logits, greedy tokens, per-step logits)} from the reference's
    own prefill + KV-cache decode loop."""
    out = {}
    for prompt in PROMPTS:
        ids = ckpt.tokenizer.encode(prompt)
        tokens, step_logits = hf_greedy(hf_model, ids, STEPS)
        out[prompt] = (ids, step_logits[0], tokens, step_logits)
    return out


# The oracle tier (tests/oracle/) leaves one line: its case count against ttnn, or why it did not run.
_ORACLE_SUMMARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "ttnn_oracle.txt")


# The files that take minutes, first: `make test`'s workers take a file at a time in collection order, so the long
# ones start early and the short ones fill the end instead of one worker finishing a long file alone.
# Longest first, by a full run's durations (2026-12-07: 378, 338, 250, 227, 221, 160, 144, 139, 131, 127, 117, 95 s).
LONG_FILES = ("test_readme.py", "test_tensor_parallel.py", "test_engine.py", "test_long_prompts.py", "test_kernel_sequences.py",
              "test_matmul_fidelity.py", "test_server.py", "test_multiprocess.py", "test_cli.py", "test_model.py",
              "test_accuracy.py", "test_precision.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: each file's own order kept


def pytest_sessionstart(session):
    session.config._ttjax_started = __import__("time").time()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    started = getattr(config, "_ttjax_started", None)
    if started is not None and os.path.exists(_ORACLE_SUMMARY) and os.path.getmtime(_ORACLE_SUMMARY) >= started:
        with open(_ORACLE_SUMMARY) as f:
            terminalreporter.write_line(f.read().strip())
