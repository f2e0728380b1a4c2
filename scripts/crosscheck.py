#!/usr/bin/env python3
"""Cross-check the convjit binary against PyTorch and ptflops.

For N random valid specs of every kind, writes random float32 tensors as .npy
files, runs `convjit run`, and compares the output with
torch.nn.functional.conv2d / conv_transpose2d (+ activation) computed in
float64 and cast to float32: same shape, and a normwise relative error
max|a - e| / max|e| <= --tol (1e-5).

It also checks that a set of invalid specs is refused (non-zero exit, exactly
one stderr line, no output file left behind), that PyTorch refuses them too
where PyTorch can express them, and compares `convjit macs --json` with
ptflops.get_model_complexity_info on the equivalent torch module (batch 1),
with PyTorch's parameter count, and `macs_valid` with a count made by torch
itself (a convolution of ones).

Usage:
    python3 scripts/crosscheck.py [--cases 300] [--seed 0]
        [--binary target/release/convjit] [--engine reference] [--keep DIR]

Exit status 0 when everything agrees, 1 on any failure.
The packages it needs are listed in scripts/requirements-crosscheck.txt.
"""

import argparse
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import OrderedDict, defaultdict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import ptflops

DEFAULT_BINARY = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "release", "convjit"
)

# ---------------------------------------------------------------------------
# Spec model. A "case" is a dict with every field explicit:
#   op, batch, cin, cout, h, w, k=(kh,kw), s=(sh,sw), d=(dh,dw), groups,
#   pad=("sym", ph, pw) | ("asym", t, l, b, r) | ("str", "same"|"valid"),
#   op_pad=(oh,ow), bias, act, slope (None = not written)
# It is rendered to convjit's JSON (contract 1) with random use of the
# shorthands (a pair as one integer, omitted defaults).
# ---------------------------------------------------------------------------

ACTS = ["none", "relu", "relu6", "leaky_relu"]
SLOPES = [None, 0.01, 0.2, 0.1, 0.0, -0.25, 1.5]


def conv_out(n, k, s, p0, p1, d):
    span = d * (k - 1)
    padded = n + p0 + p1
    if padded < span + 1:
        return 0
    return (padded - span - 1) // s + 1


def convT_out(n, k, s, p0, p1, d, op):
    return (n - 1) * s + d * (k - 1) + op + 1 - p0 - p1


def resolved_padding(c):
    """(top, left, bottom, right) as PyTorch applies it."""
    kind = c["pad"][0]
    if kind == "sym":
        _, ph, pw = c["pad"]
        return ph, pw, ph, pw
    if kind == "asym":
        return tuple(c["pad"][1:])
    name = c["pad"][1]
    if name == "valid":
        return 0, 0, 0, 0
    # PyTorch "same": total d*(k-1); the odd pixel goes to the bottom/right.
    th = c["d"][0] * (c["k"][0] - 1)
    tw = c["d"][1] * (c["k"][1] - 1)
    return th // 2, tw // 2, th - th // 2, tw - tw // 2


def output_hw(c):
    t, l, b, r = resolved_padding(c)
    if c["op"] == "conv2d":
        return (conv_out(c["h"], c["k"][0], c["s"][0], t, b, c["d"][0]),
                conv_out(c["w"], c["k"][1], c["s"][1], l, r, c["d"][1]))
    return (convT_out(c["h"], c["k"][0], c["s"][0], t, b, c["d"][0], c["op_pad"][0]),
            convT_out(c["w"], c["k"][1], c["s"][1], l, r, c["d"][1], c["op_pad"][1]))


def is_valid(c):
    if c["cin"] % c["groups"] or c["cout"] % c["groups"]:
        return False
    if c["op"] == "conv_transpose2d":
        for a in range(2):
            if c["op_pad"][a] >= c["s"][a] and c["op_pad"][a] >= c["d"][a]:
                return False
    elif c["op_pad"] != (0, 0):
        return False
    if c["pad"] == ("str", "same") and c["s"] != (1, 1):
        return False
    ho, wo = output_hw(c)
    return ho >= 1 and wo >= 1


def render(c, rng):
    """The convjit JSON text of a case, with random shorthands."""

    def pair(p, default=None):
        if default is not None and p == (default, default) and rng.random() < 0.4:
            return None  # omitted
        if p[0] == p[1] and rng.random() < 0.5:
            return int(p[0])
        return [int(p[0]), int(p[1])]

    spec = OrderedDict()
    spec["op"] = c["op"]
    if not (c["batch"] == 1 and rng.random() < 0.4):
        spec["batch"] = c["batch"]
    spec["in_channels"] = c["cin"]
    spec["out_channels"] = c["cout"]
    spec["height"] = c["h"]
    spec["width"] = c["w"]
    spec["kernel"] = pair(c["k"])
    for key, val, default in (("stride", c["s"], 1), ("dilation", c["d"], 1)):
        v = pair(val, default)
        if v is not None:
            spec[key] = v
    kind = c["pad"][0]
    if kind == "sym":
        ph, pw = c["pad"][1:]
        if (ph, pw) == (0, 0) and rng.random() < 0.4:
            pass
        elif ph == pw and rng.random() < 0.5:
            spec["padding"] = ph
        elif rng.random() < 0.2:
            spec["padding"] = [ph, pw, ph, pw]  # symmetric, written in 4 values
        else:
            spec["padding"] = [ph, pw]
    elif kind == "asym":
        spec["padding"] = list(c["pad"][1:])
    else:
        spec["padding"] = c["pad"][1]
    if not (c["groups"] == 1 and rng.random() < 0.4):
        spec["groups"] = c["groups"]
    if c["op"] == "conv_transpose2d" or c["op_pad"] != (0, 0):
        v = pair(c["op_pad"], 0)
        if v is not None:
            spec["output_padding"] = v
    if not (c["bias"] and rng.random() < 0.4):
        spec["bias"] = c["bias"]
    if not (c["act"] == "none" and rng.random() < 0.4):
        spec["activation"] = c["act"]
    if c["slope"] is not None:
        spec["negative_slope"] = c["slope"]
    return json.dumps(spec)


