"""`ttjax bench`: one small run on the shipped model against transformers (and llama.cpp when installed) gives the
documented JSON, whose medians are the medians of its runs and whose ratios are the quotients of the medians; bad
input is one sentence; the op table reads self times out of a Perfetto trace. No timing is asserted."""

import contextlib
import copy
import gzip
import io
import json
import re
import statistics

import pytest

from model.tools import bench, peers, profiling
from model.tools.cli import main

SMALL = ["bench", "--batch", "1", "--prefill-lengths", "40", "--runs", "2", "--new-tokens", "3", "--max-seq-len", "64",
         "--bandwidth-mib", "16"]
ROW_KEYS = {"engine", "version", "precision", "batch", "decode_tokens_per_s", "decode_tokens_per_s_runs", "prefill_tokens_per_s",
            "prefill_tokens_per_s_runs", "ttft_s", "ttft_s_runs", "compile_s", "prefill_compile_s", "peak_rss_mb",
            "weight_bytes_per_token", "roofline_tokens_per_s", "roofline_fraction", "first_tokens"}


# Each engine's first worker result in the module's bench run, replayed by tests that need a run but not its cost.
RAW = {}


@pytest.fixture(scope="module")
def report():
    out, real = io.StringIO(), bench.call_worker

    def recording(spec, what):
        result = real(spec, what)
        RAW.setdefault(spec["engine"], copy.deepcopy(result))
        return result

    bench.call_worker = recording
    try:
        with contextlib.redirect_stdout(out):
            assert main([*SMALL, "--json", "--no-compile-cache"]) == 0  # the default peers: transformers, llama.cpp if installed
    finally:
        bench.call_worker = real
    return json.loads(out.getvalue())


def test_the_json_has_the_documented_shape(report):
    assert set(report) == {"date", "wall_s", "command", "machine", "model", "settings", "runs", "ratios", "notes", "profile"}
    assert set(report["machine"]) == {"cpu", "cores", "memory_gb", "read_gb_s", "read_gb_s_runs", "read_method"}
    assert report["machine"]["read_gb_s"] > 0 and "GEMV" in report["machine"]["read_method"]
    assert report["command"].startswith("ttjax bench ") and "--batch 1 " in report["command"]
    assert report["settings"]["prompt_tokens"] == 5 and report["profile"] is None
    engines = [r["engine"] for r in report["runs"]]
    llama = peers.installed("llama.cpp")
    assert engines == ["ttjax", "transformers"] + (["llama.cpp"] if llama else [])
    assert llama or report["notes"] == ["llama.cpp: not installed (make peers)"]
    for row in report["runs"]:
        assert set(row) == ROW_KEYS
        assert row["batch"] == 1 and list(row["prefill_tokens_per_s"]) == ["40"]
        for key in ("decode_tokens_per_s", "ttft_s", "peak_rss_mb", "weight_bytes_per_token", "roofline_tokens_per_s", "roofline_fraction"):
            assert row[key] > 0, (row["engine"], key)
        assert len(row["decode_tokens_per_s_runs"]) == len(row["ttft_s_runs"]) == 2
        assert row["decode_tokens_per_s"] == statistics.median(row["decode_tokens_per_s_runs"])
        assert row["ttft_s"] == statistics.median(row["ttft_s_runs"])
        assert row["prefill_tokens_per_s"]["40"] == statistics.median(row["prefill_tokens_per_s_runs"]["40"]) > 0
        assert len(row["first_tokens"]) == 3
    ours, torch_row = report["runs"][:2]
    assert ours["compile_s"] > 0 and torch_row["compile_s"] is None
    # float32 weights, the tied LM head read once: both read the same 538 MB a token; both decode the same tokens
    assert ours["weight_bytes_per_token"] == torch_row["weight_bytes_per_token"] == 538_060_032
    assert ours["first_tokens"] == torch_row["first_tokens"]


