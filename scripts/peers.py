#!/usr/bin/env python3
"""Time the same conv layers in onnxruntime and OpenVINO, as convjit's peers.

Optional: a comparison for docs/benchmarks.md, not part of CI. Each layer of
a spec file or suite (DESIGN.md contract 1) becomes a single-node ONNX model
(Conv or ConvTranspose, with pads in ONNX order [top, left, bottom, right],
strides, dilations, group, output_padding; random weights and bias as
initializers; the activation as a following Relu, Clip(0, 6) or LeakyRelu
node). It runs in onnxruntime (CPU execution provider, MLAS) and in OpenVINO
(CPU plugin, oneDNN-based), with 1 and 2 threads, and the output is checked
against torch.nn.functional.conv2d / conv_transpose2d (+ activation) computed
in float64: normwise relative error max|a - e| / max|e| <= --tol, scaled by
sqrt(K / 1024) for reductions longer than K = 1024 terms (K = Cin/groups*kh*kw,
the most terms one output element sums). Without torch the two engines are
checked against each other. A mismatch is printed as MISMATCH and makes the
exit status 1.

Install (Python 3.11; torch is optional and reused when present):
    pip install -r scripts/requirements-peers.txt

Run:
    python3 scripts/peers.py                       # suite/layers.json, 1 and 2 threads
    python3 scripts/peers.py --spec '{"op": "conv2d", "in_channels": 64, ...}'
    python3 scripts/peers.py --suite FILE --threads 1 --engines openvino --json

Engine settings. onnxruntime: SessionOptions intra_op_num_threads = N,
inter_op_num_threads = 1, sequential execution, ORT_ENABLE_ALL graph
optimisation; input and output bound once with io_binding. OpenVINO: the ONNX
bytes read by Core.read_model, compile_model(model, "CPU",
{INFERENCE_NUM_THREADS: N, PERFORMANCE_HINT: LATENCY,
INFERENCE_PRECISION_HINT: f32}); the last one matters: on a CPU with
AVX512_BF16 or AMX, OpenVINO's default precision is bf16, which would be
neither a float32 comparison nor pass the check. An engine that is not
installed is reported and skipped. onnxruntime refuses a ConvTranspose whose
output_padding is not smaller than its stride (PyTorch and convjit allow it
when it is smaller than the dilation): such a run is reported as failed.

Timing: warm-up runs (at least three and 0.1 s), then timed runs until both
--min-time seconds (0.5) and --min-runs (10) are reached; each run is one
call timed with time.perf_counter, so it includes the Python binding's call
overhead (a few microseconds, visible only on the smallest layers).

Columns:
    layer       the spec's "name" (spec<i> when it has none)
    engine      onnxruntime or openvino
    thr         threads the engine was given
    median ms   median wall time of one run
    min ms, max ms   the fastest and slowest timed run
    IQR %       interquartile range of the timed runs, in % of the median
    runs        how many runs were timed
    bg          background load: CPU cores kept busy by other processes while
                the runs were timed, on average (from /proc/stat less this
                process's own CPU time); on a shared machine, a row with bg
                well above 0 is slowed by the neighbours, not the engine
    MACs        macs_valid (DESIGN.md contract 4): multiply-adds whose input
                element is real (not padding) and, for conv_transpose2d, whose
                product lands inside the kept output. Taken from
                `convjit macs --suite F --json` (target/release/convjit, else
                `cargo run --release --quiet --`, or --binary), cross-checked
                with a closed form computed here, which is used when no
                binary is available (--no-binary).
    MACs/cyc    macs_valid / (median s * TSC Hz): MACs per TSC cycle, as
                convjit reports them
    GFLOP/s     2 * macs_valid / median s / 1e9
    rel err     the normwise relative error of the check
    check       ok, MISMATCH (past the tolerance), failed (the engine refused
                the model or crashed), "ok (vs peer)" without torch
    kernel      the implementation the engine chose, where it says: OpenVINO's
                oneDNN primitive (e.g. brgconv_avx512_f32); onnxruntime
                does not tell ("-")

TSC frequency: --tsc-hz HZ, or else the "cpu MHz" line of /proc/cpuinfo. On
the KVM guests this project runs on (flag tsc_known_freq), that line is the
TSC rate the hypervisor advertises, the same number as the kernel's
"tsc: Detected ... MHz" boot line. On bare metal with frequency scaling it is
the current core clock instead: the script warns when the flag is missing,
and --tsc-hz should be given. CPU model and ISA flags (avx, avx2, fma,
avx512f) also come from /proc/cpuinfo.

--json prints one object shaped like `convjit bench --json` (contract 5):
{"machine": {"cpu", "isa", "tsc_hz"}, "threads" (a list here), "engines"
({name: version}), "check", "macs_source", "results": [{"layer", "engine",
"threads", "median_s", "min_s", "q1_s", "q3_s", "max_s", "runs",
"background_cores", "kernel",
"macs_valid", "macs_per_cycle", "gflops", "rel_err", "check", "error" (when
failed)}]}; progress and warnings go to stderr.

Exit status 0 when every engine that ran agrees with the reference, 1 on a
mismatch or an engine failure, 2 on a bad spec or argument.
"""

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SUITE = os.path.join(REPO, "suite", "layers.json")
DEFAULT_BINARY = os.path.join(REPO, "target", "release", "convjit")
ENGINES = ("onnxruntime", "openvino")
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f")
ONNX_OPSET = 17
ONNX_IR_VERSION = 8

