#!/usr/bin/env python3
"""Markdown tables for docs/benchmarks.md and the README from `convjit bench
--json-out` reports: runs on one thread and, optionally, as many runs on two
threads (run i of one thread paired with run i of two), and as many
`scripts/peers.py --json` runs of the peers made right after each (run i of
convjit paired with run i of the peers, for the threads of each).

    python3 scripts/bench_tables.py ONE_THREAD.json... [--two TWO_THREADS.json...]
        [--peers PEERS.json...]

With several runs, every cell is the median over the runs of that run's own
figure (a ratio is taken within each run, then the median of the ratios), so
no figure mixes runs. Standard library only; nothing is measured here.
"""

import json
import math
import statistics
import sys


def load(path):
    with open(path) as f:
        report = json.load(f)
    rows = {}
    for r in report["results"]:
        rows.setdefault(r["layer"], {})[r["engine"]] = r
    return report, rows


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cell(value, fmt):
    return "-" if value is None else fmt.format(value)


def field(runs, layer, engine, key):
    return median([rows[layer][engine][key] for _, rows in runs if engine in rows[layer]])


def ceilings(runs):
    return ", ".join(
        f"{r['ceiling_macs_per_cycle']:.2f} ({r['ceiling']['worst_macs_per_cycle']:.2f}–"
        f"{r['ceiling']['best_macs_per_cycle']:.2f})"
        for r, _ in runs
    )


def one_thread(runs):
    print(f"Ceilings (samples): {ceilings(runs)}.\n")
    print("| layer | kind | jit MACs/cyc | % ceiling | naive | im2col | jit ÷ naive | jit ÷ im2col | compile ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    summary = {"naive": [], "im2col": [], "compile": []}
    for layer, engines in runs[0][1].items():
        jit = engines["jit"]
        speedups = {e: field(runs, layer, e, "jit_speedup") for e in ("naive", "im2col")}
        compile_ms = field(runs, layer, "jit", "compile_ms")
        for e, v in speedups.items():
            summary[e].append(v)
        summary["compile"].append(compile_ms)
        print("| " + " | ".join([
            layer,
            jit["kind"],
            cell(field(runs, layer, "jit", "macs_per_cycle"), "{:.2f}"),
            cell(field(runs, layer, "jit", "pct_of_ceiling"), "{:.0f}%"),
            cell(field(runs, layer, "naive", "macs_per_cycle"), "{:.3f}"),
            cell(field(runs, layer, "im2col", "macs_per_cycle"), "{:.2f}"),
            cell(speedups["naive"], "{:.1f}×"),
            cell(speedups["im2col"], "{:.2f}×"),
            cell(compile_ms, "{:.2f}"),
        ]) + " |")
    print()
    for e in ("naive", "im2col"):
        v = [x for x in summary[e] if x is not None]
        if v:
            print(f"jit ÷ {e}: geometric mean {geomean(v):.2f}× ({min(v):.2f}× to {max(v):.2f}×).")
    c = summary["compile"]
    print(f"Compile time: median {statistics.median(c):.2f} ms, at most {max(c):.2f} ms.")


def two_threads(ones, twos):
    print(f"\nCeilings, one core (samples): {ceilings(twos)}.\n")
    print("| layer | MACs | jit threads | jit MACs/cyc | jit 2 thr ÷ 1 thr | im2col MACs/cyc | jit ÷ im2col |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    gains_big = []
    for layer, engines in twos[0][1].items():
        jit = engines["jit"]
        gain = median([one[layer]["jit"]["median_s"] / two[layer]["jit"]["median_s"]
                       for (_, one), (_, two) in zip(ones, twos)])
        if jit["macs_valid"] > 10_000_000:
            gains_big.append(gain)
        print("| " + " | ".join([
            layer,
            f"{jit['macs_valid'] / 1e6:.1f} M",
            str(jit["threads"]),
            cell(field(twos, layer, "jit", "macs_per_cycle"), "{:.2f}"),
            cell(gain, "{:.2f}×"),
            cell(field(twos, layer, "im2col", "macs_per_cycle"), "{:.2f}"),
            cell(field(twos, layer, "im2col", "jit_speedup"), "{:.2f}×"),
        ]) + " |")
    if gains_big:
        print(f"\nTwo threads over one on the layers above 10 M MACs: {min(gains_big):.2f}× to "
              f"{max(gains_big):.2f}× (median {statistics.median(gains_big):.2f}×).")


def load_peers(path):
    """{(layer, engine, threads): macs_per_cycle} of one peers.py --json run."""
    with open(path) as f:
        report = json.load(f)
    return {(r["layer"], r["engine"], r["threads"]): r.get("macs_per_cycle")
            for r in report["results"] if not r.get("error")}


def against_peers(runs, peers, threads):
    """jit, im2col and naive against onnxruntime and OpenVINO, each cell the
    median over the paired runs; ratios taken within each pair."""
    print(f"\n{threads} thread{'s' if threads > 1 else ''}, MACs per TSC tick "
          "(jit ÷ ort: the jit's speed over onnxruntime's):\n")
    print("| layer | jit | im2col | naive | onnxruntime | OpenVINO | jit ÷ ort | jit ÷ im2col |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for layer in runs[0][1]:
        def mine(engine):
            return field(runs, layer, engine, "macs_per_cycle")

        def peer(engine):
            return median([p.get((layer, engine, threads)) for p in peers])

        ratio = median([
            rows[layer]["jit"]["macs_per_cycle"] / p[(layer, "onnxruntime", threads)]
            for (_, rows), p in zip(runs, peers)
            if p.get((layer, "onnxruntime", threads))
        ])
        if ratio is not None:
            ratios.append(ratio)
        print("| " + " | ".join([
            layer,
            cell(mine("jit"), "{:.2f}"),
            cell(mine("im2col"), "{:.2f}"),
            cell(mine("naive"), "{:.3f}"),
            cell(peer("onnxruntime"), "{:.2f}"),
            cell(peer("openvino"), "{:.2f}"),
            cell(ratio, "{:.2f}×"),
            cell(field(runs, layer, "im2col", "jit_speedup"), "{:.2f}×"),
        ]) + " |")
    if ratios:
        print(f"\njit ÷ onnxruntime: geometric mean {geomean(ratios):.2f}× "
              f"({min(ratios):.2f}× to {max(ratios):.2f}×).")


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    peers_at = args.index("--peers") if "--peers" in args else len(args)
    peers = [load_peers(p) for p in args[peers_at + 1:]]
    args = args[:peers_at]
    split = args.index("--two") if "--two" in args else len(args)
    ones = [load(p) for p in args[:split]]
    twos = [load(p) for p in args[split + 1:]]
    one_thread(ones)
    if twos:
        if len(twos) != len(ones):
            sys.exit("give as many two-thread runs as one-thread runs")
        two_threads(ones, twos)
    if peers:
        if len(peers) != len(ones):
            sys.exit("give as many peers runs as one-thread runs")
        against_peers(ones, peers, 1)
        if twos:
            against_peers(twos, peers, 2)


if __name__ == "__main__":
    main()