def test_ratios_are_the_quotients_of_the_medians(report):
    ours = report["runs"][0]
    by_engine = {r["engine"]: r for r in report["runs"]}
    assert [q["peer"] for q in report["ratios"]] == [e for e in by_engine if e != "ttjax"]
    for q in report["ratios"]:
        peer = by_engine[q["peer"]]
        assert (q["precision"], q["batch"]) == ("float32", 1)
        for key in ("decode_tokens_per_s", "ttft_s", "peak_rss_mb"):
            assert q[key] == pytest.approx(ours[key] / peer[key], rel=1e-12)
        assert q["prefill_tokens_per_s"]["40"] == pytest.approx(ours["prefill_tokens_per_s"]["40"] / peer["prefill_tokens_per_s"]["40"], rel=1e-12)


def test_the_tables_print_the_command_the_date_and_every_row(report):
    text = bench.format_report(report)
    lines = text.splitlines()
    assert re.fullmatch(r"## ttjax bench, \d{4}-\d\d-\d\d \d\d:\d\d UTC", lines[0])
    assert f"`{report['command']}`" in lines[2]
    rows = [line for line in lines if line.startswith("| ttjax |") or line.startswith("| transformers |")]
    assert len(rows) == 2 and all(row.count("|") == 12 for row in rows)  # 11 columns: one prefill length
    assert "| float32 | transformers | float32 | 1 |" in text


BAD = [
    (["--batch", "0"], r"--batch '0' holds '0'; each must be an integer of at least 1\."),
    (["--batch", "1,x"], r"--batch '1,x' holds 'x'"),
    (["--prefill-lengths", "abc"], r"--prefill-lengths 'abc' holds 'abc'; each must be an integer of at least 1 \(or --prefill-lengths none"),
    (["--prefill-lengths", "9000"], r"--prefill-lengths 9000 is past the model's context of 8192 tokens\."),
    (["--precision", "float64"], r"precision config 'float64' is not one of float32, bfloat16, accuracy, performance"),
    (["--precision", "float32,,bfloat16"], r"--precision 'float32,,bfloat16' must name each precision config once"),
    (["--peers", "vllm"], r"--peers names 'vllm', not one of transformers, llama\.cpp\."),
    (["--new-tokens", "1"], r"--new-tokens 1 leaves no decode step to time; ask for at least 2\."),
    (["--max-seq-len", "100000"], r"--max-seq-len 100000 is past the model's trained context of 8192 tokens"),
    (["--model-name", "Llama-3.2-1B", "--model", "x.gguf"], r"--model x\.gguf and --model-name Llama-3\.2-1B each name the model; give one\."),
    (["--model-name", "Llama-9B"], r"--model-name 'Llama-9B' is not a model ttjax knows"),
    (["--model-name", "Llama-3.2-1B", "--gguf-formats", "Q8_0,Q5_K"], r"--gguf-formats 'Q5_K' is not a GGUF format ttjax writes; one of Q8_0, Q4_0, F16, F32\."),
    (["--model-name", "Llama-3.2-1B", "--gguf-formats", "Q8_0,q8_0"], r"--gguf-formats 'Q8_0,q8_0' must name each format once"),
    (["--model-name", "Llama-3.2-1B", "--n-layers", "17"], r"--n-layers 17 is past Llama-3\.2-1B's 16 layers\."),
    (["--n-layers", "2"], r"--n-layers goes with --model-name"),
]


