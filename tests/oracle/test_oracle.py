"""The oracle tier: every ttnn name ttjax mirrors, called on both sides over generated cases, must agree with ttnn
0.81.1 itself (run in .venv-ttnn under a mock Wormhole n150, through a subprocess): the same values, the same
accept/reject. Tensor files move both ways: ttnn's .tensorbin read by ttjax and ttjax's read by ttnn, bit for bit.

Where no Python 3.12 / 3.10 (or no .venv-ttnn) is found, the tier is skipped with one line saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.oracle import cases as oracle_cases
from tests.oracle import ttjax_side, ttnn_env

HERE = Path(__file__).resolve().parent
SUMMARY = ttnn_env.ROOT / ".pytest_cache" / "ttnn_oracle.txt"


def _input(case) -> np.ndarray:
    rng = np.random.default_rng(case["seed"])
    shape, kind = case["shape"], case["kind"]
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "wide":  # each block spans many binades: codes shifted far right, ties
        x *= np.exp2(rng.integers(-20, 20, shape)).astype(np.float32)
    elif kind == "tiny":  # near the bottom of float32, subnormals among them
        x *= np.float32(1e-38)
    elif kind == "special":
        flat = x.reshape(-1)
        specials = np.array([0.0, -0.0, 1e-45, -1e-40, 65504.0, 3.0e38, -3.0e38, 1.0 + 2**-8, 1.0 + 3 * 2**-9, np.inf,
                             -np.inf], np.float32)
        flat[: min(flat.size, specials.size)] = specials[: flat.size]
    return x


def _write_summary(text: str) -> None:
    SUMMARY.parent.mkdir(exist_ok=True)
    SUMMARY.write_text(text)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    why = ttnn_env.ready()
    if why:
        _write_summary(why)
        pytest.skip(why)
    work = tmp_path_factory.mktemp("oracle")
    cases = oracle_cases.all_cases()
    for i, case in enumerate(cases):
        if case["fn"] == "tensor":
            files = {k: str(work / f"{i}_{k}{ext}") for k, ext in (("npy", ".npy"), ("ttnn_file", "_ttnn.tensorbin"),
                                                                   ("ttjax_file", "_ttjax.tensorbin"), ("ttnn_values", ".npy"),
                                                                   ("loaded_values", ".npy"))}
            case.update(files)
            np.save(case["npy"], _input(case))
    # ttnn's tensors first (ttjax reads its files), then ttjax's calls (which write the files ttnn then reads)
    ttnn_cases = [c for c in cases if c["fn"] == "tensor"]
    first = _ttnn(work, "tensors", [{**c, "fn": "tensor_dump"} for c in ttnn_cases])
    ours = [ttjax_side.result(c) for c in cases]
    theirs = _ttnn(work, "all", cases)
    for c, r in zip(ttnn_cases, first):
        assert "error" not in r, f"ttnn could not build its side of tensor case {c}: {r['error']}"
    counts = Counter(c["fn"] for c in cases)
    _write_summary(f"ttnn oracle tier: {len(cases)} cases against ttnn {ttnn_env.VERSION} ("
                   + ", ".join(f"{name} {n}" for name, n in counts.items()) + ")")
    return cases, ours, theirs


def _ttnn(work: Path, tag: str, cases: list[dict]) -> list[dict]:
    cases_path, results_path = work / f"{tag}_cases.json", work / f"{tag}_results.json"
    cases_path.write_text(json.dumps(cases))
    env = {**os.environ, "TT_METAL_MOCK_CLUSTER_DESC_PATH": str(ttnn_env.DESCRIPTOR), "TT_LOGGER_LEVEL": "FATAL",
           "TTNN_CONFIG_OVERRIDES": json.dumps({"enable_logging": False})}
    env.pop("XLA_FLAGS", None)
    run = subprocess.run([str(ttnn_env.PYTHON), str(HERE / "ttnn_side.py"), str(cases_path), str(results_path)],
                         capture_output=True, text=True, env=env, timeout=900, cwd=work)
    assert run.returncode == 0, f"ttnn's side failed:\n{run.stderr[-3000:]}"
    return json.loads(results_path.read_text())


def _disagreements(cases, ours, theirs, name):
    bad = []
    for case, mine, ref in zip(cases, ours, theirs):
        if case["fn"] != name:
            continue
        if ("error" in mine) != ("error" in ref):
            bad.append((case, mine, ref))
        elif "error" not in mine and mine["ok"] != ref["ok"]:
            bad.append((case, mine, ref))
    return bad


NON_TENSOR = [n for n in oracle_cases.NAMES if n != "tensor"]
SAME_WORDS = ("tensor_spec",)


@pytest.mark.parametrize("name", NON_TENSOR)
def test_ttjax_agrees_with_ttnn(oracle, name):
    cases, ours, theirs = oracle
    n = sum(c["fn"] == name for c in cases)
    bad = _disagreements(cases, ours, theirs, name)
    shown = "\n".join(f"  {c}\n    ttjax: {m}\n    ttnn:  {r}" for c, m, r in bad[:6])
    assert not bad, f"{name}: {len(bad)} of {n} cases disagree with ttnn:\n{shown}"
    for case, mine, ref in zip(cases, ours, theirs):  # ttjax's refusals are sentences that name something
        if case["fn"] == name and "error" in mine:
            assert len(mine["error"]) > 10, (case, mine)
            if name in SAME_WORDS:  # where ttjax mirrors ttnn's own check, it says what ttnn says
                # (ttnn names BFLOAT8_B for a bfloat4_b tensor too; ttjax names the tensor's own format)
                words = ref["error"].rstrip("!. ").replace("BFLOAT8_B", case.get("dtype", "").upper())
                assert words in mine["error"], (case, mine, ref)


def _bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


def _data(path: str) -> bytes:
    blob = Path(path).read_bytes()
    header = int.from_bytes(blob[:8], "little")
    return blob[8 + header:]


def test_tensorbin_both_ways(oracle):
    cases, ours, theirs = oracle
    n = 0
    for case, mine, ref in zip(cases, ours, theirs):
        if case["fn"] != "tensor":
            continue
        n += 1
        what = f"{case['dtype']} {case['layout']} {case['shape']} ({case['kind']})"
        assert "error" not in mine and "error" not in ref, (what, mine.get("error"), ref.get("error"))
        mine, ref = mine["ok"], ref["ok"]
        # the same bytes: ttnn's packer and ttjax's, tile by tile (header fields compared as decoded values)
        assert _data(case["ttnn_file"]) == _data(case["ttjax_file"]), f"{what}: tensor bytes differ"
        assert (mine["shape"], mine["dtype"], mine["layout"]) == (ref["shape"], ref["dtype"], ref["layout"]), what
        assert ref["loaded"] == {"shape": ref["shape"], "dtype": ref["dtype"], "layout": ref["layout"]}, what
        assert mine["padded_shape"] == ref["padded_shape"], what
        # ttnn's file read by ttjax gives ttnn's values; ttjax's file read by ttnn gives ttjax's
        np.testing.assert_array_equal(_bits(mine["values"]), _bits(np.load(case["ttnn_values"])), err_msg=what)
        np.testing.assert_array_equal(_bits(np.load(case["loaded_values"])), _bits(mine["own_values"]), err_msg=what)
    assert n > 30
