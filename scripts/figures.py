#!/usr/bin/env python3
"""The documentation's measured figures, from the files the scripts write (``docs/figures``).

A page quotes a measurement in one of two ways, both checked against those files:

- a **generated block**: ``<!-- figures: NAME REF -->`` ... ``<!-- /figures -->`` holds a
  table (or list) that :data:`BLOCKS` ``[NAME]`` renders from the run ``REF``
  (``script/run``, the file ``docs/figures/script.json`` and its run; several runs are
  separated by commas), with the run's command, date and machine above it;
- an **inline figure**: a number in the prose followed by ``<!--fig REF EXPR-->``, where
  ``EXPR`` is a key path of the run's figures in braces (``{servers.fp32.on.8.p50_ms}``),
  or arithmetic on such paths (``{bf16.load_s} - {fp32.load_s}``); the number must be the
  expression's value as shown (rounded to the digits the page gives). The comment is
  invisible on the built site and on GitHub alike.

Any other number in these pages with a unit of measurement (ms, s, MiB, req/s, x, % ...)
must be one of the page's fixed quantities (:data:`FIXED`: settings, limits, sizes of test
inputs), so a measured figure cannot be written without its source.

    python scripts/figures.py             # rewrite the generated blocks from the files
    python scripts/figures.py --check     # report what disagrees (tests/docs runs this)
    python scripts/figures.py --charts    # redraw docs/img/figures/*.svg (the figures extra)
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import operator
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIGURES_DIR = REPO / "docs" / "figures"
CHARTS_DIR = REPO / "docs" / "img" / "figures"
PAGES = (
    "README.md",
    "docs/index.md",
    "docs/performance.md",
    "docs/reliability.md",
    "docs/collections.md",
    "docs/scale-out.md",
)

BLOCK = re.compile(r"<!-- figures: (\S+) (\S+) -->\n.*?<!-- /figures -->", re.DOTALL)
INLINE = re.compile(r"(\d[\d,]*(?:\.\d+)?)([^\d<\n]{0,16})<!--fig (\S+) (.+?)-->")
MEASURED = re.compile(
    r"(?<![\w.\-/])(\d[\d,]*(?:\.\d+)?)(?:-\d[\d,.]*)?"
    r"(\s?(?:ms|s|MiB|GiB|KiB|MB|GB|kB|req/s|images/s)|x|%)(?![\w/])"
)
# Numbers with a unit that are not measurements: settings, limits, the sizes of the inputs.
FIXED: dict[str, set[str]] = {
    "README.md": {"277 MB", "1.4 MB"},  # the download, the demo model
    "docs/index.md": set(),
    "docs/performance.md": {
        "1.2x",  # auto's threshold
        "98%",  # the demo model test's threshold
        "149 MB",  # the checkpoint's size
        "1280 MiB", "2 GiB",  # the manifests' request and limit
        "25 s",  # bench_server's --duration
        "50 ms",  # bench_startup's polling interval
        "4 s",  # the start-up aim (fp32)
        "1.8x",  # the bf16 encoder's gain from which the collection's bf16 aim applies
        "24 MB",  # the decoder's word matrix, 512 x 12,000 float32, by arithmetic
    },
    "docs/reliability.md": {
        "10 s", "5 s", "0.25 s", "2 s", "3 s", "1.5 s",  # deadlines, the test's
        "128 MiB", "10 MiB", "2 GiB", "30 s", "20 ms",  # budgets, limits, sampler
        "114 MiB",  # the float32 copy of a 10-megapixel photo, by arithmetic
        "58%", "15%", "12%", "7%", "5%", "3%",  # soak.py's mix of requests
        "9 MB", "120 kB",  # the burst's images
    },
    "docs/collections.md": set(),
    "docs/scale-out.md": {"300 MB"},  # a million records of about 300 bytes, by arithmetic
}  # fmt: skip


def load_run(ref: str) -> dict[str, Any]:
    """The run ``script/run`` of ``docs/figures/script.json``."""
    script, _, run = ref.partition("/")
    document = json.loads((FIGURES_DIR / f"{script}.json").read_text())
    try:
        return {"name": run, **document["runs"][run]}
    except KeyError:
        raise KeyError(f"{script}.json has no run {run!r}") from None


def lookup(figures: Any, path: str) -> Any:
    """The value at a dotted key path (``servers.fp32.on.8.p50_ms``; a list's item by its
    index: ``reference_images_s.0``)."""
    for key in path.split("."):
        figures = figures[int(key)] if isinstance(figures, list) else figures[key]
    return figures


_OPERATORS: dict[type[ast.AST], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def evaluate(figures: dict[str, Any], expression: str) -> float:
    """``expression`` with each ``{path}`` replaced by its figure: + - * / and brackets."""
    values: dict[str, float] = {}

    def substitute(match: re.Match[str]) -> str:
        name = f"figure_{len(values)}"
        values[name] = float(lookup(figures, match.group(1)))
        return name

    tree = ast.parse(re.sub(r"\{([^}]+)\}", substitute, expression), mode="eval")

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in values:
            return values[node.id]
        raise ValueError(f"not a figure expression: {expression!r}")

    return walk(tree)


def number(value: float, digits: int = 0) -> str:
    """``value`` as the pages show it: ``digits`` decimals, thousands separated."""
    return f"{value:,.{digits}f}"


def shown_as(value: float, shown: str) -> bool:
    """Whether ``shown`` (as the page writes it) is ``value`` at the digits it gives."""
    digits = len(shown.partition(".")[2])
    return number(value, digits).replace(",", "") == shown.replace(",", "")


# --- provenance -----------------------------------------------------------------------


def machine_text(machine: dict[str, Any]) -> str:
    """``a 2-core AMD EPYC (family 26, avx512_bf16), TensorFlow 2.21``."""
    details = [f"family {machine['cpu_family']}"]
    if machine.get("cpu_model") not in (None, "unknown"):
        details.append(f"model {machine['cpu_model']}")
    details += machine.get("bf16", [])
    return (
        f"a {machine['cpus']}-core {machine['cpu']} ({', '.join(details)}), "
        f"TensorFlow {machine['tensorflow']}"
    )


def provenance(run: dict[str, Any]) -> str:
    """One line: when, with what, on what, under what load."""
    machine = run["machine"]
    if "method" in run:
        line = f"Measured on {run['date']} on {machine_text(machine)}: {run['method']}."
    else:
        line = f"Measured on {run['date']} with `{run['command']}` on {machine_text(machine)}"
        load = machine.get("load_average")
        if load and load[0] != load[1]:
            line += f", load average {load[0]} at the start, {load[1]} at the end."
        else:
            line += f", load average {load[0]}." if load else "."
    return line


# --- the blocks ------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]], right: int = 1) -> str:
    """A Markdown table; columns from ``right`` on are right-aligned (numbers)."""
    align = ["---"] * right + ["---:"] * (len(header) - right)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _latency_and_batch_cells(row: dict[str, Any]) -> list[str]:
    """A server load level's p50, p95, mean batch and engine busy, as the tables show them."""
    return [
        number(row["p50_ms"]),
        number(row["p95_ms"]),
        number(row["mean_batch"], 1),
        f"{row['engine_busy_pct']:.0f}%",
    ]


