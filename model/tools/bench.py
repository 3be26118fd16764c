"""`ttjax bench`: ttjax against its peers on the same checkpoint and the same token ids, in one run, each figure a
median over runs with the ratio of ttjax's to each peer's.

    ttjax bench [--json] [--model PATH | --model-name Llama-3.2-1B [--gguf-formats Q8_0,Q4_0] [--n-layers N]]
                [--precision float32,accuracy] [--batch 1,32] [--mesh 1x2]
                [--prefill-lengths 128,8000] [--runs 3] [--new-tokens 64] [--max-seq-len 256]
                [--peers transformers,llama.cpp | --no-peers] [--profile DIR]

--model-name benches a named model's shapes without its weights: same-shape GGUF files of random weights
(model.checkpoint.synthetic, written once into the cache) that ttjax and transformers read in the first format and
llama.cpp in each, so llama.cpp reads Q8_0 beside bfloat8_b and Q4_0 beside bfloat4_b, the same bytes a weight. A
row whose weights would not fit this machine's memory (Llama-3.1-8B in float32) is a note, not a crash.

What runs, in this order, each in a process of its own (so each row's peak RSS is its own, and no library's
threads idle beside another's): the read-bandwidth measurement (model.tools.roofline), first, on a quiet machine
(right after a process of several GB exits, the memory it hands back made one measurement swing from 14 to 32
GB/s); for each ttjax precision, one row per batch; then each peer (model.tools.peers: transformers always,
llama.cpp when llama-cpp-python is installed, batch 1 only), one row per batch; last, with --profile, a traced
ttjax run (model.tools.profiling).
Every engine is greedy, ignores EOS and gets the same token ids: the prompt, copied to every user of a batch, and
for prefill the first n tokens of the shipped text. The row of each engine's smallest batch also times the
prefills.
How ttjax and the peers are timed: model.tools.bench_ttjax and model.tools.peers (decode on steady steps, after
the programs are compiled and an untimed run).

--json prints one object:
  date            ISO 8601, UTC, when the bench started; wall_s: how long it took
  command         the command that repeats it, every setting spelled out
  machine         {"cpu", "cores", "memory_gb", "read_gb_s" (median), "read_gb_s_runs", "read_method"}
  model           {"path", "name", "format"}
  settings        {"prompt", "prompt_tokens", "new_tokens", "runs", "max_seq_len" (ttjax's cache), "prefill_lengths",
                   "mesh", "compile_cache" (its folder, or null), "threads"}
  runs            one row per engine, precision and batch:
                  {"engine": "ttjax" | "transformers" | "llama.cpp", "version", "precision", "batch",
                   "decode_tokens_per_s" (median; all users' tokens), "decode_tokens_per_s_runs",
                   "prefill_tokens_per_s": {"128": median, ...} (empty but in the smallest batch's rows),
                   "prefill_tokens_per_s_runs": {"128": [...]}, "ttft_s" (median: until every user of the batch has its
                   first token), "ttft_s_runs", "compile_s" (ttjax: the programs the decode row used, or null),
                   "prefill_compile_s", "peak_rss_mb" (ru_maxrss of the row's process: load, prefills, decode),
                   "weight_bytes_per_token" (weights a decode step reads), "roofline_tokens_per_s" (read_gb_s over
                   those bytes: batch-1 decode's bound), "roofline_fraction" (decode steps/s x weight bytes /
                   read bandwidth), "first_tokens" (the first user's greedy tokens)}
  ratios          for each ttjax row and each peer row of the same batch: {"precision", "batch", "peer", "peer_precision",
                  "decode_tokens_per_s", "prefill_tokens_per_s": {"128": ...}, "ttft_s", "peak_rss_mb"}, each ttjax's
                  median / the peer's (above 1: ttjax's figure is larger, so faster for tokens/s, slower for ttft_s,
                  more memory for peak_rss_mb)
  notes           why a peer or a row is missing (e.g. "llama.cpp: not installed (make peers)")
  profile         with --profile: {"dir", "trace" (the Perfetto file), "ops_file", "ops", "groups", "table"}, else
                  null (model.tools.profiling)
Without --json it prints the same as Markdown tables, the command and the date at the top, ready for BENCHMARKS.md.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from model.config import check_users
from model.errors import ConfigError, SequenceLengthError, TTJaxError, naming

RESULT = "ttjax-bench-result "  # the line a worker process prints its result on


@dataclass(frozen=True)
class Plan:
    """The options of a bench, checked."""

    model: str
    model_format: str
    model_name: str
    precisions: tuple[str, ...]
    batches: tuple[int, ...]
    prefill_lengths: tuple[int, ...]
    peers: tuple[str, ...]
    runs: int
    new_tokens: int
    max_seq_len: int
    prompt: str
    mesh: str | None
    ccl: str | None
    norm: str | None
    profile: str | None
    bandwidth_mib: int
    allow_past_context: bool
    # --model-name: the named shapes in same-shape GGUF files ({format: path}, written by _run when missing); ttjax
    # and transformers read the first, llama.cpp each
    synthetic: dict | None = None
    n_layers: int | None = None
    config: object = None  # the model's ModelArgs (no weights read)

    @property
    def peer_models(self) -> dict:
        """{peer: the files it runs on}."""
        files = list(self.synthetic.values()) if self.synthetic else [self.model]
        return {"transformers": files[:1], "llama.cpp": files}

    def command(self) -> str:
        if self.synthetic:
            name = f"--model-name {self.model_name} --gguf-formats {','.join(self.synthetic)}"
            name += f" --n-layers {self.n_layers}" if self.n_layers else ""
        else:
            name = f"--model {self.model}"
        words = ["ttjax bench", name, f"--precision {','.join(self.precisions)}",
                 f"--batch {','.join(map(str, self.batches))}",
                 f"--prefill-lengths {','.join(map(str, self.prefill_lengths)) or 'none'}", f"--runs {self.runs}",
                 f"--new-tokens {self.new_tokens}", f"--max-seq-len {self.max_seq_len}",
                 f"--peers {','.join(self.peers)}" if self.peers else "--no-peers"]
        words += [f"--{k} {v}" for k, v in (("mesh", self.mesh), ("ccl", self.ccl), ("norm", self.norm), ("profile", self.profile)) if v]
        words += ["--allow-past-context"] if self.allow_past_context else []
        return " ".join([*words, f"--prompt {shlex.quote(self.prompt)}"])


def parse_list(text: str, flag: str, *, empty: str | None = None) -> tuple[int, ...]:
    """'1,32' -> (1, 32): each an integer of at least 1, none twice (empty, when given, is a word for none)."""
    if empty is not None and text.strip().lower() == empty:
        return ()
    items = [t.strip() for t in text.split(",")]
    values = []
    for item in items:
        if not re.fullmatch(r"\d+", item) or int(item) < 1:
            raise ConfigError(f"{flag} {text!r} holds {item!r}; each must be an integer of at least 1"
                              + (f" (or {flag} {empty} for none)." if empty else "."))
        if int(item) in values:
            raise ConfigError(f"{flag} {text!r} names {item} twice.")
        values.append(int(item))
    return tuple(values)


def plan_from(opts) -> Plan:
    """The options checked against each other and the model's config (no weights read): a bad one is one sentence."""
    from model.checkpoint import default_model_path, detect_format, load_args
    from model.precision import ModelOptimizations
    from model.serving.build import generator_args, mesh_device_for
    from model.tools.peers import PEERS

    batches = tuple(sorted(check_users("--batch", b) for b in parse_list(opts.batch, "--batch")))  # the smallest first: its rows time the prefills
    lengths = tuple(sorted(parse_list(opts.prefill_lengths, "--prefill-lengths", empty="none")))
    precisions = tuple(p.strip() for p in opts.precision.split(","))
    if "" in precisions or len(set(precisions)) < len(precisions):
        raise ConfigError(f"--precision {opts.precision!r} must name each precision config once, comma separated.")
    peers = tuple(p.strip() for p in (opts.peers or ",".join(PEERS)).split(",") if p.strip())
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ConfigError(f"--peers names {unknown[0]!r}, not one of {', '.join(PEERS)}.")
    if opts.no_peers and opts.peers is not None:
        raise ConfigError(f"--peers {opts.peers} and --no-peers ask for peers and for none; give one.")
    peers = () if opts.no_peers else peers
    from model.tools.peers import INSTALL, installed

    for peer in peers if opts.peers is not None else ():  # a peer asked for by name must be there (the default skips it)
        if not installed(peer):
            raise ConfigError(f"--peers {peer}: {peer} is not installed ({INSTALL[peer]}).")
    if opts.new_tokens < 2:
        raise SequenceLengthError(f"--new-tokens {opts.new_tokens} leaves no decode step to time; ask for at least 2.")
    if not opts.prompt.strip():
        raise ConfigError("--prompt is empty; prefill needs at least one token.")
    synthetic, n_layers = None, getattr(opts, "n_layers", None)
    if getattr(opts, "model_name", None) is not None:
        from model.checkpoint.synthetic import check_format, synthetic_path
        from model.config import canonical_model_name, named_config

        if opts.model is not None:
            raise ConfigError(f"--model {opts.model} and --model-name {opts.model_name} each name the model; give one.")
        name = canonical_model_name(opts.model_name)
        text = opts.gguf_formats or "Q8_0,Q4_0"
        formats = [check_format(f, "--gguf-formats") for f in text.split(",")]
        if len(set(formats)) < len(formats):
            raise ConfigError(f"--gguf-formats {text!r} must name each format once, comma separated.")
        config = named_config(name)
        if n_layers is not None and n_layers > config.n_layers:
            raise ConfigError(f"--n-layers {n_layers} is past {name}'s {config.n_layers} layers.")
        config = named_config(name, **({"n_layers": n_layers} if n_layers else {}))
        synthetic = {f: str(synthetic_path(name, f, n_layers)) for f in formats}
        model, fmt = synthetic[formats[0]], "gguf"
    else:
        for flag, value in (("--n-layers", n_layers), ("--gguf-formats", getattr(opts, "gguf_formats", None))):
            if value is not None:
                raise ConfigError(f"{flag} goes with --model-name (the same-shape files it writes); --model reads its file as it is.")
        model = opts.model or default_model_path()
        with naming("--model"):
            fmt = detect_format(model)
            config = load_args(model)
    for n in lengths:
        if n > config.max_context_len:
            raise SequenceLengthError(f"--prefill-lengths {n} is past the model's context of {config.max_context_len} tokens.")
    with naming("--mesh"):
        mesh_device = mesh_device_for(opts.mesh)
    options = {k: v for k, v in (("ccl", opts.ccl), ("norm", opts.norm)) if v is not None}
    options["allow_past_context"] = opts.allow_past_context
    for precision in precisions:
        with naming("--precision"):
            ModelOptimizations.named(precision, config.model_name)
        for batch in batches:
            generator_args(config, mesh_device=mesh_device, precision=precision, max_batch_size=batch,
                           max_seq_len=opts.max_seq_len, **options)
    memory, weights = physical_memory(), parameter_count(config)
    if memory and all(p in FLOAT_BYTES and weights * FLOAT_BYTES[p] > FITS * memory for p in precisions):
        raise ConfigError(f"--precision {opts.precision}: {config.model_name}'s {weights / 1e9:.1f} G weights take more than "
                          f"this machine's {memory / 1e9:.0f} GB in each; choose bfloat8_b, bfloat4_b, performance or accuracy.")
    if opts.new_tokens >= opts.max_seq_len:
        raise SequenceLengthError(f"--new-tokens {opts.new_tokens} does not fit --max-seq-len {opts.max_seq_len} with a prompt.")
    if opts.profile and os.path.exists(opts.profile) and not os.path.isdir(opts.profile):
        raise ConfigError(f"--profile {opts.profile} is a file; name a folder for the trace.")
    return Plan(model, fmt, config.model_name, precisions, batches, lengths, peers, opts.runs, opts.new_tokens,
                opts.max_seq_len, opts.prompt, opts.mesh, opts.ccl, opts.norm, opts.profile, opts.bandwidth_mib,
                opts.allow_past_context, synthetic, n_layers, config)


