"""`ttjax perf-model`: what a Llama would cost on a Wormhole system, op by op, from published hardware figures.

    ttjax perf-model --model-name Llama-3.1-8B --device N150 --mode decode [--batch 1] [--json]
    ttjax perf-model --compare [--json]      # every Llama row of tt_transformers' PERF.md, predicted and published

The per-op table gives each op's DRAM, NoC and ethernet bytes, FLOPs and fidelity, what bounds it
(DRAM, compute, NoC, ethernet, or the kernel's set-up), and its time per step; decode ends in
tokens/s/user, prefill in the time to first token (model.perf_model, ttjax.device_model).
--json: {"model", "device", "mode", "batch", "tokens_per_s_per_user", "ops": [...], ...}.
"""

from __future__ import annotations

import json
import os
import re
import statistics

from model.config import MODEL_NAMES, check_users, named_config
from model.errors import ConfigError
from model.perf_model import predict
from ttjax.device_model import SYSTEMS

PERF_TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "tt_transformers_perf.md")
# Data-parallel rows: DP=n splits the system into n submeshes, each a whole model serving its users; a T3K's four 1x2
# submeshes are N300s and its eight single chips N150s; a Galaxy's four 8-chip submeshes are priced as T3K's 1x8.
DATA_PARALLEL = {("T3K", 4): "N300", ("T3K", 8): "N150", ("TG", 4): "T3K"}


def published_rows(path: str = PERF_TABLE) -> list[dict]:
    """PERF.md's Llama rows: model, device, data-parallel factor, decode tokens/s/user, and top-1 / top-5 in percent
    (None where the row gives none)."""
    rows = []
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not cells[0].startswith("Llama"):
            continue
        m = re.match(r"(\w+)\s*(?:\(DP=(\d+)\))?$", cells[1])
        rows.append({"model": cells[0], "device": m.group(1), "data_parallel": int(m.group(2) or 1), "published": float(cells[4]),
                     "top1": int(cells[2]) if cells[2] else None, "top5": int(cells[3]) if cells[3] else None})
    return rows


def model_args(name: str, n_layers: int | None = None):
    args = named_config(name, max_seq_len=4096)
    if n_layers is not None and not 1 <= n_layers <= args.n_layers:
        raise ConfigError(f"--n-layers {n_layers} is outside 1..{args.n_layers}, the layers of {args.model_name}.")
    return args.replace(n_layers=n_layers or args.n_layers)


# PERF.md's runs prefill 512 tokens and generate up to 200: decode's cache position averages about 612.
COMPARE_CONTEXT = 612


def compare(context: int = COMPARE_CONTEXT, precision: str = "performance") -> dict:
    out = []
    for row in published_rows():
        system = DATA_PARALLEL.get((row["device"], row["data_parallel"]), row["device"])
        pred = predict(model_args(row["model"]), system, "decode", context=context, precision=precision)["tokens_per_s_per_user"]
        label = row["device"] + (f" (DP={row['data_parallel']})" if row["data_parallel"] > 1 else "")
        out.append({"model": row["model"], "device": label, "priced_as": system, "predicted": pred, "published": row["published"],
                    "ratio": pred / row["published"]})
    errors = [abs(r["ratio"] - 1) for r in out]
    return {"rows": out, "median_abs_error": statistics.median(errors), "worst": max(out, key=lambda r: abs(r["ratio"] - 1))}