def server_table(run: dict[str, Any]) -> str:
    rows = []
    for precision, batchings in run["figures"]["servers"].items():
        for batching, levels in batchings.items():
            for clients, row in levels.items():
                rows.append(
                    [
                        precision,
                        {"on": "on (max 8)", "off": "off (max 1)"}[batching],
                        clients,
                        number(row["throughput_rps"], 2),
                        f"{row['x_bare_fp32_encoder']:.2f}x",
                        *_latency_and_batch_cells(row),
                        str(row["errors"]),
                    ]
                )
    header = ["precision", "batching", "clients", "throughput (req/s)", "x bare fp32 encoder"]
    header += ["p50 (ms)", "p95 (ms)", "mean batch", "engine busy", "errors"]
    return table(header, rows, right=2)


def server_engine_table(run: dict[str, Any]) -> str:
    """The server (wrk's load) against the in-process engine at the batch size it runs."""
    rows = []
    for precision, batchings in run["figures"]["servers"].items():
        for clients, row in batchings["on"].items():
            rows.append(
                [
                    precision,
                    clients,
                    number(row["throughput_rps"], 2),
                    number(row["engine_images_s"], 2),
                    f"**{row['x_engine']:.2f}**",
                    *_latency_and_batch_cells(row),
                    number(row["event_loop_cpu_ms_per_request"], 2)
                    if "event_loop_cpu_ms_per_request" in row
                    else "",
                ]
            )
    header = ["precision", "clients", "server (req/s)", "engine (images/s)", "server / engine"]
    header += ["p50 (ms)", "p95 (ms)", "mean batch", "engine busy", "event loop CPU (ms/request)"]
    return table(header, rows, right=1)


