"""The accuracy harness: teacher-forced top-1 / top-5, perplexity and per-layer PCC against transformers."""


import numpy as np
import pytest

from model.tools.accuracy import evaluate, format_report, pcc_debug, score, shipped_text
from ttjax import TTJaxError


def test_score():
    ref = np.array([[0.0, 5, 4, 3, 2, 1, -1], [9, 0, 0, 0, 0, 0, 8]])
    ours = np.array([[0.0, 1, 5, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]])  # argmax 2 (in ref top-5), 6 (ref top-2)
    top1, top5, ppl = score(ours, ref, np.array([2, 6]))
    assert (top1, top5) == (0.0, 1.0)
    probs = np.exp(ours) / np.exp(ours).sum(-1, keepdims=True)
    assert ppl == pytest.approx(np.exp(-np.log([probs[0, 2], probs[1, 6]]).mean()))


@pytest.fixture(scope="module")
def report(ckpt, hf_model):
    return evaluate(ckpt, ["float32", "performance"], prefill_len=128, decode_steps=12, reference_model=hf_model)


def test_float32_agrees_with_transformers(report):
    f32 = report["configs"][0]
    assert f32["top1"] == 1.0 and f32["top5"] == 1.0
    assert f32["perplexity"] == pytest.approx(report["reference_perplexity"], rel=1e-3)
    assert min(f32["layer_pcc"]) >= 0.9999


def test_performance_config_is_measured(report):
    perf = report["configs"][1]
    assert perf["name"] == "performance" and perf["groups"]["FF1_FF3"] == "bfloat4_b"
    assert 0.5 <= perf["top5"] <= 1.0 and np.isfinite(perf["perplexity"])
    assert len(perf["layer_pcc"]) == 30 and min(perf["layer_pcc"]) > 0.9
    assert perf["weight_bytes"] < 0.35 * report["configs"][0]["weight_bytes"]


def test_reports_and_pcc_debugger(report):
    table = format_report(report)
    assert "top-1" in table and "performance" in table
    debug = pcc_debug(report, threshold=0.999999)
    assert "performance: PCC first drops below 0.999999 at layer" in debug


def test_text_too_short(ckpt):
    assert "best of times" in shipped_text()
    with pytest.raises(TTJaxError, match="prefill_len \\+ decode_steps \\+ 1 = 9001 is past the model's context of 8192"):
        evaluate(ckpt, ["float32"], prefill_len=8000, decode_steps=1000)


def test_reference_margins():
    from model.tools.reference_spread import margins

    logits = np.array([[9.0, 7, 6, 5, 4, 3.5, 0], [1, 2, 3, 4, 5, 6, 7]])
    assert margins(logits) == (1.0, 0.5)


def test_reference_spread_reruns_the_reference_in_a_fresh_process(ckpt, hf_model, monkeypatch):
    from model.tools import reference_spread
    from model.tools.reference import transformers_reference

    monkeypatch.setattr(reference_spread, "VARIANTS", (("one thread", {"TTJAX_REFERENCE_THREADS": "1"}),))
    tokens = ckpt.require_tokenizer().encode(shipped_text())
    ref = transformers_reference(ckpt, tokens, 32, 4, hf_model)
    spread = reference_spread.measure(ckpt.path, ckpt.format, tokens, 32, 4, ref.logits)
    (run,) = spread["variants"]
    assert run["name"] == "one thread" and run["max_abs_logit_diff"] == spread["max_abs_logit_diff"] < 1e-3
    assert spread["top1_same"] and spread["min_top1_margin"] > 0
    lo, hi = spread["perplexity_range"]
    assert lo <= run["perplexity"] <= hi and hi / lo < 1 + 1e-5


def test_reference_spread_needs_the_transformers_reference(capsys):
    from model.tools.cli import main

    assert main(["accuracy", "--reference", "float32", "--reference-spread"]) == 2
    assert "--reference-spread measures transformers' reference" in capsys.readouterr().err


def test_the_reference_is_kept_and_read_back(ckpt, hf_model, tmp_path, monkeypatch):
    """`ttjax accuracy` keeps transformers' reference beside its compile cache: the same checkpoint, tokens and
    lengths read it back (the same bits, transformers not loaded); other lengths, or a damaged file, compute afresh."""
    from model.tools import reference

    loads = []
    monkeypatch.setattr(reference, "load_reference_model", lambda path, fmt: loads.append(path) or hf_model)
    monkeypatch.setattr(reference, "_folder", None)
    reference.enable(tmp_path / "references")
    tokens = ckpt.require_tokenizer().encode(shipped_text())
    first = reference.kept_transformers_reference(ckpt, tokens, 24, 2)
    again = reference.kept_transformers_reference(ckpt, tokens, 24, 2)
    assert len(loads) == 1 and again.name == first.name and len(again.layer_outputs) == len(first.layer_outputs) == 30
    assert np.array_equal(again.logits, first.logits) and all(np.array_equal(a, b) for a, b in zip(again.layer_outputs, first.layer_outputs))
    longer = reference.kept_transformers_reference(ckpt, tokens, 25, 2)
    assert len(loads) == 2 and longer.layer_outputs[0].shape[0] == 25
    def rows(path):
        with np.load(path) as f:
            return f["layer_0"].shape[0]

    (kept,) = [p for p in (tmp_path / "references").iterdir() if rows(p) == 24]
    kept.write_bytes(b"not an npz")
    damaged = reference.kept_transformers_reference(ckpt, tokens, 24, 2)
    assert len(loads) == 3 and np.array_equal(damaged.logits, first.logits)
    reference.enable(None)
