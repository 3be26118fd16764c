"""Accuracy harness, as tt-metal measures it: teacher-forced top-1 / top-5 agreement, perplexity and
per-layer PCC, for each precision config, against a float32 reference.

The model reads the shipped public-domain text (A Tale of Two Cities). It prefills the first
`prefill_len` tokens, then decodes `decode_steps` more, fed the text's own tokens (teacher
forcing). At every predicted position:
  - top-1: the config's argmax equals the reference's argmax;
  - top-5: the config's argmax is among the reference's five most likely tokens;
  - perplexity: exp of the mean negative log-likelihood of the text's next token.
The reference is transformers' LlamaForCausalLM in float32 on the same checkpoint (or, with
reference="float32", ttjax itself in float32). Per-layer PCC compares each decoder layer's
prefill output with the reference's; the PCC debugger names the first layer below a threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import jax
import numpy as np

from model.errors import ConfigError, SequenceLengthError
from model.checkpoint import Checkpoint
from model.buckets import get_padded_prefill_len
from model.kv_cache import allocate_kv_cache
from model.serving.build import build_generator
from model.params import weight_nbytes
from model.precision import ModelOptimizations
from model.transformer import forward
from model.tools.reference import Reference, kept_transformers_reference, transformers_reference
from model.tools.reference_spread import margins, measure as measure_spread
from ttjax.metrics import pcc

DEFAULT_CONFIGS = ("float32", "bfloat16", "accuracy", "performance", "performance+fidelity=off", "performance+sfpu=off")


TEXT_PATH = Path(__file__).parent.parent / "data" / "tale_of_two_cities.txt"


def shipped_text() -> str:
    return TEXT_PATH.read_text()


@dataclass
class ConfigResult:
    name: str
    top1: float
    top5: float
    perplexity: float
    layer_pcc: list[float]
    weight_bytes: int
    seconds: float
    groups: dict = field(default_factory=dict)

    def first_layer_below(self, threshold: float) -> int | None:
        return next((i for i, p in enumerate(self.layer_pcc) if p < threshold), None)


def run_config(ck: Checkpoint, optimizations: ModelOptimizations, tokens: list[int], prefill_len: int, decode_steps: int):
    """Teacher-forced logits [decode_steps + 1, vocab] and per-layer prefill outputs for one precision config."""
    chunked = get_padded_prefill_len(prefill_len) > ck.args.max_prefill_chunk_size  # a long prefill goes through pages
    gen = build_generator(ck, precision=optimizations, paged=chunked, max_seq_len=_round_up(prefill_len + decode_steps + 1, 128))
    args = gen.args
    pages = None
    if chunked:
        pages = gen.new_page_table()
        pages.reserve(0, args.max_seq_len)
    prompt = tokens[:prefill_len]
    logits, cache = gen.prefill_forward_text(prompt, gen.allocate_kv_cache(), page_table=pages)
    steps = [np.asarray(logits, np.float32)]
    for i in range(decode_steps):
        tok = np.array([tokens[prefill_len + i]], np.int32)
        _, lg, _, cache = gen.decode_forward(tok, np.array([prefill_len + i], np.int32), cache, pages)
        steps.append(np.asarray(lg, np.float32)[0])
    whole = args.replace(paged_attention_config=None)  # each layer's output over the whole prompt, in one prefill
    # get_last_token=0: only the first tile reaches the LM head; the layers' outputs are what this run is for
    hidden = jax.jit(partial(forward, args=whole, mode="prefill", return_hidden=True, get_last_token=0))
    _, _, layers = hidden(gen.params, np.asarray([prompt], np.int32), gen.rot, allocate_kv_cache(whole))
    return np.stack(steps), [np.asarray(h[0], np.float32) for h in layers], weight_nbytes(gen.params)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def score(logits: np.ndarray, reference: np.ndarray, targets: np.ndarray) -> tuple[float, float, float]:
    """(top-1, top-5, perplexity) of logits [n, vocab] against the reference's and the true next tokens."""
    ours = logits.argmax(-1)
    ref_top5 = np.argsort(-reference, axis=-1)[:, :5]
    top1 = float((ours == ref_top5[:, 0]).mean())
    top5 = float((ref_top5 == ours[:, None]).any(-1).mean())
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -logp[np.arange(len(targets)), targets]
    return top1, top5, float(np.exp(nll.mean()))


