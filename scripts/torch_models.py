#!/usr/bin/env python3
"""Cross-check `convjit net` against PyTorch and ptflops on whole models.

Defines in plain PyTorch (no torchvision) MobileNetV2 (width 1.0) and
ResNet-18 with exactly torchvision's module structure and state_dict names
(features.N.conv.M..., classifier.1; conv1, bn1, layer1.0.conv1, ...,
layer2.0.downsample.0/1, fc), and the JVET-style loop filter of convjit's
builtin jvet_lf (head, body.0..7, tail, + the input). For each model, in
eval mode with random weights and random, non-trivial BatchNorm statistics
(`randomise`), it

  (a) saves the state_dict with safetensors.torch.save_file
      (num_batches_tracked left in: convjit must ignore it);
  (b) saves a random input and PyTorch's float32 output as float32 .npy;
  (c) runs `convjit net --model builtin:NAME --weights W --input X
      --output Y --json` and compares Y with PyTorch's output: normwise
      relative error max|y - e| / max|e|, failing above --tol (1e-4). It also
      gives the error against the model run in float64, and PyTorch's own;
  (d) runs ptflops.get_model_complexity_info(model, (3, H, W),
      as_strings=False, print_per_layer_stat=False) and compares its MACs
      with convjit's total `macs_ptflops`, and its parameter count with
      convjit's `params`. The parameters must be equal. The MACs may differ,
      but only by what `explain_macs` accounts for (ptflops 0.7's default
      count_functional=True counts F.relu / F.max_pool2d /
      F.adaptive_avg_pool2d again inside nn.ReLU / nn.MaxPool2d /
      nn.AdaptiveAvgPool2d, and convjit does not count an activation fused
      into a conv); any other difference fails.

It prints one line per model with the figures, then the MAC differences
explained.

With --fixture DIR it writes instead the small fixture that tests/net.rs
(`torch_exported_state_dict_runs`) reads, exported from a tiny PyTorch model
(`TinyNet`: nested nn.Sequential names, conv + BatchNorm2d + ReLU6, a
MobileNetV2-style residual depthwise-separable unit, max pool, two ACNet
blocks written as ACNet's acb.py builds them, one with padding < k // 2 so
that its branches crop, a ConvTranspose2d + BatchNorm2d + LeakyReLU, global
average pool, Linear):

  model.json          the convjit model file (its names are the state_dict's)
  weights.safetensors the state_dict, as safetensors.torch.save_file writes it
  input.npy           the input, float32 [1, 3, 16, 16]
  output.npy          PyTorch's output, float32, as convjit shapes it [1, 10, 1, 1]
  features.npy        PyTorch's output of `up` (before the pool), [1, 8, 12, 12]

and, when the convjit binary exists, checks it on that fixture as well (both
ACNet forms, fused and unfused depthwise-separable blocks).

With --onnx DIR it exports the models to DIR/<model>.onnx instead
(torch.onnx.export, opset 17), for `convjit net --model` and
scripts/model_peers.py: the three above and, with --models all, a small
U-Net (ConvTranspose, Concat), an NNVC-style in-loop filter of a 128x128
luma patch with a QP-map input (PReLU, PixelShuffle, a residual to an
input) and a model mixing grouped, dilated, 1x7/7x1 and transposed convs
with odd channel counts.

Usage:
    python3 scripts/torch_models.py [--models mobilenetv2,resnet18,jvet_lf]
        [--convjit target/release/convjit] [--out DIR] [--seed 0] [--tol 1e-4]
    python3 scripts/torch_models.py --onnx DIR [--models all|NAME,...] [--seed 0]
    python3 scripts/torch_models.py --fixture tests/data/torch_tiny

Exit status 0 when everything agrees, 1 on any mismatch.
Needs torch, numpy and ptflops (scripts/requirements-crosscheck.txt) and
safetensors (pip install safetensors); torchvision only to export its
mobilenet_v3_small, efficientnet_b0 and shufflenet_v2_x1_0 (--onnx DIR
--models NAME).
"""

import argparse
import copy
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections import OrderedDict, defaultdict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import ptflops

try:
    import safetensors.torch