FIELDS = {"name", "op", "batch", "in_channels", "out_channels", "height", "width", "kernel",
          "stride", "padding", "dilation", "groups", "output_padding", "bias", "activation",
          "negative_slope"}
ACTIVATIONS = ("none", "relu", "relu6", "leaky_relu")


class SpecError(ValueError):
    """A spec that contract 1 refuses; the message names the field."""


# ---------------------------------------------------------------------------
# Specs (contract 1). A layer is a dict with every field explicit:
#   name, op, batch, cin, cout, h, w, k, s, d (pairs), groups,
#   pad (top, left, bottom, right), op_pad (pair), bias, act, slope, spec (as given)
# ---------------------------------------------------------------------------

def load_specs(spec, suite):
    """The raw specs of --spec (a file or JSON text) or --suite (a JSON list)."""
    if spec is not None:
        text = read_text(spec) if os.path.exists(spec) else spec
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    data = json.loads(read_text(suite))
    if not isinstance(data, list):
        raise SpecError(f"{suite}: a suite is a JSON list of specs")
    return data


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def pair(spec, field, default, minimum):
    value = spec.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, list)):
        raise SpecError(f"{field}: {value!r} must be an integer or a pair [h, w]")
    value = [value, value] if isinstance(value, int) else value
    if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                  for v in value):
        raise SpecError(f"{field}: {value!r} must be an integer or a pair [h, w]")
    if min(value) < minimum:
        raise SpecError(f"{field}: {value!r} must be at least {minimum}")
    return tuple(value)


def positive(spec, field, default=None):
    value = spec.get(field, default)
    if value is None:
        raise SpecError(f"{field}: missing")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{field}: {value!r} must be an integer of at least 1")
    return value


def resolve_padding(spec, op, k, s, d):
    """(top, left, bottom, right); "same" is PyTorch's: total d*(k-1), left = total // 2."""
    p = spec.get("padding", 0)
    if isinstance(p, str):
        if op != "conv2d":
            raise SpecError(f"padding: \"{p}\" is only supported for conv2d (as in PyTorch)")
        if p == "valid":
            return (0, 0, 0, 0)
        if p != "same":
            raise SpecError(f"padding: \"{p}\": the only padding names are \"same\" and \"valid\"")
        if s != (1, 1):
            raise SpecError(f"padding: \"same\" is not supported with stride {list(s)}")
        th, tw = d[0] * (k[0] - 1), d[1] * (k[1] - 1)
        return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
    if isinstance(p, int) and not isinstance(p, bool):
        p = [p, p]
    if (not isinstance(p, list) or len(p) not in (2, 4)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in p)):
        raise SpecError(f"padding: {p!r} must be one integer, [ph, pw], "
                        "[top, left, bottom, right], \"same\" or \"valid\"")
    if min(p) < 0:
        raise SpecError(f"padding: {p!r} must not be negative")
    if len(p) == 2:
        return (p[0], p[1], p[0], p[1])
    return tuple(p)