def evaluate(
    ck: Checkpoint,
    configs=DEFAULT_CONFIGS,
    *,
    prefill_len: int = 512,
    decode_steps: int = 128,
    reference: str = "transformers",
    overrides=(),
    text: str | None = None,
    progress=None,
    reference_model=None,
    reference_spread: bool = False,
) -> dict:
    """The accuracy report (JSON-ready) for each named precision config (reference_model: an already
    loaded transformers model of the same checkpoint; reference_spread: also re-run transformers under the CPU
    kernels other hosts pick, model.tools.reference_spread)."""
    if prefill_len < 1:
        raise SequenceLengthError(f"prefill_len = {prefill_len} must be at least 1 (the prefill predicts the first scored token).")
    if decode_steps < 0:
        raise SequenceLengthError(f"decode_steps = {decode_steps} must be 0 or more.")
    if not configs:
        raise ConfigError("no precision config to evaluate; name at least one.")
    if reference_spread and reference != "transformers":
        raise ConfigError(f"the reference's spread is measured for transformers' reference, not {reference!r}.")
    tokens = ck.require_tokenizer().encode(text or shipped_text())
    need = prefill_len + decode_steps + 1
    if len(tokens) < need:
        raise SequenceLengthError(f"the text has {len(tokens)} tokens; prefill_len + decode_steps + 1 = {need} are needed.")
    if need > ck.args.max_context_len:
        raise SequenceLengthError(f"prefill_len + decode_steps + 1 = {need} is past the model's context of {ck.args.max_context_len}.")
    targets = np.asarray(tokens[prefill_len : prefill_len + decode_steps + 1])
    if reference == "transformers":
        ref = (transformers_reference(ck, tokens, prefill_len, decode_steps, reference_model) if reference_model is not None
               else kept_transformers_reference(ck, tokens, prefill_len, decode_steps))
    elif reference == "float32":
        logits, layers, _ = run_config(ck, ModelOptimizations.float32(), tokens, prefill_len, decode_steps)
        ref = Reference(logits, layers, "ttjax float32")
    else:
        raise ConfigError(f"reference {reference!r} is not 'transformers' or 'float32'.")
    ref_top1, ref_top5, ref_ppl = score(ref.logits, ref.logits, targets)
    margin1, margin5 = margins(ref.logits)
    spread = measure_spread(ck.path, ck.format, tokens, prefill_len, decode_steps, ref.logits) if reference_spread else None
    results = []
    for name in configs:
        opt = ModelOptimizations.named(name, ck.args.model_name)
        for group, setting, layer in overrides:
            opt = opt.override(group, setting, layer)
        t = time.perf_counter()
        logits, layers, nbytes = run_config(ck, opt, tokens, prefill_len, decode_steps)
        top1, top5, ppl = score(logits, ref.logits, targets)
        layer_pcc = [pcc(r, o) for r, o in zip(ref.layer_outputs, layers)]
        results.append(ConfigResult(opt.name, top1, top5, ppl, layer_pcc, nbytes, time.perf_counter() - t, opt.describe()))
        if progress:
            progress(results[-1])
    return {
        "model": ck.args.model_name,
        "text": "A Tale of Two Cities (Dickens, 1859), chapters I-IV" if text is None else "custom",
        "reference": ref.name,
        "prefill_len": prefill_len,
        "decode_steps": decode_steps,
        "reference_perplexity": ref_ppl,
        # the smallest gaps between the reference's 1st and 2nd, and 5th and 6th, logits: how far it may move
        # before a top-1 or top-5 label changes
        "reference_margins": {"top1": margin1, "top5": margin5},
        **({"reference_spread": spread} if spread else {}),
        "configs": [r.__dict__ for r in results],
    }


def format_report(rep: dict, pcc_threshold: float = 0.99) -> str:
    width = max(len("config"), *(len(c["name"]) for c in rep["configs"])) + 2
    lines = [
        f"{rep['model']}: {rep['prefill_len']}-token prefill + {rep['decode_steps']} teacher-forced decode steps on "
        f"{rep['text']}; reference {rep['reference']} (perplexity {rep['reference_perplexity']:.2f})",
        f"{'config':<{width}}{'top-1':>8}{'top-5':>8}{'perplexity':>12}{'weights MB':>12}{'min layer PCC':>15}  first layer < {pcc_threshold}",
    ]
    for c in rep["configs"]:
        below = next((i for i, p in enumerate(c["layer_pcc"]) if p < pcc_threshold), None)
        first = "none" if below is None else "layer {} ({:.5f})".format(below, c["layer_pcc"][below])
        lines.append(
            f"{c['name']:<{width}}{100 * c['top1']:>7.1f}%{100 * c['top5']:>7.1f}%{c['perplexity']:>12.2f}{c['weight_bytes'] / 1e6:>12.1f}"
            f"{min(c['layer_pcc']):>15.5f}  {first}"
        )
    if "reference_spread" in rep:
        lines.append(spread_sentence(rep))
    return "\n".join(lines)


def spread_sentence(rep: dict) -> str:
    """What the reference's spread means for the table, in one sentence (the CLI's report and the docs say it)."""
    sp, m = rep["reference_spread"], rep["reference_margins"]
    kinds = ", ".join(v["name"] for v in sp["variants"])
    same = ("so its top-1 and top-5 labels are the same on every host"
            if sp["top1_same"] and sp["top5_same"] else "which changes some of its labels: top-1 and top-5 against it move with the host")
    lo, hi = sp["perplexity_range"]
    return (f"The reference moves by at most {sp['max_abs_logit_diff']:.1e} in a logit under other CPU kernels ({kinds}); "
            f"its smallest top-1 margin is {m['top1']:.1e} and top-5 margin {m['top5']:.1e}, {same}; "
            f"its perplexity moves within {lo:.6f}..{hi:.6f}.")


def pcc_debug(rep: dict, threshold: float) -> str:
    """Per config, each layer's PCC and the first layer where it drops below threshold."""
    lines = []
    for c in rep["configs"]:
        below = next((i for i, p in enumerate(c["layer_pcc"]) if p < threshold), None)
        head = f"{c['name']}: " + ("every layer >= {:.4f}".format(threshold) if below is None else
                                    f"PCC first drops below {threshold} at layer {below} ({c['layer_pcc'][below]:.6f})")
        lines.append(head)
        lines.append("  " + " ".join(f"{i}:{p:.5f}" for i, p in enumerate(c["layer_pcc"])))
    return "\n".join(lines)