def event_loop_table(run: dict[str, Any]) -> str:
    """Per request: the event loop's CPU by part (cProfile), decoding and resizing."""
    figures = run["figures"]
    profiles = figures["event_loop_ms_per_request"]
    names = list(profiles)
    parts = list(profiles[names[0]])
    rows = [
        [
            part if part.startswith("event loop") else f"event loop: {part}",
            *(number(profiles[n][part], 2) for n in names),
        ]
        for part in parts
    ]
    pre = figures["preprocessing_ms"]
    rows.append(
        ["decoding the JPEG (a decoding thread)", *(number(pre["decode"], 2) for _ in names)]
    )
    rows.append(
        ["resize and crop (a decoding thread)", *(number(pre["resize_and_crop"], 2) for _ in names)]
    )
    return table(["ms per request", *(n.split(",")[0] for n in names)], rows)


def startup_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Start-up before and after, in its parts."""
    b, a = before["figures"], after["figures"]
    rows = [
        ["import TensorFlow (either precision)", "imports", "tensorflow_s"],
        ["of which ml-dtypes", "imports", "ml_dtypes_s"],
        ["of which Keras (TensorFlow imports it)", "imports", "keras_s"],
        ["import the server's code (FastAPI, pydantic, captioner)", "imports", "server_code_s"],
    ]
    body = [[label, *([number(b[k][f], 2), number(a[k][f], 2)] * 2)] for label, k, f in rows]
    for label, field in [
        ("start to listening (the imports)", "listening_s"),
        ("load, warm-up included", "load_s"),
        ("of which warm-up", "warmup_s"),
        ("**start to the first caption**", "first_caption_s"),
    ]:
        cells = [number(b["fp32"][field], 2), number(a["fp32"][field], 2)]
        cells += [number(b["bf16"][field], 2), number(a["bf16"][field], 2)]
        body.append([label, *cells])
    body.append(
        [
            "start to the first caption, nothing remembered",
            "",
            "",
            number(b["bf16"]["first_start_first_caption_s"], 2),
            number(a["bf16"]["first_start_first_caption_s"], 2),
        ]
    )
    header = ["seconds", "fp32 before", "fp32 after", "bf16 before", "bf16 after"]
    return table(header, body)


def caption_table(run: dict[str, Any]) -> str:
    figures = run["figures"]
    precisions = list(figures)

    def row(label: str, render: Callable[[dict[str, Any]], str]) -> list[str]:
        return [label, *(render(figures[p]) for p in precisions)]

    def batch(stage: str) -> Callable[[dict[str, Any]], str]:
        return lambda f: (
            f"{number(f[f'{stage}_8_ms'])} ms, {number(f[f'{stage}_8_images_s'], 1)} images/s, "
            f"{f[f'{stage}_8_x_bare_fp32_encoder']:.2f}x"
        )

    rows = [
        row(
            "`captioner caption --json`, 1 image, cold process (start-up, load, trace, caption)",
            lambda f: f"{number(f['cold_1_image_s'], 1)} s",
        ),
        row(
            "`captioner caption --json`, 8 images, cold process",
            lambda f: f"{number(f['cold_8_images_s'], 1)} s",
        ),
        row(
            "loading the model in process (bf16: with the calibration)",
            lambda f: f"{number(f['load_s'], 2)} s",
        ),
        row("preprocess one 640x480 JPEG", lambda f: f"{number(f['preprocess_ms'], 1)} ms"),
        row(
            "caption 1 image (encoder and beam search)", lambda f: f"{number(f['caption_1_ms'])} ms"
        ),
        row("bare encoder, 1 image", lambda f: f"{number(f['encoder_1_ms'])} ms"),
        row("caption a batch of 8", batch("caption")),
        row("bare encoder, batch of 8", batch("encoder")),
        row(
            "full batches, two stages pipelined against one after the other",
            lambda f: f"{f['pipelined_x_sequential']:.2f}x",
        ),
    ]
    return table(["what", *precisions], rows)


def bf16_ways_table(run: dict[str, Any]) -> str:
    rows = [
        [
            way,
            number(f["batch_1_ms"], 1),
            f"{f['batch_1_x_fp32']:.2f}x",
            number(f["batch_8_ms"], 1),
            f"{f['batch_8_x_fp32']:.2f}x",
            f"{f['features_vs_fp32_pct']:.2f}%",
        ]
        for way, f in run["figures"].items()
    ]
    header = ["way", "batch 1 (ms)", "x fp32", "batch 8 (ms)", "x fp32", "features vs fp32"]
    return table(header, rows)


def footprint_table(*runs: dict[str, Any]) -> str:
    medians = [run["figures"]["medians"] for run in runs]
    lines = [
        ("start to ready (model on local disk)", "ready_s", "{} s", 1),
        (
            "of which listening to ready (load, warm-up; bf16: the calibration too)",
            "loading_s",
            "{} s",
            1,
        ),
        ("resident memory, ready and idle", "idle_mib", "{} MiB", 0),
        ("resident memory after 20 sequential requests", "sequential_mib", "{} MiB", 0),
        (
            "**peak resident memory (VmHWM), after 32 requests at concurrency 8**",
            "peak_mib",
            "**{} MiB**",
            0,
        ),
        ("one image, sequential, median latency", "latency_ms", "{} ms", 0),
        ("throughput at concurrency 8", "throughput_images_s", "{} images/s", 1),
    ]
    rows = [
        [label, *(form.format(number(m[key], digits)) for m in medians)]
        for label, key, form, digits in lines
    ]
    return table(["figure", *(run["name"] for run in runs)], rows)


def footprint_breakdown(fp32: dict[str, Any], bf16: dict[str, Any]) -> str:
    parts = fp32["figures"]["breakdown_mib"]
    rows = [
        [
            "Python, TensorFlow and the server's code, no model "
            f"({number(parts['after_import'])} after TensorFlow's import, "
            f"{number(parts['no_model'])} once its start-up pages are released)",
            number(parts["no_model"]),
        ],
        [
            "the model's weights, each held once "
            f"(bf16: {number(bf16['figures']['breakdown_mib']['weights'])})",
            number(parts["weights"]),
        ],
        [
            "the rest: TensorFlow's buffers for a batch of 8, the library code serving runs, "
            "requests in flight",
            number(parts["rest"]),
        ],
    ]
    return table(["part", "MiB"], rows)


def accuracy_table(run: dict[str, Any]) -> str:
    demo, full = run["figures"]["demo"], run["figures"]["full_size_random"]
    both = ("fp32", "bf16")
    rows = [
        ["demo model, exact match", *(f"{demo[p]['exact_match_pct']:.1f}%" for p in both)],
        ["demo model, BLEU-4", *(f"{demo[p]['bleu4']:.4f}" for p in both)],
        ["demo model, top caption the same in both", "", f"{demo['top_same_pct']:.1f}%"],
        [
            "full-size random checkpoint, top caption the same in both",
            "",
            f"{full['top_same_pct']:.1f}% of {full['images']}",
        ],
    ]
    return table(["model", "fp32", "bf16"], rows, right=3)


def burst_table(run: dict[str, Any]) -> str:
    rows = [
        [
            clients,
            ", ".join(f"{count} x {status}" for status, count in row["answers"].items()),
            f"{number(row['before_mib'])} MiB",
            f"{number(row['peak_mib'])} MiB",
            f"{number(row['after_mib'])} MiB",
            f"{number(row['took_s'], 1)} s",
        ]
        for clients, row in run["figures"]["bursts"].items()
    ]
    header = ["clients", "answers", "RSS before", "peak", "10 s after", "burst took"]
    return table(header, rows, right=0).replace("| ---: | ---: |", "| ---: | --- |", 1)


def soak_phases(run: dict[str, Any]) -> str:
    rows = [
        [
            str(p["phase"]),
            str(p["clients"]),
            number(p["requests"]),
            number(p["rps"], 1),
            f"{number(p['good_p50_ms'])} / {number(p['good_p99_ms'])} ms",
            f"{number(p['batch_p50_ms'])} / {number(p['batch_p99_ms'])} ms",
            str(p["unexpected"]),
            f"{number(p['rss_end_mib'])} MiB",
        ]
        for p in run["figures"]["phases"]
    ]
    header = ["phase", "clients", "requests", "req/s", "single image p50 / p99"]
    header += ["batch p50 / p99", "unexpected answers", "RSS at the end"]
    return table(header, rows, right=0)


def soak_kinds(run: dict[str, Any]) -> str:
    names = {
        "good": "one image",
        "batch": "batch",
        "bad_image": "undecodable bytes",
        "bad_parameter": "parameter out of range",
        "pixel_bomb": "pixel bomb",
        "too_large": "body over the limit",
    }
    figures = run["figures"]
    rows = []
    for kind, row in figures["kinds"].items():
        answers = ", ".join(f"{number(n)} x {status}" for status, n in row["answers"].items())
        if kind == "batch":
            answers += (
                f" ({number(figures['batch_files_refused'])} files inside them answered "
                "with their own 400)"
            )
        rows.append([names[kind], ", ".join(map(str, row["expected"])), answers])
    return table(["kind", "expected", "answers"], rows, right=3)


def max_table(run: dict[str, Any]) -> str:
    servers = run["figures"]
    best_max = max(servers["MAX"]["rps_1_client"], servers["MAX"]["rps_8_clients"])

    def ratio(name: str) -> str:
        if name == "MAX":
            return ""
        return f"{servers[name]['rps_8_clients'] / best_max:.1f}x"

    rows = [
        [
            name,
            f"{number(s['ready_s'], 2)} s",
            f"{number(s['p50_1_client_ms'], 1)} ms",
            number(s["rps_1_client"], 2),
            number(s["rps_8_clients"], 1),
            ratio(name),
            f"{number(s['rss_mib'])} MiB",
        ]
        for name, s in servers.items()
    ]
    header = ["server", "start to ready", "p50, 1 client", "req/s, 1 client", "req/s, 8 clients"]
    header += ["x MAX's best req/s", "resident memory"]
    return table(header, rows)


Renderer = Callable[..., str]
BLOCKS: dict[str, Renderer] = {
    "server-load": server_table,
    "server-engine": server_engine_table,
    "event-loop": event_loop_table,
    "startup": startup_table,
    "engine-speed": caption_table,
    "bf16-ways": bf16_ways_table,
    "footprint": footprint_table,
    "footprint-breakdown": footprint_breakdown,
    "accuracy": accuracy_table,
    "burst": burst_table,
    "soak-phases": soak_phases,
    "soak-kinds": soak_kinds,
    "max": max_table,
}


def render_block(name: str, refs: str) -> str:
    """The block ``name`` of runs ``refs``, with its markers and each run's provenance."""
    runs = [load_run(ref) for ref in refs.split(",")]
    lines = "\n\n".join(dict.fromkeys(provenance(run) for run in runs))
    body = BLOCKS[name](*runs)
    return f"<!-- figures: {name} {refs} -->\n{lines}\n\n{body}\n<!-- /figures -->"


