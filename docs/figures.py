"""The figures of docs/llms.md, each made from a measurement this script takes (`make docs`).

Every measurement writes its data to docs/data/NAME.json (with the command, the date and the machine), and every
figure its plot to docs/figures/FIGURE.png, captioned with the same, so the report never carries a hand-typed figure.

    python docs/figures.py [NAME ...]          # measure and plot: all of them by default (about 40 minutes)
    python docs/figures.py --plot-only [NAME]  # plot again from the data in docs/data
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run as a script from anywhere in the checkout

MESHES = ("1x2", "1x8", "2x4", "8x4")
ROOT = os.path.dirname(HERE)
# The precision configs the accuracy and speed figures cover: tt_transformers' presets and the block floats, and the
# device configs again with exact float matmuls (+fidelity=off) and with exact SFPU functions (+sfpu=off), which
# isolates what each half of a Tensix costs. One-group overrides put configs between the presets, so the PCC rules of
# thumb have points at every step.
DEVICE_PRESETS = ("accuracy", "performance", "bfloat8_b", "bfloat4_b")
ACCURACY_CONFIGS = ("float32", "bfloat16", *DEVICE_PRESETS, *(f"{p}+fidelity=off" for p in DEVICE_PRESETS),
                    *(f"{p}+sfpu=off" for p in DEVICE_PRESETS), "performance+FF1_FF3=bfloat8_b", "accuracy+FF2=bfloat4_b",
                    "bfloat8_b+LM_HEAD=bfloat4_b", "bfloat16+WQKV=bfloat4_b")
BENCH_PRECISIONS = ("float32", "bfloat16", "accuracy", "performance", "accuracy+fidelity=off", "performance+fidelity=off")
BENCH_BATCHES = (1, 4, 8, 16, 32)


def machine() -> str:
    """The CPU and core count, as the captions name them (the CPU as `ttjax bench` names it)."""
    from model.tools.bench import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} cores"


def stamp() -> dict:
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine()}


def run_json(argv: list[str], label: str) -> dict:
    """Run one of the project's own commands (its --json form) in a process of its own and read its one JSON object."""
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"figures.py: {label} failed with status {done.returncode}.")
    return json.loads(done.stdout.strip().splitlines()[-1])


TTJAX = ["-c", "from model.tools.cli import entry; entry()"]  # the `ttjax` command, with this interpreter


def measure_accuracy() -> dict:
    """`ttjax accuracy --json`: top-1, top-5, perplexity and per-layer PCC of every config against transformers."""
    from model.checkpoint import default_model_path

    argv = ["accuracy", "--json", "--reference-spread", "--configs", ",".join(ACCURACY_CONFIGS)]
    return {**stamp(), "command": "ttjax " + " ".join(argv), "model_file": os.path.basename(default_model_path()),
            **run_json(TTJAX + argv, "ttjax accuracy")}


def model_label(data: dict) -> str:
    """The model a measurement ran, by its file's name (a GGUF's own metadata name is less readable)."""
    path = data.get("model_file") or data["model"]["path"]
    return os.path.basename(path).removesuffix(".gguf")


def measure_outliers(prefill_len: int = 512) -> dict:
    """transformers' own hidden states over the accuracy text: each decoder layer's largest |value|, its median, and
    the share of the sum of squares its three largest channels carry (what PCC, a correlation, weighs most)."""
    import numpy as np

    from model.checkpoint import default_model_path, load_checkpoint
    from model.tools.accuracy import shipped_text
    from model.tools.reference import transformers_reference

    ck = load_checkpoint(default_model_path())
    tokens = ck.require_tokenizer().encode(shipped_text())
    ref = transformers_reference(ck, tokens, prefill_len, 0)
    layers = []
    for h in ref.layer_outputs:
        channel = (h.astype(np.float64) ** 2).sum(0)
        layers.append({"max_abs": float(np.abs(h).max()), "median_abs": float(np.median(np.abs(h))),
                       "top3_share": float(np.sort(channel)[-3:].sum() / channel.sum())})
    return {**stamp(), "command": f"docs/figures.py outliers (transformers hidden states, {prefill_len} tokens)", "layers": layers}


def measure_bench() -> dict:
    """`ttjax bench --json`: decode tokens/s by batch for ttjax's configs and its peers (llama.cpp when installed), each
    with its read-bandwidth roofline."""
    argv = ["bench", "--json", "--precision", ",".join(BENCH_PRECISIONS), "--batch", ",".join(map(str, BENCH_BATCHES)),
            "--prefill-lengths", "none", "--runs", "3", "--new-tokens", "64", "--peers", "transformers,llama.cpp"]
    out = run_json(TTJAX + argv, "ttjax bench")  # its own command, date (ISO) and machine (with the read bandwidth)
    out["date"] = datetime.datetime.fromisoformat(out["date"]).strftime("%Y-%m-%d %H:%M UTC")
    return out