# -- the command ---------------------------------------------------------------------------------


def run(opts) -> int:
    plan = plan_from(opts)
    try:
        return _run(opts, plan)
    except WorkerCrash as e:  # ttjax's own measurement died: the bench cannot go on, and says why
        raise SystemExit(str(e)) from None


def _run(opts, plan) -> int:
    from model.tools import compile_cache
    from model.tools.peers import INSTALL, installed

    cache = None if opts.no_compile_cache else compile_cache.enable(opts.compile_cache)
    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    say = (lambda *a: None) if opts.json else (lambda text: print(f"[bench {time.perf_counter() - t0:5.0f} s] {text}", file=sys.stderr))
    base = dict(model=plan.model, runs=plan.runs, new_tokens=plan.new_tokens, max_seq_len=plan.max_seq_len,
                mesh=plan.mesh, ccl=plan.ccl, norm=plan.norm, allow_past_context=plan.allow_past_context,
                compile_cache=None if cache is None else str(cache))

    if plan.synthetic:
        from model.checkpoint.synthetic import synthetic_gguf

        for fmt in plan.synthetic:
            say(f"same-shape {fmt} file of {plan.model_name}")
            synthetic_gguf(plan.model_name, fmt, plan.n_layers)
    say(f"read bandwidth ({plan.bandwidth_mib} MiB GEMV)")
    bandwidth = call_worker({"engine": "bandwidth", "mib": plan.bandwidth_mib}, "bandwidth")
    results, notes, prompt_ids, prefill_ids = [], [], None, {}
    weights, memory = parameter_count(plan.config), physical_memory()
    for precision in plan.precisions:
        if precision in FLOAT_BYTES and memory and weights * FLOAT_BYTES[precision] > FITS * memory:
            notes.append(f"ttjax {precision}: {plan.model_name}'s {weights / 1e9:.1f} G weights take "
                         f"{weights * FLOAT_BYTES[precision] / 1e9:.0f} GB in {precision}, more than this "
                         f"machine's {memory / 1e9:.0f} GB; its rows are missing")
            continue
        for i, batch in enumerate(plan.batches):
            lengths = plan.prefill_lengths if i == 0 else ()
            say(f"ttjax {precision}, batch {batch}" + (f", prefill {', '.join(map(str, lengths))}" if lengths else ""))
            r = call_worker({**base, "engine": "ttjax", "precision": precision, "batch": batch, "prompt": plan.prompt,
                             "prefill_lengths": lengths}, f"ttjax {precision} batch {batch}")
            prompt_ids, prefill_ids = r.pop("prompt_ids"), {**prefill_ids, **r.pop("prefill_ids", {})}
            results.append(({"engine": "ttjax", "precision": precision, "batch": batch}, r))
    for peer in plan.peers:
        if not installed(peer):
            notes.append(f"{peer}: not installed ({INSTALL[peer]})")
            continue
        if peer == "transformers" and plan.model_format == "meta":
            notes.append("transformers: reads GGUF files and Hugging Face folders, not Meta checkpoints")
            continue
        if peer == "llama.cpp" and plan.model_format != "gguf":
            notes.append("llama.cpp: reads GGUF files only")
            continue
        if peer == "transformers" and memory and 4 * weights > FITS * memory:  # it loads a GGUF in float32
            notes.append(f"transformers: {plan.model_name} in float32 takes {4 * weights / 1e9:.0f} GB, more than this "
                         f"machine's {memory / 1e9:.0f} GB; its rows are missing")
            continue
        batches = plan.batches if peer == "transformers" else tuple(b for b in plan.batches if b == 1)
        if len(batches) < len(plan.batches):
            notes.append(f"{peer}: batch 1 only (llama-cpp-python decodes one sequence)")
        for path in plan.peer_models[peer]:
            for i, batch in enumerate(batches):
                say(f"{peer}, batch {batch}" + (f", {os.path.basename(path)}" if len(plan.peer_models[peer]) > 1 else ""))
                ids = {n: prefill_ids[str(n)] for n in plan.prefill_lengths} if i == 0 else {}
                try:
                    r = call_worker({**base, "model": path, "engine": peer, "batch": batch, "prompt_ids": prompt_ids,
                                     "prefill_ids": ids}, f"{peer} batch {batch}")
                except WorkerCrash as e:  # a peer's own crash is a line of the report, not the end of the bench
                    notes.append(f"{peer}: batch {batch} {e.how}; its rows are missing ({e.last_line})")
                    say(f"{peer}, batch {batch}: {e.how}")
                    break
                results.append(({"engine": peer, "precision": r.pop("precision"), "batch": batch}, r))
    profile = None
    if plan.profile:
        say(f"profile into {plan.profile}")
        profile = call_worker({**base, "engine": "profile", "precision": plan.precisions[0], "batch": plan.batches[0],
                               "prompt": plan.prompt, "dir": plan.profile}, "profile")
    report = make_report(plan, started, time.perf_counter() - t0, machine(bandwidth), results, notes, profile, prompt_ids, cache)
    print(json.dumps(report) if opts.json else format_report(report))
    return 0


