"""PNG plots of saved benchmark results: ``python -m bench plots``.

Reads the JSON that ``bench search --json`` and ``bench stream --json`` wrote
and draws, into ``--out`` (``docs/benchmarks`` by default):

* ``recall-qps.png`` — recall@10 against queries/s of one client: the index
  over its sweep of probes (one line per search result given), hnswlib in
  memory over its sweep of ef, and the exact paths as points;
* ``updates.png`` — recall@10 and p50/p99 latency at each checkpoint of a
  stream, with a fresh build of each checkpoint's rows as the reference;
* ``memory.png`` — head-index bytes and client RSS against the raw vector
  bytes, over search results of different sizes;
* ``side-by-side.png`` — recall@10 against queries/s of pgvector and
  vectorindex, every repetition of a ``bench side-by-side`` run (which draws
  it beside its JSON itself).

    python -m bench plots --search results/search-int8.json:int8 results/search-f32.json:float32 \\
        --stream results/stream.json --memory results/search-30k.json results/search-int8.json
    python -m bench plots --side-by-side results/side-by-side-20000.json

Needs matplotlib (``pip install -r requirements-bench.txt``); nothing else in
the project does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import ROOT


def pyplot():
    """matplotlib's pyplot, drawing into files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def labelled(items: list[str]) -> list[tuple[dict, str]]:
    """FILE or FILE:LABEL -> (the JSON, its label)."""
    found = []
    for item in items:
        path, _, label = item.partition(":")
        found.append((json.loads(Path(path).read_text()), label or Path(path).stem))
    return found


def recall_qps(results: list[tuple[dict, str]], out: Path, plt) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    baselines = None
    for data, label in results:
        sweep = data["sweep"]
        axes.plot([r["recall_at_10"] for r in sweep], [r["queries_per_s"] for r in sweep], "o-", label=f"vectorindex, {label}")
        for row in sweep:
            axes.annotate(str(row["probes"]), (row["recall_at_10"], row["queries_per_s"]), fontsize=7,
                          textcoords="offset points", xytext=(3, 3))
        if "hnswlib" in data:
            baselines = data
    if baselines is not None:
        sweep = baselines["hnswlib"]["sweep"]
        axes.plot([r["recall_at_10"] for r in sweep], [r["queries_per_s"] for r in sweep], "s--",
                  label="hnswlib, all vectors in memory")
        axes.plot([1.0], [baselines["numpy_exact"]["queries_per_s"]], "^", label="exact numpy scan in memory")
        axes.plot([1.0], [baselines["orm_exact"]["queries_per_s"]], "v", label="exact path through the ORM")
    axes.set_yscale("log")
    axes.set_xlabel("recall@10")
    axes.set_ylabel("queries/s, one client (log)")
    axes.set_title(f"{results[0][0]['rows']:,} × {results[0][0]['dimensions']} ({results[0][0]['vendor']}); labels: probes")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "recall-qps.png", dpi=120)


def updates(data: dict, out: Path, plt) -> None:
    timeline = data["timeline"]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    steps = list(range(len(timeline)))
    top.plot(steps, [p["recall_at_10"] for p in timeline], "o-", label="under updates")
    fresh = [(i, p["fresh"]) for i, p in enumerate(timeline) if "fresh" in p]
    # The first checkpoint is a fresh build itself.
    references = [(0, timeline[0]), *fresh]
    top.plot([i for i, _ in references], [p["recall_at_10"] for _, p in references], "s--", color="grey",
             label="fresh build of the same rows")
    top.set_ylabel("recall@10")
    top.legend(fontsize=8)
    bottom.plot(steps, [p["p99_ms"] for p in timeline], "o-", color="tab:red", label="p99 under updates")
    bottom.plot(steps, [p["p50_ms"] for p in timeline], "o-", color="tab:orange", label="p50 under updates")
    bottom.plot([i for i, _ in references], [p["p99_ms"] for _, p in references], "s--", color="tab:red", alpha=0.5,
                label="p99, fresh build, nothing else running")
    bottom.axhline(1.5 * timeline[0]["p99_ms"], color="grey", linestyle=":", label="1.5 × the starting p99")
    bottom.set_ylabel("latency, ms")
    bottom.legend(fontsize=8)
    bottom.set_xticks(steps, [p["at"] for p in timeline], rotation=30, ha="right", fontsize=7)
    top.set_title(f"{data.get('vendor', '')}: built on {data['build_rows']:,}, streamed {data['streamed']:,}, "
                  f"deleted {data['deleted']:,}")
    for axes in (top, bottom):
        axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "updates.png", dpi=120)