def measure_trace() -> dict:
    """demos/benchmark_trace.py --json: the same decode step traced (async and sync output) and op by op."""
    argv = ["demos/benchmark_trace.py", "--json", "--batch", "32", "--runs", "3"]
    return {**stamp(), "command": "python " + " ".join(argv), **run_json(argv, "benchmark_trace")}


def measure_device_model() -> dict:
    """`ttjax perf-model --compare`: the device model's decode tokens/s/user against tt-metal's PERF.md."""
    from model.tools.perf_model import compare

    rep = compare()
    return {**stamp(), "command": "ttjax perf-model --compare", "rows": rep["rows"], "median_abs_error": rep["median_abs_error"]}


def measure_collective_bytes(model_name: str = "Llama-3.1-8B", batch: int = 32) -> dict:
    """comm-report on each mesh shape: the bytes a device sends per token in one decoder layer, by kind of collective,
    as compiled (one layer of the model's shape, tt_transformers' performance preset, decode at batch 32)."""
    from mesh import ensure_host_devices

    ensure_host_devices(32)
    from mesh import MeshDevice
    from model.config import named_config
    from model.precision import ModelOptimizations
    from model.tools.comm_report import comm_report, compiled_program, hlo_collectives
    from model.sharding import mesh_args

    rows = []
    for mesh in MESHES:
        shape = tuple(int(n) for n in mesh.split("x"))
        args = named_config(model_name, n_layers=1, max_seq_len=128, max_batch_size=batch)
        args = args.replace(optimizations=ModelOptimizations.named("performance", model_name))
        device = MeshDevice(shape)
        placed = mesh_args(args, device)
        found = [c for c in hlo_collectives(compiled_program(placed, device, "decode", batch=batch).as_text()) if c.layer == 0]
        by_kind: dict[str, float] = {}
        for c in found:
            by_kind[c.kind] = by_kind.get(c.kind, 0.0) + c.moved_bytes / batch
        total = comm_report(args, device, "decode", batch=batch)["layers"][0]["bytes_per_token"]
        rows.append({"mesh": mesh, "bytes_per_token_by_kind": by_kind, "bytes_per_token": total})
    return {**stamp(), "command": f"ttjax comm-report --model-name {model_name} --n-layers 1 --mode decode --batch {batch} --precision performance --mesh M",
            "model": model_name, "batch": batch, "rows": rows}


def plot_device_model(data: dict, path: str) -> None:
    """Predicted against published, on log axes (the rows span 6 to 120 tokens/s/user); only the rows outside the
    25% band are labelled, the rest are in the data and in `ttjax perf-model --compare`."""
    import matplotlib.pyplot as plt

    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(9, 6))
    colors = {"N150": "tab:blue", "N300": "tab:orange", "T3K": "tab:green", "TG": "tab:red"}
    lo = min(min(r["published"], r["predicted"]) for r in rows) / 1.3
    hi = max(max(r["published"], r["predicted"]) for r in rows) * 1.3
    ax.fill_between([lo, hi], [lo * 0.75, hi * 0.75], [lo * 1.25, hi * 1.25], color="gray", alpha=0.15, label="within 25%")
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, label="prediction = published")
    labels: dict[tuple[float, float], list[str]] = {}  # rows at the same point share one label
    for r in rows:
        device = r["device"].split()[0]
        ax.scatter(r["published"], r["predicted"], color=colors.get(device, "gray"), s=28, zorder=3)
        if abs(r["ratio"] - 1) > 0.25:
            labels.setdefault((r["published"], r["predicted"]), []).append(f"{r['model'].replace('Llama-', '')} {r['device']}")
    for (x, y), names in labels.items():
        ax.annotate(f"{', '.join(names)} ({y / x:.2f}x)", (x, y), fontsize=7, xytext=(4, -3 if y < x else 3), textcoords="offset points")
    for device, color in colors.items():
        ax.scatter([], [], color=color, label=device)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [t for t in (5, 10, 20, 50, 100, 200) if lo <= t <= hi]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_yticks(ticks, [str(t) for t in ticks])
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="published decode speed, tokens/s/user (tt-metal PERF.md, batch 1; log scale)",
           ylabel="ttjax device model, tokens/s/user (log scale)")
    ax.legend(fontsize=8, loc="upper left", title="labelled: off by more than 25%", title_fontsize=7.5)
    ax.set_title(f"Device model against tt_transformers' PERF.md: {len(rows)} Llama rows, median |error| "
                 f"{data['median_abs_error'] * 100:.1f}%", fontsize=10)
    finish(fig, data, path)


