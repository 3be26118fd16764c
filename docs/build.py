"""docs/llms.md, the ttjax tech report, made from docs/llms.template.md and the measurements (`make docs`).

The template is the prose. Everything measured enters through a placeholder, so no figure in the report is typed by
hand:
  {{figure:NAME}}   docs/figures/NAME.png (docs/figures.py) with its caption: the command, date and machine of its data
  {{snippet:NAME}}  docs/snippets/NAME.py verbatim, and what it printed when last run (docs/data/snippets.json)
  {{table:NAME}}    a table made from docs/data, or the pitfalls, triggered as the report is made (docs/pitfalls.py)
  {{value:KEY}}     one number from docs/data (values() lists the keys)
  {{figref:NAME}}   a mention of a figure shown elsewhere: "the NAME figure of section N", linked
  {{section:N}}     a link to section N of the outline
  {{generated}}     where the report says how it was made

    python docs/build.py                  # render docs/llms.md from the template and docs/data
    python docs/build.py --run-snippets   # run every snippet first and keep what it prints
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from docs import figures, pitfalls  # noqa: E402

TEMPLATE = os.path.join(HERE, "llms.template.md")
REPORT = os.path.join(HERE, "llms.md")
SNIPPETS = os.path.join(HERE, "snippets")
SNIPPET_DATA = os.path.join(HERE, "data", "snippets.json")

# The outline of "LLMs in TT-NN" (the seed's contents, with 2.8 Model from its body): every heading the report has,
# in order, with its level.
OUTLINE = [
    (2, "1. Overview"), (2, "2. Modules"), (3, "2.1 Embedding"), (3, "2.2 RoPE"), (3, "2.3 Norm"), (3, "2.4 Attention"),
    (3, "2.5 MLP"), (3, "2.6 Decoder"), (3, "2.7 LM Head"), (3, "2.8 Model"), (2, "3. Features"),
    (3, "3.1 Generative Decoding"), (3, "3.2 Prefill and Decode"), (3, "3.3 Multi-Device"), (3, "3.4 Continuous Batching"),
    (3, "3.5 vLLM Integration"), (2, "4. Best Practices and Optimizations"), (3, "4.1 Tracing"), (3, "4.2 Async Mode"),
    (3, "4.3 Multiple CQs"), (3, "4.4 Op Configs"), (3, "4.5 Accuracy"), (3, "4.6 Performance Analysis"),
    (3, "4.7 Misc. Performance Optimizations"), (3, "4.8 Module Tests"), (3, "4.9 Performance Testing"),
    (3, "4.10 Common Pitfalls"), (4, "4.10.1 Error Messages"), (4, "4.10.2 Shard Spec Mismatches"),
    (4, "4.10.3 Ethernet Dispatch Cores"), (4, "4.10.4 Hangs"), (5, "4.10.4.1 Host Communication"),
    (5, "4.10.4.2 Tracing"), (5, "4.10.4.3 Large Matmuls"),
]

CAPTIONS = {
    "device_model": "The device model's decode speed against tt_transformers' published speeds (PERF.md, batch 1), "
                    "one point per model and system.",
    "collective_bytes": "Bytes a device sends per token in one decoder layer of Llama-3.1-8B, by collective, for each "
                        "mesh shape, read from the compiled program.",
    "accuracy": "Top-1, top-5 and perplexity per precision config against transformers in float32; hatched: the same "
                "formats with exact float matmuls; dotted: with exact SFPU functions.",
    "layer_pcc": "How far each decoder layer's output is from transformers' (1 - PCC), for the performance config, the "
                 "same with exact matmuls, and the accuracy, bfloat16, bfloat8_b and bfloat4_b configs.",
    "batch_scaling": "Decode tokens/s (all users together) against the batch, ttjax's configs and its peers on the same "
                     "weights and token ids (llama.cpp on the GGUF's own Q4_1 weights against Q8_0 activations).",
    "roofline": "Batch-1 decode against its memory roofline: the machine's measured read bandwidth over the bytes of "
                "weights a step reads.",
    "fidelity_cost": "What emulating the matrix engine costs on a CPU: each device config with its fidelity phases and "
                     "Dst rounding computed, and with exact float matmuls.",
    "trace": "The same decode step traced (output read asynchronously or synchronously) and run op by op.",
}


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens and spaces dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def section_link(number: str) -> str:
    heading = next((h for _, h in OUTLINE if h.split(" ", 1)[0].rstrip(".") == number), None)
    if heading is None:
        raise SystemExit(f"build.py: no section {number} in the outline.")
    return f"[section {number}](#{anchor(heading)})"


# -- snippets ------------------------------------------------------------------------------------------------------------
def snippet_names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(SNIPPETS) if f.endswith(".py"))


def run_snippet(name: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """One snippet in a process of its own, from the checkout's root, as a reader would run it."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, os.path.join(SNIPPETS, f"{name}.py")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_snippets() -> dict:
    out = {}
    for name in snippet_names():
        t = time.perf_counter()
        done = run_snippet(name)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"build.py: docs/snippets/{name}.py failed with status {done.returncode}.")
        out[name] = {**figures.stamp(), "seconds": round(time.perf_counter() - t, 1), "output": done.stdout.rstrip("\n")}
        print(f"docs/snippets/{name}.py: {out[name]['seconds']} s", file=sys.stderr)
    with open(SNIPPET_DATA, "w") as f:
        json.dump(out, f, indent=1)
    return out


