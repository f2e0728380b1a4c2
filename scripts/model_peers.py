#!/usr/bin/env python3
"""Run whole ONNX models in convjit, onnxruntime and OpenVINO, side by side.

Optional: the end-to-end comparison of docs/networks.md, not part of CI.
For each model file, one random tensor per input (uniform in [-1, 1),
float32, seeded) is given to every engine; each engine's output is checked against
onnxruntime's (every element within 1e-4 * (1 + max|y|), the tolerance of
`convjit net --check`), and each engine is timed. The rounds interleave the
engines (convjit, onnxruntime, OpenVINO; each thread count) so that a slow
spell of a shared host falls on all of them; the table gives the median
over the rounds of each engine's median time per run.

  convjit      `convjit net --model F --input X --output Y --runs R --json
               --threads T` (with --tuned and --cache when given): the
               median of its R timed runs after one warm-up (`total.median_s`)
  onnxruntime  CPU execution provider, intra_op_num_threads T,
               inter_op_num_threads 1, sequential, ORT_ENABLE_ALL; at least
               three warm-up runs, then R timed runs
  openvino     Core.compile_model(model, "CPU", {INFERENCE_NUM_THREADS: T,
               PERFORMANCE_HINT: LATENCY, INFERENCE_PRECISION_HINT: f32}),
               warmed up and timed as onnxruntime

onnxruntime is required (its output is the one every engine is checked
against); OpenVINO is skipped when it is not installed.

Install (Python 3.11): pip install -r scripts/requirements-peers.txt
(torch too, to export the models: scripts/torch_models.py --onnx DIR)

Run:
    python3 scripts/model_peers.py --model resnet18.onnx --model mobilenetv2.onnx
    python3 scripts/model_peers.py --model m.onnx --threads 1 --rounds 3 --tuned

The binary is target/release/convjit (--binary to change it): build it with
`cargo build --release` first.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOLERANCE = 1e-4


def onnxruntime_session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)[0]


def openvino_session(path, threads):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(path)),
        "CPU",
        {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
         "INFERENCE_PRECISION_HINT": "f32"},
    )
    request = compiled.create_infer_request()
    return lambda feeds: request.infer(feeds)[compiled.output(0)]


def timed(run, x, runs):
    """The output and the median seconds of `runs` timed calls."""
    start = time.perf_counter()
    warm = 0
    while warm < 3 or time.perf_counter() - start < 0.1:
        y = run(x)
        warm += 1
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        y = run(x)
        times.append(time.perf_counter() - t)
    return np.asarray(y, dtype=np.float32), statistics.median(times)


def convjit(binary, model, x_paths, y_path, threads, runs, tuned, cache):
    args = [binary, "net", "--model", str(model), "--output", str(y_path), "--runs", str(runs),
            "--threads", str(threads), "--json"]
    for name, path in x_paths.items():
        args += ["--input", f"{name}={path}"]
    if tuned:
        args.append("--tuned")
        if cache:
            args += ["--cache", cache]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    report = json.loads(out.stdout)
    return np.load(y_path), report["total"]["median_s"]


def within(y, expected):
    y, expected = y.reshape(-1), expected.reshape(-1)
    if y.shape != expected.shape:
        return False, float("inf")
    error = float(np.max(np.abs(y - expected)))
    return error <= TOLERANCE * (1 + float(np.max(np.abs(expected)))), error


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", required=True, help="an .onnx file (repeatable)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=15, help="timed runs per engine and round")
    parser.add_argument("--engines", default="convjit,onnxruntime,openvino")
    parser.add_argument("--binary", default="target/release/convjit")
    parser.add_argument("--tuned", action="store_true", help="convjit net --tuned")
    parser.add_argument("--cache", help="the tuning cache --tuned reads")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    engines = args.engines.split(",")
    failed = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in map(Path, args.model):
            import onnx

            graph = onnx.load(str(model), load_external_data=False).graph
            initializers = {t.name for t in graph.initializer}
            rng = np.random.default_rng(args.seed)
            x, x_paths = {}, {}
            for i in graph.input:
                if i.name in initializers:
                    continue
                shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
                x[i.name] = rng.uniform(-1, 1, size=shape).astype(np.float32)
                x_paths[i.name] = Path(tmp) / f"x{len(x_paths)}.npy"
                np.save(x_paths[i.name], x[i.name])
            y_path = Path(tmp) / "y.npy"
            sessions = {}
            for threads in args.threads:
                for engine in engines:
                    try:
                        if engine == "onnxruntime":
                            sessions[engine, threads] = onnxruntime_session(model, threads)
                        elif engine == "openvino":
                            sessions[engine, threads] = openvino_session(model, threads)
                    except ImportError as e:
                        print(f"{engine}: not installed ({e}), skipped", file=sys.stderr)
            expected = timed(onnxruntime_session(model, 1), x, 1)[0]
            times = {}
            for _ in range(args.rounds):
                for threads in args.threads:
                    for engine in engines:
                        if engine == "convjit":
                            y, t = convjit(args.binary, model, x_paths, y_path, threads,
                                           args.runs, args.tuned, args.cache)
                        elif (engine, threads) in sessions:
                            y, t = timed(sessions[engine, threads], x, args.runs)
                        else:
                            continue
                        ok, error = within(y, expected)
                        failed |= not ok
                        times.setdefault((engine, threads), []).append((t, error, ok))
            for (engine, threads), runs in times.items():
                median = statistics.median(t for t, _, _ in runs)
                worst = max(e for _, e, _ in runs)
                ok = all(k for _, _, k in runs)
                rows.append((model.stem, engine, threads, median, [t for t, _, _ in runs], worst, ok))
    print(f"{'model':<14} {'engine':<12} {'thr':>3} {'median ms':>10} {'rounds ms':<26} "
          f"{'vs onnxruntime':>14} {'max |err|':>9}  check")
    for model, engine, threads, median, all_times, worst, ok in rows:
        ort = [r[3] for r in rows if r[0] == model and r[1] == "onnxruntime" and r[2] == threads]
        ratio = f"{ort[0] / median:.2f}×" if ort else "-"
        shown = " ".join(f"{1000 * t:.2f}" for t in all_times)
        print(f"{model:<14} {engine:<12} {threads:>3} {1000 * median:>10.3f} {shown:<26} "
              f"{ratio:>14} {worst:>9.1e}  {'ok' if ok else 'MISMATCH'}")
    print("vs onnxruntime: onnxruntime's median time over the engine's (above 1: faster); "
          "max |err|: against onnxruntime's 1-thread output, within 1e-4 * (1 + max|y|)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