except ImportError:  # pragma: no cover - a message instead of a traceback
    sys.exit("torch_models: needs the safetensors package (pip install safetensors)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONVJIT = os.path.join(ROOT, "target", "release", "convjit")
MODELS = ["mobilenetv2", "resnet18", "jvet_lf"]


# ---------------------------------------------------------------------------
# MobileNetV2, as torchvision.models.mobilenet_v2() builds it (width 1.0).
# ---------------------------------------------------------------------------

def _make_divisible(v, divisor=8, min_value=None):
    """torchvision's channel rounding (a no-op at width 1.0)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    """torchvision.ops.Conv2dNormActivation: conv (no bias), BN, activation:
    modules 0, 1, 2."""

    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1,
                 activation_layer=nn.ReLU6):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            activation_layer(),
        )


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block: `conv` holds [expand 1x1 CNA], depthwise
    3x3 CNA, the 1x1 projection and its BN; a residual when shapes allow."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden, kernel_size=1))
        layers.extend([
            Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ])
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.mobilenet_v2(width_mult=1.0): `features.0`-`features.18`,
    functional adaptive_avg_pool2d, `classifier` = (Dropout, Linear)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        channels = _make_divisible(32)
        self.last_channel = _make_divisible(1280)
        features = [Conv2dNormActivation(3, channels, stride=2)]
        for t, c, n, s in settings:
            out = _make_divisible(c)
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        features.append(Conv2dNormActivation(channels, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2),
                                        nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


# ---------------------------------------------------------------------------
# ResNet-18, as torchvision.models.resnet18() builds it.
# ---------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """torchvision's BasicBlock; its one nn.ReLU runs twice (after bn1 and
    after the sum)."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """torchvision.models.resnet18(): conv1, bn1, relu, maxpool, layer1-4 of two
    BasicBlocks (layerX.0.downsample = (1x1 conv, BN) where the shape changes),
    avgpool, fc."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 1)
        self.layer2 = self._make_layer(128, 2)
        self.layer3 = self._make_layer(256, 2)
        self.layer4 = self._make_layer(512, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample),
                  BasicBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# ---------------------------------------------------------------------------
# The JVET-NNVC-style loop filter of builtin:jvet_lf.
# ---------------------------------------------------------------------------

class JvetLoopFilter(nn.Module):
    """`head` 3->64 3x3 + ReLU, `body.0`-`body.7` 64->64 3x3 + ReLU, `tail`
    64->3 3x3, plus the input. The ReLU is one parameter-free module (as
    ResNet's), so the state_dict holds only the convs. Weights are
    Kaiming-initialised so that the filtered part is as large as the input
    and the comparison is not the residual's alone."""

    def __init__(self, channels=64, depth=8):
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1)
                                  for _ in range(depth))
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        for conv in [self.head, *self.body]:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.normal_(self.tail.weight, std=1 / math.sqrt(channels * 9))
        for conv in [self.head, *self.body, self.tail]:
            nn.init.uniform_(conv.bias, -0.1, 0.1)

    def forward(self, x):
        y = self.relu(self.head(x))
        for conv in self.body:
            y = self.relu(conv(y))
        return x + self.tail(y)


BUILD = {
    "mobilenetv2": (MobileNetV2, (1, 3, 224, 224)),
    "resnet18": (ResNet18, (1, 3, 224, 224)),
    "jvet_lf": (JvetLoopFilter, (1, 3, 128, 128)),
}


# ---------------------------------------------------------------------------
# Models exported to ONNX only (--onnx): no built-in mirrors them.
# ---------------------------------------------------------------------------

