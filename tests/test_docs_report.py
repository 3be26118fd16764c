"""docs/llms.md, the tech report: its snippets run, it is what the template and the committed measurements make (so
no figure in it was typed by hand or left behind by a change), and it has every section of the report's outline."""

import os
import re

import pytest

from docs import build, figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", build.snippet_names())
def test_every_snippet_runs(name):
    done = build.run_snippet(name)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()


def _template() -> str:
    with open(build.TEMPLATE) as f:
        return f.read()


def test_the_report_is_what_the_template_and_the_measurements_make():
    with open(build.REPORT) as f:
        committed = f.read()
    made = build.render(_template(), build.load_data())
    assert "{{" not in made
    assert made == committed, "docs/llms.md differs from what docs/build.py makes: run `python docs/build.py`"


def _sections(text: str) -> list[tuple[int, str, str]]:
    """(level, heading, the text under it up to the next heading), for the numbered headings."""
    parts = re.split(r"^(#{2,5}) (.+)$", text, flags=re.M)
    out = []
    for i in range(1, len(parts), 3):
        if re.match(r"\d", parts[i + 1]):
            out.append((len(parts[i]), parts[i + 1].strip(), parts[i + 2]))
    return out


def test_every_section_of_the_outline_is_there_in_order_with_content():
    with open(build.REPORT) as f:
        sections = _sections(f.read())
    assert [(level, heading) for level, heading, _ in sections] == build.OUTLINE
    for level, heading, body in sections:
        nested = any(h.startswith(heading.split(" ")[0].rstrip(".") + ".") for _, h in build.OUTLINE if h != heading)
        words = len(re.findall(r"[A-Za-z]{2,}", body))
        assert words >= (10 if nested else 60), f"section {heading} has {words} words"


def test_every_figure_and_snippet_is_in_the_report_and_every_link_resolves():
    text = _template()
    for kind in ("figure", "snippet", "table"):  # blocks stand as paragraphs of their own, never inside a sentence
        for line in text.splitlines():
            if "{{" + kind + ":" in line:
                assert re.fullmatch(r"\{\{" + kind + r":[^}]+\}\}", line.strip()), line
    used = set(re.findall(r"\{\{(figure|snippet):([^}]+)\}\}", text))
    assert {n for kind, n in used if kind == "figure"} == set(figures.FIGURES)
    assert {n for kind, n in used if kind == "snippet"} == set(build.snippet_names())
    with open(build.REPORT) as f:
        report = f.read()
    anchors = {build.anchor(h) for _, h in build.OUTLINE} | {"contents"}
    for target in re.findall(r"\]\(#([^)]+)\)", report):
        assert target in anchors, target
    for png in re.findall(r"\]\((figures/[^)]+\.png)\)", report):
        assert os.path.exists(os.path.join(ROOT, "docs", png))


def test_the_readme_links_the_report():
    with open(os.path.join(ROOT, "README.md")) as f:
        assert "(docs/llms.md)" in f.read()


def test_an_unknown_placeholder_is_refused():
    data = build.load_data()
    for bad in ("{{value:acc.top1.nope}}", "{{figure:nope}}", "{{table:nope}}", "{{section:9.9}}", "{{snippet:nope}}"):
        with pytest.raises(SystemExit):
            build.render(bad, data)


def test_an_unknown_argument_is_one_line(capsys):
    assert build.main(["--snippets"]) == 2
    assert "unknown argument '--snippets'" in capsys.readouterr().err
