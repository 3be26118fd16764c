"""A sweep of every subcommand and flag of `ttjax` with bad values (wrong types, out of range, paths that are not
what they should be, empty strings), generated from the parser itself: no case may end in a traceback. A value is
either refused (exit status 2 and one line on stderr) or accepted; an accepted one stops where the command would
start its real work (loading a model, compiling, serving, starting processes), which the sweep replaces with a
marker, so that the sweep takes seconds."""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools

import pytest

from model.tools import cli


class WouldRun(Exception):
    """The command got past its checks and would now do its work."""


def _stop(*args, **kwargs):
    raise WouldRun()


# The minimum each subcommand needs besides the flag under test (its required arguments).
BASE = {"generate": ["--prompt-ids", "1,2"], "comm-report": ["--mesh", "1x2"], "launch": ["--num-processes", "2", "--", "precision"]}


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    (root / "text.txt").write_text("not a model, not a prompt file\n")
    (root / "folder").mkdir()
    return {"missing": str(root / "missing" / "x.gguf"), "text": str(root / "text.txt"), "folder": str(root / "folder")}


def _values(action: argparse.Action, paths) -> list[str]:
    if action.choices:
        return ["nonsense", ""]
    t = action.type
    if t is cli.positive_int or getattr(t, "__name__", "") == "positive_int":
        return ["0", "-3", "x", "2.5", "99999999999"]
    if t is int:
        return ["x", "-7", "99999999999"]
    if t is float:
        return ["x", "nan", "-1", "inf"]
    return ["", " ", "-1", "0", paths["missing"], paths["text"], paths["folder"], "1,2,,x", "99999999999x1"]


def _cases(paths):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if not action.option_strings or action.nargs == 0 or isinstance(action, argparse._HelpAction):
                continue
            flag = action.option_strings[0]
            for value in _values(action, paths):
                yield name, [flag, value]


def _argv(name: str, extra: list[str]) -> list[str]:
    if name == "launch":  # launch's own flags come before `--` and the command it launches
        return [name, *BASE["launch"][:2], *extra, *BASE["launch"][2:]]
    return [name, *BASE.get(name, []), *extra]


def _run(argv) -> tuple[str, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse's refusal
            code = e.code
        except WouldRun:
            return "accepted", err.getvalue()
    return ("refused" if code == 2 else f"exit {code}"), err.getvalue()


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    """Every place a command starts its real work, replaced by a marker."""
    import model.checkpoint as checkpoint
    import model.serving.build as build
    import model.tools.accuracy as accuracy
    import model.tools.bench as bench
    import model.tools.comm_report as comm_report
    import model.tools.launch as launch

    for module, name in ((build, "build_generator"), (checkpoint, "load_checkpoint"), (accuracy, "evaluate"),
                         (bench, "call_worker"), (comm_report, "comm_report"), (launch, "Member")):
        monkeypatch.setattr(module, name, _stop)
    monkeypatch.setenv("TTJAX_COMPILE_CACHE", "0")
    # `--compile-cache VALUE` turns jax's persistent cache on in this process: a relative VALUE would land in the
    # checkout and every later test in this worker would write its programs there. Keep both in a temporary folder.
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    from model.serving import executables

    monkeypatch.chdir(tmp_path)
    saved = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                                                  "jax_persistent_cache_min_entry_size_bytes")}
    yield
    for k, v in saved.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()  # jax opened the cache once; forget it so the restored folder (none) holds
    executables.enable(None)


def test_no_bad_value_of_any_flag_reaches_the_user_as_a_traceback(stubbed, paths):
    """No bad value of any flag ends in a traceback, and each refusal names the flag the user typed."""
    cases = list(_cases(paths))
    assert len(cases) > 300
    broken = []
    for name, extra in cases:
        argv = _argv(name, extra)
        try:
            outcome, err = _run(argv)
        except Exception as e:  # what a user would have seen as a traceback
            broken.append(f"{' '.join(argv)}: {type(e).__name__}: {e}")
            continue
        if outcome == "refused":
            lines = [line for line in err.strip().splitlines() if line]
            if "Traceback" in err or not lines or "error:" not in lines[-1]:
                broken.append(f"{' '.join(argv)}: refused without one clear line: {err[-300:]!r}")
            elif extra[0] not in lines[-1]:  # argparse's "argument --flag: ..." or ttjax's own sentence
                broken.append(f"{' '.join(argv)}: refused without naming {extra[0]}: {lines[-1]!r}")
    assert not broken, f"{len(broken)} of {len(cases)} cases:\n" + "\n".join(broken[:30])


# Flags that do not go together: each refused with one sentence (or, where both are meaningful, accepted).
COMBINATIONS = [
    ["generate", "--prompt", "hi", "--prompt-ids", "1"],
    ["generate", "--prompt-ids", "1", "--chat"],
    ["generate", "--prompt-ids", "1", "--model-name", "Llama-3.2-1B", "--model", "x.gguf"],
    ["generate", "--prompt-ids", "1", "--dtype", "bfloat16", "--precision", "accuracy"],
    ["generate", "--prompt-ids", "1", "--ccl", "all_reduce"],
    ["generate", "--prompt-ids", "1", "--override", "FF1_FF3=bfloat16"],
    ["bench", "--peers", "transformers", "--no-peers"],
    ["serve", "--kv-blocks", "4"],
    ["accuracy", "--reference", "float32", "--reference-spread"],
    ["comm-report", "--mesh", "1x2", "--mode", "prefill", "--batch", "64"],
]


@pytest.mark.parametrize("argv", COMBINATIONS, ids=[" ".join(a) for a in COMBINATIONS])
def test_combinations(stubbed, argv):
    outcome, err = _run(argv)
    assert outcome in ("refused", "accepted", "exit 0"), (outcome, err)
    if outcome == "refused":
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(("ttjax", "usage")) or "error:" in err, err


def test_the_sweep_covers_every_subcommand():
    names = set(itertools.chain.from_iterable([[n] for n, _ in _cases({"missing": "m", "text": "t", "folder": "f"})]))
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert names == set(sub.choices)