def render_page(text: str) -> str:
    """``text`` with every generated block rendered afresh."""
    return BLOCK.sub(lambda m: render_block(m.group(1), m.group(2)), text)


# --- the checks ------------------------------------------------------------------------


def _prose(text: str) -> str:
    """``text`` without its generated blocks, code blocks, inline code and link targets."""
    text = BLOCK.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def page_problems(page: str, text: str) -> list[str]:
    """What in ``text`` disagrees with the figures files, one line each."""
    problems = []
    if render_page(text) != text:
        problems.append(f"{page}: a generated block is out of date (run scripts/figures.py)")
    prose = _prose(text)
    for match in INLINE.finditer(prose):
        shown, _, ref, expression = match.groups()
        try:
            value = evaluate(load_run(ref)["figures"], expression)
        except (KeyError, IndexError, ValueError, OSError) as exc:
            problems.append(f"{page}: {shown} cites what is not there ({ref} {expression}: {exc})")
            continue
        if not shown_as(value, shown):
            problems.append(f"{page}: {shown} should be {value:g} ({ref} {expression})")
    unmarked = INLINE.sub("", prose)
    quantities = set()
    for match in MEASURED.finditer(unmarked):
        unit = match.group(2)
        quantity = match.group(1) + (unit if unit in ("x", "%") else " " + unit.strip())
        quantities.add(quantity)
        if quantity not in FIXED.get(page, set()):
            problems.append(f"{page}: {match.group(0)!r} has no source (<!--fig ...--> or FIXED)")
    for unused in sorted(FIXED.get(page, set()) - quantities):
        problems.append(f"{page}: FIXED lists {unused!r}, which the page no longer has")
    return problems