def test_a_model_too_big_for_the_machine_in_every_precision_asked_is_refused(capsys, monkeypatch):
    """Before writing any file: Llama-3.1-8B in float32 alone cannot run here (32 GB), and the bench says so."""
    monkeypatch.setattr(bench, "physical_memory", lambda: 25e9)
    assert main(["bench", "--no-peers", "--model-name", "Llama-3.1-8B", "--precision", "float32,bfloat16"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"ttjax: error: --precision float32,bfloat16: Llama-3\.1-8B's 8\.\d G weights take more than this "
                        r"machine's 25 GB in each; choose bfloat8_b, bfloat4_b, performance or accuracy\.", err), err


def test_a_peer_asked_for_by_name_must_be_installed(capsys, monkeypatch):
    monkeypatch.setattr(peers, "installed", lambda peer: peer != "llama.cpp")  # as on a machine without `make peers`
    assert main(["bench", "--peers", "llama.cpp"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ttjax: error: --peers llama.cpp: llama.cpp is not installed (make peers).", err


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_sentence(argv, message, capsys):
    assert main(["bench", "--no-peers", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ttjax: error: "), err
    assert re.search(message, err[0]), err[0]


def test_a_worker_refusing_its_input_is_the_same_sentence(capsys):
    """The prompt's length is known only where the tokenizer is loaded: the ttjax process refuses, the bench says so."""
    argv = [*SMALL, "--no-peers", "--prefill-lengths", "none", "--max-seq-len", "8", "--prompt", "one two three four five six seven"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"ttjax: error: .*--prompt \(7 tokens\) plus --new-tokens 3 is 10 tokens, more than --max-seq-len 8\.", err), err


def test_the_op_table_counts_self_time_and_groups_by_weight(tmp_path):
    def op(name, ts, dur, tid=1):
        return {"ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "name": name,
                "args": {"hlo_module": "jit_decode", "hlo_op": name}}

    events = [op("while.3", 0, 100), op("dot.1", 10, 30), op("dot.2", 50, 40), op("dot.1", 200, 30), op("fusion.7", 0, 20, tid=2),
              {"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 500, "name": "PjitFunction(decode)"}]
    path = tmp_path / "perfetto_trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    names = {("jit_decode", "dot.1"): "jit(decode)/layer_0/dot_general [layers_0.feed_forward_w1]",
             ("jit_decode", "dot.2"): "[layers_1.feed_forward_w1]"}
    rows = profiling.op_rows(path, names)
    assert [(r["op"], r["calls"], r["total_ms"]) for r in rows] == [("dot.1", 2, 0.06), ("dot.2", 1, 0.04), ("while.3", 1, 0.03),
                                                                     ("fusion.7", 1, 0.02)]
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    groups = profiling.op_groups(rows)
    assert [(g["group"], g["ops"], g["calls"]) for g in groups] == [("feed_forward_w1", 2, 3), ("while", 1, 1), ("fusion", 1, 1)]
    assert groups[0]["total_ms"] == pytest.approx(0.1)
    table = profiling.format_ops(rows, "title")
    assert table.splitlines()[2].startswith("jit_decode    dot.1") and "[layers_0.feed_forward_w1]" in table


def test_a_crashed_peer_is_a_line_of_the_report(report, monkeypatch, capsys):
    """llama-cpp-python built with AMX died in ggml_backend_amx_mul_mat on an Intel Xeon: a peer's crash is a note,
    the ttjax rows stay. (ttjax's and the bandwidth's results replayed from the module's run.)"""

    def crash_transformers(spec, what):
        if spec["engine"] == "transformers":
            raise bench.WorkerCrash(what, -11, "loading\nSegmentation fault in ggml_backend_amx_mul_mat\n")
        return copy.deepcopy(RAW[spec["engine"]])

    monkeypatch.setattr(bench, "call_worker", crash_transformers)
    capsys.readouterr()
    assert main([*SMALL, "--peers", "transformers", "--json", "--no-compile-cache"]) == 0
    crashed = json.loads(capsys.readouterr().out)
    assert [r["engine"] for r in crashed["runs"]] == ["ttjax"]
    assert crashed["runs"][0]["decode_tokens_per_s"] == report["runs"][0]["decode_tokens_per_s"]
    assert crashed["notes"] == ["transformers: batch 1 was killed by signal 11; its rows are missing "
                                "(Segmentation fault in ggml_backend_amx_mul_mat)"]


def test_a_worker_that_dies_is_described():
    with pytest.raises(bench.WorkerCrash) as e:
        bench.call_worker({"engine": "no-such-engine"}, "a broken run")
    assert e.value.how == "exited with status 1 and no result" and e.value.last_line, e.value.stderr