def plot_collective_bytes(data: dict, path: str) -> None:
    import matplotlib.pyplot as plt

    rows = data["rows"]
    kinds = sorted({k for r in rows for k in r["bytes_per_token_by_kind"]})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottom = [0.0] * len(rows)
    for kind in kinds:
        values = [r["bytes_per_token_by_kind"].get(kind, 0.0) / 1024 for r in rows]
        ax.bar([r["mesh"] for r in rows], values, bottom=bottom, label=kind)
        bottom = [b + v for b, v in zip(bottom, values)]
    for x, total in enumerate(bottom):
        ax.annotate(f"{total:.1f} KiB", (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, max(bottom) * 1.15)
    ax.set(xlabel="mesh (rows x columns of devices)", ylabel="KiB a device sends per token, one decoder layer")
    ax.set_title(f"Collective traffic of {data['model']} decode (batch {data['batch']}, performance preset), as compiled", fontsize=10)
    ax.legend(fontsize=8)
    finish(fig, data, path)


def machine_text(data: dict) -> str:
    """The machine a measurement names: stamp()'s string, or `ttjax bench`'s {"cpu", "cores", ...}."""
    m = data["machine"]
    return m if isinstance(m, str) else f"{m['cpu']}, {m['cores']} cores"


def caption(fig, data: dict) -> float:
    """The figure's provenance along its bottom edge (the command, the date and the machine), wrapped to the figure's
    width; returns the fraction of the height it takes, for tight_layout to keep clear."""
    import textwrap

    command = re.sub(r"(--model )\S*/", r"\1", data["command"])  # the model file's name, not where this machine keeps it
    text = textwrap.fill(f"{command}; {data['date']}; {machine_text(data)}", int(fig.get_figwidth() * 19))
    fig.text(0.01, 0.01, text, fontsize=6.5, color="dimgray", va="bottom")
    return (0.06 + 0.11 * (text.count("\n") + 1)) / fig.get_figheight()


def finish(fig, data: dict, path: str, top: float = 1.0) -> None:
    """Caption the figure, lay it out around the caption, write the PNG."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=(0, caption(fig, data), 1, top))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plain_log(axis) -> None:
    """A log axis labelled 50, 100, 200 rather than 5 x 10^1."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _configs(data: dict) -> dict[str, dict]:
    return {c["name"]: c for c in data["configs"]}


def plot_accuracy(data: dict, path: str) -> None:
    """Top-1, top-5 and perplexity per config: both halves of a Tensix emulated (solid) beside exact float matmuls
    (hatched) and exact SFPU functions (dotted)."""
    import matplotlib.pyplot as plt

    cfg = _configs(data)
    names = [n for n in cfg if "+" not in n]  # the presets; the overrides are in the report's table
    variants = (("", "both halves emulated (as the chip)", dict(color="tab:blue")),
                ("+fidelity=off", "exact matmuls", dict(color="white", edgecolor="tab:blue", hatch="///")),
                ("+sfpu=off", "exact SFPU functions", dict(color="white", edgecolor="tab:orange", hatch="...")))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    width = 0.27
    for ax, key, label in zip(axes, ("top1", "top5", "perplexity"), ("top-1 agreement, %", "top-5 agreement, %", "perplexity")):
        scale = 100 if key != "perplexity" else 1
        xs = range(len(names))
        for i, (suffix, legend, style) in enumerate(variants):
            values = [cfg[n + suffix][key] * scale if n + suffix in cfg else float("nan") for n in names]
            at = [x + (i - 1) * width for x in xs]
            ax.bar(at, values, width, label=legend, **style)
            if not suffix:
                for x, v in zip(at, values):
                    ax.annotate(f"{v:.1f}", (x, v), ha="center", va="bottom", fontsize=6.5)
        if key == "perplexity":
            ax.axhline(data["reference_perplexity"], color="black", linewidth=0.8, linestyle="--", label="transformers float32")
        else:
            ax.set_ylim(0, 105)
        ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(label)
    handles, labels = axes[2].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.94), ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"Accuracy per precision config: {model_label(data)}, {data['prefill_len']} tokens prefilled, "
                 f"{data['decode_steps']} decoded teacher-forced, against {data['reference']}", fontsize=9.5)
    finish(fig, data, path, top=0.88)


