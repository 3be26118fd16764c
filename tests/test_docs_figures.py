"""The report's figures come from measurements (docs/figures.py): the measuring half runs here (the plotting half needs
the docs extra, matplotlib, which `make docs` installs)."""

import json
import os

import pytest

from docs import figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_device_model_figure_is_measured_not_typed():
    data = figures.measure_device_model()
    assert data["date"] and data["machine"] and len(data["rows"]) >= 24
    assert all({"model", "device", "predicted", "published", "ratio"} <= set(r) for r in data["rows"])


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_every_committed_figure_has_its_data_and_caption_facts(name):
    with open(os.path.join(ROOT, "docs", "data", f"{name}.json")) as f:
        data = json.load(f)
    assert data["date"] and data["machine"]
    assert os.path.getsize(os.path.join(ROOT, "docs", "figures", f"{name}.png")) > 10_000


def test_an_unknown_figure_is_one_line(capsys):
    assert figures.main(["nope"]) == 2
    assert "no figure 'nope'" in capsys.readouterr().err


def test_every_pitfall_of_the_table_is_raised_as_the_table_says():
    from docs import pitfalls

    table = pitfalls.rows()
    assert len(table) == len(pitfalls.PITFALLS) >= 10
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