FLOAT_BYTES = {"float32": 4, "bfloat16": 2}  # the precisions whose weights take more than a byte each
FITS = 0.6  # of the machine's memory, the most a row's weights may take: loading and compiling hold more beside them
# (Llama-3.1-8B in bfloat16, 16 GB, was killed on a 25 GB machine)


def parameter_count(config) -> int:
    """The model's weights (an untied LM head counted apart), from its config: no weights read."""
    import jax
    import numpy as np

    from model.params import param_specs

    return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(param_specs(config), is_leaf=lambda x: hasattr(x, "shape")))


def physical_memory() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what platform knows."""
    import platform

    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
        if name:
            return name
    return platform.processor() or platform.machine() or "unknown"


def machine(bandwidth: dict) -> dict:
    cpu = cpu_name()
    memory = physical_memory() / 1e9 if physical_memory() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory, "read_gb_s": bandwidth["gb_s"],
            "read_gb_s_runs": bandwidth["runs_gb_s"], "read_method": bandwidth["method"]}


def make_report(plan: Plan, started, wall_s, machine: dict, results, notes, profile, prompt_ids, cache) -> dict:
    """The JSON object of the module docstring, from the workers' raw runs."""
    from model.tools.roofline import roofline_fraction

    med = statistics.median
    gb_s = machine["read_gb_s"]
    rows = []
    for head, r in results:
        prefill_runs = {n: [int(n) / s for s in seconds] for n, seconds in r.get("prefill_s", {}).items()}
        decode = med(r["decode_tokens_per_s"])
        rows.append({
            **head,
            "version": r["version"],
            "decode_tokens_per_s": decode,
            "decode_tokens_per_s_runs": r["decode_tokens_per_s"],
            "prefill_tokens_per_s": {n: med(v) for n, v in prefill_runs.items()},
            "prefill_tokens_per_s_runs": prefill_runs,
            "ttft_s": med(r["ttft_s"]),
            "ttft_s_runs": r["ttft_s"],
            "compile_s": r.get("compile_s"),
            "prefill_compile_s": r.get("prefill_compile_s"),
            "peak_rss_mb": r["peak_rss_mb"],
            "weight_bytes_per_token": r["weight_bytes"],
            "roofline_tokens_per_s": gb_s * 1e9 / r["weight_bytes"],
            "roofline_fraction": roofline_fraction(decode, head["batch"], r["weight_bytes"], gb_s),
            "first_tokens": r["tokens"],
        })
    ratios = []
    for ours in (r for r in rows if r["engine"] == "ttjax"):
        for peer in (r for r in rows if r["engine"] != "ttjax" and r["batch"] == ours["batch"]):
            ratio = {"precision": ours["precision"], "batch": ours["batch"], "peer": peer["engine"],
                     "peer_precision": peer["precision"]}
            for key in ("decode_tokens_per_s", "ttft_s", "peak_rss_mb"):
                ratio[key] = ours[key] / peer[key]
            ratio["prefill_tokens_per_s"] = {n: v / peer["prefill_tokens_per_s"][n] for n, v in ours["prefill_tokens_per_s"].items()
                                             if n in peer["prefill_tokens_per_s"]}
            ratios.append(ratio)
    if profile is not None:
        profile = {"dir": plan.profile, **{k: profile[k] for k in ("trace", "ops_file", "ops", "groups", "table")}}
    return {
        "date": started.isoformat(timespec="seconds"),
        "wall_s": wall_s,
        "command": plan.command(),
        "machine": machine,
        "model": {"path": plan.model, "name": plan.model_name, "format": plan.model_format},
        "settings": {"prompt": plan.prompt, "prompt_tokens": len(prompt_ids), "new_tokens": plan.new_tokens, "runs": plan.runs,
                     "max_seq_len": plan.max_seq_len, "prefill_lengths": list(plan.prefill_lengths), "mesh": plan.mesh,
                     "compile_cache": None if cache is None else str(cache), "threads": os.cpu_count()},
        "runs": rows,
        "ratios": ratios,
        "notes": notes,
        "profile": profile,
    }