# ---------------------------------------------------------------------------
# Random valid cases, per kind.
# ---------------------------------------------------------------------------

def ri(rng, lo, hi):
    """Random integer in [lo, hi]."""
    return int(rng.integers(lo, hi + 1))


def base(rng, op="conv2d"):
    act = ACTS[ri(rng, 0, 3)]
    slope = None
    if act == "leaky_relu":
        slope = SLOPES[ri(rng, 0, len(SLOPES) - 1)]
    return {
        "op": op, "batch": [1, 1, 2, 3][ri(rng, 0, 3)], "cin": 1, "cout": 1,
        "h": 1, "w": 1, "k": (1, 1), "s": (1, 1), "d": (1, 1), "groups": 1,
        "pad": ("sym", 0, 0), "op_pad": (0, 0), "bias": bool(rng.random() < 0.6),
        "act": act, "slope": slope,
    }


def sym_pad(rng, hi):
    p = ri(rng, 0, hi)
    if rng.random() < 0.3:
        return ("sym", p, ri(rng, 0, hi))
    return ("sym", p, p)


def hw(rng, lo=1, hi=10):
    return ri(rng, lo, hi), ri(rng, lo, hi)


def gen_standard(rng):
    c = base(rng)
    k = ri(rng, 2, 5)
    c.update(cin=ri(rng, 1, 8), cout=ri(rng, 1, 8), k=(k, k), pad=sym_pad(rng, 2))
    c["h"], c["w"] = hw(rng, 1, 10)
    return c


def gen_grouped(rng):
    c = base(rng)
    g = ri(rng, 2, 4)
    cig = ri(rng, 2, 6)  # 2, 3, 5, 6: channels per group not multiples of 4 too
    cog = ri(rng, 1, 6)
    k = ri(rng, 1, 3)
    c.update(cin=g * cig, cout=g * cog, groups=g, k=(k, k), s=(ri(rng, 1, 2),) * 2,
             pad=sym_pad(rng, 1))
    c["h"], c["w"] = hw(rng, 1, 9)
    return c


def gen_depthwise(rng):
    c = base(rng)
    cin = ri(rng, 2, 8)
    mult = [1, 1, 2, 3][ri(rng, 0, 3)]
    k = [3, 5, 3, 2][ri(rng, 0, 3)]
    kk = (k, k) if rng.random() < 0.8 else (k, 1)
    dil = ri(rng, 1, 2)
    c.update(cin=cin, cout=cin * mult, groups=cin, k=kk, s=(ri(rng, 1, 2),) * 2,
             d=(dil, dil), pad=sym_pad(rng, 2))
    c["h"], c["w"] = hw(rng, 1, 10)
    return c


def gen_pointwise(rng):
    c = base(rng)
    g = 1 if rng.random() < 0.8 else 2
    c.update(cin=g * ri(rng, 1, 8), cout=g * ri(rng, 1, 8), groups=g, k=(1, 1),
             s=(ri(rng, 1, 2),) * 2, pad=("sym", 0, 0) if rng.random() < 0.8 else sym_pad(rng, 1))
    c["h"], c["w"] = hw(rng, 1, 10)
    return c


def gen_dilated(rng):
    c = base(rng)
    d = (ri(rng, 2, 3), ri(rng, 1, 3))
    if rng.random() < 0.5:
        d = (d[0], d[0])
    k = ri(rng, 2, 3)
    c.update(cin=ri(rng, 1, 6), cout=ri(rng, 1, 6), k=(k, k), d=d, s=(ri(rng, 1, 2),) * 2,
             pad=sym_pad(rng, 3))
    c["h"], c["w"] = hw(rng, 2, 12)
    return c


