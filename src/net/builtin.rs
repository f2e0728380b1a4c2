//! Built-in models (`builtin:NAME`), written with torchvision's module
//! names so that a torchvision `state_dict` exported to safetensors runs
//! unchanged.
//!
//! One naming rule beyond torchvision's: a layer that has no module of its
//! own (a block's residual `add`, a depthwise-separable pair that spans
//! several modules) takes the name of the block whose output it gives
//! (`features.3`, `layer1.0`), or of the `conv` Sequential it stands for
//! when a residual `add` takes the block's name (`features.3.conv`).

use super::model::{
    ActivationLayer, AddLayer, BatchNormLayer, ConvLayer, DscLayer, INPUT, Layer, LinearLayer,
    MODEL, MaxPoolLayer, Model, PlainLayer,
};
use crate::error::Result;
use crate::spec::{ActivationKind, PaddingSpec, Pair};

/// The names `builtin:NAME` accepts.
pub const BUILTINS: &[&str] = &["mobilenetv2", "resnet18", "jvet_lf"];

/// The built-in model `name` (one of [`BUILTINS`]).
pub fn builtin(name: &str) -> Result<Model> {
    match name {
        "mobilenetv2" => Ok(mobilenet_v2()),
        "resnet18" => Ok(resnet18()),
        "jvet_lf" => Ok(jvet_lf()),
        _ => Err(super::model_error(
            MODEL,
            format!("no built-in model {name:?}: give one of {}", BUILTINS.join(", ")),
        )),
    }
}

/// A conv with torchvision's usual choices: `k`×`k`, stride `s`, padding
/// `k / 2`, no bias (a BatchNorm follows).
fn conv(name: &str, out: i64, k: i64, s: i64) -> Layer {
    Layer::Conv(ConvLayer {
        stride: (s != 1).then_some(Pair::One(s)),
        padding: (k / 2 != 0).then_some(PaddingSpec::One(k / 2)),
        bias: Some(false),
        ..ConvLayer::new(name, out, k)
    })
}

fn reading(mut layer: Layer, input: &str) -> Layer {
    let slot = match &mut layer {
        Layer::Conv(l) => &mut l.input,
        Layer::Batchnorm(l) => &mut l.input,
        Layer::Add(l) => &mut l.input,
        _ => unreachable!("the built-ins redirect only convs, BatchNorms and adds"),
    };
    *slot = Some(input.to_string());
    layer
}

fn bn(name: &str) -> Layer {
    Layer::Batchnorm(BatchNormLayer { name: name.into(), ..Default::default() })
}

fn act(name: &str, activation: ActivationKind) -> Layer {
    Layer::Activation(ActivationLayer {
        name: name.into(),
        activation: activation.into(),
        ..Default::default()
    })
}

fn add(name: &str, with: &str, activation: Option<ActivationKind>) -> Layer {
    Layer::Add(AddLayer { name: name.into(), with: with.into(), activation, ..Default::default() })
}

fn linear(name: &str, out: i64) -> Layer {
    Layer::Linear(LinearLayer { name: name.into(), out_features: out, ..Default::default() })
}

fn global_avg_pool(name: &str) -> Layer {
    Layer::GlobalAvgPool(PlainLayer { name: name.into(), input: None })
}

