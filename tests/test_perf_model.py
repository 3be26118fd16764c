"""The device model: `ttjax perf-model` prints a per-op table and tokens/s/user; --compare sets it against every Llama row
of tt_transformers' PERF.md; its collectives move the bytes the compiled programs move (comm-report)."""

import json
from collections import Counter

import pytest

from mesh import MeshDevice
from model.config import named_config
from model.perf_model import decode_layer, mesh_placed, predict
from model.tools.cli import main
from model.tools.comm_report import compiled_program, hlo_collectives
from model.tools.perf_model import published_rows
from ttjax.device_model import SYSTEMS, system


def run_json(capsys, *argv) -> dict:
    assert main(["perf-model", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_perf_model_json_has_the_contracted_keys(capsys):
    rep = run_json(capsys, "--model-name", "Llama-3.1-8B", "--device", "N150", "--mode", "decode", "--batch", "1")
    assert {"model", "device", "mode", "batch", "tokens_per_s_per_user", "ops"} <= set(rep)
    assert (rep["model"], rep["device"], rep["mode"], rep["batch"]) == ("Llama-3.1-8B", "N150", "decode", 1)
    assert {o["bound"] for o in rep["ops"]} <= {"DRAM", "compute", "NoC", "ethernet", "kernel"}
    weights = {o["op"]: o for o in rep["ops"]}
    assert weights["w2"]["bound"] == "DRAM" and weights["w1_w3"]["fidelity"] == "LoFi"  # decode reads weights; bfp4 MLP runs LoFi
    assert 1 / rep["step_s"] == pytest.approx(rep["tokens_per_s_per_user"])


def test_compare_covers_every_llama_row_within_25_percent_median(capsys):
    rep = run_json(capsys, "--compare")
    rows = published_rows()
    assert len(rep["rows"]) == len(rows) >= 24
    assert {(r["model"], r["device"].split()[0]) for r in rep["rows"]} == {(r["model"], r["device"]) for r in rows}
    assert rep["median_abs_error"] <= 0.25
    for r in rep["rows"]:
        assert r["ratio"] == pytest.approx(r["predicted"] / r["published"])


def test_more_devices_read_less_of_the_weights_each():
    args = named_config("Llama-3.1-8B")
    w2 = {d: next(o for o in decode_layer(args, d) if o.name == "w2").dram_bytes for d in ("N150", "N300", "T3K")}
    assert w2["N150"] > w2["N300"] > w2["T3K"]
    assert w2["N150"] / w2["T3K"] == pytest.approx(8, rel=0.1)  # tile padding over the 12 banks aside


def test_prefill_grows_faster_than_its_length():
    """Attention's work grows with the square of the prompt: a prompt 8x longer takes more than 8x the time."""
    short, long = (predict(named_config("Llama-3.1-8B"), "N150", "prefill", seq_len=n) for n in (1024, 8192))
    assert {o["op"]: o["bound"] for o in long["ops"]}["sdpa"] == "compute"
    assert long["prefill_s"] > 8 * short["prefill_s"] > 0


@pytest.mark.parametrize("shape,device", [((1, 2), "N300"), ((1, 8), "T3K"), ((8, 4), "TG")])
def test_the_device_model_and_comm_report_agree_on_every_collectives_bytes(shape, device):
    """The device model prices the collectives of model.collectives; the compiled decode step (comm-report) must move
    exactly those bytes, collective by collective (XLA may merge two of a kind into one: then their sum)."""
    # A batch of 32: the device model counts decode in whole 32-row tiles, the compiled program in users.
    args = named_config("Llama-3.2-1B", n_layers=1, max_seq_len=128)
    placed = mesh_placed(args, system(device), 32, "performance")
    mesh = MeshDevice(shape)
    compiled = [c for c in hlo_collectives(compiled_program(placed, mesh, "decode", batch=32).as_text()) if c.layer == 0]
    modelled = [o for o in decode_layer(args, device, batch=32) if o.bound == "ethernet"]
    ours = sorted((o.name.split(" (")[0], round(o.eth_bytes, 3)) for o in modelled)
    theirs = sorted((c.kind, round(c.moved_bytes, 3)) for c in compiled)
    if Counter(k for k, _ in ours) == Counter(k for k, _ in theirs):
        assert ours == theirs
    else:  # merged by XLA
        for kind in {k for k, _ in ours}:
            assert sum(b for k, b in ours if k == kind) == pytest.approx(sum(b for k, b in theirs if k == kind))


def test_parameters_are_per_device_type():
    assert set(SYSTEMS) == {"N150", "N300", "T3K", "TG"}
    assert {s.chip for s in SYSTEMS.values()} == {SYSTEMS["N150"].chip}  # one Wormhole chip everywhere


@pytest.mark.parametrize("argv,words", [(["--model-name", "GPT-4"], "--model-name 'GPT-4' is not a model ttjax knows; the names (any case): "),
                                        (["--device", "P150"], "invalid choice: 'P150'")])
def test_bad_input_is_one_line(capsys, argv, words):
    with pytest.raises(SystemExit) if "--device" in argv else _no_raise():
        code = main(["perf-model", *argv])
        assert code == 2
    err = capsys.readouterr().err
    assert words in err


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_model_the_chip_would_refuse_is_not_priced(capsys):
    assert main(["perf-model", "--model-name", "Llama-3.1-70B", "--device", "N150"]) == 2
    err = capsys.readouterr().err
    assert "lm_head: Statically allocated circular buffers" in err and err.count("\n") == 1
