"""Shared fixtures: the shipped SmolLM2 GGUF loaded by ttjax and, as the reference, by
transformers' LlamaForCausalLM (float32, same file)."""

import os

# 32 host devices, for meshes up to 8x4 (Galaxy); must be set before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=32")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "The three primary colors are",
    "def fibonacci(n):",
    "Once upon a time, in a small village, there lived",
]


@pytest.fixture(scope="session")
def gguf_path():
    from model.checkpoint import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def ckpt(gguf_path):
    from model.checkpoint import load_checkpoint

    return load_checkpoint(gguf_path, max_seq_len=256, progress=False)


@pytest.fixture(scope="session")
def generator(ckpt):
    from model.generator import Generator

    return Generator(ckpt.params, ckpt.args, ckpt.tokenizer)


@pytest.fixture(scope="session")
def hf_model(gguf_path):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    folder, name = os.path.split(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def hf_tokenizer(gguf_path):
    from transformers import AutoTokenizer

    folder, name = os.path.split(gguf_path)
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)
