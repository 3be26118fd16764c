"""The figures of docs/llms.md, each made from a measurement this script takes (`make docs`).

Every figure writes its data to docs/data/NAME.json and its plot to docs/figures/NAME.png, captioned
with the date and the machine it was measured on, so the report never carries a hand-typed figure.

    python docs/figures.py [NAME ...]      # all of them by default
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run as a script from anywhere in the checkout

MESHES = ("1x2", "1x8", "2x4", "8x4")


def machine() -> str:
    """The CPU and core count, as the captions name them."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def stamp() -> dict:
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine()}


def measure_device_model() -> dict:
    """`ttjax perf-model --compare`: the device model's decode tokens/s/user against tt-metal's PERF.md."""
    from model.tools.perf_model import compare

    rep = compare()
    return {**stamp(), "rows": rep["rows"], "median_abs_error": rep["median_abs_error"]}


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
    return {**stamp(), "model": model_name, "batch": batch, "rows": rows}


def plot_device_model(data: dict, path: str) -> None:
    import matplotlib.pyplot as plt

    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = {"N150": "tab:blue", "N300": "tab:orange", "T3K": "tab:green", "TG": "tab:red"}
    for r in rows:
        device = r["device"].split()[0]
        ax.scatter(r["published"], r["predicted"], color=colors.get(device, "gray"), s=30)
        ax.annotate(f"{r['model'].replace('Llama-', '')} {r['device']}", (r["published"], r["predicted"]), fontsize=6,
                    xytext=(3, 2), textcoords="offset points")
    top = max(max(r["published"], r["predicted"]) for r in rows) * 1.1
    ax.plot([0, top], [0, top], color="black", linewidth=0.8, label="prediction = published")
    ax.fill_between([0, top], [0, top * 0.75], [0, top * 1.25], color="gray", alpha=0.15, label="within 25%")
    for device, color in colors.items():
        ax.scatter([], [], color=color, label=device)
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="published decode speed, tokens/s/user (tt-metal PERF.md, batch 1)",
           ylabel="ttjax device model, tokens/s/user")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"Device model against tt_transformers' PERF.md: median |error| {data['median_abs_error'] * 100:.1f}%", fontsize=10)
    fig.text(0.01, 0.01, f"ttjax perf-model --compare; {data['date']}; {data['machine']}", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


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
    ax.set(xlabel="mesh (rows x columns of devices)", ylabel="KiB a device sends per token, one decoder layer")
    ax.set_title(f"Collective traffic of {data['model']} decode (batch {data['batch']}, performance preset), as compiled", fontsize=10)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, f"ttjax comm-report (compiled HLO); {data['date']}; {data['machine']}", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


FIGURES = {
    "device_model": (measure_device_model, plot_device_model),
    "collective_bytes": (measure_collective_bytes, plot_collective_bytes),
}


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        print(f"figures.py: error: no figure {unknown[0]!r}; the figures are {', '.join(FIGURES)}.", file=sys.stderr)
        return 2
    os.makedirs(os.path.join(HERE, "data"), exist_ok=True)
    os.makedirs(os.path.join(HERE, "figures"), exist_ok=True)
    for name in names:
        measure, plot = FIGURES[name]
        data = measure()
        with open(os.path.join(HERE, "data", f"{name}.json"), "w") as f:
            json.dump(data, f, indent=1)
        plot(data, os.path.join(HERE, "figures", f"{name}.png"))
        print(f"docs/figures/{name}.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