def format_ops(rep: dict) -> str:
    lines = [f"{rep['model']} on {rep['device']}, {rep['mode']}, batch {rep['batch']}, {rep['precision']} preset, {rep['n_layers']} layers"
             + (f", cache position {rep['context']}" if rep["mode"] == "decode" else f", {rep['seq_len']} tokens"),
             f"{'op':28}{'runs':>6}{'DRAM MB':>10}{'NoC MB':>9}{'eth KB':>9}{'GFLOP':>9}{'fid.':>7}{'bound':>10}{'us each':>10}{'ms/step':>10}"]
    for o in rep["ops"]:
        runs = o["count"] * (rep["n_layers"] if o["where"] == "layer" else 1)
        lines.append(f"{o['op']:28}{runs:>6}{o['dram_bytes'] / 1e6:>10.2f}{o['noc_bytes'] / 1e6:>9.2f}{o['eth_bytes'] / 1e3:>9.1f}"
                     f"{o['flops'] / 1e9:>9.2f}{o['fidelity'] or '':>7}{o['bound']:>10}{o['time_us'] / o['count']:>10.1f}{o['per_step_us'] / 1e3:>10.3f}")
    lines.append(f"device {rep['device_time_s'] * 1e3:.2f} ms" + (f" + host {rep['host_step_s'] * 1e3:.2f} ms" if rep["host_step_s"] else "")
                 + f" = {rep['step_s'] * 1e3:.2f} ms a step")
    if rep["mode"] == "decode":
        lines.append(f"{rep['tokens_per_s_per_user']:.1f} tokens/s/user")
    else:
        lines.append(f"prefill {rep['prefill_s'] * 1e3:.1f} ms (the decoder layers' matmuls, attention and collectives)")
    return "\n".join(lines)


def format_compare(rep: dict) -> str:
    lines = ["tt_transformers PERF.md (commit 040a27c1, performance mode, batch 1) against ttjax's device model",
             f"{'model':16}{'device':14}{'predicted t/s/u':>17}{'published':>11}{'ratio':>8}"]
    for r in rep["rows"]:
        lines.append(f"{r['model']:16}{r['device']:14}{r['predicted']:>17.1f}{r['published']:>11.1f}{r['ratio']:>8.2f}")
    w = rep["worst"]
    lines.append(f"median absolute error {rep['median_abs_error'] * 100:.1f}% over {len(rep['rows'])} rows; worst {w['model']} on {w['device']} "
                 f"({w['ratio']:.2f}x; README, 'The device model')")
    return "\n".join(lines)


def add_parser(sub, positive_int) -> None:
    p = sub.add_parser("perf-model", help="what a Llama would cost on Wormhole (N150, N300, T3K, TG), op by op; --compare against PERF.md")
    p.add_argument("--model-name", default="Llama-3.1-8B", help=f"one of {', '.join(MODEL_NAMES)}, any case (default Llama-3.1-8B)")
    p.add_argument("--device", choices=tuple(SYSTEMS), default="N150", help="the system priced (default N150)")
    p.add_argument("--mode", choices=("decode", "prefill"), default="decode", help="which step is priced (default decode)")
    p.add_argument("--batch", type=positive_int, default=1, help="decode users (default 1)")
    p.add_argument("--context", type=positive_int, default=None, help="decode's cache position (default 256; --compare: 612, PERF.md's)")
    p.add_argument("--seq-len", type=positive_int, default=128, help="prefill length (default 128)")
    p.add_argument("--precision", choices=("performance", "accuracy"), default="performance", help="tt_transformers' preset")
    p.add_argument("--n-layers", type=positive_int, default=None, help="price this many decoder layers")
    p.add_argument("--compare", action="store_true", help="every Llama row of tt_transformers' PERF.md, predicted and published")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def run(opts) -> int:
    if opts.compare:
        rep = compare(opts.context or COMPARE_CONTEXT, opts.precision)
        print(json.dumps(rep) if opts.json else format_compare(rep))
        return 0
    args = model_args(opts.model_name, opts.n_layers)
    for flag, value in (("--context", opts.context), ("--seq-len", opts.seq_len if opts.mode == "prefill" else None)):
        if value is not None and value > args.max_context_len:
            raise ConfigError(f"{flag} {value} is past {args.model_name}'s trained context of {args.max_context_len} tokens.")
    check_users("--batch", opts.batch)
    rep = predict(args, opts.device, opts.mode, batch=opts.batch, context=opts.context or 256, seq_len=opts.seq_len,
                  precision=opts.precision)
    print(json.dumps(rep) if opts.json else format_ops(rep))
    return 0
