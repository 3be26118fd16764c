"""The peers ttjax is measured against, on the same checkpoint and the same token ids, measured as ttjax is
(model.tools.bench_ttjax): greedy, EOS ignored, one untimed run first, then timed runs.

- transformers: LlamaForCausalLM in float32 (torch, torch.set_num_threads(cores)), loaded with
  AutoModelForCausalLM.from_pretrained(folder, gguf_file=name) (it dequantizes the GGUF) or from a Hugging Face
  folder. Decode is model.generate over `batch` copies of the prompt (identical, so no padding is needed; a
  stopping criterion stamps the time of each step): time to first token is the batched prefill and its token,
  decode tokens/s the tokens of the later steps over their time. Prefill is one forward over the prompt with
  logits_to_keep=1.
- llama.cpp: llama-cpp-python (`make peers`: the optional extra `.[peers]` built for this CPU, model/tools/peer_flags.py) on the GGUF as stored, n_threads = cores, one
  sequence (batch 1 only). Prefill is Llama.eval over the prompt after a reset; decode is Llama.generate at
  temperature 0 (greedy), the time to its first token (the prompt's evaluation) apart from the token loop after.
"""

from __future__ import annotations

import importlib.util
import os
import time

PEERS = ("transformers", "llama.cpp")
INSTALL = {"transformers": "pip install -e '.[test]'", "llama.cpp": "make peers"}


def installed(peer: str) -> bool:
    """Whether a peer's package can be imported (found without importing it)."""
    modules = {"transformers": ("torch", "transformers"), "llama.cpp": ("llama_cpp",)}[peer]
    return all(importlib.util.find_spec(m) is not None for m in modules)


def threads() -> int:
    return os.cpu_count() or 1


# -- transformers --------------------------------------------------------------------------------


def transformers_model(path: str):
    """LlamaForCausalLM in float32 from a GGUF file or a Hugging Face folder, on every core."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads())
    if os.path.isdir(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    folder, name = os.path.split(path)
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()


def transformers_weight_bytes(model) -> int:
    """Bytes a decode step reads: every parameter once (a tied LM head is the embedding's own tensor), less the
    input embedding when it is a tensor apart (a token reads one row of it)."""
    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() * p.element_size() for p in params.values())
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return total - (0 if embedding is head else embedding.numel() * embedding.element_size())


def transformers_decode(model, prompt, batch: int, new_tokens: int, runs: int) -> dict:
    """{"decode_tokens_per_s", "ttft_s": per run, "tokens": the first sequence's new tokens of the last run}."""
    import torch
    from transformers import StoppingCriteria

    class Stamps(StoppingCriteria):  # called once a step, after the step's tokens are chosen
        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores, **kwargs):
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    ids = torch.tensor([list(prompt)] * batch)
    config = dict(do_sample=False, temperature=None, top_p=None, top_k=None, eos_token_id=None, pad_token_id=0)

    def run(n):
        stamps = Stamps()
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 stopping_criteria=[stamps], **config)
        return start, stamps.times, out[0, ids.shape[1]:].tolist()

    run(min(new_tokens, 3))
    rates, ttfts, tokens = [], [], []
    for _ in range(runs):
        start, times, tokens = run(new_tokens)
        ttfts.append(times[0] - start)
        rates.append(batch * (len(times) - 1) / (times[-1] - times[0]))
    return {"decode_tokens_per_s": rates, "ttft_s": ttfts, "tokens": tokens}


def transformers_prefill(model, ids, runs: int, warm_up: bool = True) -> dict:
    """{"seconds": per run, "top1"}: one forward over ids (the KV cache made, the last position's logits only)."""
    import torch

    seconds, top = [], None
    with torch.no_grad():
        for i in range(runs + bool(warm_up)):
            start = time.perf_counter()
            top = int(model(torch.tensor([list(ids)]), use_cache=True, logits_to_keep=1).logits[0, -1].argmax())
            if i or not warm_up:
                seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "top1": top}


# -- llama.cpp -----------------------------------------------------------------------------------


