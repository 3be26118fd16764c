"""`ttjax bench --profile DIR`: a jax.profiler trace of ttjax serving one request per user (the prompt's prefill,
then a few decode steps), and tables of the ops that took the time.

The trace is written as jax.profiler writes it, under DIR/plugins/profile/<run>/: the XPlane file TensorBoard
reads, and perfetto_trace.json.gz, which ui.perfetto.dev opens. The tables are read from the Perfetto trace:
every event XLA:CPU's thunk executor records for an HLO op, at its self time (less the ops nested in it, as a
while loop's body is), summed per op of each program. Each op is named with where it came from, read from the
compiled program: the JAX op_name in its metadata and the weight it reads ([layers_3.feed_forward_w1], a params
argument among its operands). The first table is the top ops by total time, the second the same time grouped by
weight across layers (an op that reads no weight, by its kind: fusion, copy, while...). Both are printed and
written to DIR/ops.txt.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import defaultdict
from pathlib import Path

from model.serving.engine import Engine, Request

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+) = ")
_OP_NAME = re.compile(r"metadata=\{[^}]*op_name=\"([^\"]+)\"")
_WEIGHT = re.compile(r"%params_([\w\-]+?)(?:\.\d+)?[,)]")


def profile_serving(gen, prompt, batch: int, steps: int, folder: str | Path, top: int = 25) -> dict:
    """Trace one request per user (its prefill, then `steps` decode steps) after an untimed run. Returns {"trace":
    the Perfetto file, "ops": the top ops, "groups": time by weight, "table": both tables as text}; writes
    DIR/ops.txt."""
    import jax

    folder = Path(folder)
    engine = Engine(gen)
    engine.warm_up([prompt], sampled=False)
    engine.run([Request(prompt, 2, stop_at_eos=False) for _ in range(batch)])
    with jax.profiler.trace(str(folder), create_perfetto_trace=True):
        engine.run([Request(prompt, steps + 1, stop_at_eos=False) for _ in range(batch)])
    trace = max(folder.glob("plugins/profile/*/perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    rows = op_rows(trace, scopes(gen.programs.values()))
    groups = op_groups(rows)
    title = f"ttjax ops, batch {batch}: the prefill of a {len(prompt)}-token prompt per user, then decode to {steps + 1} new tokens"
    table = format_ops(rows[:top], title) + "\n\n" + format_groups(groups[:top])
    (folder / "ops.txt").write_text(table + "\n")
    return {"trace": str(trace), "ops": rows[:top], "groups": groups[:top], "table": table}


def scopes(programs) -> dict:
    """{(HLO module, op): where it came from} over compiled programs: its JAX op_name and the weight it reads."""
    names = {}
    for program in programs:
        text = program.as_text()
        module = re.match(r"HloModule (\S+?),", text)
        for line in text.splitlines() if module else ():
            m = _INSTRUCTION.match(line)
            if not m or (module.group(1), m.group(1)) in names:
                continue
            op_name, weight = _OP_NAME.search(line), _WEIGHT.search(line)
            parts = [op_name.group(1) if op_name else "", f"[{weight.group(1).replace('__', '.')}]" if weight else ""]
            if any(parts):
                names[(module.group(1), m.group(1))] = " ".join(p for p in parts if p)
    return names


def op_rows(trace_path, names=None) -> list[dict]:
    """Every op of a Perfetto trace, most total self time first: {"program", "op", "scope", "calls", "total_ms",
    "share" (of all op time in the trace), "mean_us"}."""
    with gzip.open(trace_path, "rt") as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X" and "hlo_op" in e.get("args", {})]
    self_us = [float(e["dur"]) for e in events]
    by_thread = defaultdict(list)
    for i, e in enumerate(events):
        by_thread[e.get("tid")].append(i)
    for ids in by_thread.values():  # an op nested in another on its thread is not the outer op's own time
        stack = []
        for i in sorted(ids, key=lambda i: (events[i]["ts"], -events[i]["dur"])):
            while stack and events[stack[-1]]["ts"] + events[stack[-1]]["dur"] <= events[i]["ts"]:
                stack.pop()
            if stack:
                self_us[stack[-1]] -= events[i]["dur"]
            stack.append(i)
    totals, calls = defaultdict(float), defaultdict(int)
    for e, us in zip(events, self_us):
        key = (e["args"].get("hlo_module", "?"), e["args"]["hlo_op"])
        totals[key] += us
        calls[key] += 1
    whole = sum(totals.values()) or 1.0
    names = names or {}
    return [
        {"program": m, "op": op, "scope": names.get((m, op), ""), "calls": calls[(m, op)], "total_ms": us / 1e3,
         "share": us / whole, "mean_us": us / calls[(m, op)]}
        for (m, op), us in sorted(totals.items(), key=lambda kv: -kv[1])
    ]


def op_groups(rows: list[dict]) -> list[dict]:
    """The op rows summed per program and weight across layers ("feed_forward_w1"), or per op kind for ops that
    read no weight ("fusion", "copy"): {"program", "group", "ops", "calls", "total_ms", "share"}."""
    sums = defaultdict(lambda: {"ops": 0, "calls": 0, "total_ms": 0.0, "share": 0.0})
    for r in rows:
        weight = re.search(r"\[([^\]]+)\]", r["scope"])
        group = re.sub(r"^layers_\d+\.|_\d+_$", "", weight.group(1)) if weight else re.sub(r"\.\d+$", "", r["op"])
        s = sums[(r["program"], group)]
        s["ops"] += 1
        s["calls"] += r["calls"]
        s["total_ms"] += r["total_ms"]
        s["share"] += r["share"]
    return [{"program": p, "group": g, **s} for (p, g), s in sorted(sums.items(), key=lambda kv: -kv[1]["total_ms"])]


def format_ops(rows: list[dict], title: str) -> str:
    lines = [title, f"{'program':14s}{'op':30s}{'calls':>7s}{'total ms':>10s}{'share':>8s}{'mean us':>10s}  from"]
    for r in rows:
        lines.append(f"{r['program']:14s}{r['op']:30s}{r['calls']:7d}{r['total_ms']:10.2f}{100 * r['share']:7.1f}%"
                     f"{r['mean_us']:10.1f}  {r['scope']}")
    return "\n".join(lines)


def format_groups(groups: list[dict]) -> str:
    lines = ["time by weight read (summed over layers), or by op kind",
             f"{'program':14s}{'weight or op kind':30s}{'ops':>7s}{'calls':>7s}{'total ms':>10s}{'share':>8s}"]
    for g in groups:
        lines.append(f"{g['program']:14s}{g['group']:30s}{g['ops']:7d}{g['calls']:7d}{g['total_ms']:10.2f}{100 * g['share']:7.1f}%")
    return "\n".join(lines)