def memory(results: list[tuple[dict, str]], out: Path, plt) -> None:
    rows = sorted((data for data, _label in results), key=lambda d: d["memory"]["raw_vector_bytes"])
    raw = [d["memory"]["raw_vector_bytes"] / 2**20 for d in rows]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(raw, raw, ":", color="grey", label="raw vectors (N × d × 4)")
    axes.plot(raw, [d["memory"]["head_index_bytes"] / 2**20 for d in rows], "o-", label="head index")
    with_clients = [(r, d) for r, d in zip(raw, rows) if "two_clients" in d]
    if with_clients:
        axes.plot([r for r, _ in with_clients],
                  [max(c["rss_mib"] for c in d["two_clients"]["clients"]) for _, d in with_clients],
                  "s-", label="client process RSS (Django + head index)")
    axes.set_xlabel("raw vector bytes, MiB")
    axes.set_ylabel("MiB")
    axes.set_title("memory a process holds against the data it searches")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "memory.png", dpi=120)


def side_by_side(data: dict, path: Path, plt) -> None:
    """Both systems' sweeps of a ``bench side-by-side`` run, one line per system and repetition."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "--", ":", "-."]
    for number, repetition in enumerate(data["repetitions"]):
        targets = repetition.get("vectorindex_targets", [])
        if targets:
            axes.scatter([r["recall_at_10"] for r in targets], [r["queries_per_s"] for r in targets], marker="*",
                         s=80, color="tab:red", zorder=3, label=f"vectorindex, recall asked for, run {number + 1}")
            for row in targets:
                asked = f"recall {row['recall']}" if row["recall"] else "default"
                axes.annotate(f"{asked} ({row['probes']})", (row["recall_at_10"], row["queries_per_s"]), fontsize=7,
                              textcoords="offset points", xytext=(3, -9), color="tab:red")
        for system, rows in repetition.items():
            if system == "vectorindex_targets":
                continue
            knob = "ef_search" if system == "pgvector" else "probes"
            axes.plot([r["recall_at_10"] for r in rows], [r["queries_per_s"] for r in rows],
                      styles[number % len(styles)], marker="s" if system == "pgvector" else "o",
                      color="tab:blue" if system == "pgvector" else "tab:orange", label=f"{system}, run {number + 1}")
            for row in rows:
                axes.annotate(str(row[knob]), (row["recall_at_10"], row["queries_per_s"]), fontsize=7,
                              textcoords="offset points", xytext=(3, 3))
    ours = data["vectorindex"]["vendor"]
    theirs = "" if "skipped" in data["pgvector"] else f" and pgvector {data['pgvector']['extension']} HNSW"
    axes.set_yscale("log")
    axes.set_xlabel("recall@10")
    axes.set_ylabel("queries/s, one client, instances fetched (log)")
    axes.set_title(f"{data['rows']:,} × {data['dimensions']}, {data['queries']:,} queries: vectorindex ({ours}){theirs}"
                   "\nlabels: probes, ef_search", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--search", nargs="*", default=[], help="bench search JSON files, FILE or FILE:LABEL")
    parser.add_argument("--stream", type=Path, help="a bench stream JSON file")
    parser.add_argument("--memory", nargs="*", default=[], help="bench search JSON files of different sizes")
    parser.add_argument("--side-by-side", type=Path, help="a bench side-by-side JSON file")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    plt = pyplot()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.search:
        recall_qps(labelled(args.search), args.out, plt)
    if args.stream:
        updates(json.loads(args.stream.read_text()), args.out, plt)
    if args.memory:
        memory(labelled(args.memory), args.out, plt)
    if args.side_by_side:
        side_by_side(json.loads(args.side_by_side.read_text()), args.out / "side-by-side.png", plt)
    for name in ("recall-qps.png", "updates.png", "memory.png", "side-by-side.png"):
        if (args.out / name).exists():
            print(args.out / name)


if __name__ == "__main__":
    main()