# -- the measurements ----------------------------------------------------------------------------------------------------
def load_data() -> dict:
    data = {name: figures.load(name) for name in figures.MEASUREMENTS}
    with open(SNIPPET_DATA) as f:
        data["snippets"] = json.load(f)
    return data


def pct(x: float, digits: int = 1) -> str:
    return f"{x * 100:.{digits}f}%"


def change(x: float) -> str:
    """A relative change, signed, with no "-0.0%"."""
    return f"{x:+.1%}".replace("-0.0%", "+0.0%")


def values(data: dict) -> dict[str, str]:
    """Every {{value:KEY}} the template may use."""
    from ttjax.wormhole import WORMHOLE_B0

    v = {"wh.dram_sharded": f"{WORMHOLE_B0.dram_sharded_bandwidth / 1e9:.0f} GB/s",
         "wh.dram_interleaved": f"{WORMHOLE_B0.dram_interleaved_bandwidth / 1e9:.0f} GB/s"}
    dm = data["device_model"]
    v["dm.median_error"] = pct(dm["median_abs_error"])
    v["dm.rows"] = str(len(dm["rows"]))
    from model.tools.perf_model import published_rows
    from ttjax.device_model import system

    unfitted = [abs(1 / (1 / r["predicted"] - system(r["priced_as"]).host_step_s) / r["published"] - 1) for r in dm["rows"]]
    v["dm.median_error_unfitted"] = pct(statistics.median(unfitted))
    v["dm.host_step"] = f"{system('N150').host_step_s * 1e3:.1f} ms"
    for row in published_rows():  # PERF.md's top-1 / top-5, performance mode, from the copy perf-model compares with
        if row["top1"] is not None:
            v[f"tt.top1.{row['model']}.{row['device']}"], v[f"tt.top5.{row['model']}.{row['device']}"] = f"{row['top1']}%", f"{row['top5']}%"
    acc = data["accuracy"]
    v["acc.setup"] = (f"{acc['prefill_len']} tokens prefilled and {acc['decode_steps']} decoded teacher-forced from "
                      f"{acc['text'].split(' (')[0]}")
    for c in acc["configs"]:
        n = c["name"]
        v[f"acc.top1.{n}"], v[f"acc.top5.{n}"] = pct(c["top1"]), pct(c["top5"])
        v[f"acc.ppl.{n}"] = f"{c['perplexity']:.2f}"
        v[f"acc.min_pcc.{n}"] = f"{min(c['layer_pcc']):.5f}"
        v[f"acc.min_pcc_layer.{n}"] = str(c["layer_pcc"].index(min(c["layer_pcc"])))
        rises = [b - a for a, b in zip(c["layer_pcc"], c["layer_pcc"][1:])]
        v[f"acc.jump_layer.{n}"] = str(rises.index(max(rises)) + 1)  # the layer whose PCC rises most over the one before
    if "reference_spread" in acc:  # how far the reference moves on other hosts' CPU kernels (model.tools.reference_spread)
        from model.tools.accuracy import spread_sentence

        v["acc.reference_spread"] = spread_sentence(acc)
    configs = {c["name"]: c for c in acc["configs"]}
    for n, on in configs.items():  # what emulating each half of a Tensix moves a preset by, against it done exactly
        for half, suffix in (("sfpu", "+sfpu=off"), ("fpu", "+fidelity=off")):
            if n + suffix in configs:
                off = configs[n + suffix]
                v[f"acc.{half}_cost.{n}"] = (f"{100 * (on['top1'] - off['top1']):+.1f} points of top-1, "
                                             f"{100 * (on['top5'] - off['top5']):+.1f} of top-5 and "
                                             f"{change(on['perplexity'] / off['perplexity'] - 1)} of perplexity")
    bench = data["bench"]
    for r in bench["runs"]:
        key = r["precision"] if r["engine"] == "ttjax" else r["engine"]
        v[f"bench.tps.{key}.b{r['batch']}"] = f"{r['decode_tokens_per_s']:.1f}"
        if r.get("roofline_fraction"):
            v[f"bench.roof.{key}.b{r['batch']}"] = pct(r["roofline_fraction"], 0)
    for r in bench["ratios"]:
        v[f"bench.vs.{r['precision']}.{r['peer']}.b{r['batch']}"] = f"{r['decode_tokens_per_s']:.2f}x"
    ref = acc["reference_perplexity"]
    for step in PCC_STEPS:  # what the configs whose worst layer reaches a PCC kept, at the least
        held = [c for c in decoder_points(acc) if min(c["layer_pcc"]) >= step]
        if not held:
            v[f"pcc.at.{step}"] = "nothing: no config here reached it"
        else:
            top5 = min(c["top5"] for c in held)
            v[f"pcc.at.{step}"] = (f"top-1 of at least {pct(min(c['top1'] for c in held))}, "
                                   + ("every top-5" if top5 == 1.0 else f"top-5 of at least {pct(top5)}")
                                   + f" and perplexity within {change(max(c['perplexity'] for c in held) / ref - 1)} of the reference")
    rows = {r["name"]: r for r in data["trace"]["rows"]}
    sync, asyn = rows["traced, sync output"], rows["traced, async output"]
    spread = lambda r: f"{min(r['ms_per_step_runs']):.1f}-{max(r['ms_per_step_runs']):.1f}"  # noqa: E731
    v["trace.async_gain"] = (f"{sync['ms_per_step'] / asyn['ms_per_step']:.2f}x (medians {asyn['ms_per_step']:.1f} against "
                             f"{sync['ms_per_step']:.1f} ms a step; runs {spread(asyn)} against {spread(sync)} ms)")
    overlap = min(asyn["ms_per_step_runs"]) <= max(sync["ms_per_step_runs"]) and min(sync["ms_per_step_runs"]) <= max(asyn["ms_per_step_runs"])
    v["trace.async_verdict"] = ("the two are within each other's run-to-run spread" if overlap else
                                "the asynchronous read is " + ("faster" if asyn["ms_per_step"] < sync["ms_per_step"] else "slower"))
    out = data["outliers"]
    shares = [r["top3_share"] for r in out["layers"]]
    # the first layer where three channels carry most of the sum of squares (or, for a model without such outliers,
    # the layer where they carry the most)
    first = next((i for i, share in enumerate(shares) if share >= 0.9), shares.index(max(shares)))
    v["out.first_layer"] = str(first)
    v["out.share"] = pct(out["layers"][first]["top3_share"], 0)
    v["out.ratio"] = f"{out['layers'][first]['max_abs'] / out['layers'][first]['median_abs']:,.0f}"
    return v


