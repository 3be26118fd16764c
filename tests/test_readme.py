"""The README's examples, run as a reader runs them: each command of its fenced shell blocks typed into a shell (a
subprocess, from the repository's root, with the venv's `ttjax` on PATH) and each fenced Python block saved and run
as a script. Where a command would take minutes, or needs what a test machine does not have (a second host, port
8000), it runs in a short form listed in SHORT_FORMS with the reason; everything else runs exactly as written. A
block that is neither (a table, a listing, shown output) must not look like a command, and the error transcript
must print the errors it shows.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.tools.launch import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COMMANDS = ("make", "ttjax", "python")  # what a shell example starts with, after VAR=value assignments
HOST = "host0:5701"  # the README's process-0 address in the across-machines examples
TWO = "--model {two}"  # the shipped model cut to its first 2 layers (checkpoint_writers.first_layers_gguf)

# README command (comments dropped) -> (what runs instead, why). Everything not listed runs as written. Most short
# forms run the same command on the shipped model's first two layers: the same files, vocabulary, formats and code
# paths, compiled in seconds instead of a minute.
SHORT_FORMS = {
    "make demo": ("make -n demo", "make demo is python demos/demo.py, which runs below"),
    "make test": ("make -n test", "the suite this test is part of"),
    "make docs": ("make -n docs", "about 40 minutes of measurements"),
    "ttjax accuracy --json": (f"ttjax accuracy --json --configs float32,performance {TWO} --prefill-len 16 --decode-steps 1",
                              "six configs over 512 + 128 tokens take about 9 minutes"),
    "ttjax accuracy --configs performance --fidelity off": (
        f"ttjax accuracy --configs performance --fidelity off {TWO} --prefill-len 16 --decode-steps 1", "minutes"),
    "ttjax accuracy --configs performance --override FF1_FF3=bfloat8_b --override layers.29.FF2=bfloat16": (
        f"ttjax accuracy --configs performance --override FF1_FF3=bfloat8_b --override layers.1.FF2=bfloat16 {TWO} "
        "--prefill-len 16 --decode-steps 1", "minutes; layer 29 is layer 1 of two"),
    "ttjax accuracy --configs performance,performance+FF1_FF3=bfloat8_b": (
        f"ttjax accuracy --configs performance,performance+FF1_FF3=bfloat8_b {TWO} --prefill-len 16 --decode-steps 1", "minutes"),
    "ttjax accuracy --configs performance --debug-pcc --pcc-threshold 0.99": (
        f"ttjax accuracy --configs performance --debug-pcc --pcc-threshold 0.99 {TWO} --prefill-len 16 --decode-steps 1",
        "minutes"),
    "ttjax generate --prompt 'The capital of France is' --mesh 1x8": (
        f"ttjax generate --prompt 'The capital of France is' --mesh 1x8 {TWO}", "half a minute of compiling"),
    "ttjax generate --prompt 'The capital of France is' --precision performance": (
        f"ttjax generate --prompt 'The capital of France is' --precision performance {TWO}", "a minute of compiling"),
    "python demos/demo.py --mesh 2x4": (f"python demos/demo.py --mesh 2x4 {TWO} --max-new-tokens 8", "half a minute"),
    "python demos/demo.py --input my_prompts.json --batch-size 32 --max-new-tokens 128 --temperature 0.7 --top-p 0.9 "
    "--seed 1 --mesh 1x8 --paged": (
        "python demos/demo.py --input my_prompts.json --batch-size 32 --max-new-tokens 16 --temperature 0.7 --top-p 0.9 "
        f"--seed 1 --mesh 1x8 --paged {TWO}", "a minute: 128 tokens of two layers, which never stop before their length"),
    "ttjax launch --num-processes 2 -- generate --mesh 2x4 --prompt 'The capital of France is' --json": (
        f"ttjax launch --num-processes 2 -- generate --mesh 2x4 --prompt 'The capital of France is' --json {TWO}",
        "half a minute"),
    "ttjax launch --num-processes 2 -- python demos/demo.py --mesh 2x4": (
        f"ttjax launch --num-processes 2 -- python demos/demo.py --mesh 2x4 {TWO} --max-new-tokens 8", "a minute"),
}


@dataclass
class Block:
    line: int  # of the opening fence
    lang: str
    text: str

    @property
    def commands(self) -> list[tuple[int, str]]:
        """(line, command) for each logical line: continuations joined, comments and shell prompts dropped."""
        out, pending, start = [], "", 0
        for i, raw in enumerate(self.text.splitlines(), self.line + 1):
            if not pending:
                start = i
            pending += raw.rstrip("\\").rstrip() + " " if raw.endswith("\\") else raw
            if raw.endswith("\\"):
                continue
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # not shell (a table's apostrophe)
                words = pending.split()
            pending = ""
            if words and re.fullmatch(r"(host\d+)?\$", words[0]):
                words = words[1:]
            if words:
                out.append((start, shlex.join(words)))
        return out


def fenced_blocks() -> list[Block]:
    blocks, lines, at = [], README.read_text().splitlines(), None
    for i, line in enumerate(lines, 1):
        if line.startswith("```"):
            if at is None:
                at, lang, body = i, line[3:].strip(), []
            else:
                blocks.append(Block(at, lang, "\n".join(body)))
                at = None
        elif at is not None:
            body.append(line)
    assert at is None, f"README.md line {at}: a fence that is never closed"
    return blocks


def is_command(command: str) -> bool:
    words = command.split()
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]
    return bool(words) and words[0] in COMMANDS


def kind(block: Block) -> str:
    if block.lang == "python":
        return "python"
    if any(line.startswith("$ ") for line in block.text.splitlines()):
        return "transcript"
    commands = [c for _, c in block.commands]
    if commands and all(is_command(c) for c in commands):
        return "shell"
    assert block.lang == "" and not any(is_command(c) for c in commands), \
        f"README.md line {block.line}: a block with some commands and some not"
    return "output"


BLOCKS = fenced_blocks()
SHELL = [(line, c) for b in BLOCKS if kind(b) == "shell" for line, c in b.commands]


def env_for(tmp_path) -> dict:
    # The compile cache on, as a user has it, in a folder this run's tests share (later commands reuse what earlier
    # ones compiled, as a user's do; the user's own cache is left alone); the venv's ttjax first on PATH.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "TTJAX_COMPILE_CACHE": "1",
            "TTJAX_CACHE_DIR": str(tmp_path.parent / "readme-cache")}


def split(command: str) -> tuple[dict, list[str]]:
    """A shell line's VAR=value assignments and its argv (python: this venv's)."""
    words, assigned = shlex.split(command), {}
    while re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        name, value = words.pop(0).split("=", 1)
        assigned[name] = value
    if words[0] == "python":
        words[0] = sys.executable
    return assigned, words


def run(command: str, env: dict, **kw) -> subprocess.CompletedProcess:
    assigned, argv = split(command)
    return subprocess.run(argv, cwd=ROOT, env={**env, **assigned}, capture_output=True, text=True, timeout=900, **kw)


@pytest.fixture(scope="session")
def two(first_two_layers) -> str:
    return first_two_layers


def test_every_block_is_recognised_and_every_short_form_is_still_in_the_readme():
    kinds = {b.line: kind(b) for b in BLOCKS}
    assert set(kinds.values()) == {"shell", "python", "transcript", "output"}, kinds
    written = {c for _, c in SHELL}
    assert not set(SHORT_FORMS) - written, f"short forms for commands the README no longer has: {set(SHORT_FORMS) - written}"


# The examples that need more than one command: the across-hosts pair, the scheduler's form, the server and its client.
TOGETHER = ("--coordinator host0:5701", "JAX_COORDINATOR_ADDRESS=", "ttjax serve")


@pytest.mark.parametrize("line,command", [(n, c) for n, c in SHELL if not any(t in c for t in TOGETHER)],
                         ids=[f"L{n}" for n, c in SHELL if not any(t in c for t in TOGETHER)])
def test_each_shell_command_runs(line, command, two, tmp_path):
    command = SHORT_FORMS.get(command, (command, ""))[0].replace("{two}", two)
    if "my_prompts.json" in command:  # the reader's own prompt file, in the demo's input format
        (tmp_path / "my_prompts.json").write_text('[{"prompt": "What is 2 + 2?"}, {"prompt": "Name a color.", "max_length": 16}]')
        command = command.replace("my_prompts.json", str(tmp_path / "my_prompts.json"))
    done = run(command, env_for(tmp_path), input="What is the capital of France?\n\n")  # the chat demo's one turn
    assert done.returncode == 0, f"README.md line {line}: {command}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    if command.startswith("ttjax generate") and "--json" in command:  # the keys the README's comment shows
        assert {"text", "tokens", "prefill_s", "decode_tokens_per_s"} <= set(json.loads(done.stdout.splitlines()[-1]))
    if command.startswith("ttjax accuracy") and "--json" in command:
        rep = json.loads(done.stdout)
        assert [c["name"] for c in rep["configs"]] == ["float32", "performance"]
        assert all({"top1", "top5", "perplexity", "layer_pcc", "groups"} <= set(c) for c in rep["configs"])
    if "--override layers.1.FF2=bfloat16" in command:
        assert "performance+FF1_FF3=bfloat8_b+layers.1.FF2=bfloat16" in done.stdout, done.stdout
    if command == "python demos/chat.py":
        assert done.stdout.startswith("you> bot> ") and "Paris" in done.stdout, done.stdout


def _lines(*needles):
    found = [(n, c) for n, c in SHELL if any(x in c for x in needles)]
    assert found, needles
    return found


def test_the_across_hosts_and_scheduler_examples_run_together(two, tmp_path):
    """Each host's line, started side by side with 127.0.0.1 for host0; the scheduler's line (process 1, from the
    environment) beside process 0 in the same form. On the first two layers (see SHORT_FORMS)."""
    env = env_for(tmp_path)
    host_lines = [c for _, c in _lines("--coordinator host0:5701")]
    (sched,) = [c for _, c in _lines("JAX_COORDINATOR_ADDRESS=")]
    sched_twin = sched.replace("JAX_PROCESS_ID=1", "JAX_PROCESS_ID=0")
    assert sched_twin != sched
    for pair in (host_lines, [sched_twin, sched]):
        address = f"127.0.0.1:{free_port()}"
        procs = []
        for c in pair:
            assigned, argv = split(c.replace(HOST, address) + f" --model {two}")
            procs.append(subprocess.Popen(argv, cwd=ROOT, env={**env, **assigned}, text=True, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))
        try:
            outs = [p.communicate(timeout=600) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for c, p, (out, err) in zip(pair, procs, outs):
            assert p.returncode == 0, f"{c}\n{err[-3000:]}"
        assert outs[0][0].strip() and not outs[1][0].strip()  # only process 0 prints


def test_the_server_examples_answer_the_readmes_client(two, tmp_path):
    """Both `ttjax serve` lines start and serve the README's openai client: the first on a free port (8000 may be
    taken here), the second as written; each on the first two layers, in a file of the shipped model's name (the name
    the client asks for), which stands for the second's path/to/model.gguf."""
    pytest.importorskip("openai")
    (client,) = [b.text for b in BLOCKS if kind(b) == "python" and "from openai import OpenAI" in b.text]
    plain, full = (c for _, c in _lines("ttjax serve"))
    plain += f" --port {free_port()} --model {two}"
    full = full.replace("path/to/model.gguf", two)
    for command in (plain, full):
        proc = subprocess.Popen(split(command)[1], cwd=ROOT, env=env_for(tmp_path), stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()
            url = re.search(r"on (http://\S+)/v1", line)
            assert url, f"{command}\n{line}{proc.stderr.read() if proc.poll() is not None else ''}"
            script = tmp_path / "client.py"
            script.write_text(client.replace("http://127.0.0.1:8000", url.group(1)))
            done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
            assert done.returncode == 0 and done.stdout.strip(), f"{command}\n{done.stderr[-3000:]}"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0


@pytest.mark.parametrize("block", [b for b in BLOCKS if kind(b) == "python" and "from openai" not in b.text],
                         ids=lambda b: f"L{b.line}")
def test_each_python_example_runs_as_a_script(block, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(block.text + "\n")
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env_for(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"README.md line {block.line}\n{done.stderr[-3000:]}"


def test_the_error_transcript_prints_the_errors_it_shows(tmp_path):
    """Each `$ command` line of the transcript, then the line it shows on stderr; the demo's prompts.json is a file
    with its error (a missing comma before line 3)."""
    (transcript,) = [b for b in BLOCKS if kind(b) == "transcript"]
    lines = transcript.text.splitlines()
    (tmp_path / "prompts.json").write_text('[{"prompt": "a"}\n,{"prompt": "b"}\n{"prompt": "c"}]')
    for i, line in enumerate(lines):
        if not line.startswith("$ "):
            continue
        command = line[2:].replace("prompts.json", str(tmp_path / "prompts.json"))
        done = run(command, env_for(tmp_path))
        shown = lines[i + 1].replace("prompts.json", str(tmp_path / "prompts.json"))
        assert done.returncode == 2 and done.stderr.strip() == shown, (line, done.stderr)