def double_conv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net: two max-pool downsamplings (16, 32, 64 channels), two
    ConvTranspose2d upsamplings whose outputs are concatenated with the
    skips, double 3x3 conv + BN + ReLU stages, a 1x1 head of 2 classes."""

    def __init__(self):
        super().__init__()
        self.down0, self.down1, self.bottom = double_conv(3, 16), double_conv(16, 32), double_conv(32, 64)
        self.pool = nn.MaxPool2d(2)
        self.up1, self.dec1 = nn.ConvTranspose2d(64, 32, 2, stride=2), double_conv(64, 32)
        self.up0, self.dec0 = nn.ConvTranspose2d(32, 16, 2, stride=2), double_conv(32, 16)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        s0 = self.down0(x)
        s1 = self.down1(self.pool(s0))
        b = self.bottom(self.pool(s1))
        d1 = self.dec1(torch.cat([self.up1(b), s1], dim=1))
        d0 = self.dec0(torch.cat([self.up0(d1), s0], dim=1))
        return self.head(d0)


class NnvcFilter(nn.Module):
    """A JVET NNVC-style in-loop filter of a 128x128 luma patch: the
    reconstruction and a QP map concatenated, a stride-2 head conv, eight
    3x3 convs of 64 channels each with a PReLU of a slope per channel, a tail
    to 4 channels, PixelShuffle back to full resolution, and the residual
    added to the reconstruction."""

    def __init__(self, channels=64, depth=8):
        super().__init__()
        self.head = nn.Conv2d(2, channels, 3, stride=2, padding=1)
        self.head_act = nn.PReLU(channels)
        self.body = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth))
        self.acts = nn.ModuleList(nn.PReLU(channels) for _ in range(depth))
        self.tail = nn.Conv2d(channels, 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        for act in [self.head_act, *self.acts]:
            nn.init.uniform_(act.weight, 0.05, 0.45)

    def forward(self, rec, qp):
        y = self.head_act(self.head(torch.cat([rec, qp], dim=1)))
        for conv, act in zip(self.body, self.acts):
            y = act(conv(y))
        return rec + self.shuffle(self.tail(y))


class Mixed(nn.Module):
    """Odd channel counts through a grouped, a dilated, a 1x7 and a 7x1 and a
    transposed conv."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 13, 3, padding=1), nn.ReLU(),
            nn.Conv2d(13, 24, 1), nn.BatchNorm2d(24), nn.ReLU6(),
            nn.Conv2d(24, 24, 3, padding=1, groups=4), nn.LeakyReLU(0.1),
            nn.Conv2d(24, 21, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(21, 21, (1, 7), padding=(0, 3)), nn.Conv2d(21, 21, (7, 1), padding=(3, 0)),
            nn.ReLU(),
            nn.ConvTranspose2d(21, 11, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())

    def forward(self, x):
        return self.net(x)


def _torchvision(name):
    """A constructor of torchvision's model `name` (imported only when it
    is exported: torchvision is needed for these alone)."""
    def build():
        try:
            import torchvision
        except ImportError:
            sys.exit(f"torch_models: {name} is torchvision's: pip install torchvision")
        return getattr(torchvision.models, name)()
    return build


EXPORT = {
    "unet": (UNet, [(1, 3, 128, 128)]),
    "nnvc_filter": (NnvcFilter, [(1, 1, 128, 128), (1, 1, 128, 128)]),
    "mixed": (Mixed, [(1, 3, 64, 64)]),
    # Squeeze and excitation, hardswish, SiLU: torchvision's, when installed
    # (not part of "all").
    "mobilenet_v3_small": (_torchvision("mobilenet_v3_small"), [(1, 3, 224, 224)]),
    "efficientnet_b0": (_torchvision("efficientnet_b0"), [(1, 3, 224, 224)]),
    # Channel split (chunk) and channel shuffle.
    "shufflenet_v2_x1_0": (_torchvision("shufflenet_v2_x1_0"), [(1, 3, 224, 224)]),
}

# The models "all" exports: those defined here.
TORCHVISION = {"mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0"}


# ---------------------------------------------------------------------------
# ACNet's block and the tiny model of the test fixture.
# ---------------------------------------------------------------------------

class ACBlock(nn.Module):
    """ACNet's asymmetric convolution block in its training form, as
    DingXiaoH/ACNet acnet/acb.py builds it: square_conv/square_bn (kxk),
    ver_conv/ver_bn (kx1), hor_conv/hor_bn (1xk), no conv biases, the three
    BN outputs summed. With padding < k // 2 the kx1 and 1xk branches cannot
    pad by padding - k // 2 < 0, so they crop k // 2 - padding columns (rows)
    from their input instead, as acb.py does."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1):
        super().__init__()
        conv = dict(stride=stride, dilation=dilation, groups=groups, bias=False)
        self.square_conv = nn.Conv2d(in_channels, out_channels, (kernel_size, kernel_size),
                                     padding=padding, **conv)
        self.square_bn = nn.BatchNorm2d(out_channels)
        if padding - kernel_size // 2 >= 0:
            self.crop = 0
            hor_padding = [padding - kernel_size // 2, padding]
            ver_padding = [padding, padding - kernel_size // 2]
        else:
            self.crop = kernel_size // 2 - padding
            hor_padding = [0, padding]
            ver_padding = [padding, 0]
        self.ver_conv = nn.Conv2d(in_channels, out_channels, (kernel_size, 1),
                                  padding=ver_padding, **conv)
        self.hor_conv = nn.Conv2d(in_channels, out_channels, (1, kernel_size),
                                  padding=hor_padding, **conv)
        self.ver_bn = nn.BatchNorm2d(out_channels)
        self.hor_bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        square = self.square_bn(self.square_conv(x))
        if self.crop > 0:
            ver_input = x[:, :, :, self.crop:-self.crop]
            hor_input = x[:, :, self.crop:-self.crop, :]
        else:
            ver_input = hor_input = x
        vertical = self.ver_bn(self.ver_conv(ver_input))
        horizontal = self.hor_bn(self.hor_conv(hor_input))
        return square + vertical + horizontal


class DepthwiseResidual(nn.Module):
    """A MobileNetV2-style unit without expansion: `conv.0` = (depthwise 3x3,
    BN, ReLU6), `conv.1` pointwise 1x1, `conv.2` BN; plus the input."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                          nn.BatchNorm2d(channels), nn.ReLU6()),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x):
        return x + self.conv(x)


class TinyNet(nn.Module):
    """The fixture's model, [1, 3, 16, 16] -> [1, 10]; see TINY_LAYERS."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU6())                                   # 8x16x16
        self.blocks = nn.Sequential(DepthwiseResidual(8))                      # 8x16x16
        self.pool = nn.MaxPool2d(3, 2, 1)                                      # 8x8x8
        self.acb = nn.Sequential(ACBlock(8, 16, 3, padding=1), nn.ReLU())      # 16x8x8
        self.acb_crop = nn.Sequential(ACBlock(16, 16, 3, padding=0), nn.ReLU())  # 16x6x6
        self.up = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.BatchNorm2d(8),
                                nn.LeakyReLU(0.1))                             # 8x12x12
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.up(self.acb_crop(self.acb(self.pool(self.blocks(self.stem(x))))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


TINY_INPUT = (1, 3, 16, 16)

# TinyNet as a convjit model file. Names are the state_dict prefixes; a layer
# with no module of its own takes its block's name (the residual add
# `blocks.0`, its dsc `blocks.0.conv`) or its module's (the ReLUs). The ReLU
# after acb_crop.0 is given as the block's activation (fused, no row), the
# one after acb.0 as a layer of its own.
TINY_LAYERS = [
    {"kind": "conv", "name": "stem.0", "out_channels": 8, "kernel": 3, "padding": 1,
     "bias": False},
    {"kind": "batchnorm", "name": "stem.1"},
    {"kind": "activation", "name": "stem.2", "activation": "relu6"},
    {"kind": "dsc", "name": "blocks.0.conv", "out_channels": 8, "kernel": 3, "padding": 1,
     "activations": ["relu6", "none"],
     "depthwise": "blocks.0.conv.0.0", "depthwise_bn": "blocks.0.conv.0.1",
     "pointwise": "blocks.0.conv.1", "pointwise_bn": "blocks.0.conv.2"},
    {"kind": "add", "name": "blocks.0", "with": "stem.2"},
    {"kind": "max_pool", "name": "pool", "kernel": 3, "stride": 2, "padding": 1},
    {"kind": "acblock", "name": "acb.0", "out_channels": 16, "kernel": 3, "padding": 1},
    {"kind": "activation", "name": "acb.1", "activation": "relu"},
    {"kind": "acblock", "name": "acb_crop.0", "out_channels": 16, "kernel": 3, "padding": 0,
     "activation": "relu"},
    {"kind": "conv", "name": "up.0", "op": "conv_transpose2d", "out_channels": 8, "kernel": 4,
     "stride": 2, "padding": 1},
    {"kind": "batchnorm", "name": "up.1"},
    {"kind": "activation", "name": "up.2", "activation": "leaky_relu", "negative_slope": 0.1},
    {"kind": "global_avg_pool", "name": "avgpool"},
    {"kind": "linear", "name": "fc", "out_features": 10},
]


def model_json(name, input_shape, layers):
    """A convjit model file, one layer per line (as `--print-model`)."""
    rows = ",\n".join("    " + json.dumps(layer) for layer in layers)
    return (f'{{\n  "name": {json.dumps(name)},\n  "input": {list(input_shape)},\n'
            f'  "layers": [\n{rows}\n  ]\n}}\n')


# ---------------------------------------------------------------------------
# Weights.
# ---------------------------------------------------------------------------

def randomise(model, input_shape, gen):
    """Puts `model` in eval mode with random, non-trivial BatchNorm parameters.

    Convs and linear layers keep their initialisation (PyTorch's default, or
    the model's own). Every BatchNorm2d gets gamma ~ U(0.5, 1.5) and
    beta ~ U(-0.5, 0.5); its running statistics are measured, in one eval
    forward pass on a random batch, on the very input it then receives (so
    each BN does normalise, and a deep net's activations neither vanish nor
    blow up), and perturbed per channel: mean + 0.2 sd N(0, 1), variance times
    2^U(-1, 1). Folding such a BN into a conv scales and shifts every output
    channel differently. num_batches_tracked is set to 1 and stays in the
    state_dict."""
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

    def calibrate(bn, inputs):
        x = inputs[0].double()
        c = x.shape[1]
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3)).clamp_min(1e-4)
        noise = torch.randn(c, generator=gen, dtype=torch.float64)
        scale = 2.0 ** (torch.rand(c, generator=gen, dtype=torch.float64) * 2 - 1)
        bn.running_mean.copy_((mean + 0.2 * var.sqrt() * noise).float())
        bn.running_var.copy_((var * scale).float())
        bn.num_batches_tracked.fill_(1)

    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.bias.copy_(torch.rand(bn.num_features, generator=gen) - 0.5)
        handles = [bn.register_forward_pre_hook(calibrate) for bn in bns]
        batch = (2,) + tuple(input_shape[1:])
        model(torch.randn(batch, generator=gen))
        for h in handles:
            h.remove()
    return model


def save_state_dict(model, path):
    """The state_dict as safetensors.torch.save_file writes it (contiguous
    copies; num_batches_tracked included)."""
    sd = OrderedDict((k, v.detach().contiguous()) for k, v in model.state_dict().items())
    safetensors.torch.save_file(sd, path)


def forward(model, x):
    """(float32 output, float64 output) of `model` on `x`."""
    with torch.no_grad():
        y32 = model(x)
        y64 = copy.deepcopy(model).double()(x.double())
    return y32.numpy(), y64.numpy()


# ---------------------------------------------------------------------------
# convjit, ptflops and the comparisons.
# ---------------------------------------------------------------------------

def normwise(actual, expected):
    """max|a - e| / max|e| in float64, as convjit's reference::compare."""
    a = np.asarray(actual, np.float64).ravel()
    e = np.asarray(expected, np.float64).ravel()
    scale = np.max(np.abs(e))
    return float(np.max(np.abs(a - e)) / scale) if scale > 0 else float(np.max(np.abs(a - e)))


class Convjit:
    """The convjit binary."""

    def __init__(self, path):
        self.path = path

    def call(self, args, timeout=900):
        proc = subprocess.run([self.path] + args, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"convjit {' '.join(args)}: exit {proc.returncode}: "
                               f"{proc.stderr.strip()}")
        return proc

    def net(self, model, weights, x, y, extra=()):
        """Runs the model (one timed run) and returns contract 5's report."""
        args = ["net", "--model", model, "--weights", weights, "--input", x, "--output", y,
                "--json", "--runs", "1", *extra]
        return json.loads(self.call(args).stdout)

    def model(self, model):
        """The model as convjit reads it (`--print-model`)."""
        if not model.startswith("builtin:"):
            with open(model) as f:
                return json.load(f)
        return json.loads(self.call(["net", "--model", model, "--print-model"]).stdout)


def ptflops_count(model, input_shape, count_functional=True):
    """(MACs, params) of ptflops' pytorch backend; count_functional=True is its
    default."""
    macs, params = ptflops.get_model_complexity_info(
        model, tuple(input_shape[1:]), as_strings=False, print_per_layer_stat=False,
        ost=io.StringIO(), backend_specific_config={"count_functional": count_functional})
    return int(macs), int(params)


def explain_macs(model, input_shape, convjit_model, report):
    """The MACs by which ptflops' default count exceeds convjit's
    macs_ptflops, by cause:

    - ptflops' count_functional (default True) patches torch.nn.functional,
      so the F.relu inside nn.ReLU.forward is counted again (output numel),
      and so are F.max_pool2d / F.adaptive_avg_pool2d inside nn.MaxPool2d /
      nn.AdaptiveAvgPool2d (input numel). nn.ReLU6 and nn.LeakyReLU call
      F.hardtanh / F.leaky_relu, which ptflops does not patch: counted once.
      A functional call in a model's own forward (MobileNetV2's
      F.adaptive_avg_pool2d) is counted once, as convjit counts its
      global_avg_pool.
    - An activation convjit fuses into a conv or ACNet block (its
      `activation` field) is not counted by convjit (DESIGN.md contract 4),
      but is an nn.ReLU module in PyTorch, which ptflops counts.

    Returns an OrderedDict cause -> MACs."""
    causes = OrderedDict()
    tally = defaultdict(int)

    def relu(m, inputs, output):
        tally["F.relu inside nn.ReLU, counted again"] += output.numel()

    def pool(m, inputs, output):
        fn = "max_pool2d" if isinstance(m, nn.MaxPool2d) else "adaptive_avg_pool2d"
        tally[f"F.{fn} inside nn.{type(m).__name__}, counted again"] += inputs[0].numel()

    handles = []
    for m in model.modules():
        if type(m) is nn.ReLU:
            handles.append(m.register_forward_hook(relu))
        elif isinstance(m, (nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
            handles.append(m.register_forward_hook(pool))
    with torch.no_grad():
        model(torch.zeros(input_shape))
    for h in handles:
        h.remove()
    causes.update(tally)
    rows = {row["name"]: row for row in report["layers"]}
    fused = sum(int(np.prod(rows[layer["name"]]["output_shape"]))
                for layer in convjit_model["layers"]
                if layer["kind"] in ("conv", "acblock")
                and layer.get("activation", "none") != "none")
    if fused:
        causes["activations convjit fuses into a conv/block (not counted)"] = fused
    return causes


def compare(label, torch_model, x, convjit, convjit_model, outdir, tol, extra=(), counts=True):
    """Runs checks (a)-(d) on one model ((d) only with `counts`); returns (row
    dict, failures)."""
    os.makedirs(outdir, exist_ok=True)
    w_path = os.path.join(outdir, "weights.safetensors")
    x_path = os.path.join(outdir, "input.npy")
    e_path = os.path.join(outdir, "expected.npy")
    y_path = os.path.join(outdir, "output.npy")
    save_state_dict(torch_model, w_path)
    np.save(x_path, x.numpy().astype(np.float32))
    y32, y64 = forward(torch_model, x)
    np.save(e_path, y32.astype(np.float32))

    failures = []
    report = convjit.net(convjit_model, w_path, x_path, y_path, extra)
    y = np.load(y_path)
    # convjit's output is NCHW: PyTorch's [N, C] is its [N, C, 1, 1].
    want = list(y32.shape) + [1] * (4 - y32.ndim)
    if list(y.shape) != want:
        failures.append(f"{label}: convjit's output has shape {list(y.shape)}, expected {want}")
        err = err64 = float("inf")
    else:
        err, err64 = normwise(y, y32), normwise(y, y64)
        if not err <= tol:
            failures.append(f"{label}: output differs from PyTorch's by {err:.3e} "
                            f"(normwise relative), past {tol:.0e}")

    row = dict(label=label, shape=list(y32.shape), err=err, err64=err64,
               torch64=normwise(y32, y64), counts=counts)
    if not counts:
        return row, failures
    p_macs, p_params = ptflops_count(torch_model, x.shape)
    m_macs, _ = ptflops_count(torch_model, x.shape, count_functional=False)
    c_macs, c_params = report["total"]["macs_ptflops"], report["total"]["params"]
    torch_params = sum(p.numel() for p in torch_model.parameters())
    causes = explain_macs(torch_model, x.shape, convjit.model(convjit_model), report)
    unexplained = p_macs - c_macs - sum(causes.values())
    if unexplained:
        failures.append(f"{label}: ptflops counts {p_macs} MACs, convjit {c_macs}: "
                        f"{unexplained:+} not explained")
    if not p_params == c_params == torch_params:
        failures.append(f"{label}: params: ptflops {p_params}, PyTorch {torch_params}, "
                        f"convjit {c_params}")
    row.update(p_macs=p_macs, m_macs=m_macs, c_macs=c_macs, causes=causes,
               unexplained=unexplained, p_params=p_params, c_params=c_params)
    return row, failures


def print_rows(rows):
    width = max(len(r["label"]) for r in rows)
    for r in rows:
        line = (f"{r['label']:<{width}}  out {str(r['shape']):<16} err {r['err']:.2e} "
                f"(vs f64 {r['err64']:.2e}; torch f32 vs f64 {r['torch64']:.2e})")
        if r["counts"]:
            d = r["p_macs"] - r["c_macs"]
            line += (f"  MACs ptflops {r['p_macs']:,} convjit {r['c_macs']:,} diff {d:+,} "
                     f"({100 * d / r['c_macs']:+.3f}%)  params ptflops {r['p_params']:,} "
                     f"convjit {r['c_params']:,}")
        else:
            line += "  counts: not compared (ACNet deploy form: one conv + bias per block)"
        print(line)
    print()
    print("MAC differences (ptflops 0.7 default count_functional=True minus convjit "
          "macs_ptflops):")
    for r in [r for r in rows if r["counts"]]:
        d = r["p_macs"] - r["c_macs"]
        print(f"  {r['label']}: {d:+,} = module hooks {r['m_macs']:,} + functional "
              f"{r['p_macs'] - r['m_macs']:,} - convjit {r['c_macs']:,}")
        for cause, n in r["causes"].items():
            print(f"      {n:>+14,}  {cause}")
        print(f"      {r['unexplained']:>+14,}  unexplained")


# ---------------------------------------------------------------------------
# The fixture.
# ---------------------------------------------------------------------------

def write_fixture(directory, seed):
    """Writes tests/data/torch_tiny's files (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = randomise(TinyNet(), TINY_INPUT, gen)
    x = torch.randn(TINY_INPUT, generator=gen)
    features = {}
    hook = model.up.register_forward_hook(lambda m, i, o: features.setdefault("up", o))
    with torch.no_grad():
        y = model(x)
    hook.remove()
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "model.json"), "w") as f:
        f.write(model_json("torch_tiny", TINY_INPUT, TINY_LAYERS))
    save_state_dict(model, os.path.join(directory, "weights.safetensors"))
    np.save(os.path.join(directory, "input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(directory, "output.npy"),
            y.numpy().astype(np.float32).reshape(y.shape[0], y.shape[1], 1, 1))
    np.save(os.path.join(directory, "features.npy"), features["up"].numpy().astype(np.float32))
    return model, x


def check_fixture(directory, model, x, convjit, tol):
    """convjit on the fixture: deploy and training ACNet forms, fused and
    unfused dsc. Returns (rows, failures)."""
    rows, failures = [], []
    scratch = tempfile.mkdtemp(prefix="torch_tiny-")
    try:
        training = [dict(layer, deploy=False) if layer["kind"] == "acblock" else layer
                    for layer in TINY_LAYERS]
        train_path = os.path.join(scratch, "model_training.json")
        with open(train_path, "w") as f:
            f.write(model_json("torch_tiny", TINY_INPUT, training))
        for label, path, extra in [
            ("torch_tiny (deploy)", os.path.join(directory, "model.json"), ()),
            ("torch_tiny (training, unfused)", train_path, ("--dsc", "unfused")),
        ]:
            # The deploy form has one conv + bias per ACNet block where
            # PyTorch has three convs and three BNs: its counts are not
            # PyTorch's, and only the training form's are compared.
            try:
                row, fails = compare(label, model, x, convjit, path,
                                     os.path.join(scratch, label.split()[1].strip("(,)")),
                                     tol, extra, counts="deploy" not in label)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                failures.append(f"{label}: {e}")
                continue
            rows.append(row)
            failures += fails
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows, failures


# ---------------------------------------------------------------------------

def export_onnx(outdir, models, seed):
    """Exports each of `models` (comma-separated, or "all"), randomised in
    eval mode, to `outdir`/<model>.onnx, as a user exports a trained model."""
    os.makedirs(outdir, exist_ok=True)
    every = {**{n: (c, [s]) for n, (c, s) in BUILD.items()}, **EXPORT}
    names = ([n for n in every if n not in TORCHVISION] if models == "all"
             else [n.strip() for n in models.split(",") if n.strip()])
    for name in names:
        if name not in every:
            sys.exit(f"torch_models: unknown model {name}: give {', '.join(every)} or all")
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        cls, shapes = every[name]
        model = cls()
        if name in BUILD:
            model = randomise(model, shapes[0], gen)
        else:
            # BatchNorms in eval mode with non-trivial statistics, as
            # `randomise` does, from one forward pass on random inputs.
            model = randomise_multi(model, shapes, gen)
        xs = tuple(torch.randn(s, generator=gen) for s in shapes)
        path = os.path.join(outdir, f"{name}.onnx")
        inputs = ["input"] if len(shapes) == 1 else ["rec", "qp"][: len(shapes)]
        torch.onnx.export(model, xs, path, dynamo=False, opset_version=17,
                          input_names=inputs, output_names=["output"])
        print(f"wrote {path} ({os.path.getsize(path):,} B)")
    return 0


def randomise_multi(model, shapes, gen):
    """`randomise` for a model of any number of inputs: BatchNorm statistics
    measured on random inputs and perturbed, eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.uniform_(-0.5, 0.5, generator=gen)
        model.train()
        for bn in bns:
            bn.momentum = None
            bn.reset_running_stats()
        model(*(torch.randn(s, generator=gen) for s in shapes))
        for bn in bns:
            c = bn.num_features
            bn.running_mean += 0.2 * bn.running_var.sqrt() * torch.randn(c, generator=gen)
            bn.running_var *= 2 ** (torch.rand(c, generator=gen) * 2 - 1)
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated, of {', '.join(MODELS)} (default: all)")
    ap.add_argument("--convjit", default=DEFAULT_CONVJIT, help="the convjit binary")
    ap.add_argument("--out", metavar="DIR",
                    help="keep weights, inputs and outputs in DIR/<model> (default: a "
                         "temporary folder, removed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="normwise relative error bound on the output (default 1e-4)")
    ap.add_argument("--fixture", metavar="DIR",
                    help="write the test fixture (tests/data/torch_tiny) to DIR instead")
    ap.add_argument("--onnx", metavar="DIR",
                    help="export the models instead, randomised as above, to DIR/<model>.onnx "
                         "(torch.onnx.export, opset 17, the TorchScript exporter), for "
                         "`convjit net --model` and scripts/model_peers.py")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if args.onnx:
        return export_onnx(args.onnx, args.models, args.seed)
    have_convjit = os.path.isfile(args.convjit) and os.access(args.convjit, os.X_OK)
    convjit = Convjit(args.convjit)

    if args.fixture:
        model, x = write_fixture(args.fixture, args.seed)
        sizes = {f: os.path.getsize(os.path.join(args.fixture, f))
                 for f in sorted(os.listdir(args.fixture))}
        print(f"wrote {args.fixture}: " + ", ".join(f"{f} ({n:,} B)" for f, n in sizes.items()))
        if not have_convjit:
            print(f"(no executable convjit at {args.convjit}: fixture not checked)")
            return 0
        rows, failures = check_fixture(args.fixture, model, x, convjit, args.tol)
    else:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        unknown = [n for n in names if n not in BUILD]
        if unknown:
            sys.exit(f"torch_models: unknown model(s) {', '.join(unknown)}: give "
                     f"{', '.join(MODELS)}")
        if not have_convjit:
            sys.exit(f"torch_models: no executable convjit at {args.convjit} "
                     "(cargo build --release)")
        outdir = args.out or tempfile.mkdtemp(prefix="torch_models-")
        rows, failures = [], []
        try:
            for name in names:
                gen = torch.Generator().manual_seed(args.seed)
                torch.manual_seed(args.seed)
                cls, shape = BUILD[name]
                model = randomise(cls(), shape, gen)
                x = torch.randn(shape, generator=gen)
                try:
                    row, fails = compare(name, model, x, convjit, f"builtin:{name}",
                                         os.path.join(outdir, name), args.tol)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    failures.append(f"{name}: {e}")
                    continue
                rows.append(row)
                failures += fails
        finally:
            if not args.out:
                shutil.rmtree(outdir, ignore_errors=True)

    print(f"torch {torch.__version__}, ptflops {ptflops_version()}, convjit {args.convjit}")
    if rows:
        print_rows(rows)
    if failures:
        print()
        print(f"FAILURES ({len(failures)}):")
        for f in failures:
            print(f"- {f}")
        return 1
    print()
    print(f"torch_models: {len(rows)} passed (output within {args.tol:.0e} of PyTorch's, "
          "parameters equal, every MAC of difference explained)")
    return 0


def ptflops_version():
    try:
        from importlib.metadata import version
        return version("ptflops")
    except Exception:  # noqa: BLE001 - only for the report
        return "?"


if __name__ == "__main__":
    sys.exit(main())
