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