def normalize(spec, index):
    """A layer dict with every field explicit, or SpecError naming the field."""
    if not isinstance(spec, dict):
        raise SpecError(f"spec {index}: not a JSON object")
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        raise SpecError(f"{unknown[0]}: unknown field")
    op = spec.get("op")
    if op not in ("conv2d", "conv_transpose2d"):
        raise SpecError(f"op: {op!r} must be \"conv2d\" or \"conv_transpose2d\"")
    k = pair(spec, "kernel", None, 1) if "kernel" in spec else None
    if k is None:
        raise SpecError("kernel: missing")
    s = pair(spec, "stride", 1, 1)
    d = pair(spec, "dilation", 1, 1)
    layer = {
        "name": spec.get("name") or f"spec{index}", "op": op,
        "batch": positive(spec, "batch", 1), "cin": positive(spec, "in_channels"),
        "cout": positive(spec, "out_channels"), "h": positive(spec, "height"),
        "w": positive(spec, "width"), "k": k, "s": s, "d": d,
        "groups": positive(spec, "groups", 1),
        "pad": resolve_padding(spec, op, k, s, d),
        "op_pad": pair(spec, "output_padding", 0, 0),
        "bias": spec.get("bias", True), "spec": spec,
    }
    check_layer(layer, spec)
    return layer


def check_layer(layer, spec):
    """The cross-field rules of contract 1; sets act and slope."""
    if not isinstance(layer["bias"], bool):
        raise SpecError(f"bias: {layer['bias']!r} must be true or false")
    for field, key in (("in_channels", "cin"), ("out_channels", "cout")):
        if layer[key] % layer["groups"]:
            raise SpecError(f"groups: {layer['groups']} must divide {field} ({layer[key]})")
    act = spec.get("activation", "none")
    if act not in ACTIVATIONS:
        raise SpecError(f"activation: {act!r} must be one of {', '.join(ACTIVATIONS)}")
    slope = spec.get("negative_slope")
    if slope is not None and act != "leaky_relu":
        raise SpecError("negative_slope: is only allowed with \"activation\": \"leaky_relu\"")
    if slope is not None and (isinstance(slope, bool) or not isinstance(slope, (int, float))
                              or not math.isfinite(slope)):
        raise SpecError(f"negative_slope: {slope!r} must be a finite number")
    layer["act"], layer["slope"] = act, float(0.01 if slope is None else slope)
    if layer["op"] == "conv2d" and layer["op_pad"] != (0, 0):
        raise SpecError(f"output_padding: {list(layer['op_pad'])} must be 0 for conv2d")
    if layer["op"] == "conv_transpose2d":
        for a in range(2):
            if layer["op_pad"][a] >= layer["s"][a] and layer["op_pad"][a] >= layer["d"][a]:
                raise SpecError(f"output_padding: {list(layer['op_pad'])} must be smaller than "
                                "either stride or dilation (PyTorch's rule)")
    ho, wo = output_hw(layer)
    if ho < 1 or wo < 1:
        raise SpecError(f"kernel: the output would be empty ({ho}x{wo})")


def conv_out(n, k, s, d, p0, p1):
    padded, span = n + p0 + p1, d * (k - 1)
    return (padded - span - 1) // s + 1 if padded > span else 0


def conv_t_out(n, k, s, d, p0, p1, op_pad):
    return (n - 1) * s + d * (k - 1) + op_pad + 1 - p0 - p1


def output_hw(layer):
    t, l, b, r = layer["pad"]
    axes = ((layer["h"], 0, t, b), (layer["w"], 1, l, r))
    if layer["op"] == "conv2d":
        return tuple(conv_out(n, layer["k"][a], layer["s"][a], layer["d"][a], p0, p1)
                     for n, a, p0, p1 in axes)
    return tuple(conv_t_out(n, layer["k"][a], layer["s"][a], layer["d"][a], p0, p1,
                            layer["op_pad"][a]) for n, a, p0, p1 in axes)


