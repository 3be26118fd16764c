"""The report's figures come from measurements (docs/figures.py): the measuring half runs here where it is quick (the
device model), every committed figure has its data with the command, date and machine its caption names, and the
plotting half runs on that data when matplotlib (the docs extra, which `make docs` installs) is there."""

import json
import os

import pytest

from docs import figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_device_model_figure_is_measured_not_typed():
    data = figures.measure_device_model()
    assert data["date"] and data["machine"] and data["command"] and len(data["rows"]) >= 24
    assert all({"model", "device", "predicted", "published", "ratio"} <= set(r) for r in data["rows"])


@pytest.mark.parametrize("name", list(figures.MEASUREMENTS))
def test_every_measurement_is_committed_with_its_provenance(name):
    data = figures.load(name)
    assert data["date"] and data["machine"] and data["command"]
    for fig in figures.MEASUREMENTS[name][1]:
        assert os.path.getsize(os.path.join(ROOT, "docs", "figures", f"{fig}.png")) > 10_000


@pytest.mark.parametrize("fig", list(figures.FIGURES))
def test_every_figure_plots_from_its_committed_data(fig, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    name = figures.FIGURES[fig]
    figures.MEASUREMENTS[name][1][fig](figures.load(name), str(tmp_path / f"{fig}.png"))
    assert (tmp_path / f"{fig}.png").stat().st_size > 10_000


def test_the_accuracy_and_speed_data_cover_every_config_the_figures_name():
    acc = {c["name"] for c in figures.load("accuracy")["configs"]}
    assert acc == set(figures.ACCURACY_CONFIGS)
    bench = figures.load("bench")
    ttjax_rows = {(r["precision"], r["batch"]) for r in bench["runs"] if r["engine"] == "ttjax"}
    assert ttjax_rows == {(p, b) for p in figures.BENCH_PRECISIONS for b in figures.BENCH_BATCHES}
    assert any(r["engine"] == "transformers" for r in bench["runs"])


def test_an_unknown_measurement_is_one_line(capsys):
    assert figures.main(["nope"]) == 2
    assert "no measurement 'nope'" in capsys.readouterr().err


def test_every_pitfall_of_the_table_is_raised_as_the_table_says():
    from docs import pitfalls

    table = pitfalls.rows()
    assert len(table) == len(pitfalls.PITFALLS) >= 11
    for row in table:
        assert row["error"] is not None, f"{row['pitfall']}: its trigger no longer raises"
        assert row["message"] and "\n" not in row["message"]
    ours = [r for r in table if r["error"] != "ConcretizationTypeError"]  # that one is JAX's own refusal
    import ttjax

    assert all(issubclass(getattr(ttjax, r["error"], None) or _kind(r["error"]), ttjax.TTJaxError) for r in ours)
    assert pitfalls.markdown(table).count("\n") == len(table) + 1


def _kind(name):
    import model.errors

    return getattr(model.errors, name)
