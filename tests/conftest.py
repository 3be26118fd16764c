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
STEPS = 32  # greedy tokens compared with the reference


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


@pytest.fixture(scope="session")
def reference(hf_model, ckpt):
    """{prompt: (prompt ids, last-token logits, greedy tokens, per-step logits)} from the reference's
    own prefill + KV-cache decode loop."""
    import torch

    out = {}
    for prompt in PROMPTS:
        ids = ckpt.tokenizer.encode(prompt)
        tokens, step_logits, past, cur = [], [], None, torch.tensor([ids])
        with torch.no_grad():
            for _ in range(STEPS):
                res = hf_model(input_ids=cur, past_key_values=past, use_cache=True)
                logits = res.logits[0, -1].numpy().copy()
                step_logits.append(logits)
                tokens.append(int(logits.argmax()))
                past, cur = res.past_key_values, torch.tensor([[tokens[-1]]])
        out[prompt] = (ids, step_logits[0], tokens, step_logits)
    return out
