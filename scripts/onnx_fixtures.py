#!/usr/bin/env python3
"""Builds the small ONNX models `cargo test` reads (tests/fixtures/onnx/),
with an input and onnxruntime's output for each, so that the tests compare
convjit with onnxruntime without Python.

    python3 -m venv venv && venv/bin/pip install -r scripts/requirements-peers.txt
    venv/bin/python scripts/onnx_fixtures.py [--out tests/fixtures/onnx]

Models (opset 17, as `torch.onnx.export` writes by default):

- resnet_like: a stem conv with bias and ReLU, max pool, a basic block
  (conv, BatchNorm, ReLU, conv, BatchNorm, the residual Add, ReLU), global
  average pool, Flatten and a classifier of Gemm (transB = 1, PyTorch's
  Linear), ReLU, Dropout and Gemm (its bias of shape [1, out]);
- mobilenet_like: conv, BatchNorm, Clip to [0, 6] (bounds as initializers),
  a depthwise conv and Clip (bounds as Constant nodes), a pointwise conv
  and LeakyRelu, a 1×7 and a 7×1 conv with asymmetric pads, a
  ConvTranspose of stride 2 with output_padding, Clip with no upper bound
  (an empty input: ReLU), Dropout and Identity, global average pool,
  Reshape to [0, -1] and Gemm (transB = 0);
- two_inputs: an in-loop filter's shape, two inputs (a reconstruction
  `rec` and a QP map `qp`) concatenated, convs, the QP map concatenated
  again beside the features (axis -3), and a residual Add of `rec`;
- nnvc_like: a JVET NNVC-style in-loop filter of two inputs (SpaceToDepth,
  Concat, convs with PRelu of a slope per channel and of one slope,
  DepthToSpace in DCR and CRD modes, a residual Add to an input);
- functions: Sigmoid, Tanh, HardSigmoid (alpha 0.3, beta 0.4; and ONNX's
  defaults), HardSwish,
  SiLU written as Sigmoid and Mul, a Sub of two branches, batch 2;
- auto_pad: convs padded by auto_pad SAME_UPPER (stride 2 on odd sizes,
  stride 3) and SAME_LOWER (an even kernel);
- resample: AveragePool with and without the padding counted, Resize
  nearest and linear (by scales and by sizes, align_corners), Pad of a
  constant, Add, Mul and Sub of constants (one per channel, a scalar, a
  Constant node shared by two nodes);
- squeeze_excite: a squeeze-and-excitation block (a gate [N, C, 1, 1]
  times the features) and a classifier of MatMul and a bias Add;
- two_outputs: two graph outputs, one of them a conv's output that a Relu
  also reads, and a Pad before a conv;
- shared_weights: one initializer as two convs' weights;
- shuffle_block: ShuffleNet V2's ops as exports write them (a chunk as
  Shape and integer arithmetic and channel Slices, a channel shuffle as
  Reshape, Transpose and Reshape, Split, ReduceMean, a view to [N, -1]
  from the shape);
- reshape_permute: Reshape of images to other channels and rows, and of a
  flattened matrix back to an image; Transpose to NHWC and back around a
  1×1 conv;
- transposed: ConvTranspose sized by output_shape and by auto_pad
  SAME_UPPER and SAME_LOWER (odd total paddings), two outputs;
- empty_integers: integer arithmetic of an empty tensor and a scalar
  beside a conv (read, no panic);
- refused_*: models convjit refuses, each for one reason (an operator not
  read, a Concat along the rows, PRelu slopes that broadcast along W, a
  Mul by a constant that broadcasts along W, a Resize of cubic mode or of
  a fraction, a Pad that reflects, a Transpose to NHWC, a division of
  integers by zero, a Gather past the integers, a Flatten added to an
  image, a
  kernel_shape that disagrees with the weights, an attribute of the wrong
  type, MaxPool's ceil_mode, a Reshape to 3-D).

Each model M is written as M.onnx, with M.input.npy (its input; of a
model of several, M.<name>.npy for each) and M.output.npy (onnxruntime's
output, one thread; of a model of several, M.output.<name>.npy for each)
for those convjit reads.
"""

import argparse
import os
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def init(rng, name, shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def bn_inits(rng, name, c):
    return [
        numpy_helper.from_array((1 + 0.1 * rng.standard_normal(c)).astype(np.float32), f"{name}.scale"),
        numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), f"{name}.b"),
        numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), f"{name}.mean"),
        numpy_helper.from_array((1 + 0.2 * rng.random(c)).astype(np.float32), f"{name}.var"),
    ]


