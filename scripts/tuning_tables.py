#!/usr/bin/env python3
"""Markdown tables for docs/autotuning.md from `convjit tune --json` reports
at two budgets, and from `compare_schedules` re-timing the schedules found.

    python3 scripts/tuning_tables.py SHORT.json LONG.json [COMPARE.txt]

SHORT and LONG are `convjit tune --json` outputs (e.g. 10 s and 120 s per
layer). COMPARE is the output of
`cargo run --release --example compare_schedules -- heuristic cache:SHORT_CACHE cache:LONG_CACHE`,
which times the three schedules of each layer interleaved, in one process.
Standard library only; nothing is measured here.
"""

import json
import sys


def load(path):
    with open(path) as f:
        report = json.load(f)
    return report, {r["layer"]: r for r in report["results"]}


def compare_rows(path):
    """layer -> [MACs/tick per variant] from compare_schedules' table."""
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
    timed = compare_rows(argv[2]) if len(argv) > 2 else {}
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

    if not timed:
        return
    print(f"\nRe-timed afterwards in one process, interleaved (median MACs per TSC tick):\n")
    print(f"| layer | heuristic | tuned {s_budget:g} s | tuned {l_budget:g} s | "
          f"{s_budget:g} s ÷ heuristic | {s_budget:g} s ÷ {l_budget:g} s |")
    print("|---|---|---|---|---|---|")
    within, total, not_slower = 0, 0, 0
    for layer, cells in timed.items():
        if len(cells) < 3 or None in cells[:3]:
            continue
        h, a, b = cells[:3]
        total += 1
        within += a >= 0.95 * b
        not_slower += a >= h
        print(f"| {layer} | {h:.2f} | {a:.2f} | {b:.2f} | {a / h:.2f} | {a / b:.2f} |")
    print(f"\n{s_budget:g} s within 5% of {l_budget:g} s on {within} of {total} layers; "
          f"{s_budget:g} s at least the heuristic on {not_slower} of {total}.")


if __name__ == "__main__":
    main(sys.argv[1:])