def format_report(rep: dict) -> str:
    """The report as Markdown: a header with the command and the date, the rows, the ratios, the notes."""
    m, s = rep["machine"], rep["settings"]
    lengths = [str(n) for n in s["prefill_lengths"]]
    date = datetime.datetime.fromisoformat(rep["date"]).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"## ttjax bench, {date}",
        "",
        f"`{rep['command']}` ({rep['wall_s']:.0f} s)",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']:.0f} GB; read bandwidth {m['read_gb_s']:.1f} GB/s "
        f"({m['read_method']}; runs {', '.join(f'{x:.1f}' for x in m['read_gb_s_runs'])})",
        f"- model: {rep['model']['name']} ({os.path.basename(rep['model']['path'])}); prompt of {s['prompt_tokens']} tokens, "
        f"{s['new_tokens']} new tokens a user, greedy; " + (f"medians of {s['runs']} runs" if s["runs"] > 1 else "1 run")
        + f"; ttjax max_seq_len {s['max_seq_len']}"
        + (f", mesh {s['mesh']}" if s["mesh"] else "") + f"; compile cache {'on' if s['compile_cache'] else 'off'}",
        *(f"- {note}" for note in rep["notes"]),
        "",
        "| engine | precision | batch | decode tok/s | " + "".join(f"prefill {n} tok/s | " for n in lengths)
        + "TTFT ms | compile s | peak RSS MB | weights MB/step | roofline tok/s | of roofline |",
        "|---|---|---:|---:|" + "---:|" * len(lengths) + "---:|---:|---:|---:|---:|---:|",
    ]

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    for r in rep["runs"]:
        prefill = "".join(f"{num(r['prefill_tokens_per_s'].get(n), '.0f')} | " for n in lengths)
        out.append(f"| {r['engine']} | {r['precision']} | {r['batch']} | {r['decode_tokens_per_s']:.1f} | {prefill}"
                   f"{1e3 * r['ttft_s']:.0f} | {num(r['compile_s'], '.1f')} | {r['peak_rss_mb']:.0f} | "
                   f"{r['weight_bytes_per_token'] / 1e6:.0f} | {r['roofline_tokens_per_s']:.0f} | {100 * r['roofline_fraction']:.0f}% |")
    if rep["ratios"]:
        out += [
            "",
            "Ratios, ttjax / peer, of the medians (above 1: ttjax's figure is larger; faster for tokens/s, slower for TTFT, "
            "more memory for RSS):",
            "",
            "| ttjax precision | peer | peer precision | batch | decode | " + "".join(f"prefill {n} | " for n in lengths)
            + "TTFT | peak RSS |",
            "|---|---|---|---:|---:|" + "---:|" * len(lengths) + "---:|---:|",
        ]
        for q in rep["ratios"]:
            prefill = "".join(f"{num(q['prefill_tokens_per_s'].get(n), '.2f')} | " for n in lengths)
            out.append(f"| {q['precision']} | {q['peer']} | {q['peer_precision']} | {q['batch']} | {q['decode_tokens_per_s']:.2f} | {prefill}"
                       f"{q['ttft_s']:.2f} | {q['peak_rss_mb']:.2f} |")
    versions = sorted({f"{r['engine']}: {r['version']}" for r in rep["runs"]})
    out += ["", "Versions: " + "; ".join(versions) + "."]
    if rep["profile"]:
        p = rep["profile"]
        out += ["", f"Profile: {p['trace']} (open in ui.perfetto.dev); op table in {p['ops_file']}", "", "```", p["table"], "```"]
    return "\n".join(out)


