#!/usr/bin/env python3
"""Markdown tables for docs/autotuning.md from `convjit tune --json` reports
at two budgets, and from `compare_schedules --relative` re-timing the
schedules found.

    python3 scripts/tuning_tables.py SHORT.json LONG.json [COMPARE.txt...]

SHORT and LONG are `convjit tune --json` outputs (e.g. 10 s and 120 s per
layer). Each COMPARE is the output of
`cargo run --release --example compare_schedules -- --relative heuristic cache:SHORT_CACHE cache:LONG_CACHE`,
which times the three schedules of each layer interleaved in one process
and prints each one's speed relative to the heuristic's (median over
rounds of paired ratios); with several, each cell is the median over them.
Standard library only; nothing is measured here.
"""

import json
import statistics
import sys


def load(path):
    with open(path) as f:
        report = json.load(f)
    return report, {r["layer"]: r for r in report["results"]}


def compare_rows(path):
    """layer -> [speed relative to the heuristic, per variant]."""
    rows = {}
    with open(path) as f:
        for line in f:
            cells = line.split()
            if len(cells) < 2 or cells[0] == "layer" or cells[0].startswith("#"):
                continue
            try:
                rows[cells[0]] = [None if c == "-" else float(c) for c in cells[1:]]
            except ValueError:
                continue
    return rows


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    short_report, short = load(argv[0])
    long_report, long = load(argv[1])
    runs = [compare_rows(p) for p in argv[2:]]
    s_budget, l_budget = short_report["budget_s"], long_report["budget_s"]

    print(f"Each tuning run's own figures (its final interleaved timing), MACs per TSC tick:\n")
    print(f"| layer | heuristic | tuned {s_budget:g} s | × | candidates | per s | "
          f"tuned {l_budget:g} s | × | candidates |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layer, r in short.items():
        q = long.get(layer)
        cells = [layer, f"{r['heuristic_macs_per_cycle']:.2f}", f"{r['tuned_macs_per_cycle']:.2f}",
                 f"{r['speedup']:.2f}", str(r["candidates"]),
                 f"{r['candidates'] / r['seconds']:.0f}"]
        if q:
            cells += [f"{q['tuned_macs_per_cycle']:.2f}", f"{q['speedup']:.2f}",
                      str(q["candidates"])]
        else:
            cells += ["-", "-", "-"]
        print("| " + " | ".join(cells) + " |")

    if not runs:
        return
    print(f"\nRe-timed afterwards, interleaved in one process: speed over the heuristic's "
          f"(median over rounds of paired ratios; median of {len(runs)} runs):\n")
    print(f"| layer | tuned {s_budget:g} s | tuned {l_budget:g} s | {s_budget:g} s ÷ {l_budget:g} s |")
    print("|---|---|---|---|")
    within, not_slower, total = 0, 0, 0
    for layer in runs[0]:
        cells = [r[layer] for r in runs if layer in r and None not in r[layer][:3]]
        if not cells:
            continue
        a = statistics.median(c[1] for c in cells)
        b = statistics.median(c[2] for c in cells)
        total += 1
        within += a >= 0.95 * b
        not_slower += a >= 0.995
        print(f"| {layer} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
    print(f"\n{s_budget:g} s within 5% of {l_budget:g} s on {within} of {total} layers; "
          f"{s_budget:g} s at least the heuristic (to 2 decimals) on {not_slower} of {total}.")


if __name__ == "__main__":
    main(sys.argv[1:])