def check() -> list[str]:
    """Every problem of every page, and of every chart drawn from an older file."""
    problems = []
    for page in PAGES:
        problems += page_problems(page, (REPO / page).read_text())
    for name, sources in CHARTS.items():
        svg = CHARTS_DIR / f"{name}.svg"
        if not svg.exists() or chart_stamp(sources) not in svg.read_text():
            problems.append(f"{svg.relative_to(REPO)}: drawn from older figures (--charts)")
    return problems


# --- the charts ------------------------------------------------------------------------

CHARTS: dict[str, tuple[str, ...]] = {
    "server-load": ("bench_server",),
    "max": ("max_comparison",),
    "soak-memory": ("soak",),
    "burst-memory": ("burst",),
}


def chart_stamp(sources: tuple[str, ...]) -> str:
    """What a chart records of the files it was drawn from: their digest."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update((FIGURES_DIR / f"{source}.json").read_bytes())
    return f"figures sha256 {digest.hexdigest()[:16]}"


def draw_charts() -> None:
    """Redraw every chart as SVG, stamped with the digest of the files it shows."""
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "captioner"
    CHARTS_DIR.mkdir(parents=True, exist_ok=True)
    for name, sources in CHARTS.items():
        figure = CHART_DRAWERS[name](plt)
        figure.savefig(
            CHARTS_DIR / f"{name}.svg",
            metadata={"Date": None, "Description": chart_stamp(sources)},
        )
        plt.close(figure)
        print(f"drew {(CHARTS_DIR / name).relative_to(REPO)}.svg")


def _only_run(script: str) -> dict[str, Any]:
    runs = json.loads((FIGURES_DIR / f"{script}.json").read_text())["runs"]
    return dict(next(iter(runs.values())))


def _server_load_chart(plt: Any) -> Any:
    servers = _only_run("bench_server")["figures"]["servers"]
    figure, (rate, p95) = plt.subplots(1, 2, figsize=(9, 3.5))
    for precision, batchings in servers.items():
        for batching, levels in batchings.items():
            clients = [int(c) for c in levels]
            label = f"{precision}, batching {batching}"
            rate.plot(clients, [r["throughput_rps"] for r in levels.values()], "o-", label=label)
            p95.plot(clients, [r["p95_ms"] for r in levels.values()], "o-", label=label)
    rate.set(xlabel="closed-loop clients", ylabel="requests/s", title="Throughput")
    p95.set(xlabel="closed-loop clients", ylabel="ms", title="p95 latency")
    rate.legend()
    figure.tight_layout()
    return figure


def _max_chart(plt: Any) -> Any:
    servers = _only_run("max_comparison")["figures"]
    names = list(servers)
    figure, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    panels = (
        ("rps_8_clients", "requests/s, 8 clients"),
        ("p50_1_client_ms", "p50 ms, 1 client"),
        ("rss_mib", "resident MiB"),
    )
    for axis, (key, title) in zip(axes, panels, strict=True):
        axis.bar(names, [servers[n][key] for n in names], color=["grey", "C0", "C1"])
        axis.set_title(title)
        axis.tick_params(axis="x", labelrotation=20)
    figure.tight_layout()
    return figure


def _soak_chart(plt: Any) -> Any:
    figures = _only_run("soak")["figures"]
    phases = figures["phases"]
    figure, axis = plt.subplots(figsize=(8, 3.2))
    numbers = [p["phase"] for p in phases]
    axis.plot(numbers, [p["rss_end_mib"] for p in phases], "o-", label="RSS at phase end")
    axis.axhline(figures["memory_mib"]["start"], color="grey", ls=":", label="start")
    axis.axhline(figures["memory_mib"]["end"], color="C2", ls="--", label="10 s after")
    for p in phases:
        axis.annotate(f"{p['clients']}", (p["phase"], p["rss_end_mib"]), textcoords="offset "
                      "points", xytext=(0, 6), ha="center", fontsize=8)  # fmt: skip
    axis.set(xlabel="phase (clients above each point)", ylabel="MiB", title="Soak: memory")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def _burst_chart(plt: Any) -> Any:
    runs = json.loads((FIGURES_DIR / "burst.json").read_text())["runs"]
    figure, axes = plt.subplots(1, len(runs), figsize=(9, 3.2), sharey=True)
    for axis, (name, run) in zip(axes, runs.items(), strict=True):
        bursts = run["figures"]["bursts"]
        for offset, key in enumerate(("before_mib", "peak_mib", "after_mib")):
            positions = [i + 0.27 * (offset - 1) for i in range(len(bursts))]
            values = [b[key] for b in bursts.values()]
            axis.bar(positions, values, width=0.27, label=key.removesuffix("_mib"))
        axis.set_xticks(range(len(bursts)), [f"{c} clients" for c in bursts])
        axis.set_title(f"Burst: {name} images")
    axes[0].set_ylabel("MiB")
    axes[0].legend(loc="lower left")
    figure.tight_layout()
    return figure


CHART_DRAWERS: dict[str, Callable[[Any], Any]] = {
    "server-load": _server_load_chart,
    "max": _max_chart,
    "soak-memory": _soak_chart,
    "burst-memory": _burst_chart,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report, change nothing")
    parser.add_argument("--charts", action="store_true", help="also redraw the charts")
    args = parser.parse_args()
    if not args.check:
        for page in PAGES:
            path = REPO / page
            path.write_text(render_page(path.read_text()))
        if args.charts:
            draw_charts()
    problems = check()
    print("\n".join(problems) or "every figure agrees with docs/figures")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