# -- worker processes ----------------------------------------------------------------------------


def worker_env() -> dict:
    """The environment of a worker: this one's, less a forced count of host devices (a test's), so a row runs as a
    user's process would; --mesh asks for its devices itself."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count=")]
    env["XLA_FLAGS"] = " ".join(flags)
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


class WorkerCrash(RuntimeError):
    """A measurement's process died (a signal or an exit status without a result)."""

    def __init__(self, what: str, code: int, stderr: str):
        self.how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code} and no result"
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        self.last_line = lines[-1][:200] if lines else "nothing on stderr"
        self.stderr = stderr
        super().__init__(f"ttjax bench: the {what} run {self.how}:\n{stderr[-3000:]}")


def call_worker(spec: dict, what: str) -> dict:
    """Run one measurement in a process of its own (python -m model.tools.bench, the spec on stdin); its result.
    Bad input it finds is raised here as the same sentence; a crash raises WorkerCrash (the caller decides: a
    peer's is a note of the report, ttjax's ends the bench with its stderr)."""
    proc = subprocess.run([sys.executable, "-m", "model.tools.bench"], input=json.dumps(spec), capture_output=True,
                          text=True, env=worker_env(), check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode or not lines:
        raise WorkerCrash(what, proc.returncode, proc.stderr)
    result = json.loads(lines[-1][len(RESULT):])
    if "error" in result:
        raise TTJaxError(result["error"])
    return result


def measure(spec: dict) -> dict:
    """One worker's measurement (spec["engine"]: bandwidth, ttjax, transformers, llama.cpp or profile)."""
    engine = spec["engine"]
    if engine == "bandwidth":
        from model.tools.roofline import read_bandwidth

        return read_bandwidth(spec["mib"])
    if spec.get("compile_cache"):
        from model.tools.compile_cache import enable

        enable(spec["compile_cache"])
    if engine == "ttjax":
        from model.tools.bench_ttjax import measure as measure_ttjax

        return measure_ttjax(spec)
    if engine == "profile":
        return measure_profile(spec)
    from model.tools import peers

    return peers.measure(spec)


def measure_profile(spec: dict) -> dict:
    from model.serving.build import build_generator
    from model.tools.bench_ttjax import generator_options
    from model.tools.profiling import profile_serving

    gen = build_generator(spec["model"], spec["mesh"], spec["precision"], max_batch_size=spec["batch"],
                          max_seq_len=spec["max_seq_len"], needs_tokenizer=True, **generator_options(spec))
    prompt = gen.tokenizer.encode(spec["prompt"])
    p = profile_serving(gen, prompt, spec["batch"], min(8, spec["new_tokens"] - 1), spec["dir"])
    return {**p, "ops_file": os.path.join(spec["dir"], "ops.txt")}


def worker_main() -> int:
    spec = json.loads(sys.stdin.read())
    try:
        result = measure(spec)
    except TTJaxError as e:
        result = {"error": str(e)}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