def gen_asym_kernel(rng):
    c = base(rng)
    k = ri(rng, 2, 7)
    kk = [(k, 1), (1, k), (k, ri(rng, 1, 4))][ri(rng, 0, 2)]
    pad = ("sym", kk[0] // 2, kk[1] // 2) if rng.random() < 0.6 else sym_pad(rng, 2)
    c.update(cin=ri(rng, 1, 6), cout=ri(rng, 1, 6), k=kk, pad=pad, s=(ri(rng, 1, 2), 1))
    c["h"], c["w"] = hw(rng, 1, 10)
    return c


def gen_asym_padding(rng):
    c = base(rng)
    kk = (ri(rng, 1, 4), ri(rng, 1, 4))
    c.update(cin=ri(rng, 1, 6), cout=ri(rng, 1, 6), k=kk,
             pad=("asym", ri(rng, 0, 3), ri(rng, 0, 3), ri(rng, 0, 3), ri(rng, 0, 3)),
             s=(ri(rng, 1, 2), ri(rng, 1, 2)))
    if rng.random() < 0.3:
        c["groups"] = c["cin"] = c["cout"] = ri(rng, 2, 4)
    c["h"], c["w"] = hw(rng, 1, 9)
    return c


def gen_strided(rng):
    c = base(rng)
    s = (ri(rng, 2, 4), ri(rng, 2, 4)) if rng.random() < 0.4 else (ri(rng, 2, 3),) * 2
    k = ri(rng, 1, 5)
    c.update(cin=ri(rng, 1, 6), cout=ri(rng, 1, 6), k=(k, k), s=s, pad=sym_pad(rng, 2))
    c["h"], c["w"] = hw(rng, 1, 12)
    return c


def gen_same_valid(rng):
    c = base(rng)
    kk = (ri(rng, 1, 6), ri(rng, 1, 6))
    if rng.random() < 0.5:
        kk = (kk[0], kk[0])
    if rng.random() < 0.6:
        c.update(pad=("str", "same"), d=(ri(rng, 1, 3), ri(rng, 1, 2)))
    else:
        c.update(pad=("str", "valid"), s=(ri(rng, 1, 3), ri(rng, 1, 3)))
    g = 1 if rng.random() < 0.75 else 2
    c.update(cin=g * ri(rng, 1, 4), cout=g * ri(rng, 1, 4), groups=g, k=kk)
    c["h"], c["w"] = hw(rng, 1, 10)
    return c


def _transposed(rng, groups_mode, dil_mode, asym):
    c = base(rng, "conv_transpose2d")
    if groups_mode == "none":
        g, cig, cog = 1, ri(rng, 1, 6), ri(rng, 1, 6)
    elif groups_mode == "depthwise":
        g, cig, cog = ri(rng, 2, 5), 1, ri(rng, 1, 3)
    else:
        g, cig, cog = ri(rng, 2, 4), ri(rng, 1, 5), ri(rng, 1, 5)
    kk = (ri(rng, 1, 4), ri(rng, 1, 4)) if rng.random() < 0.3 else (ri(rng, 1, 4),) * 2
    s = (ri(rng, 1, 3), ri(rng, 1, 3)) if rng.random() < 0.3 else (ri(rng, 1, 3),) * 2
    if dil_mode:
        d = (ri(rng, 2, 3), ri(rng, 1, 3))
        if rng.random() < 0.4:
            s = (1, 1)  # output_padding then only allowed by the dilation
    else:
        d = (1, 1)
    op = tuple(ri(rng, 0, max(s[a], d[a]) - 1) for a in range(2))
    if asym:
        pad = ("asym", ri(rng, 0, 3), ri(rng, 0, 3), ri(rng, 0, 3), ri(rng, 0, 3))
    else:
        pad = sym_pad(rng, 2)
    c.update(cin=g * cig, cout=g * cog, groups=g, k=kk, s=s, d=d, op_pad=op, pad=pad)
    c["h"], c["w"] = hw(rng, 1, 6)
    return c


def gen_transposed(rng):
    return _transposed(rng, "none", rng.random() < 0.2, False)


def gen_transposed_grouped(rng):
    return _transposed(rng, ["grouped", "depthwise"][ri(rng, 0, 1)], rng.random() < 0.3, False)


def gen_transposed_dilated(rng):
    return _transposed(rng, ["none", "grouped"][ri(rng, 0, 1)], True, False)


def gen_transposed_asym_pad(rng):
    return _transposed(rng, ["none", "grouped", "depthwise"][ri(rng, 0, 2)],
                       rng.random() < 0.3, True)


def gen_mixed(rng):
    """Everything conv2d at once."""
    c = base(rng)
    g = [1, 1, 2, 3][ri(rng, 0, 3)]
    kk = (ri(rng, 1, 5), ri(rng, 1, 5))
    s = (ri(rng, 1, 3), ri(rng, 1, 3))
    d = (ri(rng, 1, 3), ri(rng, 1, 3))
    r = rng.random()
    if r < 0.4:
        pad = sym_pad(rng, 3)
    elif r < 0.8:
        pad = ("asym", ri(rng, 0, 3), ri(rng, 0, 3), ri(rng, 0, 3), ri(rng, 0, 3))
    else:
        pad = ("str", "valid")
    c.update(cin=g * ri(rng, 1, 5), cout=g * ri(rng, 1, 5), groups=g, k=kk, s=s, d=d, pad=pad)
    c["h"], c["w"] = hw(rng, 1, 12)
    return c


KINDS = OrderedDict([
    ("standard", gen_standard),
    ("grouped", gen_grouped),
    ("depthwise", gen_depthwise),
    ("pointwise", gen_pointwise),
    ("dilated", gen_dilated),
    ("asym_kernel", gen_asym_kernel),
    ("asym_padding", gen_asym_padding),
    ("strided", gen_strided),
    ("same_valid", gen_same_valid),
    ("mixed_conv2d", gen_mixed),
    ("transposed", gen_transposed),
    ("transposed_grouped", gen_transposed_grouped),
    ("transposed_dilated", gen_transposed_dilated),
    ("transposed_asym_pad", gen_transposed_asym_pad),
])


def draw(kind, rng):
    for _ in range(1000):
        c = KINDS[kind](rng)
        if is_valid(c):
            return c
    raise RuntimeError(f"could not draw a valid {kind} spec")


# ---------------------------------------------------------------------------
# PyTorch: the expected output, the module for ptflops, the valid-MAC count.
# ---------------------------------------------------------------------------

def weight_shape(c):
    kh, kw = c["k"]
    if c["op"] == "conv2d":
        return (c["cout"], c["cin"] // c["groups"], kh, kw)
    return (c["cin"], c["cout"] // c["groups"], kh, kw)


def activation(c, y):
    if c["act"] == "relu":
        return F.relu(y)
    if c["act"] == "relu6":
        return F.relu6(y)
    if c["act"] == "leaky_relu":
        return F.leaky_relu(y, 0.01 if c["slope"] is None else c["slope"])
    return y


def torch_conv(c, x, w, b):
    """The layer in PyTorch (any dtype), before the activation."""
    if c["op"] == "conv2d":
        kind = c["pad"][0]
        if kind == "str":
            return F.conv2d(x, w, b, c["s"], c["pad"][1], c["d"], c["groups"])
        if kind == "asym":
            t, l, bo, r = c["pad"][1:]
            x = F.pad(x, (l, r, t, bo))
            return F.conv2d(x, w, b, c["s"], 0, c["d"], c["groups"])
        return F.conv2d(x, w, b, c["s"], c["pad"][1:], c["d"], c["groups"])
    if c["pad"][0] == "asym":
        # PyTorch's ConvTranspose2d has only symmetric padding; its padding
        # crops the full transposed output, so [t, l, b, r] is the full output
        # (padding 0, same output_padding) cropped by t/b rows and l/r columns
        # (ONNX ConvTranspose `pads`).
        t, l, bo, r = c["pad"][1:]
        y = F.conv_transpose2d(x, w, b, c["s"], 0, c["op_pad"], c["groups"], c["d"])
        return y[:, :, t:y.shape[2] - bo, l:y.shape[3] - r]
    return F.conv_transpose2d(x, w, b, c["s"], c["pad"][1:], c["op_pad"], c["groups"], c["d"])


def expected(c, x, w, b):
    x64 = torch.from_numpy(x).double()
    w64 = torch.from_numpy(w).double()
    b64 = None if b is None else torch.from_numpy(b).double()
    y = activation(c, torch_conv(c, x64, w64, b64))
    return y.to(torch.float32).numpy()


def torch_module(c):
    """(module, input_res) for ptflops, or None when PyTorch has no such module."""
    kh, kw = c["k"]
    kind = c["pad"][0]
    if c["op"] == "conv2d":
        if kind == "asym":
            t, l, bo, r = c["pad"][1:]
            conv = nn.Conv2d(c["cin"], c["cout"], (kh, kw), c["s"], 0, c["d"], c["groups"],
                             bias=c["bias"])
            mod = nn.Sequential(nn.ZeroPad2d((l, r, t, bo)), conv)
        else:
            padding = c["pad"][1] if kind == "str" else tuple(c["pad"][1:])
            mod = nn.Conv2d(c["cin"], c["cout"], (kh, kw), c["s"], padding, c["d"],
                            c["groups"], bias=c["bias"])
    else:
        if kind == "asym":
            return None
        mod = nn.ConvTranspose2d(c["cin"], c["cout"], (kh, kw), c["s"], tuple(c["pad"][1:]),
                                 c["op_pad"], c["groups"], bias=c["bias"], dilation=c["d"])
    return mod, (c["cin"], c["h"], c["w"])


def ptflops_count(mod, input_res):
    sink = io.StringIO()
    macs, params = ptflops.get_model_complexity_info(
        mod, input_res, as_strings=False, print_per_layer_stat=False, backend="pytorch",
        ost=sink)
    return int(macs), int(params)


def torch_valid_taps(c):
    """Sum over positions of the valid (position, tap) pairs, counted by
    PyTorch: a one-channel conv of ones over zero padding (conv2d), or a
    transposed conv of ones whose kept output sums the products landing
    inside it (conv_transpose2d)."""
    kh, kw = c["k"]
    x = torch.ones(1, 1, c["h"], c["w"], dtype=torch.float64)
    w = torch.ones(1, 1, kh, kw, dtype=torch.float64)
    cc = dict(c, groups=1)
    return int(round(torch_conv(cc, x, w, None).sum().item()))


# ---------------------------------------------------------------------------
# Running convjit.
# ---------------------------------------------------------------------------

class Runner:
    def __init__(self, binary, engine, workdir):
        self.binary = binary
        self.engine = engine
        self.workdir = workdir

    def call(self, args, timeout=120):
        return subprocess.run([self.binary] + args, capture_output=True, text=True,
                              timeout=timeout)

    def macs(self, spec_json):
        return self.call(["macs", "--spec", spec_json, "--json"])

    def run(self, spec_json, x, w, b, tag, outdir=None):
        d = os.path.join(self.workdir, tag)
        os.makedirs(d, exist_ok=True)
        xp, wp = os.path.join(d, "x.npy"), os.path.join(d, "w.npy")
        np.save(xp, x)
        np.save(wp, w)
        args = ["run", "--spec", spec_json, "--input", xp, "--weight", wp]
        if b is not None:
            bp = os.path.join(d, "b.npy")
            np.save(bp, b)
            args += ["--bias", bp]
        outdir = outdir or os.path.join(d, "out")
        os.makedirs(outdir, exist_ok=True)
        yp = os.path.join(outdir, "y.npy")
        args += ["--output", yp]
        if self.engine:
            args += ["--engine", self.engine]
        return self.call(args), yp, outdir


# ---------------------------------------------------------------------------
# Invalid specs.
# ---------------------------------------------------------------------------

def invalid_cases(rng):
    """(class, spec dict for JSON, torch-expressible case or None, extra)."""
    out = []

    def add(cls, c, extra=None, spec=None):
        out.append((cls, spec if spec is not None else json.loads(render(c, rng)), c, extra))

    for _ in range(4):  # groups not dividing in_channels or out_channels
        c = base(rng, ["conv2d", "conv_transpose2d"][ri(rng, 0, 1)])
        g = ri(rng, 2, 4)
        if rng.random() < 0.5:
            c.update(cin=g * ri(rng, 1, 3) + ri(rng, 1, g - 1), cout=g * ri(rng, 1, 3))
        else:
            c.update(cin=g * ri(rng, 1, 3), cout=g * ri(rng, 1, 3) + ri(rng, 1, g - 1))
        c.update(groups=g, k=(3, 3), pad=("sym", 1, 1))
        c["h"], c["w"] = hw(rng, 3, 8)
        add("groups_not_dividing", c)
    for i in range(4):  # output smaller than one pixel
        if i < 3:
            c = base(rng)
            k = ri(rng, 3, 5)
            dil = ri(rng, 1, 3)
            span = dil * (k - 1) + 1  # the dilated kernel's extent
            c.update(cin=2, cout=3, k=(k, k), d=(dil, dil), pad=("sym", 0, 0))
            if i == 0:  # too short
                c["h"], c["w"] = span - 1, ri(rng, span, span + 3)
            elif i == 1:  # too narrow
                c["h"], c["w"] = span, span - 1
            else:  # padded at the bottom, still one row short
                c["h"], c["w"] = 1, span
                c["pad"] = ("asym", 0, 0, span - 2, 0)
        else:  # conv_transpose2d whose padding crops everything
            c = base(rng, "conv_transpose2d")
            c.update(cin=2, cout=2, k=(2, 2), s=(1, 1), pad=("sym", 2, 0))
            c["h"], c["w"] = 2, 3  # full output 3 rows, padding crops 4
        assert output_hw(c)[0] < 1 or output_hw(c)[1] < 1, c
        add("output_too_small", c)
    for i in range(4):  # bad output_padding
        c = base(rng, "conv_transpose2d")
        s = ri(rng, 1, 3)
        dil = ri(rng, 1, 3)
        c.update(cin=2, cout=2, k=(3, 3), s=(s, s), d=(dil, dil), pad=("sym", 1, 1),
                 op_pad=(max(s, dil) + ri(rng, 0, 1), 0))
        c["h"], c["w"] = hw(rng, 3, 6)
        if i == 3:  # conv2d has no output_padding
            c.update(op="conv2d", op_pad=(1, 1), s=(2, 2), d=(1, 1))
        add("bad_output_padding", c)
    for i in range(3):  # "same" with a stride
        c = base(rng)
        c.update(cin=2, cout=2, k=(3, 3), pad=("str", "same"), s=[(2, 2), (1, 2), (3, 1)][i])
        c["h"], c["w"] = hw(rng, 4, 8)
        add("same_with_stride", c)
    for field in ["in_channels", "out_channels", "height", "width", "batch", "kernel",
                  "padding", "stride", "dilation", "groups"]:  # negative (or zero) sizes
        c = base(rng)
        c.update(cin=2, cout=2, k=(3, 3), pad=("sym", 1, 1))
        c["h"], c["w"] = 5, 5
        spec = json.loads(render(c, rng))
        v = -ri(rng, 1, 3)
        if field in ("stride", "dilation", "groups") and rng.random() < 0.5:
            v = 0
        if field in ("kernel", "stride", "dilation"):
            spec[field] = [3 if field == "kernel" else 1, v] if rng.random() < 0.5 else v
        elif field == "padding":
            spec[field] = [1, v, 1, 1] if rng.random() < 0.5 else v
        else:
            spec[field] = v
        add("negative_sizes", c, extra=field, spec=spec)
    # A few more classes of contract 1 (no PyTorch counterpart).
    c = base(rng)
    c.update(cin=2, cout=2, k=(3, 3))
    c["h"], c["w"] = 5, 5
    spec = json.loads(render(c, rng))
    add("other", c, "unknown field", dict(spec, paddding=1))
    add("other", c, "unknown op", dict(spec, op="conv3d"))
    add("other", c, "string padding on conv_transpose2d",
        dict(spec, op="conv_transpose2d", padding="same"))
    add("other", c, "unknown activation", dict(spec, activation="gelu"))
    add("other", c, "negative_slope without leaky_relu",
        dict(spec, activation="relu", negative_slope=0.1))
    add("other", c, "padding list of 3", dict(spec, padding=[1, 1, 1]))
    return out


def torch_refuses(c, spec):
    """True when PyTorch refuses the layer, None when it cannot be expressed."""
    if c is None:
        return None
    try:
        d = {k: spec.get(k) for k in spec}
        pair = lambda v: tuple(v) if isinstance(v, list) else (v, v)
        cin, cout, g = d["in_channels"], d["out_channels"], d.get("groups", 1)
        kh, kw = pair(d["kernel"])
        s = pair(d.get("stride", 1))
        dil = pair(d.get("dilation", 1))
        p = d.get("padding", 0)
        op_pad = pair(d.get("output_padding", 0))
        x = torch.zeros(d.get("batch", 1), cin, d["height"], d["width"])
        if d["op"] == "conv2d":
            if op_pad != (0, 0):
                # nn.Conv2d has no output_padding argument at all.
                nn.Conv2d(cin, cout, (kh, kw), s, 0, dil, g, output_padding=op_pad)
            if isinstance(p, list) and len(p) == 4:
                # F.pad would crop for a negative value; PyTorch's conv padding
                # refuses it ("negative padding is not supported").
                if min(p) < 0:
                    F.conv2d(x, torch.zeros(cout, cin // g, kh, kw), None, s, min(p), dil, g)
                x = F.pad(x, (p[1], p[3], p[0], p[2]))
                p = 0
            elif isinstance(p, list):
                p = tuple(p)
            w = torch.zeros(cout, cin // g, kh, kw)
            nn.Conv2d(cin, cout, (kh, kw), s, p, dil, g)
            F.conv2d(x, w, None, s, p, dil, g)
        else:
            p = pair(p) if not isinstance(p, str) else p
            nn.ConvTranspose2d(cin, cout, (kh, kw), s, p, op_pad, g, dilation=dil)
            w = torch.zeros(cin, cout // g, kh, kw)
            F.conv_transpose2d(x, w, None, s, p, op_pad, g, dil)
        return False
    except Exception:  # noqa: BLE001 - any refusal counts
        return True


# ---------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------

def rand_tensors(c, rng):
    x = rng.standard_normal((c["batch"], c["cin"], c["h"], c["w"])).astype(np.float32)
    w = rng.standard_normal(weight_shape(c)).astype(np.float32)
    b = rng.standard_normal((c["cout"],)).astype(np.float32) if c["bias"] else None
    return x, w, b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=300, help="random valid specs (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--binary", default=DEFAULT_BINARY)
    ap.add_argument("--engine", default="reference",
                    help="convjit --engine (default reference; '' to use convjit's default)")
    ap.add_argument("--tol", type=float, default=1e-5, help="normwise relative error bound")
    ap.add_argument("--keep", metavar="DIR", help="keep the tensors and outputs in DIR")
    args = ap.parse_args()

    if not os.access(args.binary, os.X_OK):
        sys.exit(f"crosscheck: no executable convjit at {args.binary} (cargo build --release)")
    torch.set_num_threads(1)
    # PyTorch notes that "same" with an even kernel may copy the input: noise here.
    warnings.filterwarnings("ignore", message="Using padding='same'")
    rng = np.random.default_rng(args.seed)
    workdir = args.keep or tempfile.mkdtemp(prefix="convjit-crosscheck-")
    os.makedirs(workdir, exist_ok=True)
    runner = Runner(args.binary, args.engine, workdir)
    t0 = time.time()

    print(f"convjit crosscheck: binary {args.binary}, engine {args.engine or '(default)'}, "
          f"{args.cases} cases, seed {args.seed}, tol {args.tol:g}")
    print(f"torch {torch.__version__}, ptflops {importlib.metadata.version('ptflops')}, "
          f"numpy {np.__version__}")

    failures = []  # (what, spec json, detail)
    stats = OrderedDict((k, {"run": 0, "fail": 0, "max_rel": 0.0, "max_abs": 0.0})
                        for k in KINDS)
    worst = None  # (abs err, rel err at elem, kind, case idx, index, got, exp, spec)
    macs_stats = {"compared": 0, "skipped": 0, "fail": 0, "valid_checked": 0}
    kinds = list(KINDS)

    for i in range(args.cases):
        kind = kinds[i % len(kinds)]
        c = draw(kind, rng)
        spec_json = render(c, rng)
        st = stats[kind]
        st["run"] += 1
        ok = True

        def fail(what, detail):
            nonlocal ok
            ok = False
            failures.append((f"case {i} ({kind}): {what}", spec_json, detail))

        # --- numerics -----------------------------------------------------
        x, w, b = rand_tensors(c, rng)
        e = expected(c, x, w, b)
        proc, yp, _ = runner.run(spec_json, x, w, b, f"case{i:04d}")
        if proc.returncode != 0:
            fail("convjit run refused a valid spec", proc.stderr.strip())
        elif not os.path.exists(yp):
            fail("no output file", "")
        else:
            a = np.load(yp)
            if a.dtype != np.float32 or tuple(a.shape) != tuple(e.shape):
                fail("output shape/dtype", f"got {a.dtype}{list(a.shape)}, "
                     f"expected float32{list(e.shape)}")
            else:
                diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
                scale = float(np.max(np.abs(e))) if e.size else 0.0
                max_abs = float(diff.max()) if diff.size else 0.0
                rel = max_abs / scale if scale > 0 else max_abs
                if not np.all(np.isfinite(a)):
                    rel = float("inf")
                st["max_rel"] = max(st["max_rel"], rel)
                st["max_abs"] = max(st["max_abs"], max_abs)
                idx = ()
                if diff.size:
                    idx = tuple(int(v) for v in np.unravel_index(int(np.argmax(diff)), diff.shape))
                    if worst is None or max_abs > worst[0]:
                        ev = float(e[idx])
                        worst = (max_abs, max_abs / abs(ev) if ev else float("inf"), kind, i,
                                 tuple(int(v) for v in idx), float(a[idx]), ev, spec_json)
                if not rel <= args.tol:
                    fail(f"normwise relative error {rel:.3e} > {args.tol:g}",
                         f"max abs error {max_abs:.3e} at {list(idx)}: got {float(a[idx])!r}, "
                         f"expected {float(e[idx])!r}")

        # --- complexity ----------------------------------------------------
        c1 = dict(c, batch=1)
        spec1 = json.loads(spec_json)
        spec1["batch"] = 1
        spec1_json = json.dumps(spec1)
        pm = runner.macs(spec1_json)
        pn = runner.macs(spec_json)
        if pm.returncode != 0 or pn.returncode != 0:
            fail("convjit macs refused a valid spec", (pm.stderr + pn.stderr).strip())
        else:
            m1, mn = json.loads(pm.stdout), json.loads(pn.stdout)
            tm = torch_module(c1)
            if tm is None:
                macs_stats["skipped"] += 1
            else:
                macs_stats["compared"] += 1
                pt_macs, pt_params = ptflops_count(*tm)
                bad = []
                if m1["macs_ptflops"] != pt_macs:
                    bad.append(f"macs_ptflops {m1['macs_ptflops']} != ptflops {pt_macs}")
                if m1["params"] != pt_params:
                    bad.append(f"params {m1['params']} != ptflops {pt_params}")
                if bad:
                    macs_stats["fail"] += 1
                    fail("complexity (batch 1) vs ptflops", "; ".join(bad))
            # Independent of ptflops: PyTorch's own numbers and contract 4.
            n = c["batch"]
            ho, wo = e.shape[2], e.shape[3]
            kh, kw = c["k"]
            cig, cog = c["cin"] // c["groups"], c["cout"] // c["groups"]
            if c["op"] == "conv2d":
                dense = n * c["cout"] * ho * wo * cig * kh * kw
                per_pos = n * ho * wo
                valid = n * c["cout"] * cig * torch_valid_taps(c)
            else:
                dense = n * c["cin"] * c["h"] * c["w"] * cog * kh * kw
                per_pos = n * c["h"] * c["w"]
                valid = n * c["cin"] * cog * torch_valid_taps(c)
            ptf_n = kh * kw * c["cin"] * cog * per_pos + (n * c["cout"] * ho * wo if c["bias"]
                                                           else 0)
            params = int(np.prod(weight_shape(c))) + (c["cout"] if c["bias"] else 0)
            macs_stats["valid_checked"] += 1
            bad = []
            for key, want in (("macs", dense), ("macs_valid", valid), ("macs_ptflops", ptf_n),
                              ("flops", 2 * dense), ("params", params)):
                if mn[key] != want:
                    bad.append(f"{key} {mn[key]} != {want}")
            if abs(mn["macs_per_pixel"] - ptf_n / (n * c["h"] * c["w"])) > 1e-9 * max(
                    1.0, mn["macs_per_pixel"]):
                bad.append(f"macs_per_pixel {mn['macs_per_pixel']} != {ptf_n / (n * c['h'] * c['w'])}")
            if list(mn.get("output_shape", e.shape)) != list(e.shape):
                bad.append(f"output_shape {mn.get('output_shape')} != {list(e.shape)}")
            if bad:
                macs_stats["fail"] += 1
                fail(f"complexity (batch {n}) vs PyTorch counts", "; ".join(bad))
        if not ok:
            st["fail"] += 1

    # --- invalid specs -------------------------------------------------------
    inv_stats = OrderedDict()
    for j, (cls, spec, c, extra) in enumerate(invalid_cases(rng)):
        s = inv_stats.setdefault(cls, {"run": 0, "fail": 0, "torch_agrees": 0, "torch_na": 0})
        s["run"] += 1
        spec_json = json.dumps(spec)
        label = f"invalid {cls}" + (f" ({extra})" if extra else "")
        problems = []
        # Tensors shaped as the spec would have them where that is defined.
        x = np.zeros((2, 2, 5, 5), np.float32)
        w = np.zeros((2, 2, 3, 3), np.float32)
        if c is not None and extra is None:
            try:
                x = np.zeros((c["batch"], c["cin"], c["h"], c["w"]), np.float32)
                w = np.zeros(tuple(max(1, v) for v in weight_shape(c)), np.float32)
            except ValueError:
                pass
        b = np.zeros((max(1, spec.get("out_channels", 1)),), np.float32) \
            if spec.get("bias", True) else None
        outdir = os.path.join(workdir, f"invalid{j:03d}", "out")
        proc, yp, outdir = runner.run(spec_json, x, w, b, f"invalid{j:03d}", outdir)
        lines = proc.stderr.strip().splitlines()
        if proc.returncode == 0:
            problems.append("convjit run accepted it (exit 0)")
        if len(lines) != 1:
            problems.append(f"run: {len(lines)} stderr lines: {proc.stderr!r}")
        if os.listdir(outdir):
            problems.append(f"run left {os.listdir(outdir)} in the output folder")
        pm = runner.macs(spec_json)
        if pm.returncode == 0:
            problems.append("convjit macs accepted it (exit 0)")
        elif len(pm.stderr.strip().splitlines()) != 1:
            problems.append(f"macs: stderr not one line: {pm.stderr!r}")
        tr = torch_refuses(c if extra is None or cls == "negative_sizes" else None, spec)
        if tr is None:
            s["torch_na"] += 1
        elif tr:
            s["torch_agrees"] += 1
        else:
            problems.append("PyTorch accepts this layer (convjit refuses it)")
        if problems:
            s["fail"] += 1
            failures.append((label, spec_json, "; ".join(problems) + f" | stderr: {lines[:1]}"))
        s.setdefault("sample", lines[0] if lines else "")

    # --- a contract 3 check: a tensor file that does not match the spec -------
    c = draw("standard", rng)
    spec_json = render(c, rng)
    x, w, b = rand_tensors(c, rng)
    s = inv_stats.setdefault("tensor_mismatch", {"run": 0, "fail": 0, "torch_agrees": 0,
                                                 "torch_na": 0})
    bad_x = np.zeros((c["batch"], c["cin"] + 1, c["h"], c["w"]), np.float32)
    bad_w = np.zeros((weight_shape(c)[0] + 1,) + weight_shape(c)[1:], np.float32)
    for what, xx, ww in (("input", bad_x, w), ("weight", x, bad_w)):
        s["run"] += 1
        s["torch_na"] += 1
        outdir = os.path.join(workdir, f"mismatch-{what}", "out")
        proc, yp, outdir = runner.run(spec_json, xx, ww, b,
                                      f"mismatch-{what}", outdir)
        lines = proc.stderr.strip().splitlines()
        if proc.returncode == 0 or len(lines) != 1 or os.listdir(outdir):
            s["fail"] += 1
            failures.append((f"invalid tensor_mismatch ({what})", spec_json,
                             f"exit {proc.returncode}, stderr {proc.stderr!r}, "
                             f"left {os.listdir(outdir)}"))
        s.setdefault("sample", lines[0] if lines else "")

    # --- summary ---------------------------------------------------------------
    print()
    print(f"{'kind':<22}{'cases':>6}{'fail':>6}{'max rel err':>14}{'max abs err':>14}")
    total = sum(st["run"] for st in stats.values())
    for kind, st in stats.items():
        print(f"{kind:<22}{st['run']:>6}{st['fail']:>6}{st['max_rel']:>14.3e}"
              f"{st['max_abs']:>14.3e}")
    max_rel = max(st["max_rel"] for st in stats.values())
    print(f"{'all':<22}{total:>6}{sum(st['fail'] for st in stats.values()):>6}"
          f"{max_rel:>14.3e}{max(st['max_abs'] for st in stats.values()):>14.3e}")
    if worst:
        print(f"worst elementwise error: |a-e| = {worst[0]:.3e} (relative {worst[1]:.3e}) in "
              f"case {worst[3]} ({worst[2]}) at {list(worst[4])}: got {worst[5]!r}, "
              f"expected {worst[6]!r}")
    print()
    print(f"complexity: ptflops compared on {macs_stats['compared']} modules (batch 1), "
          f"{macs_stats['skipped']} skipped (conv_transpose2d with [t,l,b,r] padding has no "
          f"torch module); contract-4 counts vs PyTorch checked on {macs_stats['valid_checked']}"
          f" specs (batch N); {macs_stats['fail']} mismatches")
    print("  (ptflops runs on the conv module alone, as contract 4 defines macs_ptflops; on "
          "nn.Sequential(conv, act) ptflops 0.7.5 adds N*Cout*Hout*Wout for nn.ReLU6/LeakyReLU "
          "and twice that for nn.ReLU, whose F.relu it counts a second time)")
    print()
    print(f"{'invalid class':<22}{'specs':>6}{'fail':>6}{'torch refuses':>15}  sample stderr")
    for cls, s in inv_stats.items():
        tr = f"{s['torch_agrees']}/{s['run'] - s['torch_na']}" if s["run"] > s["torch_na"] \
            else "n/a"
        print(f"{cls:<22}{s['run']:>6}{s['fail']:>6}{tr:>15}  {s.get('sample', '')[:90]}")
    print()
    n_inv = sum(s["run"] for s in inv_stats.values())
    n_inv_fail = sum(s["fail"] for s in inv_stats.values())
    if failures:
        print(f"FAILURES ({len(failures)}):")
        for what, spec_json, detail in failures:
            print(f"- {what}\n    spec: {spec_json}\n    {detail}")
        print()
    n_fail_cases = sum(st["fail"] for st in stats.values())
    print(f"crosscheck: {total - n_fail_cases + n_inv - n_inv_fail} passed, "
          f"{n_fail_cases + n_inv_fail} failed ({total} valid specs, {n_inv} invalid) "
          f"in {time.time() - t0:.1f}s")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