# -- tables --------------------------------------------------------------------------------------------------------------
def table_pitfalls(data: dict) -> str:
    return pitfalls.markdown(pitfalls.rows())


def table_precision(data: dict) -> str:
    from model.precision import ModelOptimizations
    from model.tools.precision_table import op_table

    modes = {m: op_table(ModelOptimizations.named(m, "Llama-3.1-8B")) for m in ("accuracy", "performance")}
    lines = ["| op | accuracy: weight / output / setting | performance: weight / output / setting | emulated | SFPU functions |",
             "|---|---|---|---|---|"]
    for a, p in zip(modes["accuracy"], modes["performance"]):
        cell = lambda r: f"{r['weight']} / {r['output']} / {r['setting']}"  # noqa: E731
        both = lambda k: a.get(k, "-") if a.get(k) == p.get(k) else f"accuracy: {a.get(k, '-')}; performance: {p.get(k, '-')}"  # noqa: E731
        lines.append(f"| {a['op']} | {cell(a)} | {cell(p)} | {both('emulated')} | {both('sfpu')} |")
    lines.append("\n`lofi` is LoFi with a BF16 Dst, `hifi2fp16` HiFi2 with a BF16 Dst, `hifi2` and `hifi4` with an FP32 Dst "
                 "(`ttjax precision --model-name Llama-3.1-8B --mode accuracy`); emulated names the halves of a Tensix "
                 "ttjax computes as the chip does for the op: fpu, the matrix engine's fidelity and Dst; sfpu, the SFPU "
                 "functions beside it, as tt-llk's kernels compute them.")
    return "\n".join(lines)