def plot_layer_pcc(data: dict, path: str) -> None:
    """Each decoder layer's prefill output against transformers': the performance config, with the others thin."""
    import matplotlib.pyplot as plt

    cfg = _configs(data)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    styles = {"performance": dict(color="tab:red", linewidth=2.4, marker="o", markersize=3.5),
              "performance+fidelity=off": dict(color="tab:red", linewidth=1, linestyle="--"),
              "accuracy": dict(color="tab:green", linewidth=1.2), "bfloat16": dict(color="tab:blue", linewidth=1.2),
              "bfloat8_b": dict(color="tab:purple", linewidth=1), "bfloat4_b": dict(color="tab:gray", linewidth=1)}
    for name, style in styles.items():
        if name in cfg:
            miss = [max(1 - p, 1e-7) for p in cfg[name]["layer_pcc"]]  # 1 - PCC: how far from a perfect match
            ax.plot(range(len(miss)), miss, label=name, **style)
    for level, label in ((0.01, "PCC 0.99 (tt: whole model)"), (0.002, "PCC 0.998 (tt: decoder layer)")):
        ax.axhline(level, color="black", linewidth=0.7, linestyle=":")
        ax.annotate(label, (13, level), xytext=(0, 2), textcoords="offset points", fontsize=7)
    ax.set_yscale("log")
    ax.set(xlabel="decoder layer (its output after the residual add)",
           ylabel="1 - PCC vs transformers (log; lower is closer)")
    ax.set_title(f"Per-layer PCC, {model_label(data)}, {data['prefill_len']}-token prefill", fontsize=10)
    ax.legend(fontsize=7.5, loc="upper left", ncol=3)
    finish(fig, data, path)


def _rows(data: dict, engine: str | None = None) -> list[dict]:
    return [r for r in data["runs"] if engine is None or r["engine"] == engine]


def plot_batch_scaling(data: dict, path: str) -> None:
    """Decode tokens/s (all users) against the batch, for ttjax's configs and each peer."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    series: dict[str, list[tuple[int, float]]] = {}
    for r in data["runs"]:
        label = f"ttjax {r['precision']}" if r["engine"] == "ttjax" else f"{r['engine']} ({r['precision']})"
        series.setdefault(label, []).append((r["batch"], r["decode_tokens_per_s"]))
    for label, points in series.items():
        points.sort()
        peer = not label.startswith("ttjax")
        ax.plot([b for b, _ in points], [t for _, t in points], marker="s" if peer else "o", linewidth=2 if peer else 1.3,
                linestyle="-" if "fidelity=off" not in label else "--", label=label, color="black" if peer and "transformers" in label else None)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    plain_log(ax.yaxis)
    batches = sorted({r["batch"] for r in data["runs"]})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set(xlabel="decode batch (users decoding together)", ylabel="decode tokens/s, all users (median)")
    ax.set_title(f"Decode throughput against batch: {model_label(data)}, greedy, {data['settings']['new_tokens']} tokens a user",
                 fontsize=10)
    ax.grid(True, which="both", linewidth=0.3)
    for r in data["runs"]:
        if r["engine"] not in ("ttjax", "transformers") and len(series[f"{r['engine']} ({r['precision']})"]) == 1:
            ax.annotate(f"{r['engine']}: batch {r['batch']} only", (r["batch"], r["decode_tokens_per_s"]), fontsize=7, va="center",
                        xytext=(7, 0), textcoords="offset points")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1))
    finish(fig, data, path)


def plot_roofline(data: dict, path: str) -> None:
    """Batch-1 decode against its memory roofline: the weights a step reads over the machine's read bandwidth."""
    import matplotlib.pyplot as plt

    rows = [r for r in data["runs"] if r["batch"] == 1 and r.get("roofline_tokens_per_s")]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [f"{r['engine']}\n{r['precision'].replace('+', chr(10) + '+')}" for r in rows]
    ax.bar(labels, [r["roofline_tokens_per_s"] for r in rows], color="white", edgecolor="gray", label="roofline (bandwidth / weight bytes)")
    ax.bar(labels, [r["decode_tokens_per_s"] for r in rows], width=0.5, color="tab:blue", label="measured")
    for i, r in enumerate(rows):
        ax.annotate(f"{r['roofline_fraction'] * 100:.0f}%", (i, r["decode_tokens_per_s"]), ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="batch-1 decode tokens/s")
    ax.tick_params(axis="x", labelsize=7.5)
    ax.set_title(f"Batch-1 decode as a fraction of the memory roofline (read bandwidth {data['machine']['read_gb_s']:.1f} GB/s)",
                 fontsize=10)
    ax.legend(fontsize=8)
    finish(fig, data, path)