def llama_cpp_model(path: str, n_ctx: int):
    from llama_cpp import Llama

    return Llama(model_path=path, n_threads=threads(), n_threads_batch=threads(), n_ctx=n_ctx, verbose=False)


def llama_cpp_decode(llm, prompt, new_tokens: int, runs: int) -> dict:
    """{"decode_tokens_per_s", "ttft_s": per run, "tokens"}: Llama.generate at temperature 0 (greedy) from an empty
    context; its first token comes after the prompt's evaluation (time to first token), each later one after a
    one-token evaluation (decode)."""

    def run(n):
        llm.reset()  # no prefix of an earlier run reused
        start, tokens, first = time.perf_counter(), [], 0.0
        for token in llm.generate(list(prompt), temp=0.0, reset=True):
            tokens.append(int(token))
            if len(tokens) == 1:
                first = time.perf_counter()
            if len(tokens) == n:
                break
        return first - start, (n - 1) / (time.perf_counter() - first), tokens

    run(min(new_tokens, 3))
    rates, ttfts, tokens = [], [], []
    for _ in range(runs):
        ttft, rate, tokens = run(new_tokens)
        ttfts.append(ttft)
        rates.append(rate)
    return {"decode_tokens_per_s": rates, "ttft_s": ttfts, "tokens": tokens}


def llama_cpp_prefill(llm, ids, runs: int, warm_up: bool = True) -> dict:
    """{"seconds": per run, "top1"}: Llama.eval over ids from an empty context (n_batch tokens a call), then the
    greedy pick of the next token."""
    seconds, top = [], None
    for i in range(runs + bool(warm_up)):
        llm.reset()
        start = time.perf_counter()
        llm.eval(list(ids))
        top = int(llm.sample(temp=0.0))
        if i or not warm_up:
            seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "top1": top}


# -- a `ttjax bench` row -------------------------------------------------------------------------


def measure(spec: dict) -> dict:
    """A `ttjax bench` row of a peer (model.tools.bench runs it in a process of its own) on the token ids ttjax
    used: the prefills of spec["prefill_ids"] (if any), then decode at spec["batch"]."""
    prompt, prefills, runs = spec["prompt_ids"], spec["prefill_ids"], spec["runs"]
    if spec["engine"] == "transformers":
        import torch
        import transformers

        model = transformers_model(spec["model"])
        row = {"precision": "float32", "version": f"torch {torch.__version__}, transformers {transformers.__version__}",
               "weight_bytes": transformers_weight_bytes(model)}
        row["prefill_s"] = {n: transformers_prefill(model, ids, runs)["seconds"] for n, ids in prefills.items()}
        row.update(transformers_decode(model, prompt, spec["batch"], spec["new_tokens"], runs))
        return row
    import llama_cpp

    from model.tools.roofline import gguf_weight_bytes

    n_ctx = max([spec["max_seq_len"], len(prompt) + spec["new_tokens"], *(len(ids) for ids in prefills.values())])
    llm = llama_cpp_model(spec["model"], n_ctx)
    row = {"precision": gguf_formats(spec["model"]), "version": f"llama-cpp-python {llama_cpp.__version__}",
           "weight_bytes": gguf_weight_bytes(spec["model"])}
    row["prefill_s"] = {n: llama_cpp_prefill(llm, ids, runs)["seconds"] for n, ids in prefills.items()}
    row.update(llama_cpp_decode(llm, prompt, spec["new_tokens"], runs))
    return row


def gguf_formats(path: str) -> str:
    """The storage formats of a GGUF file's matrices, most bytes first ("Q4_1+Q8_0")."""
    from collections import Counter

    import gguf

    from model.checkpoint.gguf import open_gguf

    sizes = Counter()
    for t in open_gguf(path).tensors:
        if len(t.shape) > 1:  # the matrices, not the norms
            sizes[gguf.GGMLQuantizationType(int(t.tensor_type)).name] += int(t.n_bytes)
    return "+".join(name for name, _ in sizes.most_common())