def table_accuracy(data: dict) -> str:
    acc = data["accuracy"]
    ref = acc["reference_perplexity"]
    lines = [f"| config | top-1 | top-5 | perplexity (reference {ref:.2f}) | worst layer PCC (layer) | weights MB |",
             "|---|---|---|---|---|---|"]
    for c in acc["configs"]:
        worst = min(c["layer_pcc"])
        lines.append(f"| {c['name']} | {pct(c['top1'])} | {pct(c['top5'])} | {c['perplexity']:.2f} "
                     f"({change(c['perplexity'] / ref - 1)}) | {worst:.5f} ({c['layer_pcc'].index(worst)}) | {c['weight_bytes'] / 1e6:.1f} |")
    return "\n".join(lines)


PCC_STEPS = (0.9999, 0.999, 0.998, 0.99, 0.98, 0.95)


def decoder_points(acc: dict) -> list[dict]:
    """The configs that are points of the rule "worst decoder layer PCC -> what the model keeps": all but those that
    change only the LM head, whose decoder layers are their base config's (the report shows them apart)."""
    return [c for c in acc["configs"] if "+LM_HEAD=" not in c["name"]]


def table_pcc_rules(data: dict) -> str:
    """For each PCC step: of the configs whose worst layer reaches it, the worst top-1, top-5 and perplexity. Read from
    the accuracy measurement, so the rules move when the measurements do."""
    acc = data["accuracy"]
    ref = acc["reference_perplexity"]
    configs = sorted(decoder_points(acc), key=lambda c: -min(c["layer_pcc"]))
    lines = ["| worst layer PCC at least | configs first reaching it | top-1 at least | top-5 at least | "
             "perplexity at most |", "|---|---|---|---|---|"]
    bands = [(f"{step}", [c for c in configs if min(c["layer_pcc"]) >= step]) for step in PCC_STEPS]
    bands.append((f"below {PCC_STEPS[-1]}", configs))
    seen: list[str] = []
    for label, held in bands:
        new = [c["name"] for c in held if c["name"] not in seen]
        if not new:  # nothing new reaches this step: the row above says it all
            continue
        seen += new
        lines.append(f"| {label} | {', '.join(new)} | {pct(min(c['top1'] for c in held))} | {pct(min(c['top5'] for c in held))} "
                     f"| {change(max(c['perplexity'] for c in held) / ref - 1)} of the reference |")
    return "\n".join(lines)