def weight_shape(layer):
    g, (kh, kw) = layer["groups"], layer["k"]
    if layer["op"] == "conv2d":
        return (layer["cout"], layer["cin"] // g, kh, kw)
    return (layer["cin"], layer["cout"] // g, kh, kw)


def reduction_length(layer):
    """Terms summed into one output element (at most): K of the tolerance."""
    kh, kw = layer["k"]
    return layer["cin"] // layer["groups"] * kh * kw


# ---------------------------------------------------------------------------
# macs_valid (contract 4)
# ---------------------------------------------------------------------------

def count_in_range(n, a, b, lo, hi):
    """How many i in [0, n) have lo <= a*i + b < hi (a >= 1)."""
    first = max(0, -((b - lo) // a))  # ceil((lo - b) / a)
    last = min(n - 1, (hi - 1 - b) // a)
    return max(0, last - first + 1)


def axis_taps(layer, axis, out_n):
    """Sum over the kernel taps of one axis of the (output or input) positions that count.

    conv2d: output o reads input o*s - p + j*d, which must lie in [0, n).
    conv_transpose2d: input i writes output i*s - p + j*d, which must lie in [0, out_n).
    """
    n, k, s, d = ((layer["h"], layer["k"][0], layer["s"][0], layer["d"][0]) if axis == 0
                  else (layer["w"], layer["k"][1], layer["s"][1], layer["d"][1]))
    p = layer["pad"][axis]
    if layer["op"] == "conv2d":
        return sum(count_in_range(out_n, s, j * d - p, 0, n) for j in range(k))
    return sum(count_in_range(n, s, j * d - p, 0, out_n) for j in range(k))


def macs_valid_closed_form(layer):
    ho, wo = output_hw(layer)
    taps = axis_taps(layer, 0, ho) * axis_taps(layer, 1, wo)
    g = layer["groups"]
    if layer["op"] == "conv2d":
        return layer["batch"] * layer["cout"] * (layer["cin"] // g) * taps
    return layer["batch"] * layer["cin"] * (layer["cout"] // g) * taps


def convjit_command(binary):
    """The argv prefix that runs convjit, or None."""
    if binary:
        return [binary] if os.access(binary, os.X_OK) else None
    if os.access(DEFAULT_BINARY, os.X_OK):
        return [DEFAULT_BINARY]
    if shutil.which("cargo") and os.path.exists(os.path.join(REPO, "Cargo.toml")):
        return ["cargo", "run", "--release", "--quiet", "--manifest-path",
                os.path.join(REPO, "Cargo.toml"), "--"]
    return None


def macs_from_convjit(command, specs):
    """macs_valid of each spec from `convjit macs --suite F --json`, or (None, reason)."""
    with tempfile.TemporaryDirectory(prefix="convjit-peers-") as tmp:
        path = os.path.join(tmp, "suite.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(specs, f)
        try:
            proc = subprocess.run(command + ["macs", "--suite", path, "--json"],
                                  capture_output=True, text=True, timeout=1800, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, str(e)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return None, lines[-1] if lines else f"exit {proc.returncode}"
    try:
        got = [int(r["macs_valid"]) for r in json.loads(proc.stdout)]
    except (ValueError, KeyError, TypeError) as e:
        return None, f"unreadable output ({type(e).__name__}: {e})"
    if len(got) != len(specs):
        return None, f"{len(got)} rows for {len(specs)} specs"
    return got, None


def macs_valid_all(layers, args):
    """macs_valid per layer, and a line saying where it came from."""
    closed = [macs_valid_closed_form(layer) for layer in layers]
    command = None if args.no_binary else convjit_command(args.binary)
    if command is None:
        return closed, "closed form (no convjit binary)"
    got, why = macs_from_convjit(command, [layer["spec"] for layer in layers])
    shown = " ".join(command[:1] if len(command) == 1 else command[:3])
    if got is None:
        warn(f"convjit macs failed ({why}); using the closed form")
        return closed, "closed form (convjit macs failed)"
    bad = [(layer["name"], a, b) for layer, a, b in zip(layers, got, closed) if a != b]
    for name, a, b in bad:
        warn(f"MISMATCH macs_valid of {name}: convjit {a}, closed form {b}; using convjit's")
    return got, (f"{shown} macs; closed form agrees on {len(layers) - len(bad)}/{len(layers)}")


# ---------------------------------------------------------------------------
# ONNX model and the reference
# ---------------------------------------------------------------------------

def random_tensors(layer, rng):
    x = rng.standard_normal((layer["batch"], layer["cin"], layer["h"], layer["w"]))
    w = rng.standard_normal(weight_shape(layer)) / math.sqrt(reduction_length(layer))
    b = rng.standard_normal(layer["cout"]) if layer["bias"] else None
    return (x.astype(np.float32), w.astype(np.float32),
            None if b is None else b.astype(np.float32))


def build_onnx(layer, w, b):
    """The serialized single-node (plus activation) ONNX model: input "x", output "y"."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(w, "W")] + ([numpy_helper.from_array(b, "B")] if b is not None
                                                 else [])
    attrs = {"kernel_shape": list(layer["k"]), "strides": list(layer["s"]),
             "dilations": list(layer["d"]), "group": layer["groups"], "pads": list(layer["pad"])}
    if layer["op"] == "conv_transpose2d":
        attrs["output_padding"] = list(layer["op_pad"])
    op_type = "Conv" if layer["op"] == "conv2d" else "ConvTranspose"
    conv_out_name = "y" if layer["act"] == "none" else "conv"
    nodes = [helper.make_node(op_type, ["x", "W"] + (["B"] if b is not None else []),
                              [conv_out_name], **attrs)]
    nodes += activation_nodes(layer, inits, conv_out_name)
    ho, wo = output_hw(layer)
    graph = helper.make_graph(
        nodes, layer["name"],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                       [layer["batch"], layer["cin"], layer["h"], layer["w"]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       [layer["batch"], layer["cout"], ho, wo])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="convjit-peers")
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def activation_nodes(layer, inits, src):
    from onnx import helper, numpy_helper

    act = layer["act"]
    if act == "none":
        return []
    if act == "relu":
        return [helper.make_node("Relu", [src], ["y"])]
    if act == "leaky_relu":
        return [helper.make_node("LeakyRelu", [src], ["y"], alpha=layer["slope"])]
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "clip_min"),
              numpy_helper.from_array(np.array(6.0, np.float32), "clip_max")]
    return [helper.make_node("Clip", [src, "clip_min", "clip_max"], ["y"])]


def torch_reference(layer, x, w, b):
    """The expected output from torch in float64, as float64 numpy."""
    import torch
    import torch.nn.functional as F

    t, l, bo, r = layer["pad"]
    xt, wt = torch.from_numpy(x).double(), torch.from_numpy(w).double()
    if layer["op"] == "conv2d":
        y = F.conv2d(F.pad(xt, (l, r, t, bo)), wt, None, layer["s"], 0, layer["d"],
                     layer["groups"])
    else:
        full = F.conv_transpose2d(xt, wt, None, layer["s"], 0, layer["op_pad"],
                                  layer["groups"], layer["d"])
        y = full[:, :, t:full.shape[2] - bo, l:full.shape[3] - r]
    if b is not None:
        y = y + torch.from_numpy(b).double().view(1, -1, 1, 1)
    if layer["act"] == "relu":
        y = F.relu(y)
    elif layer["act"] == "relu6":
        y = y.clamp(0.0, 6.0)
    elif layer["act"] == "leaky_relu":
        y = F.leaky_relu(y, layer["slope"])
    return y.numpy()


def rel_error(got, expected):
    """Normwise relative error max|a - e| / max|e| (inf on a shape mismatch or NaN)."""
    if got.shape != expected.shape or not np.all(np.isfinite(got)):
        return float("inf")
    diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    scale = float(np.max(np.abs(expected)))
    return diff / scale if scale > 0 else diff


def tolerance(layer, base):
    return base * max(1.0, math.sqrt(reduction_length(layer) / 1024.0))


# ---------------------------------------------------------------------------
# Engines: prepare(model bytes, x, output shape, threads) -> (run, fetch output, kernel)
# where kernel names the implementation the engine chose, when it tells
# ---------------------------------------------------------------------------

def prepare_onnxruntime(model, x, out_shape, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    xv = ort.OrtValue.ortvalue_from_numpy(x)
    yv = ort.OrtValue.ortvalue_from_shape_and_type(list(out_shape), np.float32)
    binding = sess.io_binding()
    binding.bind_ortvalue_input("x", xv)
    binding.bind_ortvalue_output("y", yv)

    def run():
        sess.run_with_iobinding(binding)

    return run, lambda: np.array(yv.numpy(), copy=True), None


def prepare_openvino(model, x, out_shape, threads):
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    compiled = core.compile_model(core.read_model(model), "CPU", {
        props.inference_num_threads: threads,
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        hints.inference_precision: ov.Type.f32,
    })
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(x))
    del out_shape  # OpenVINO allocates the output itself

    def run():
        request.infer()

    return (run, lambda: np.array(request.get_output_tensor().data, copy=True),
            openvino_kernel(compiled))


def openvino_kernel(compiled):
    """The oneDNN primitive of the (de)convolution node, e.g. brgconv_avx512_f32."""
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) in ("Convolution", "Deconvolution"):
                return info["primitiveType"].astype(str)
    except Exception:  # noqa: BLE001 - informative only
        pass
    return None


PREPARE = {"onnxruntime": prepare_onnxruntime, "openvino": prepare_openvino}


def engine_versions(names):
    """{engine: version} of the importable ones; a warning for each missing or broken one."""
    found = {}
    for name in names:
        if not importable(name):
            continue
        found[name] = importlib.metadata.version(name)
    return found


def importable(name, consequence="skipped"):
    """Whether `import name` works; a warning (not a crash) when it does not."""
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - a broken install is reported like a missing one
        warn(f"{name} cannot be imported ({type(e).__name__}: {e}); {consequence} "
             "(pip install -r scripts/requirements-peers.txt)")
        return False
    return True


def time_runs(run, min_time, min_runs):
    """Warm up, then time runs until min_time seconds and min_runs runs.

    Returns the durations and the background load: CPU cores kept busy by other
    processes meanwhile, on average (None where /proc/stat is unreadable).
    """
    t0 = time.perf_counter()
    for i in range(1000):
        run()
        if i >= 2 and time.perf_counter() - t0 >= 0.1:
            break
    times = []
    total = 0.0
    busy0, mine0, wall0 = cpu_busy_seconds(), process_cpu_seconds(), time.perf_counter()
    while len(times) < min_runs or total < min_time:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
        total += times[-1]
    busy1, mine1, wall1 = cpu_busy_seconds(), process_cpu_seconds(), time.perf_counter()
    if busy0 is None or busy1 is None:
        return times, None
    return times, max(0.0, (busy1 - busy0) - (mine1 - mine0)) / (wall1 - wall0)


def cpu_busy_seconds():
    """CPU seconds spent not idle by all cores since boot, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    guest = sum(ticks[8:10])  # already counted in user and nice
    return (sum(ticks) - idle - guest) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds():
    t = os.times()
    return t.user + t.system


# ---------------------------------------------------------------------------
# Machine
# ---------------------------------------------------------------------------

def machine_info(tsc_hz):
    """{"cpu", "isa", "tsc_hz"} from /proc/cpuinfo (tsc_hz from --tsc-hz when given)."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    isa = "+".join(f for f in ISA_FLAGS if f in flags) or "unknown"
    if tsc_hz is None:
        if "cpu MHz" not in fields:
            raise SystemExit("peers: no \"cpu MHz\" in /proc/cpuinfo: give --tsc-hz")
        tsc_hz = float(fields["cpu MHz"]) * 1e6
        if "tsc_known_freq" not in flags:
            warn("no tsc_known_freq flag: /proc/cpuinfo's \"cpu MHz\" may be the core clock, "
                 "not the TSC rate; pass --tsc-hz")
    return {"cpu": fields.get("model name", "unknown"), "isa": isa, "tsc_hz": tsc_hz}


def warn(message):
    print(f"peers: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def measure_layer(layer, macs, engines, threads_list, args, rng, have_torch):
    """The result rows of one layer on every engine and thread count."""
    x, w, b = random_tensors(layer, rng)
    model = build_onnx(layer, w, b)
    out_shape = (layer["batch"], layer["cout"]) + output_hw(layer)
    expected = torch_reference(layer, x, w, b) if have_torch else None
    tol = tolerance(layer, args.tol)
    rows, outputs = [], {}
    for threads in threads_list:
        for engine in engines:
            row = {"layer": layer["name"], "engine": engine, "threads": threads,
                   "macs_valid": macs}
            try:
                run, fetch, kernel = PREPARE[engine](model, x, out_shape, threads)
                times, background = time_runs(run, args.min_time, args.min_runs)
                times.sort()
                got = fetch()
            except Exception as e:  # noqa: BLE001 - an engine refusing a layer is reported
                error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
                warn(f"FAILED {layer['name']} on {engine} ({threads} thr): {error}")
                row.update(check="failed", error=error)
                rows.append(row)
                continue
            median = float(np.median(times))
            q1, q3 = (float(v) for v in np.percentile(times, [25, 75]))
            row.update(median_s=median, min_s=times[0], q1_s=q1, q3_s=q3, max_s=times[-1],
                       runs=len(times), background_cores=background, kernel=kernel,
                       macs_per_cycle=macs / (median * args.tsc_hz_resolved),
                       gflops=2.0 * macs / median / 1e9)
            outputs[(engine, threads)] = got
            if expected is not None:
                row["rel_err"] = rel_error(got, expected)
                row["check"] = "ok" if row["rel_err"] <= tol else "MISMATCH"
            rows.append(row)
            warn(f"{layer['name']:<20} {engine:<12} {threads} thr  "
                 f"{median * 1e3:9.3f} ms  {row['macs_per_cycle']:7.2f} MACs/cyc  "
                 f"{row.get('check', 'unchecked')}"
                 + (f"  (background load {background:.2f} cores)"
                    if background is not None and background > 0.1 else ""))
    if expected is None:
        cross_check(rows, outputs, tol)
    for row in rows:
        if row.get("check") == "MISMATCH":
            warn(f"MISMATCH {row['layer']} on {row['engine']} ({row['threads']} thr): "
                 f"normwise relative error {row['rel_err']:.3e} > {tol:.3e}")
    return rows


def cross_check(rows, outputs, tol):
    """Without torch: each output against the first other engine's (same thread count)."""
    for row in rows:
        mine = outputs.get((row["engine"], row["threads"]))
        other = next((v for (e, t), v in outputs.items()
                      if e != row["engine"] and t == row["threads"]), None)
        if mine is None or other is None:
            row.setdefault("check", "unchecked")
            continue
        row["rel_err"] = rel_error(mine, other.astype(np.float64))
        row["check"] = "ok (vs peer)" if row["rel_err"] <= tol else "MISMATCH"


def print_table(doc):
    m = doc["machine"]
    print(f"machine: {m['cpu']}, {m['isa']}, TSC {m['tsc_hz'] / 1e6:.1f} MHz; "
          + ", ".join(f"{k} {v}" for k, v in doc["engines"].items()) + f"; {doc['check']}")
    print(f"macs_valid: {doc['macs_source']}")
    header = (f"{'layer':<20} {'engine':<12} {'thr':>3} {'median ms':>10} {'min ms':>9} "
              f"{'max ms':>9} {'IQR %':>6} {'runs':>5} {'bg':>4} {'MACs':>11} {'MACs/cyc':>9} "
              f"{'GFLOP/s':>8} {'rel err':>8}  {'check':<5}  kernel")
    for threads in doc["threads"]:
        print()
        print(header)
        for r in (r for r in doc["results"] if r["threads"] == threads):
            print(table_row(r))


def table_row(r):
    head = f"{r['layer']:<20} {r['engine']:<12} {r['threads']:>3}"
    if "median_s" not in r:
        return (f"{head} {'-':>10} {'-':>9} {'-':>9} {'-':>6} {'-':>5} {'-':>4} "
                f"{r['macs_valid']:>11} "
                f"{'-':>9} {'-':>8} {'-':>8}  {r['check']}")
    err = f"{r['rel_err']:.1e}" if "rel_err" in r else "-"
    iqr = (r["q3_s"] - r["q1_s"]) / r["median_s"] * 100
    bg = "-" if r["background_cores"] is None else f"{r['background_cores']:.1f}"
    return (f"{head} {r['median_s'] * 1e3:>10.3f} {r['min_s'] * 1e3:>9.3f} "
            f"{r['max_s'] * 1e3:>9.3f} {iqr:>6.1f} {r['runs']:>5} {bg:>4} {r['macs_valid']:>11} "
            f"{r['macs_per_cycle']:>9.2f} {r['gflops']:>8.1f} {err:>8}  "
            f"{r.get('check', 'unchecked'):<5}  {r['kernel'] or '-'}")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--spec", help="one spec: a JSON file or the JSON text itself")
    src.add_argument("--suite", default=DEFAULT_SUITE,
                     help="a JSON list of specs (default: suite/layers.json)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (1,2)")
    ap.add_argument("--engines", default=",".join(ENGINES),
                    help="comma-separated, of onnxruntime,openvino (default: those installed)")
    ap.add_argument("--json", action="store_true", help="print one JSON object, not a table")
    ap.add_argument("--min-time", type=float, default=0.5,
                    help="timed seconds per layer, engine and thread count (0.5)")
    ap.add_argument("--min-runs", type=int, default=10, help="timed runs at least (10)")
    ap.add_argument("--tsc-hz", type=float, help="TSC frequency (default: /proc/cpuinfo)")
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="normwise relative error bound for K <= 1024 (1e-4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--binary", help="the convjit binary for macs_valid "
                    "(default: target/release/convjit, else cargo run --release)")
    ap.add_argument("--no-binary", action="store_true",
                    help="count macs_valid with the closed form only")
    args = ap.parse_args()
    try:
        args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        ap.error(f"--threads: {args.threads!r} is not a list of integers")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in args.engines if e not in ENGINES]
    if bad or not args.engines or not args.threads or min(args.threads) < 1:
        ap.error(f"--engines must name some of {', '.join(ENGINES)}; --threads must be >= 1")
    return args


def main():
    args = parse_args()
    try:
        layers = [normalize(s, i) for i, s in enumerate(load_specs(args.spec, args.suite))]
    except (SpecError, OSError, json.JSONDecodeError) as e:
        print(f"peers: error: {e}", file=sys.stderr)
        return 2
    if not importable("onnx", "cannot build the models"):
        return 2
    versions = engine_versions(args.engines)
    have_torch = importable("torch", "no reference")
    if have_torch:
        import torch
        torch.set_num_threads(1)
        versions_note = f"torch {torch.__version__} reference"
    else:
        warn("no torch: each engine's output is checked only against the other engine's"
             + ("" if len(versions) > 1 else "; with one engine, not at all"))
        versions_note = "no torch: engines checked against each other"
    machine = machine_info(args.tsc_hz)
    args.tsc_hz_resolved = machine["tsc_hz"]
    macs, macs_source = macs_valid_all(layers, args)
    rng = np.random.default_rng(args.seed)
    results = []
    for layer, m in zip(layers, macs):
        results += measure_layer(layer, m, list(versions), args.threads, args, rng, have_torch)
    doc = {"machine": machine, "threads": args.threads, "engines": versions,
           "check": versions_note, "macs_source": macs_source, "results": results}
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print_table(doc)
    failed = [r for r in results if r.get("check") in ("MISMATCH", "failed")]
    if failed:
        warn(f"{len(failed)} of {len(results)} runs failed or mismatched")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