def bn(name, x, y):
    return helper.make_node(
        "BatchNormalization",
        [x, f"{name}.scale", f"{name}.b", f"{name}.mean", f"{name}.var"],
        [y],
        name=name,
        epsilon=1e-5,
    )


def model(nodes, inits, inputs, output, out_shape, name, check=True):
    """The model of `nodes`, of one output (`output` a name, of
    `out_shape`) or several (`output` a list of names and shapes,
    `out_shape` None); `check=False` for one the checker would refuse too
    (an attribute of the wrong type, a kernel_shape that disagrees)."""
    outputs = output if out_shape is None else [(output, out_shape)]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    if check:
        onnx.checker.check_model(m)
    return m


def resnet_like(rng):
    inits = [init(rng, "stem.w", [16, 3, 3, 3]), init(rng, "stem.b", [16], 0.1)]
    inits += [init(rng, "b1.w", [16, 16, 3, 3]), init(rng, "b2.w", [16, 16, 3, 3])]
    inits += bn_inits(rng, "bn1", 16) + bn_inits(rng, "bn2", 16)
    inits += [init(rng, "fc.w", [12, 16]), init(rng, "fc.b", [12], 0.1)]
    inits += [init(rng, "fc2.w", [10, 12]), init(rng, "fc2.b", [1, 10], 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "stem.w", "stem.b"], ["s"], name="stem",
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["sr"], name="stem_relu"),
        helper.make_node("MaxPool", ["sr"], ["p"], name="pool",
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p", "b1.w"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        bn("bn1", "c1", "n1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "b2.w"], ["c2"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        bn("bn2", "c2", "n2"),
        helper.make_node("Add", ["n2", "p"], ["a"], name="residual"),
        helper.make_node("Relu", ["a"], ["ar"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["ar"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["h"], name="fc", transB=1),
        helper.make_node("Relu", ["h"], ["hr"], name="fc_relu"),
        helper.make_node("Dropout", ["hr"], ["hd"], name="fc_dropout"),
        helper.make_node("Gemm", ["hd", "fc2.w", "fc2.b"], ["y"], name="fc2", transB=1),
    ]
    return model(nodes, inits, [("x", [1, 3, 32, 32])], "y", [1, 10], "resnet_like")


def mobilenet_like(rng):
    inits = [init(rng, "c0.w", [8, 3, 3, 3]), init(rng, "dw.w", [8, 1, 3, 3])]
    inits += [init(rng, "pw.w", [12, 8, 1, 1]), init(rng, "pw.b", [12], 0.1)]
    inits += [init(rng, "row.w", [12, 12, 1, 7]), init(rng, "col.w", [12, 12, 7, 1])]
    inits += [init(rng, "up.w", [12, 6, 3, 3]), init(rng, "up.b", [6], 0.1)]
    inits += bn_inits(rng, "bn0", 8) + bn_inits(rng, "bn_dw", 8)
    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6, np.float32), "six")]
    # Gemm with transB = 0: weights stored [in, out].
    inits += [init(rng, "fc.w", [6, 5], 0.4), init(rng, "fc.b", [5], 0.1)]
    inits += [numpy_helper.from_array(np.array([0, -1], np.int64), "flat")]
    constant = lambda name, v: helper.make_node(  # noqa: E731
        "Constant", [], [name], name=f"{name}_const",
        value=numpy_helper.from_array(np.array(v, np.float32), name))
    nodes = [
        helper.make_node("Conv", ["x", "c0.w"], ["c0"], name="conv0",
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        bn("bn0", "c0", "n0"),
        helper.make_node("Clip", ["n0", "zero", "six"], ["r0"], name="relu6_0"),
        helper.make_node("Conv", ["r0", "dw.w"], ["dw"], name="depthwise",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        bn("bn_dw", "dw", "ndw"),
        constant("lo", 0.0),
        constant("hi", 6.0),
        helper.make_node("Clip", ["ndw", "lo", "hi"], ["rdw"], name="relu6_dw"),
        helper.make_node("Conv", ["rdw", "pw.w", "pw.b"], ["pw"], name="pointwise",
                         kernel_shape=[1, 1]),
        helper.make_node("LeakyRelu", ["pw"], ["lr"], name="leaky", alpha=0.1),
        helper.make_node("Conv", ["lr", "row.w"], ["row"], name="conv_1x7",
                         kernel_shape=[1, 7], pads=[0, 3, 0, 3]),
        helper.make_node("Conv", ["row", "col.w"], ["col"], name="conv_7x1",
                         kernel_shape=[7, 1], pads=[2, 0, 4, 0]),
        helper.make_node("ConvTranspose", ["col", "up.w", "up.b"], ["up"], name="upsample",
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1]),
        helper.make_node("Clip", ["up", "zero", ""], ["upr"], name="relu_up"),
        helper.make_node("Dropout", ["upr"], ["d"], name="dropout"),
        helper.make_node("Identity", ["d"], ["i"], name="identity"),
        helper.make_node("GlobalAveragePool", ["i"], ["g"], name="gap"),
        helper.make_node("Reshape", ["g", "flat"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc"),
    ]
    return model(nodes, inits, [("x", [2, 3, 24, 20])], "y", [2, 5], "mobilenet_like")


def unchecked(*args):
    return model(*args, check=False)


def refused_flatten_add(rng):
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Add", ["f", "g"], ["y"], name="mixed"),
    ]
    return unchecked(nodes, [], [("x", [1, 3, 8, 8])], "y", [1, 3, 1, 3], "refused_flatten_add")


def shared_weights(rng):
    """One initializer as two convs' weights, as exporters store equal
    constants once."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="first", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w"], ["y"], name="second", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
    ]
    return model(nodes, [init(rng, "w", [3, 3, 3, 3])], [("x", [1, 3, 8, 8])], "y",
                 [1, 3, 8, 8], "shared_weights")


def refused_kernel_shape(rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[5, 5])]
    return unchecked(nodes, [init(rng, "w", [4, 3, 3, 3])], [("x", [1, 3, 8, 8])], "y",
                     [1, 4, 6, 6], "refused_kernel_shape")


def refused_int_alpha(rng):
    node = helper.make_node("LeakyRelu", ["x"], ["y"], name="leaky")
    node.attribute.append(helper.make_attribute("alpha", 1))
    return unchecked([node], [], [("x", [1, 3, 8, 8])], "y", [1, 3, 8, 8], "refused_int_alpha")


def refused_ceil_mode(rng):
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2], ceil_mode=1)]
    return model(nodes, [], [("x", [1, 3, 9, 9])], "y", [1, 3, 5, 5], "refused_ceil_mode")


def refused_reshape(rng):
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
        helper.make_node("Reshape", ["g", "to"], ["y"], name="to_3d"),
    ]
    to = numpy_helper.from_array(np.array([1, 3, -1], np.int64), "to")
    return model(nodes, [to], [("x", [1, 3, 8, 8])], "y", [1, 3, 1], "refused_reshape")


def refused_operator(rng):
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Softmax", ["c"], ["y"], name="gate", axis=1),
    ]
    return model(nodes, [init(rng, "w", [4, 3, 3, 3])], [("x", [1, 3, 8, 8])], "y",
                 [1, 4, 6, 6], "refused_operator")


def functions(rng):
    """Elementwise functions after convs: Sigmoid, Tanh, HardSigmoid (its
    own alpha), HardSwish, SiLU as Sigmoid and Mul (fused into one silu),
    a Sub of two branches, SiLUs whose Sigmoid another node reads too,
    directly or through an Identity (not fused); a batch of two."""
    inits = [init(rng, "c1.w", [6, 3, 3, 3]), init(rng, "c1.b", [6], 0.1),
             init(rng, "c2.w", [6, 6, 3, 3]), init(rng, "c2.b", [6], 0.1),
             init(rng, "c3.w", [6, 6, 1, 1]), init(rng, "c3.b", [6], 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["h"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["h"], ["s"], name="sigmoid"),
        helper.make_node("Mul", ["h", "s"], ["silu"], name="silu"),
        helper.make_node("Conv", ["silu", "c2.w", "c2.b"], ["h2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["h2"], ["hs"], name="hardswish"),
        helper.make_node("Tanh", ["h2"], ["t"], name="tanh"),
        helper.make_node("Sub", ["hs", "t"], ["d"], name="diff"),
        helper.make_node("Conv", ["d", "c3.w", "c3.b"], ["h3"], name="c3"),
        helper.make_node("HardSigmoid", ["h3"], ["g"], name="hardsigmoid", alpha=0.3, beta=0.4),
        # ONNX's defaults, alpha 0.2 and beta 0.5 (not PyTorch's 1/6).
        helper.make_node("HardSigmoid", ["h3"], ["g2"], name="hardsigmoid_onnx"),
        helper.make_node("Sub", ["g", "g2"], ["gd"], name="gates"),
        # SiLU whose Sigmoid is read again (by a Sub): not fused.
        helper.make_node("Sigmoid", ["gd"], ["s2"], name="sigmoid_shared"),
        helper.make_node("Mul", ["s2", "gd"], ["silu2"], name="silu_unfused"),
        helper.make_node("Sub", ["silu2", "s2"], ["y0"], name="last"),
        # A SiLU whose Mul reads the Sigmoid through an Identity, which
        # another node reads too: not fused.
        helper.make_node("Sigmoid", ["y0"], ["s3"], name="sigmoid_aliased"),
        helper.make_node("Identity", ["s3"], ["s3i"], name="alias"),
        helper.make_node("Mul", ["y0", "s3i"], ["m3"], name="silu_aliased"),
        helper.make_node("Add", ["m3", "s3"], ["y"], name="plus_gate"),
    ]
    return model(nodes, inits, [("x", [2, 3, 9, 7])], "y", [2, 6, 9, 7], "functions")


def refused_constant_broadcast(rng):
    nodes = [helper.make_node("Mul", ["x", "scale"], ["y"], name="scale")]
    inits = [numpy_helper.from_array(np.full([8], 0.5, dtype=np.float32), "scale")]
    return model(nodes, inits, [("x", [1, 3, 8, 8])], "y", [1, 3, 8, 8],
                 "refused_constant_broadcast")


def nnvc_like(rng):
    """A JVET NNVC-style in-loop filter: a luma reconstruction `rec` and a
    QP map `qp`, each unshuffled to half resolution (SpaceToDepth),
    concatenated, convs with PReLU (a slope per channel, then one slope),
    a DepthToSpace (DCR) and SpaceToDepth pair, a conv to 4 channels
    shuffled back to full resolution (DepthToSpace, CRD: PyTorch's
    PixelShuffle), and the residual added to `rec`."""
    inits = [init(rng, "c1.w", [16, 8, 3, 3]), init(rng, "c1.b", [16], 0.1),
             numpy_helper.from_array((0.25 + 0.1 * rng.standard_normal((16, 1, 1))).astype(np.float32), "a1"),
             init(rng, "c2.w", [16, 16, 3, 3]), init(rng, "c2.b", [16], 0.1),
             numpy_helper.from_array(np.array([0.2], dtype=np.float32), "a2"),
             init(rng, "c3.w", [4, 16, 3, 3]), init(rng, "c3.b", [4], 0.1)]
    nodes = [
        helper.make_node("SpaceToDepth", ["rec"], ["rec4"], name="unshuffle_rec", blocksize=2),
        helper.make_node("SpaceToDepth", ["qp"], ["qp4"], name="unshuffle_qp", blocksize=2),
        helper.make_node("Concat", ["rec4", "qp4"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "c1.w", "c1.b"], ["h1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["h1", "a1"], ["p1"], name="prelu1"),
        helper.make_node("Conv", ["p1", "c2.w", "c2.b"], ["h2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["h2", "a2"], ["p2"], name="prelu2"),
        helper.make_node("DepthToSpace", ["p2"], ["up"], name="up", blocksize=2),
        helper.make_node("SpaceToDepth", ["up"], ["down"], name="down", blocksize=2),
        helper.make_node("Conv", ["down", "c3.w", "c3.b"], ["h3"], name="c3", pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["h3"], ["t"], name="shuffle", blocksize=2, mode="CRD"),
        helper.make_node("Add", ["rec", "t"], ["y"], name="residual"),
    ]
    shape = [1, 1, 24, 32]
    return model(nodes, inits, [("rec", shape), ("qp", shape)], "y", shape, "nnvc_like")


def auto_pad(rng):
    """Convs padded by auto_pad: SAME_UPPER of stride 2 on odd sizes, SAME_LOWER
    of an even kernel, SAME_UPPER of stride 3 (onnxruntime refuses a dilated
    one)."""
    inits = [init(rng, "a.w", [5, 3, 3, 3]), init(rng, "b.w", [4, 5, 4, 2]),
             init(rng, "c.w", [3, 4, 3, 3]), init(rng, "c.b", [3], 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "a.w"], ["a"], name="a", strides=[2, 2],
                         auto_pad="SAME_UPPER"),
        helper.make_node("Conv", ["a", "b.w"], ["b"], name="b", auto_pad="SAME_LOWER"),
        helper.make_node("Conv", ["b", "c.w", "c.b"], ["y"], name="c", strides=[3, 3],
                         auto_pad="SAME_UPPER"),
    ]
    return model(nodes, inits, [("x", [1, 3, 9, 7])], "y", [1, 3, 2, 2], "auto_pad")


def refused_prelu_slopes(rng):
    inits = [numpy_helper.from_array(np.full([8], 0.25, dtype=np.float32), "a")]
    nodes = [helper.make_node("PRelu", ["x", "a"], ["y"], name="prelu")]
    return model(nodes, inits, [("x", [1, 3, 8, 8])], "y", [1, 3, 8, 8], "refused_prelu_slopes")


def refused_concat_axis(rng):
    nodes = [helper.make_node("Concat", ["x", "x"], ["y"], name="rows", axis=2)]
    return model(nodes, [], [("x", [1, 3, 8, 8])], "y", [1, 3, 16, 8], "refused_concat_axis")


def two_inputs(rng):
    """An in-loop filter's shape: a reconstruction `rec` and a QP map `qp`
    concatenated, convs, and the residual added to `rec`."""
    inits = [init(rng, "head.w", [8, 2, 3, 3]), init(rng, "head.b", [8], 0.1),
             init(rng, "tail.w", [1, 11, 3, 3]), init(rng, "tail.b", [1], 0.1)]
    nodes = [
        helper.make_node("Concat", ["rec", "qp"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "head.w", "head.b"], ["h"], name="head",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["hr"], name="head_relu"),
        # The QP map again, beside the features (axis -3: the channels).
        helper.make_node("Concat", ["hr", "qp", "qp", "rec"], ["cat2"], name="cat2", axis=-3),
        helper.make_node("Conv", ["cat2", "tail.w", "tail.b"], ["t"], name="tail",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["rec", "t"], ["y"], name="residual"),
    ]
    shape = [2, 1, 12, 10]
    return model(nodes, inits, [("rec", shape), ("qp", shape)], "y", shape, "two_inputs")


def resample(rng):
    """Pools, resizes, a pad and constant arithmetic: AveragePool with and
    without the padding counted, Resize nearest (asymmetric and floor, as
    PyTorch exports nn.Upsample; half_pixel and round_prefer_floor) and
    linear (pytorch_half_pixel by sizes, align_corners by scales, factors
    that differ per side), Pad of 0.5, a Mul by one value per channel, a
    Sub from a scalar, an Add of one value per channel and a Sub of a
    scalar (one Constant node shared by two nodes)."""
    f32 = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    inits = [init(rng, "c1.w", [4, 3, 3, 3]), init(rng, "c1.b", [4], 0.1),
             init(rng, "c2.w", [2, 4, 1, 1]),
             f32("up2", [1, 1, 2, 2]), f32("up21", [1, 1, 2, 1]), f32("up3", [1, 1, 3, 3]),
             i64("to", [1, 4, 22, 33]), i64("pads", [0, 0, 1, 2, 0, 0, 0, 1]),
             f32("half", 0.5), f32("gain", rng.uniform(0.5, 1.5, [1, 4, 1, 1])),
             f32("shift", rng.uniform(-0.5, 0.5, [4, 1, 1])),
             numpy_helper.from_array(np.zeros([0], np.float32), "empty")]
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["h"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["h"], ["p0"], name="avg_exclude", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["h"], ["p1"], name="avg_include", kernel_shape=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("Resize", ["p0", "", "up2"], ["r0"], name="nearest_floor",
                         mode="nearest", coordinate_transformation_mode="asymmetric",
                         nearest_mode="floor"),
        helper.make_node("Add", ["p1", "r0"], ["s"], name="sum"),
        helper.make_node("Pad", ["s", "pads", "half"], ["padded"], name="pad"),
        helper.make_node("Mul", ["padded", "gain"], ["m"], name="gain"),
        helper.make_node("Constant", [], ["one"], name="one",
                         value=numpy_helper.from_array(np.array(1.0, np.float32), "one")),
        helper.make_node("Sub", ["one", "m"], ["n"], name="one_less"),
        # Its scales an empty tensor, as some exporters write them beside
        # sizes: absent.
        helper.make_node("Resize", ["n", "", "empty", "to"], ["u"], name="bilinear_sizes",
                         mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
        helper.make_node("AveragePool", ["u"], ["q"], name="avg", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Resize", ["q", "", "up21"], ["v"], name="bilinear_corners",
                         mode="linear", coordinate_transformation_mode="align_corners"),
        helper.make_node("Add", ["v", "shift"], ["b"], name="shift"),
        helper.make_node("Sub", ["b", "one"], ["d"], name="less_one"),
        helper.make_node("Resize", ["d", "", "up3"], ["w"], name="nearest_half_pixel",
                         mode="nearest"),
        helper.make_node("Conv", ["w", "c2.w"], ["y"], name="c2"),
    ]
    return model(nodes, inits, [("x", [1, 3, 9, 7])], "y", [1, 2, 66, 48], "resample")


def two_outputs(rng):
    """Two graph outputs, the first the last node's, the second a conv's
    output before the Relu that reads it (which must then not fold into
    the conv), and a Pad fed to a conv."""
    inits = [init(rng, "a.w", [6, 3, 3, 3]), init(rng, "a.b", [6], 0.1),
             init(rng, "b.w", [4, 6, 3, 3]), init(rng, "b.b", [4], 0.1),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    nodes = [
        helper.make_node("Conv", ["x", "a.w", "a.b"], ["pre"], name="a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["pre"], ["act"], name="relu"),
        helper.make_node("Pad", ["act", "pads"], ["padded"], name="pad"),
        helper.make_node("Conv", ["padded", "b.w", "b.b"], ["y"], name="b"),
    ]
    outputs = [("y", [1, 4, 10, 9]), ("pre", [1, 6, 10, 9])]
    return model(nodes, inits, [("x", [1, 3, 10, 9])], outputs, None, "two_outputs")


def squeeze_excite(rng):
    """A squeeze-and-excitation block as MobileNetV3 and EfficientNet have
    it (global pool, two 1×1 convs, HardSigmoid, the gate times the
    features, the gate first), then a classifier of MatMul and an Add of a
    bias per feature, as exporters write a Linear."""
    inits = [init(rng, "c.w", [8, 3, 3, 3]), init(rng, "c.b", [8], 0.1),
             init(rng, "reduce.w", [2, 8, 1, 1]), init(rng, "reduce.b", [2], 0.1),
             init(rng, "expand.w", [8, 2, 1, 1]), init(rng, "expand.b", [8], 0.1),
             init(rng, "fc.w", [8, 5]), init(rng, "fc.b", [5], 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "c.w", "c.b"], ["h"], name="c", pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["h"], ["hs"], name="hardswish"),
        helper.make_node("GlobalAveragePool", ["hs"], ["s"], name="squeeze"),
        helper.make_node("Conv", ["s", "reduce.w", "reduce.b"], ["r"], name="reduce"),
        helper.make_node("Relu", ["r"], ["rr"], name="reduce_relu"),
        helper.make_node("Conv", ["rr", "expand.w", "expand.b"], ["e"], name="expand"),
        helper.make_node("HardSigmoid", ["e"], ["gate"], name="gate", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["gate", "hs"], ["excited"], name="excite"),
        helper.make_node("GlobalAveragePool", ["excited"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("MatMul", ["f", "fc.w"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "fc.b"], ["y"], name="fc_bias"),
    ]
    return model(nodes, inits, [("x", [2, 3, 9, 8])], "y", [2, 5], "squeeze_excite")


def transposed(rng):
    """ConvTranspose sized by output_shape (an odd total padding; an output
    past what padding reaches, made with output padding) and by auto_pad
    SAME_UPPER and SAME_LOWER (odd totals), as two outputs."""
    inits = [init(rng, "a.w", [3, 4, 3, 3]), init(rng, "a.b", [4], 0.1),
             init(rng, "b.w", [4, 4, 3, 3]), init(rng, "c.w", [4, 4, 3, 3]),
             init(rng, "d.w", [4, 3, 3, 3]), init(rng, "e.w", [3, 2, 3, 3])]
    nodes = [
        helper.make_node("ConvTranspose", ["x", "a.w", "a.b"], ["a"], name="a", strides=[2, 2],
                         output_shape=[14, 13]),
        helper.make_node("ConvTranspose", ["a", "b.w"], ["b"], name="b", strides=[2, 2],
                         auto_pad="SAME_UPPER"),
        helper.make_node("Conv", ["b", "c.w"], ["c"], name="c", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["c", "d.w"], ["y"], name="d", strides=[2, 2],
                         auto_pad="SAME_LOWER"),
        helper.make_node("ConvTranspose", ["x", "e.w"], ["z"], name="e", strides=[2, 2],
                         output_shape=[16, 12]),
    ]
    outputs = [("y", [1, 3, 28, 26]), ("z", [1, 2, 16, 12])]
    return model(nodes, inits, [("x", [1, 3, 7, 6])], outputs, None, "transposed")


def shuffle_block(rng):
    """ShuffleNet V2's ops as torch.onnx.export writes them: `x.chunk(2,
    dim=1)` as Shape, Gather, Add, Div, Mul and Slice of the channels, a
    channel shuffle as Reshape to [N, g, C/g, H, W], Transpose [0, 2, 1, 3,
    4] and Reshape back, a Split of the channels, `x.mean([2, 3])` as
    ReduceMean, and `x.view(x.size(0), -1)` as Shape, Gather, Unsqueeze,
    Concat and Reshape before a Gemm."""
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    inits = [init(rng, "c.w", [8, 3, 3, 3]), init(rng, "b.w", [4, 4, 1, 1]),
             init(rng, "b.b", [4], 0.1), init(rng, "fc.w", [5, 8]), init(rng, "fc.b", [5], 0.1),
             i64("one", [1]), i64("two", [2]), i64("zero", [0]), i64("axis1", [1]),
             i64("grouped", [1, 2, 4, 6, 5]), i64("back", [1, -1, 6, 5]),
             i64("halves", [4, 4]), i64("minus1", [-1]), i64("unsq", [0]), i64("first", 0)]
    nodes = [
        helper.make_node("Conv", ["x", "c.w"], ["h"], name="c", pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["h"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "one"], ["channels"], name="gather", axis=0),
        helper.make_node("Add", ["channels", "one"], ["plus"], name="plus"),
        helper.make_node("Div", ["plus", "two"], ["half"], name="half"),
        helper.make_node("Mul", ["half", "one"], ["mid"], name="mid"),
        helper.make_node("Mul", ["half", "two"], ["end"], name="end"),
        helper.make_node("Slice", ["h", "zero", "mid", "axis1"], ["x1"], name="first_half"),
        helper.make_node("Slice", ["h", "mid", "end", "axis1"], ["x2"], name="second_half"),
        helper.make_node("Conv", ["x2", "b.w", "b.b"], ["b"], name="b"),
        helper.make_node("Relu", ["b"], ["br"], name="b_relu"),
        helper.make_node("Concat", ["x1", "br"], ["cat"], name="cat", axis=1),
        helper.make_node("Reshape", ["cat", "grouped"], ["g"], name="group"),
        helper.make_node("Transpose", ["g"], ["t"], name="swap", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "back"], ["shuffled"], name="shuffle"),
        helper.make_node("Split", ["shuffled", "halves"], ["s1", "s2"], name="split", axis=1),
        helper.make_node("Add", ["s1", "s2"], ["sum"], name="sum"),
        helper.make_node("Concat", ["sum", "s2"], ["joined"], name="joined", axis=1),
        helper.make_node("ReduceMean", ["joined"], ["mean"], name="mean", axes=[2, 3], keepdims=1),
        helper.make_node("Shape", ["mean"], ["mshape"], name="mshape"),
        helper.make_node("Gather", ["mshape", "first"], ["n"], name="n"),
        helper.make_node("Unsqueeze", ["n", "unsq"], ["n1"], name="n1"),
        helper.make_node("Concat", ["n1", "minus1"], ["flat_shape"], name="flat_shape", axis=0),
        helper.make_node("Reshape", ["mean", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
    ]
    return model(nodes, inits, [("x", [1, 3, 6, 5])], "y", [1, 5], "shuffle_block")


def refused_transpose(rng):
    nodes = [helper.make_node("Transpose", ["x"], ["y"], name="swap_batch", perm=[1, 0, 2, 3])]
    return model(nodes, [], [("x", [1, 3, 8, 8])], "y", [3, 1, 8, 8], "refused_transpose")


def refused_reshape_batch(rng):
    nodes = [helper.make_node("Reshape", ["x", "to"], ["y"], name="merge")]
    to = numpy_helper.from_array(np.array([-1, 96], np.int64), "to")
    return model(nodes, [to], [("x", [2, 3, 4, 4])], "y", [1, 96], "refused_reshape_batch")


def reshape_permute(rng):
    """Reshape and Transpose of images: a conv's output reshaped to other
    channels and rows, transposed to NHWC for a 1×1 conv over its rows,
    transposed back, flattened and reshaped to an image again (a 0 that
    copies the batch, a -1)."""
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    inits = [init(rng, "a.w", [8, 3, 3, 3]), init(rng, "b.w", [4, 3, 1, 1]),
             init(rng, "b.b", [4], 0.1), init(rng, "c.w", [2, 24, 1, 1]),
             i64("rows", [0, 16, 3, -1]), i64("image", [1, 24, -1, 4])]
    nodes = [
        helper.make_node("Conv", ["x", "a.w"], ["h"], name="a", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["h", "rows"], ["r"], name="rows"),
        helper.make_node("Transpose", ["r"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Conv", ["t", "b.w", "b.b"], ["b"], name="b"),
        helper.make_node("Relu", ["b"], ["br"], name="b_relu"),
        helper.make_node("Transpose", ["br"], ["back"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Flatten", ["back"], ["flat"], name="flatten", axis=1),
        helper.make_node("Reshape", ["flat", "image"], ["img"], name="image"),
        helper.make_node("Conv", ["img", "c.w"], ["y"], name="c"),
    ]
    return model(nodes, inits, [("x", [1, 3, 6, 6])], "y", [1, 2, 4, 4], "reshape_permute")


def refused_divide_by_zero(rng):
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Div", ["s", "zero"], ["q"], name="divide"),
        helper.make_node("Reshape", ["x", "q"], ["y"], name="reshape"),
    ]
    return model(nodes, [i64("zero", [0])], [("x", [1, 3, 8, 8])], "y", [1, 3, 8, 8],
                 "refused_divide_by_zero", check=False)


def refused_gather_index(rng):
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "nine"], ["g"], name="gather", axis=0),
        helper.make_node("Reshape", ["x", "g"], ["y"], name="reshape"),
    ]
    return model(nodes, [i64("nine", [9])], [("x", [1, 3, 8, 8])], "y", [1, 3, 8, 8],
                 "refused_gather_index", check=False)


def empty_integers(rng):
    """Integer arithmetic on an empty tensor and a scalar (an empty result,
    read by nothing), beside a conv: read, not a panic."""
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    inits = [init(rng, "w", [2, 3, 1, 1]), i64("none", np.zeros([0], np.int64)), i64("five", 5)]
    nodes = [
        helper.make_node("Add", ["none", "five"], ["sum"], name="sum"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
    ]
    return model(nodes, inits, [("x", [1, 3, 4, 4])], "y", [1, 2, 4, 4], "empty_integers")


def refused_resize_cubic(rng):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="cubic", mode="cubic")]
    return model(nodes, [scales], [("x", [1, 3, 8, 8])], "y", [1, 3, 16, 16],
                 "refused_resize_cubic")


def refused_resize_fraction(rng):
    scales = numpy_helper.from_array(np.array([1, 1, 1.5, 1.5], np.float32), "scales")
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear")]
    return model(nodes, [scales], [("x", [1, 3, 8, 8])], "y", [1, 3, 12, 12],
                 "refused_resize_fraction")


def refused_pad_reflect(rng):
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["y"], name="mirror", mode="reflect")]
    return model(nodes, [pads], [("x", [1, 3, 8, 8])], "y", [1, 3, 10, 10],
                 "refused_pad_reflect")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("tests", "fixtures", "onnx"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    refused = [refused_operator, refused_concat_axis, refused_flatten_add,
               refused_kernel_shape, refused_int_alpha, refused_ceil_mode, refused_reshape,
               refused_prelu_slopes, refused_constant_broadcast, refused_resize_cubic,
               refused_resize_fraction, refused_pad_reflect, refused_transpose,
               refused_divide_by_zero, refused_gather_index, refused_reshape_batch]
    runs = [(resnet_like, True), (mobilenet_like, True), (two_inputs, True), (nnvc_like, True),
            (functions, True), (auto_pad, True), (resample, True), (two_outputs, True),
            (squeeze_excite, True), (shared_weights, True), (transposed, True),
            (shuffle_block, True), (empty_integers, True), (reshape_permute, True)]
    for build, run in runs + [(r, False) for r in refused]:
        name = build.__name__
        # Each model's own generator, so that adding one changes no other.
        rng = np.random.default_rng([20261207, zlib.crc32(name.encode())])
        m = build(rng)
        path = os.path.join(args.out, f"{name}.onnx")
        onnx.save(m, path)
        if run:
            feeds = {}
            for i in m.graph.input:
                shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
                feeds[i.name] = rng.uniform(-1, 1, shape).astype(np.float32)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            ys = session.run(None, feeds)
            # One input: M.input.npy; several: M.<input>.npy each.
            for i, x in feeds.items():
                suffix = "input" if len(feeds) == 1 else i
                np.save(os.path.join(args.out, f"{name}.{suffix}.npy"), x)
            # One output: M.output.npy; several: M.output.<output>.npy each.
            for o, y in zip(m.graph.output, ys):
                suffix = "output" if len(ys) == 1 else f"output.{o.name}"
                np.save(os.path.join(args.out, f"{name}.{suffix}.npy"), y.astype(np.float32))
        print(path)


if __name__ == "__main__":
    main()