/// `torchvision.models.mobilenet_v2()` (width 1.0) at 224×224: 300.8 M
/// multiply-adds, the paper's 300 M.
pub fn mobilenet_v2() -> Model {
    use ActivationKind::{None as Identity, Relu6};
    let mut layers =
        vec![conv("features.0.0", 32, 3, 2), bn("features.0.1"), act("features.0.2", Relu6)];
    // The block's output: what the next block reads and a residual adds.
    let mut last = "features.0.2".to_string();
    let mut channels = 32;
    let settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)];
    let settings = settings.into_iter().chain([(6, 160, 3, 2), (6, 320, 1, 1)]);
    let mut i = 1;
    for (t, c, n, s) in settings {
        for repeat in 0..n {
            let stride = if repeat == 0 { s } else { 1 };
            let residual = stride == 1 && channels == c;
            let block = format!("features.{i}");
            let p = |suffix: &str| format!("{block}.conv.{suffix}");
            // The expansion's 1×1 conv, when there is one, shifts the
            // depthwise pair's module indices by one.
            let first = if t == 1 {
                0
            } else {
                layers.push(conv(&p("0.0"), channels * t, 1, 1));
                layers.push(bn(&p("0.1")));
                layers.push(act(&p("0.2"), Relu6));
                1
            };
            let name = if residual { format!("{block}.conv") } else { block.clone() };
            layers.push(Layer::Dsc(DscLayer {
                name: name.clone(),
                input: None,
                in_channels: None,
                out_channels: c,
                kernel: Pair::One(3),
                stride: (stride != 1).then_some(Pair::One(stride)),
                padding: Some(PaddingSpec::One(1)),
                dilation: None,
                batchnorm: None,
                bias: None,
                activations: Some([Relu6, Identity]),
                negative_slope: None,
                depthwise: Some(p(&format!("{first}.0"))),
                depthwise_bn: Some(p(&format!("{first}.1"))),
                pointwise: Some(p(&(first + 1).to_string())),
                pointwise_bn: Some(p(&(first + 2).to_string())),
                mode: None,
            }));
            if residual {
                layers.push(add(&block, &last, None));
            }
            last = block;
            channels = c;
            i += 1;
        }
    }
    layers.push(conv("features.18.0", 1280, 1, 1));
    layers.push(bn("features.18.1"));
    layers.push(act("features.18.2", Relu6));
    layers.push(global_avg_pool("avgpool"));
    layers.push(linear("classifier.1", 1000));
    Model {
        name: "mobilenetv2".into(),
        input: [1, 3, 224, 224].into(),
        layers,
        outputs: Vec::new(),
    }
}

/// `torchvision.models.resnet18()` at 224×224: 1.81 G multiply-adds.
pub fn resnet18() -> Model {
    use ActivationKind::Relu;
    let mut layers = vec![
        Layer::Conv(ConvLayer {
            stride: Some(Pair::One(2)),
            padding: Some(PaddingSpec::One(3)),
            bias: Some(false),
            ..ConvLayer::new("conv1", 64, 7)
        }),
        bn("bn1"),
        act("relu", Relu),
        Layer::MaxPool(MaxPoolLayer {
            name: "maxpool".into(),
            input: None,
            kernel: Pair::One(3),
            stride: Some(Pair::One(2)),
            padding: Some(Pair::One(1)),
        }),
    ];
    let mut last = "maxpool".to_string();
    let mut channels = 64;
    for (stage, width) in [(1, 64), (2, 128), (3, 256), (4, 512)] {
        for index in 0..2 {
            let stride = if stage > 1 && index == 0 { 2 } else { 1 };
            let block = format!("layer{stage}.{index}");
            let p = |suffix: &str| format!("{block}.{suffix}");
            layers.push(conv(&p("conv1"), width, 3, stride));
            layers.push(bn(&p("bn1")));
            layers.push(act(&p("relu"), Relu));
            layers.push(conv(&p("conv2"), width, 3, 1));
            layers.push(bn(&p("bn2")));
            let identity = if stride != 1 || channels != width {
                layers.push(reading(conv(&p("downsample.0"), width, 1, stride), &last));
                layers.push(bn(&p("downsample.1")));
                p("downsample.1")
            } else {
                last.clone()
            };
            layers.push(reading(add(&block, &identity, Some(Relu)), &p("bn2")));
            last = block;
            channels = width;
        }
    }
    layers.push(global_avg_pool("avgpool"));
    layers.push(linear("fc", 1000));
    Model { name: "resnet18".into(), input: [1, 3, 224, 224].into(), layers, outputs: Vec::new() }
}

/// A JVET-NNVC-style in-loop filter on a 128×128 block: eight 64-channel
/// 3×3 convs with ReLU between a head and a tail, and a residual of the
/// input. The ReLUs are layers of their own, as PyTorch's `nn.ReLU`
/// modules are (so ptflops' count of them is in `macs_ptflops`); the run
/// fuses each into the conv before it.
pub fn jvet_lf() -> Model {
    let conv3 = |name: &str, out: i64| {
        Layer::Conv(ConvLayer {
            padding: Some(PaddingSpec::One(1)),
            ..ConvLayer::new(name, out, 3)
        })
    };
    let mut layers = vec![conv3("head", 64), act("head.relu", ActivationKind::Relu)];
    for i in 0..8 {
        layers.push(conv3(&format!("body.{i}"), 64));
        layers.push(act(&format!("body.{i}.relu"), ActivationKind::Relu));
    }
    layers.push(conv3("tail", 3));
    layers.push(add("residual", INPUT, None));
    Model { name: "jvet_lf".into(), input: [1, 3, 128, 128].into(), layers, outputs: Vec::new() }
}
