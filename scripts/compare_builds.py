#!/usr/bin/env python3
"""Times the JIT of two convjit builds on the same suites, interleaved.

    python3 scripts/compare_builds.py --base OLD/convjit --new target/release/convjit \
        [--suite suite/layers.json --suite suite/holdout.json] [--threads 1 --threads 2] \
        [--rounds 3] [--min-time 0.3] [--isa avx2]

Each round runs `convjit bench --engines jit --no-check --json` once per
suite, thread count and build, the two builds one after the other (the
base first in odd rounds, the new one first in even ones), so that both
see the same state of a shared host. Per layer and thread count it prints
the median over the rounds of each build's median run time, and their
ratio (base over new: above 1, the new build is faster), then the median
compile time of each build over every layer and round. `--isa` passes
the widest vector ISA to both builds (a host's lower ISAs measured on
it). Standard library only.
"""

import argparse
import json
import statistics
import subprocess
import sys
from collections import defaultdict


def bench(binary, suite, threads, min_time, isa):
    """One `convjit bench` run: its results, by layer."""
    command = [binary, "bench", "--suite", suite, "--engines", "jit", "--no-check",
               "--min-time", str(min_time), "--threads", str(threads), "--json"]
    if isa:
        command += ["--isa", isa]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["results"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the convjit binary to compare against")
    parser.add_argument("--new", required=True, help="the convjit binary compared")
    parser.add_argument("--suite", action="append", help="a suite file (repeatable)")
    parser.add_argument("--threads", action="append", type=int, help="a thread count (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.3)
    parser.add_argument("--isa", help="the widest vector ISA both builds use (default: the host's)")
    args = parser.parse_args()
    suites = args.suite or ["suite/layers.json", "suite/holdout.json"]
    threads = args.threads or [1, 2]
    builds = [("base", args.base), ("new", args.new)]
    times = defaultdict(list)  # (suite, threads, layer, build) -> median seconds per round
    compiles = defaultdict(list)  # build -> compile ms
    for r in range(args.rounds):
        order = builds if r % 2 == 0 else builds[::-1]
        for suite in suites:
            for t in threads:
                for build, binary in order:
                    for row in bench(binary, suite, t, args.min_time, args.isa):
                        times[(suite, t, row["layer"], build)].append(row["median_s"])
                        compiles[build].append(row["compile_ms"])
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
    print("| suite | threads | layer | base µs | new µs | base / new |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for (suite, t, layer, build) in sorted(times):
        if build != "base":
            continue
        base = statistics.median(times[(suite, t, layer, "base")])
        new = statistics.median(times[(suite, t, layer, "new")])
        ratios.append((base / new, suite, t, layer))
        print(f"| {suite} | {t} | {layer} | {base * 1e6:.1f} | {new * 1e6:.1f} | {base / new:.3f} |")
    worst = min(ratios)
    print()
    print(f"{len(ratios)} layer × thread pairs: median ratio "
          f"{statistics.median(r[0] for r in ratios):.3f}, lowest {worst[0]:.3f} "
          f"({worst[3]}, {worst[2]} thread(s))")
    for build, _ in builds:
        print(f"median compile, {build}: {statistics.median(compiles[build]):.2f} ms")


if __name__ == "__main__":
    main()