def plot_fidelity_cost(data: dict, path: str) -> None:
    """What emulating the matrix engine costs: decode tokens/s with the fidelity phases and Dst rounding computed
    against the same formats with exact float matmuls, per config and batch."""
    import matplotlib.pyplot as plt

    rows = _rows(data, "ttjax")
    speed = {(r["precision"], r["batch"]): r["decode_tokens_per_s"] for r in rows}
    configs = [p for p in dict.fromkeys(r["precision"] for r in rows) if (f"{p}+fidelity=off", rows[0]["batch"]) in speed]
    batches = sorted({r["batch"] for r in rows})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / (2 * len(configs))
    for i, p in enumerate(configs):
        for j, (name, hatch) in enumerate(((p, None), (f"{p}+fidelity=off", "///"))):
            xs = [k + (2 * i + j - len(configs) + 0.5) * width for k in range(len(batches))]
            ax.bar(xs, [speed.get((name, b), float("nan")) for b in batches], width, label=name, hatch=hatch,
                   color=f"C{i}" if hatch is None else "white", edgecolor=f"C{i}")
        for k, b in enumerate(batches):
            on, off = speed.get((p, b)), speed.get((f"{p}+fidelity=off", b))
            if on and off:
                left = k + (2 * i - len(configs) + 0.5) * width  # the pair's two bars, bracketed by their ratio
                top = max(on, off) * 1.03
                ax.plot([left, left, left + width, left + width], [top * 0.985, top, top, top * 0.985], color="black", linewidth=0.6)
                ax.annotate(f"{on / off:.2f}x", (left + width / 2, top), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set(ylabel="decode tokens/s, all users (median)")
    ax.set_ylim(0, max(speed.values()) * 1.15)
    ax.set_title("The cost of emulating the matrix engine: fidelity on (solid) against off (hatched);\n"
                 "over each pair, its tokens/s on / off", fontsize=9.5)
    ax.legend(fontsize=7.5, loc="upper left")
    finish(fig, data, path)


def plot_trace(data: dict, path: str) -> None:
    import matplotlib.pyplot as plt

    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.barh([r["name"] for r in rows], [r["ms_per_step"] for r in rows], color=["tab:blue", "tab:orange", "tab:gray"])
    for i, r in enumerate(rows):
        speed = "the baseline" if r["vs_eager"] == 1.0 else f"{r['vs_eager']:.1f}x faster than eager"
        ax.annotate(f" {r['ms_per_step']:.0f} ms, {speed}", (r["ms_per_step"], i), va="center", fontsize=8)
    ax.set(xlabel=f"milliseconds a decode step, batch {data['batch']} (median of {data['runs']} runs)")
    ax.invert_yaxis()
    ax.set_xlim(0, max(r["ms_per_step"] for r in rows) * 1.35)
    ax.set_title("A traced decode step against the same step op by op (SmolLM2-135M, float32)", fontsize=10)
    finish(fig, data, path)


# What each measurement is and which figures it makes: NAME -> (measure, {figure: plot}).
MEASUREMENTS = {
    "device_model": (measure_device_model, {"device_model": plot_device_model}),
    "collective_bytes": (measure_collective_bytes, {"collective_bytes": plot_collective_bytes}),
    "accuracy": (measure_accuracy, {"accuracy": plot_accuracy, "layer_pcc": plot_layer_pcc}),
    "bench": (measure_bench, {"batch_scaling": plot_batch_scaling, "roofline": plot_roofline, "fidelity_cost": plot_fidelity_cost}),
    "trace": (measure_trace, {"trace": plot_trace}),
    "outliers": (measure_outliers, {}),  # no figure: values the report's prose quotes
}
FIGURES = {fig: name for name, (_, plots) in MEASUREMENTS.items() for fig in plots}


def load(name: str) -> dict:
    with open(os.path.join(HERE, "data", f"{name}.json")) as f:
        return json.load(f)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plot_only = "--plot-only" in argv
    names = [a for a in argv if a != "--plot-only"] or list(MEASUREMENTS)
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        print(f"figures.py: error: no measurement {unknown[0]!r}; they are {', '.join(MEASUREMENTS)}.", file=sys.stderr)
        return 2
    os.makedirs(os.path.join(HERE, "data"), exist_ok=True)
    os.makedirs(os.path.join(HERE, "figures"), exist_ok=True)
    for name in names:
        measure, plots = MEASUREMENTS[name]
        if plot_only:
            data = load(name)
        else:
            data = measure()
            with open(os.path.join(HERE, "data", f"{name}.json"), "w") as f:
                json.dump(data, f, indent=1)
        for fig, plot in plots.items():
            plot(data, os.path.join(HERE, "figures", f"{fig}.png"))
            print(f"docs/figures/{fig}.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