def table_collective_bytes(data: dict) -> str:
    cb = data["collective_bytes"]
    kinds = sorted({k for r in cb["rows"] for k in r["bytes_per_token_by_kind"]})
    lines = ["| mesh | " + " | ".join(f"{k} B/token" for k in kinds) + " | total B/token |", "|---" * (len(kinds) + 2) + "|"]
    for r in cb["rows"]:
        per = [f"{r['bytes_per_token_by_kind'].get(k, 0):,.0f}" for k in kinds]
        lines.append(f"| {r['mesh']} | " + " | ".join(per) + f" | {r['bytes_per_token']:,.0f} |")
    return "\n".join(lines)


TABLES = {"pitfalls": table_pitfalls, "precision": table_precision, "accuracy": table_accuracy,
          "pcc_rules": table_pcc_rules, "collective_bytes": table_collective_bytes}


# -- rendering -----------------------------------------------------------------------------------------------------------
def figure_block(name: str, data: dict) -> str:
    if name not in figures.FIGURES:
        raise SystemExit(f"build.py: no figure {name!r}; the figures are {', '.join(figures.FIGURES)}.")
    d = data[figures.FIGURES[name]]
    return (f"![{CAPTIONS[name]}](figures/{name}.png)\n\n*{CAPTIONS[name]} Measured by `{d['command']}` on {d['date']}, "
            f"{figures.machine_text(d)}.*")


def snippet_block(name: str, data: dict) -> str:
    path = os.path.join(SNIPPETS, f"{name}.py")
    if not os.path.exists(path) or name not in data["snippets"]:
        raise SystemExit(f"build.py: no snippet {name!r} (docs/snippets/{name}.py, run with --run-snippets).")
    with open(path) as f:
        code = f.read().rstrip("\n")
    run = data["snippets"][name]
    return (f"```python\n# docs/snippets/{name}.py\n{code}\n```\n\nIt printed ({run['date']}, {run['machine']}, "
            f"{run['seconds']} s):\n\n```\n{run['output']}\n```")


def generated(data: dict) -> str:
    dates = sorted({d["date"] for name, d in data.items() if name != "snippets"})
    return (f"*Made by `make docs` (docs/figures.py, then docs/build.py) from docs/llms.template.md and the measurements "
            f"in docs/data, taken {dates[0]} to {dates[-1]}; edit the template, not this file.*")


def figure_sections(template: str) -> dict[str, str]:
    """Which section each {{figure:NAME}} stands in, for {{figref:NAME}}."""
    out, section = {}, None
    for line in template.splitlines():
        m = re.match(r"#{2,5} (\d[\d.]*)", line)
        if m:
            section = m.group(1).rstrip(".")
        for name in re.findall(r"\{\{figure:([^}]+)\}\}", line):
            out[name] = section
    return out


def render(template: str, data: dict) -> str:
    vals = values(data)
    where = figure_sections(template)

    def sub(m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "figure":
            return figure_block(arg, data)
        if kind == "snippet":
            return snippet_block(arg, data)
        if kind == "table":
            if arg not in TABLES:
                raise SystemExit(f"build.py: no table {arg!r}; the tables are {', '.join(TABLES)}.")
            return TABLES[arg](data)
        if kind == "value":
            if arg not in vals:
                raise SystemExit(f"build.py: no value {arg!r} in the measurements (docs/data).")
            return vals[arg]
        if kind == "section":
            return section_link(arg)
        if kind == "figref":
            if arg not in where:
                raise SystemExit(f"build.py: {{{{figref:{arg}}}}} names a figure the report does not show.")
            return f"the {arg.replace('_', ' ')} figure of {section_link(where[arg])}"
        raise SystemExit(f"build.py: unknown placeholder {{{{{kind}:{arg}}}}}.")

    text = re.sub(r"\{\{generated\}\}", lambda m: generated(data), template)
    return re.sub(r"\{\{(\w+):([^}]+)\}\}", sub, text)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    unknown = [a for a in argv if a != "--run-snippets"]
    if unknown:
        print(f"build.py: error: unknown argument {unknown[0]!r}; the only one is --run-snippets.", file=sys.stderr)
        return 2
    if "--run-snippets" in argv:
        run_snippets()
    with open(TEMPLATE) as f:
        text = render(f.read(), load_data())
    with open(REPORT, "w") as f:
        f.write(text)
    print("docs/llms.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
