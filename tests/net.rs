//! Whole models (`convjit::net`): the built-ins' counts against the
//! published ones, a model of every layer kind on the JIT against the
//! reference run, weights from a safetensors file under PyTorch's names,
//! the plain layers against hand-computed outputs, and every refusal
//! naming its layer.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{check, random_tensor};
use convjit::Engine;
use convjit::blocks::DscMode;
use convjit::net::{self, Graph, LayerKind, Model, Network, Options, Tensors};
use proptest::prelude::*;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// The largest normwise relative error between the JIT's run of a model
/// and the reference's (the `--check` tolerance).
const TOLERANCE: f64 = net::CHECK_TOLERANCE;

/// A network's output against the reference run's, held to the check
/// `convjit net --check` makes (`Deviation::within`): every element within
/// `TOLERANCE · (1 + the largest |expected|)`. A model whose one output
/// cancels to ~0 (a linear layer of one output) has no output size to be
/// relative to; its error is then held to `TOLERANCE` absolutely.
fn check_net(what: &str, shape: &[usize], actual: &[f32], expected: &[f32]) {
    let deviation = convjit::reference::compare(actual, expected);
    if deviation.within(TOLERANCE) {
        return;
    }
    // The relative check fails too: it reports the worst element.
    let tolerance = TOLERANCE * (1.0 + deviation.scale) / deviation.scale.max(f64::MIN_POSITIVE);
    check(what, shape, actual, expected, tolerance);
}

fn graph(json: &str) -> Graph {
    let model = Model::from_json(json).unwrap_or_else(|e| panic!("{e}"));
    Graph::new(&model).unwrap_or_else(|e| panic!("{e}"))
}

/// The error of parsing and inferring `json`, as text.
fn refused(json: &str) -> String {
    match Model::from_json(json).and_then(|m| Graph::new(&m)) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts the error is about `layer` and says `what`.
fn names(err: &str, layer: &str, what: &str) {
    assert!(err.contains(&format!("layer {layer:?}")), "{err:?} does not name layer {layer:?}");
    assert!(err.contains(what), "{err:?} does not say {what:?}");
}

// ---------------------------------------------------------------------------
// The built-ins
// ---------------------------------------------------------------------------

#[test]
fn builtin_counts_match_the_published_ones() {
    // (model, published multiply-adds, parameters as torchvision counts them)
    for (name, published, params) in [
        ("mobilenetv2", 300e6, Some(3_504_872)),
        ("resnet18", 1.8e9, Some(11_689_512)),
        ("jvet_lf", f64::NAN, None),
    ] {
        let model = net::builtin(name).unwrap();
        let graph = Graph::new(&model).unwrap();
        let total = graph.total();
        let kmac = total.macs_ptflops as f64 / (128.0 * 128.0) / 1000.0;
        eprintln!(
            "{name}: macs {}, macs_valid {}, macs_ptflops {}, params {} ({kmac:.1} kMAC/px at 128²)",
            total.macs, total.macs_valid, total.macs_ptflops, total.params
        );
        if published.is_finite() {
            let ratio = total.macs as f64 / published;
            assert!((0.99..=1.01).contains(&ratio), "{name}: {} MACs is {ratio:.4}×", total.macs);
        }
        if let Some(params) = params {
            assert_eq!(total.params, params, "{name}");
        }
        assert!(total.macs_valid < total.macs && total.macs <= total.macs_ptflops, "{name}");
        let expected = if name == "jvet_lf" { [1, 3, 128, 128] } else { [1, 1000, 1, 1] };
        assert_eq!(graph.output_shape(), expected, "{name}");
        // The printed model reads back as itself.
        assert_eq!(Model::from_json(&model.to_json()).unwrap(), model, "{name}");
    }
    // MobileNetV2: the torchvision count, to the multiply-add (convs
    // without bias plus the classifier's 1280·1000).
    let mbv2 = Graph::new(&net::mobilenet_v2()).unwrap();
    assert_eq!(mbv2.total().macs, 300_774_272);
    // ResNet-18: layer2.0 has its downsample reading the block input.
    let resnet = Graph::new(&net::resnet18()).unwrap();
    let down = resnet.nodes().iter().find(|n| n.name() == "layer2.0.downsample.0").unwrap();
    assert_eq!(down.input_shape(), [1, 64, 56, 56]);
    assert_eq!(down.output_shape(), [1, 128, 28, 28]);
    assert!(net::builtin("vgg16").unwrap_err().to_string().contains("mobilenetv2"));
}

#[test]
fn resnet18_runs_on_the_jit() {
    let network = Network::new(Graph::new(&net::resnet18()).unwrap(), None).unwrap();
    let x = net::random_input(network.graph().input_shape(), 1).unwrap();
    let mut prepared = network.prepare(&Options::default(), None).unwrap();
    let y = prepared.run(&x).unwrap();
    assert_eq!(y.len(), 1000);
    // Random weights keep a deep net's activations finite and not all equal.
    assert!(y.iter().all(|v| v.is_finite()), "{:?}", &y[..8]);
    assert!(y.iter().any(|&v| v != y[0]));
}

// ---------------------------------------------------------------------------
// Every layer kind
// ---------------------------------------------------------------------------

/// A model with every layer kind: BatchNorms folded (stem_bn, down_bn)
/// and not (c2_bn: c2 is also read by an add; bn_lone: after a pool),
/// activations fused and not, a dsc that runs as the options say (dw1) and
/// one that always runs unfused (dw2), both ACNet forms, a transposed conv,
/// adds, pools and linear layers, on a whole plane and on 1×1.
const EVERY_KIND: &str = r#"{
  "name": "every_kind", "input": [2, 3, 12, 10],
  "layers": [
    {"kind": "conv", "name": "stem", "out_channels": 8, "kernel": 3, "padding": 1, "bias": false},
    {"kind": "batchnorm", "name": "stem_bn"},
    {"kind": "activation", "name": "stem_act", "activation": "relu"},
    {"kind": "dsc", "name": "dw1", "out_channels": 12, "kernel": 3, "stride": 2, "padding": 1,
     "activations": ["relu6", "none"]},
    {"kind": "dsc", "name": "dw2", "out_channels": 12, "kernel": 3, "padding": 1,
     "batchnorm": false, "activations": ["relu", "leaky_relu"], "negative_slope": 0.1,
     "mode": "unfused"},
    {"kind": "acblock", "name": "ac1", "out_channels": 12, "kernel": 3, "padding": 1},
    {"kind": "conv", "name": "c2", "out_channels": 12, "kernel": 1, "bias": false},
    {"kind": "batchnorm", "name": "c2_bn", "num_features": 12},
    {"kind": "add", "name": "res", "with": "c2", "activation": "relu"},
    {"kind": "acblock", "name": "ac2", "out_channels": 12, "kernel": 3, "padding": 1,
     "deploy": false, "activation": "relu"},
    {"kind": "conv", "name": "up", "op": "conv_transpose2d", "out_channels": 8, "kernel": 4,
     "stride": 2, "padding": 1, "activation": "leaky_relu"},
    {"kind": "add", "name": "skip", "with": "stem_act"},
    {"kind": "max_pool", "name": "pool", "kernel": 3, "stride": 2, "padding": 1},
    {"kind": "batchnorm", "name": "bn_lone"},
    {"kind": "conv", "name": "down", "input": "pool", "out_channels": 8, "kernel": 1},
    {"kind": "batchnorm", "name": "down_bn"},
    {"kind": "add", "name": "join", "input": "bn_lone", "with": "down_bn"},
    {"kind": "linear", "name": "flat", "out_features": 16},
    {"kind": "activation", "name": "flat_act", "activation": "relu6"},
    {"kind": "global_avg_pool", "name": "gap", "input": "join"},
    {"kind": "linear", "name": "fc", "out_features": 5}
  ]
}"#;

/// Runs `network` on `engine` and returns its output on `x`.
fn run(network: &Network, options: &Options, x: &[f32]) -> Vec<f32> {
    let mut prepared = network.prepare(options, None).unwrap_or_else(|e| panic!("{e}"));
    prepared.run(x).unwrap_or_else(|e| panic!("{e}")).to_vec()
}

fn reference(network: &Network, x: &[f32]) -> Vec<f32> {
    run(network, &Options { engine: Engine::Reference, ..Options::default() }, x)
}

#[test]
fn every_layer_kind_runs_on_the_jit_as_on_the_reference() {
    let graph = graph(EVERY_KIND);
    let shapes: BTreeMap<&str, [usize; 4]> =
        graph.nodes().iter().map(|n| (n.name(), n.output_shape())).collect();
    assert_eq!(shapes["dw1"], [2, 12, 6, 5]);
    assert_eq!(shapes["up"], [2, 8, 12, 10]);
    assert_eq!(shapes["pool"], [2, 8, 6, 5]);
    assert_eq!(shapes["flat"], [2, 16, 1, 1]);
    assert_eq!(shapes["gap"], [2, 8, 1, 1]);
    assert_eq!(graph.output_shape(), [2, 5, 1, 1]);
    // The last layer reads `gap`, so `flat` only shows in the report: make
    // it the output of a second model to have it checked too.
    let flat_end = EVERY_KIND.replace(
        r#",
    {"kind": "global_avg_pool", "name": "gap", "input": "join"},
    {"kind": "linear", "name": "fc", "out_features": 5}"#,
        "",
    );
    assert_ne!(flat_end, EVERY_KIND);
    for json in [EVERY_KIND, &flat_end] {
        let network = Network::new(self::graph(json), None).unwrap();
        let x = net::random_input(network.graph().input_shape(), 7).unwrap();
        let expected = reference(&network, &x);
        assert!(expected.iter().any(|&v| v != 0.0));
        for dsc in [DscMode::Fused, DscMode::Unfused] {
            for threads in [1, 2] {
                let options = Options { dsc, threads, ..Options::default() };
                let y = run(&network, &options, &x);
                let what =
                    format!("{} on the jit, {dsc}, {threads} threads", network.graph().name());
                check_net(&what, &network.graph().output_shape(), &y, &expected);
                // What `check` reports is the same comparison.
                assert!(network.check(&x, &y).unwrap().within(TOLERANCE));
            }
        }
    }
}

#[test]
fn the_report_counts_every_layer_and_shows_what_folded() {
    let network = Network::new(graph(EVERY_KIND), None).unwrap();
    let x = net::random_input(network.graph().input_shape(), 3).unwrap();
    let mut prepared = network.prepare(&Options::default(), None).unwrap();
    let (y, report) = prepared.measure(&x, 3).unwrap();
    assert_eq!(y.len(), 10);
    let rows: BTreeMap<&str, &net::LayerReport> =
        report.layers.iter().map(|l| (l.name.as_str(), l)).collect();
    assert_eq!(rows.len(), network.graph().nodes().len());
    for (name, into) in
        [("stem_bn", "stem"), ("stem_act", "stem"), ("down_bn", "down"), ("flat_act", "flat")]
    {
        assert_eq!(rows[name].folded_into.as_deref(), Some(into), "{name}");
        assert_eq!(rows[name].median_s, 0.0, "{name}");
    }
    // c2 is read by the add too, and bn_lone follows a pool: neither folds.
    for name in ["c2_bn", "bn_lone", "res", "pool", "gap", "dw1", "ac2"] {
        assert_eq!(rows[name].folded_into, None, "{name}");
        assert!(rows[name].median_s > 0.0, "{name}");
    }
    // MACs/tick only where there are MACs.
    assert!(rows["dw1"].macs_per_cycle.unwrap() > 0.0);
    assert!(rows["pool"].macs_per_cycle.is_none());
    // Counts: the linear layer over a 8×6×5 input is a conv with bias.
    let flat = rows["flat"];
    let macs = 2 * 16 * 240; // N = 2
    assert_eq!((flat.macs, flat.macs_ptflops, flat.params), (macs, macs + 2 * 16, 16 * 241));
    // A BatchNorm: γ and β; ptflops 2 per element. An activation, 1.
    assert_eq!((rows["c2_bn"].params, rows["c2_bn"].macs_ptflops), (24, 2 * 2 * 12 * 30));
    assert_eq!(rows["stem_act"].macs_ptflops, 2 * 8 * 120);
    // The pools count their input.
    assert_eq!(rows["pool"].macs_ptflops, 2 * 8 * 120);
    assert_eq!(rows["gap"].macs_ptflops, 2 * 8 * 30);
    // dw1: 3×3 depthwise on 8 channels to 6×5, 1×1 to 12, two BNs, one
    // relu6 (the pointwise activation is none).
    let (dw, pw) = (2 * 8 * 30 * 9, 2 * 12 * 30 * 8);
    let dw1 = rows["dw1"];
    assert_eq!(dw1.macs, dw + pw);
    assert_eq!(dw1.macs_ptflops, dw + pw + 2 * (2 * 8 * 30) + 2 * (2 * 12 * 30) + 2 * 8 * 30);
    assert_eq!(dw1.params, 8 * 9 + 12 * 8 + 2 * 8 + 2 * 12);
    // ACNet: deploy = one 3×3 conv with bias; training = three convs and BNs.
    let (ac1, ac2) = (rows["ac1"], rows["ac2"]);
    assert_eq!(ac1.params, 12 * 12 * 9 + 12);
    assert_eq!(ac2.params, 12 * 12 * (9 + 3 + 3) + 3 * 24);
    assert_eq!(ac2.macs, 2 * 12 * 30 * 12 * (9 + 3 + 3));
    assert_eq!(ac1.macs, 2 * 12 * 30 * 12 * 9);
    // The totals are the sums; kMAC/pixel is per pixel of the N images.
    let sum = |f: fn(&net::LayerReport) -> u64| report.layers.iter().map(f).sum::<u64>();
    assert_eq!(report.total.macs, sum(|l| l.macs));
    assert_eq!(report.total.macs_ptflops, sum(|l| l.macs_ptflops));
    assert_eq!(report.total.params, sum(|l| l.params));
    let per_pixel = report.total.macs_ptflops as f64 / (2.0 * 120.0) / 1000.0;
    assert_eq!(report.total.kmac_per_pixel, per_pixel);
    assert!(report.total.median_s > 0.0);
    // The table: a row per layer and the totals.
    let table = report.table();
    for l in &report.layers {
        assert!(table.lines().any(|line| line.starts_with(&format!("{} ", l.name))), "{table}");
    }
    assert!(table.lines().any(|line| line.starts_with("total ")), "{table}");
}

// ---------------------------------------------------------------------------
// The plain layers against hand-computed outputs
// ---------------------------------------------------------------------------

/// The output of a one-layer model on `x` (`[1, C, H, W]` given by `input`).
fn one_layer(input: [usize; 4], layer: &str, x: &[f32], tensors: Option<&Tensors>) -> Vec<f32> {
    let json = format!(r#"{{"name": "one", "input": {input:?}, "layers": [{layer}]}}"#);
    let network = Network::new(graph(&json), tensors).unwrap();
    let y = run(&network, &Options::default(), x);
    let shape = network.graph().output_shape();
    check(layer, &shape, &y, &reference(&network, x), 1e-6);
    y
}

#[test]
fn plain_layers_follow_pytorch() {
    // max_pool pads with −∞: the corner windows of an all-negative input
    // take its values, not a zero from the padding.
    let x: Vec<f32> = (1..=9).map(|v| -(v as f32)).collect();
    let pool = r#"{"kind": "max_pool", "name": "p", "kernel": 2, "stride": 2, "padding": 1}"#;
    assert_eq!(one_layer([1, 1, 3, 3], pool, &x, None), [-1.0, -2.0, -4.0, -5.0]);
    // The stride defaults to the kernel; NaN propagates.
    let mut x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    x[0] = f32::NAN;
    let y = one_layer([1, 1, 4, 4], r#"{"kind": "max_pool", "name": "p", "kernel": 2}"#, &x, None);
    assert!(y[0].is_nan());
    assert_eq!(y[1..], [7.0, 13.0, 15.0]);
    // Of 0 and −0, the first in row-major order wins, as PyTorch's
    // `val > max` keeps it: +0 in [[−1, 0], [−0, −1]], −0 in its mirror.
    let pool = r#"{"kind": "max_pool", "name": "p", "kernel": 2}"#;
    for (x, first) in [([-1.0, 0.0, -0.0, -1.0], 0.0f32), ([-1.0, -0.0, 0.0, -1.0], -0.0)] {
        let y = one_layer([1, 1, 2, 2], pool, &x, None);
        assert_eq!(y[0].to_bits(), first.to_bits(), "{x:?}: {y:?}");
    }
    // global_avg_pool: each plane's mean.
    let x = [1.0, 2.0, 3.0, 6.0, -1.0, -1.0, -1.0, -5.0];
    let gap = r#"{"kind": "global_avg_pool", "name": "g"}"#;
    assert_eq!(one_layer([1, 2, 2, 2], gap, &x, None), [3.0, -2.0]);
    // An activation layer.
    let leaky =
        r#"{"kind": "activation", "name": "a", "activation": "leaky_relu", "negative_slope": 0.5}"#;
    assert_eq!(one_layer([1, 1, 1, 3], leaky, &[-2.0, 0.0, 3.0], None), [-1.0, 0.0, 3.0]);
    // add with the input and relu6.
    let add = r#"{"kind": "add", "name": "a", "with": "input", "activation": "relu6"}"#;
    assert_eq!(one_layer([1, 1, 1, 3], add, &[-2.0, 1.0, 4.0], None), [0.0, 2.0, 6.0]);
    // linear flattens [C, H, W] in C order: weight [out, C·H·W].
    let mut t = Tensors::new();
    let w: Vec<f32> = (0..2 * 12).map(|v| v as f32 / 8.0).collect();
    t.insert("fc.weight", &[2, 12], w.clone()).unwrap();
    t.insert("fc.bias", &[2], vec![0.5, -0.5]).unwrap();
    let x: Vec<f32> = (0..12).map(|v| 1.0 - v as f32 / 4.0).collect();
    let linear = r#"{"kind": "linear", "name": "fc", "out_features": 2}"#;
    let y = one_layer([1, 2, 3, 2], linear, &x, Some(&t));
    let expected: Vec<f32> = (0..2)
        .map(|o| {
            let dot: f64 = (0..12).map(|i| f64::from(w[o * 12 + i]) * f64::from(x[i])).sum();
            (dot + [0.5, -0.5][o]) as f32
        })
        .collect();
    check("linear", &[1, 2, 1, 1], &y, &expected, 1e-6);
    // batchnorm in eval mode: (x − μ)/√(σ² + ε)·γ + β per channel.
    let mut t = Tensors::new();
    for (part, v) in [
        ("weight", [2.0, 1.0]),
        ("bias", [1.0, 0.0]),
        ("running_mean", [1.0, -1.0]),
        ("running_var", [4.0, 1.0]),
    ] {
        t.insert(&format!("bn.{part}"), &[2], v.to_vec()).unwrap();
    }
    let bn = r#"{"kind": "batchnorm", "name": "bn", "eps": 0.0000001}"#;
    let y = one_layer([1, 2, 1, 2], bn, &[3.0, 5.0, -1.0, 1.0], Some(&t));
    check("batchnorm", &[1, 2, 1, 2], &y, &[3.0, 5.0, 0.0, 2.0], 1e-6);
}

// ---------------------------------------------------------------------------
// Weights from a safetensors file
// ---------------------------------------------------------------------------

/// The tensors of EVERY_KIND under PyTorch's names, with their shapes.
fn every_kind_tensors() -> Vec<(String, Vec<usize>)> {
    let mut t: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: &str, shape: &[usize]| t.push((name.to_string(), shape.to_vec()));
    let bn = |add: &mut dyn FnMut(&str, &[usize]), prefix: &str, c: usize| {
        for part in ["weight", "bias", "running_mean", "running_var"] {
            add(&format!("{prefix}.{part}"), &[c]);
        }
    };
    add("stem.weight", &[8, 3, 3, 3]);
    bn(&mut add, "stem_bn", 8);
    add("dw1.depthwise.weight", &[8, 1, 3, 3]);
    bn(&mut add, "dw1.depthwise_bn", 8);
    add("dw1.pointwise.weight", &[12, 8, 1, 1]);
    bn(&mut add, "dw1.pointwise_bn", 12);
    add("dw2.depthwise.weight", &[12, 1, 3, 3]);
    add("dw2.depthwise.bias", &[12]);
    add("dw2.pointwise.weight", &[12, 12, 1, 1]);
    add("dw2.pointwise.bias", &[12]);
    for block in ["ac1", "ac2"] {
        for (branch, kernel) in [("square", [3, 3]), ("ver", [3, 1]), ("hor", [1, 3])] {
            add(&format!("{block}.{branch}_conv.weight"), &[12, 12, kernel[0], kernel[1]]);
            bn(&mut add, &format!("{block}.{branch}_bn"), 12);
        }
    }
    add("c2.weight", &[12, 12, 1, 1]);
    bn(&mut add, "c2_bn", 12);
    add("up.weight", &[12, 8, 4, 4]);
    add("up.bias", &[8]);
    bn(&mut add, "bn_lone", 8);
    add("down.weight", &[8, 8, 1, 1]);
    add("down.bias", &[8]);
    bn(&mut add, "down_bn", 8);
    add("flat.weight", &[16, 240]);
    add("flat.bias", &[16]);
    add("fc.weight", &[5, 8]);
    add("fc.bias", &[5]);
    t
}

/// Values for a tensor: variances in [0.5, 1.5), the rest in [−0.5, 0.5).
fn values(name: &str, len: usize, seed: u64) -> Vec<f32> {
    let v = random_tensor(seed, len);
    if name.ends_with("running_var") {
        v.iter().map(|x| 1.0 + x / 2.0).collect()
    } else {
        v.iter().map(|x| x / 2.0).collect()
    }
}

/// A tensor as a safetensors file stores it.
struct Stored {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Stored>) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, t)| {
            (name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The tensors of EVERY_KIND, as f32 data and as stored, plus a
/// `num_batches_tracked` (I64, ignored) and a tensor no layer uses.
fn every_kind_weights() -> (Tensors, BTreeMap<String, Stored>) {
    let mut direct = Tensors::new();
    let mut stored = BTreeMap::new();
    for (i, (name, shape)) in every_kind_tensors().into_iter().enumerate() {
        let data = values(&name, shape.iter().product(), 100 + i as u64);
        stored.insert(
            name.clone(),
            Stored { dtype: Dtype::F32, shape: shape.clone(), bytes: f32_bytes(&data) },
        );
        direct.insert(&name, &shape, data).unwrap();
    }
    let count = Stored { dtype: Dtype::I64, shape: vec![], bytes: 7i64.to_le_bytes().to_vec() };
    stored.insert("stem_bn.num_batches_tracked".into(), count);
    let extra = Stored { dtype: Dtype::F32, shape: vec![2], bytes: f32_bytes(&[1.0, 2.0]) };
    stored.insert("head.extra".into(), extra);
    (direct, stored)
}

#[test]
fn weights_from_safetensors_run_as_the_same_tensors_handed_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let (direct, stored) = every_kind_weights();
    write_safetensors(&path, &stored);
    let loaded = Tensors::load(&path).unwrap();
    assert_eq!(loaded.names().count(), stored.len());
    let from_file = Network::new(graph(EVERY_KIND), Some(&loaded)).unwrap();
    assert_eq!(from_file.unused_tensors(), ["head.extra"]);
    let handed_in = Network::new(graph(EVERY_KIND), Some(&direct)).unwrap();
    assert!(handed_in.unused_tensors().is_empty());
    let x = net::random_input(from_file.graph().input_shape(), 11).unwrap();
    // One mode for the dsc (auto could time its way to the other one).
    let options = Options { dsc: DscMode::Fused, ..Options::default() };
    let y = run(&from_file, &options, &x);
    // Bit for bit the run of the same tensors handed in directly.
    assert_eq!(y, run(&handed_in, &options, &x));
    // And the reference's, within the tolerance.
    check_net("weights from a file", &[2, 5, 1, 1], &y, &reference(&from_file, &x));
    // Other weights give another output: the file's were used.
    let random = Network::new(graph(EVERY_KIND), None).unwrap();
    assert_ne!(y, run(&random, &Options::default(), &x));
}

/// The error binding `stored` (changed by `edit`) to EVERY_KIND gives.
fn bind_error(edit: impl FnOnce(&mut BTreeMap<String, Stored>)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let (_, mut stored) = every_kind_weights();
    edit(&mut stored);
    write_safetensors(&path, &stored);
    let tensors = Tensors::load(&path).unwrap();
    match Network::new(graph(EVERY_KIND), Some(&tensors)) {
        Ok(_) => panic!("the weights were accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn weights_that_do_not_fit_are_refused_naming_the_layer_and_tensor() {
    let err = bind_error(|t| {
        t.remove("c2_bn.running_var");
    });
    names(&err, "c2_bn", "tensor c2_bn.running_var is missing");
    let err = bind_error(|t| {
        t.remove("ac2.hor_conv.weight");
    });
    names(&err, "ac2", "ac2.hor_conv.weight");
    let err = bind_error(|t| {
        let w = t.get_mut("stem.weight").unwrap();
        w.shape = vec![8, 3, 3, 1];
        w.bytes.truncate(8 * 3 * 3 * 4);
    });
    names(&err, "stem", "tensor stem.weight has shape [8, 3, 3, 1], expected [8, 3, 3, 3]");
    // A linear weight must be [out, C·H·W], not the conv's 4-d shape.
    let err = bind_error(|t| t.get_mut("flat.weight").unwrap().shape = vec![16, 8, 6, 5]);
    names(&err, "flat", "expected [16, 240]");
    // A dsc's tensors under its prefixes.
    let err = bind_error(|t| {
        t.remove("dw1.pointwise_bn.bias");
    });
    names(&err, "dw1", "dw1.pointwise_bn.bias");
    let err = bind_error(|t| {
        let b = t.get_mut("fc.bias").unwrap();
        b.dtype = Dtype::F64;
        b.bytes = [0.5f64, 1.0, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    });
    names(&err, "fc", "tensor fc.bias is F64, expected F32");
    let err = bind_error(|t| {
        let v = t.get_mut("bn_lone.running_var").unwrap();
        v.bytes = f32_bytes(&[1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    });
    names(&err, "bn_lone", "running_var");
}

#[test]
fn a_file_that_is_not_safetensors_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.safetensors");
    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": oops").unwrap();
    let err = Tensors::load(&path).unwrap_err().to_string();
    assert!(err.contains("broken.safetensors") && err.contains("safetensors"), "{err}");
    let err = Tensors::load(&dir.path().join("absent.safetensors")).unwrap_err().to_string();
    assert!(err.contains("absent.safetensors"), "{err}");
}

// ---------------------------------------------------------------------------
// Models that do not chain
// ---------------------------------------------------------------------------

/// EVERY_KIND with `from` replaced by `to` (which must occur).
fn edited(from: &str, to: &str) -> String {
    assert!(EVERY_KIND.contains(from), "{from}");
    EVERY_KIND.replacen(from, to, 1)
}

#[test]
fn models_that_do_not_chain_are_refused_naming_the_layer() {
    // An add of two shapes: `up` gives 8 channels, `skip` adds 12.
    let err = refused(&edited(r#""with": "stem_act""#, r#""with": "res""#));
    names(&err, "skip", "the shapes differ");
    // A BatchNorm of the wrong channel count.
    let err = refused(&edited(r#""num_features": 12"#, r#""num_features": 8"#));
    names(&err, "c2_bn", "num_features is 8 but the layer's input has 12");
    // A linear layer's stated input features.
    let err =
        refused(&edited(r#""out_features": 16"#, r#""in_features": 100, "out_features": 16"#));
    names(&err, "flat", "in_features is 100");
    // A duplicate name, an unknown and a later input, a layer reading itself.
    let err = refused(&edited(r#""name": "c2""#, r#""name": "ac1""#));
    names(&err, "ac1", "two layers have this name");
    let err = refused(&edited(r#""input": "pool""#, r#""input": "poool""#));
    names(&err, "down", r#"input "poool": no layer has this name"#);
    let err = refused(&edited(r#""input": "pool""#, r#""input": "flat""#));
    names(&err, "down", "later layer");
    let err = refused(&edited(r#""with": "c2""#, r#""with": "res""#));
    names(&err, "res", "the layer itself");
    // A conv whose output would be empty: the spec's own message.
    let err = refused(&edited(r#""kernel": 1, "bias": false"#, r#""kernel": 9, "bias": false"#));
    names(&err, "c2", "the output would be empty");
    // A field no layer kind has, a missing one, an unknown kind.
    let err = refused(&edited(r#""padding": 1, "bias": false"#, r#""paddin": 1, "bias": false"#));
    names(&err, "stem", "unknown field `paddin`");
    let err = refused(&edited(r#", "out_features": 5"#, ""));
    names(&err, "fc", "out_features");
    let err = refused(&edited(r#""kind": "max_pool""#, r#""kind": "lp_pool""#));
    names(&err, "pool", "lp_pool");
    // A max_pool padded past half its window, as PyTorch refuses.
    let err = refused(&edited(r#""stride": 2, "padding": 1}"#, r#""stride": 2, "padding": 2}"#));
    names(&err, "pool", "at most half");
    // ACNet needs an odd kernel; a dsc's slope needs a leaky_relu.
    let err = refused(&edited(
        r#""name": "ac1", "out_channels": 12, "kernel": 3"#,
        r#""name": "ac1", "out_channels": 12, "kernel": 2"#,
    ));
    names(&err, "ac1", "odd square kernel");
    let err =
        refused(&edited(r#""leaky_relu"], "negative_slope""#, r#""none"], "negative_slope""#));
    names(&err, "dw2", "negative_slope");
    // A layer may not be called "input", and the model needs an input.
    let err = refused(&edited(r#""name": "gap""#, r#""name": "input""#));
    names(&err, "input", "must not be empty, \"input\" nor");
    let err = refused(&EVERY_KIND.replace("[2, 3, 12, 10]", "[2, 3, 0, 10]"));
    names(&err, net::MODEL, "every size must be at least 1");
}

// ---------------------------------------------------------------------------
// A state_dict exported from PyTorch
// ---------------------------------------------------------------------------

/// `tests/data/torch_tiny`, written by `scripts/torch_models.py --fixture
/// tests/data/torch_tiny` from a tiny PyTorch model (`TinyNet` there): its
/// convjit model file, its `state_dict` saved with
/// `safetensors.torch.save_file` (`num_batches_tracked` included), an input,
/// and PyTorch's outputs of the whole model and of `up` (before the pool).
const TORCH_TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/torch_tiny");

/// The fixture's model with its ACNet blocks in the deploy form or not, and
/// cut after the layer `last` when given.
fn torch_tiny(deploy: bool, last: Option<&str>) -> Model {
    let text = std::fs::read_to_string(Path::new(TORCH_TINY).join("model.json")).unwrap();
    let mut model = Model::from_json(&text).unwrap_or_else(|e| panic!("{e}"));
    for layer in &mut model.layers {
        if let net::Layer::Acblock(block) = layer {
            block.deploy = Some(deploy);
        }
    }
    if let Some(last) = last {
        let end = model.layers.iter().position(|l| l.name() == last).unwrap();
        model.layers.truncate(end + 1);
    }
    model
}

fn torch_tiny_tensor(file: &str, shape: &[usize]) -> Vec<f32> {
    let path = Path::new(TORCH_TINY).join(file);
    convjit::npy::read_f32(&path, file, shape).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn torch_exported_state_dict_runs() {
    let tensors = Tensors::load(&Path::new(TORCH_TINY).join("weights.safetensors")).unwrap();
    // The state_dict as PyTorch saves it: BatchNorms' I64 num_batches_tracked
    // and ACNet's branch names are in it.
    assert!(tensors.names().any(|n| n == "stem.1.num_batches_tracked"));
    assert!(tensors.names().any(|n| n == "acb_crop.0.ver_conv.weight"));
    let x = torch_tiny_tensor("input.npy", &[1, 3, 16, 16]);
    // PyTorch's outputs: the logits (its [1, 10] as convjit's NCHW) and `up`.
    let logits = (torch_tiny_tensor("output.npy", &[1, 10, 1, 1]), [1, 10, 1, 1], None);
    let features =
        (torch_tiny_tensor("features.npy", &[1, 8, 12, 12]), [1, 8, 12, 12], Some("up.2"));

    let graph = Graph::new(&torch_tiny(true, None)).unwrap();
    let shapes: BTreeMap<&str, [usize; 4]> =
        graph.nodes().iter().map(|n| (n.name(), n.output_shape())).collect();
    assert_eq!(shapes["pool"], [1, 8, 8, 8]);
    // padding 0 < 3 / 2: the block's k×1 and 1×k branches crop their input.
    assert_eq!(shapes["acb_crop.0"], [1, 16, 6, 6]);
    assert_eq!(shapes["up.0"], [1, 8, 12, 12]);

    let jit = |dsc| Options { dsc, ..Options::default() };
    let reference = Options { engine: Engine::Reference, ..Options::default() };
    for deploy in [true, false] {
        for (expected, shape, last) in [&logits, &features] {
            let graph = Graph::new(&torch_tiny(deploy, *last)).unwrap();
            assert_eq!(graph.output_shape(), *shape);
            let network = Network::new(graph, Some(&tensors)).unwrap_or_else(|e| panic!("{e}"));
            // Every tensor is used (num_batches_tracked aside); cut after
            // `up`, the pool and fc are not there to use fc's.
            let unused: &[&str] = if last.is_some() { &["fc.bias", "fc.weight"] } else { &[] };
            assert_eq!(network.unused_tensors(), unused);
            for (how, options) in [
                ("jit, fused dsc", jit(DscMode::Fused)),
                ("jit, unfused dsc", jit(DscMode::Unfused)),
                ("reference", reference),
            ] {
                let y = run(&network, &options, &x);
                let what = format!(
                    "torch_tiny up to {}, {} ACNet, {how}",
                    last.unwrap_or("fc"),
                    if deploy { "deploy" } else { "training" }
                );
                let deviation = convjit::reference::compare(&y, expected);
                eprintln!("{what}: {:.2e} from PyTorch", deviation.max_rel);
                check_net(&what, shape, &y, expected);
            }
        }
    }

    // The BatchNorm after the transposed conv folds into it: other running
    // statistics give another output, far past the tolerance.
    let mut changed = Tensors::load(&Path::new(TORCH_TINY).join("weights.safetensors")).unwrap();
    changed.insert("up.1.running_var", &[8], vec![1.0; 8]).unwrap();
    let network =
        Network::new(Graph::new(&torch_tiny(true, Some("up.2"))).unwrap(), Some(&changed));
    let y = run(&network.unwrap(), &Options::default(), &x);
    let deviation = convjit::reference::compare(&y, &features.0);
    assert!(deviation.max_rel > 1e-2, "{}", deviation.max_rel);
}

/// No size a model file states overflows or allocates without bound: a
/// tensor past the limit every conv's operands have is refused, naming the
/// layer (or the model, for its input).
#[test]
fn tensors_past_the_size_limit_are_refused() {
    let huge_input = r#"{"name":"m","input":[1,16777216,16777216,1],
        "layers":[{"kind":"activation","name":"a","activation":"relu"}]}"#;
    names(&refused(huge_input), "(model)", "elements");
    let huge_output = r#"{"name":"m","input":[1,1,32768,32768],
        "layers":[{"kind":"conv","name":"c","out_channels":4,"kernel":1}]}"#;
    assert!(refused(huge_output).contains("layer \"c\""));
}

/// An identity activation is no module: ptflops counts nothing for it.
#[test]
fn an_identity_activation_counts_nothing() {
    let g = graph(
        r#"{"name":"m","input":[1,2,3,3],"layers":[
            {"kind":"activation","name":"id","activation":"none"},
            {"kind":"activation","name":"relu","activation":"relu"}]}"#,
    );
    assert_eq!(g.nodes()[0].cost().macs_ptflops, 0);
    assert_eq!(g.nodes()[1].cost().macs_ptflops, 18);
}

// ---------------------------------------------------------------------------
// Fields at and past their bounds
// ---------------------------------------------------------------------------

/// A one-layer model on an input of `input`.
fn one_layer_model(input: [i64; 4], layer: &str) -> String {
    format!(r#"{{"name": "m", "input": {input:?}, "layers": [{layer}]}}"#)
}

/// The inputs of each pool window over `x` (NCHW of `shape`), in
/// row-major order, positions in the padding left out; the windows in
/// output order.
fn pool_windows(
    x: &[f32],
    shape: [usize; 4],
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
) -> Vec<Vec<f32>> {
    let [n, c, h, w] = shape;
    let (oh, ow) = ((h + 2 * p[0] - k[0]) / s[0] + 1, (w + 2 * p[1] - k[1]) / s[1] + 1);
    let mut windows = Vec::new();
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut window = Vec::new();
                for i in 0..k[0] {
                    for j in 0..k[1] {
                        let (iy, ix) =
                            ((oy * s[0] + i).checked_sub(p[0]), (ox * s[1] + j).checked_sub(p[1]));
                        if let (Some(iy), Some(ix)) = (iy, ix)
                            && iy < h
                            && ix < w
                        {
                            window.push(x[(plane * h + iy) * w + ix]);
                        }
                    }
                }
                windows.push(window);
            }
        }
    }
    windows
}

/// `max_pool` of `x` (NCHW of `shape`) straight from PyTorch's definition:
/// each output the largest input of its window, positions in the padding
/// skipped, NaN winning.
fn brute_max_pool(
    x: &[f32],
    shape: [usize; 4],
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
) -> Vec<f32> {
    let larger = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
    let windows = pool_windows(x, shape, k, s, p);
    windows.iter().map(|w| w.iter().fold(f32::NEG_INFINITY, |m, &v| larger(m, v))).collect()
}

/// A max_pool padding of 2^63 − 1 made `2 · padding` wrap in the shape
/// inference and the pool panic; 2^63 − 2 wrapped to −4, passed, and the
/// pool gave a wrong output with exit status 0. Every pool field is now
/// bounded by `MAX_DIM` before any arithmetic, and refused naming the
/// layer, the field and the value.
#[test]
fn bug_max_pool_fields_near_2_63_are_refused() {
    let pool = |fields: &str| {
        one_layer_model(
            [1, 2, 9, 9],
            &format!(r#"{{"kind": "max_pool", "name": "pool", {fields}}}"#),
        )
    };
    for (fields, field, value) in [
        (r#""kernel": 3, "padding": 9223372036854775807"#, "padding", "9223372036854775807"),
        (r#""kernel": 3, "padding": 9223372036854775806"#, "padding", "9223372036854775806"),
        (r#""kernel": 3, "padding": [0, 9223372036854775806]"#, "padding", "9223372036854775806"),
        (r#""kernel": 3, "padding": -1"#, "padding", "-1"),
        (r#""kernel": 3, "padding": 16777217"#, "padding", "16777217"),
        (r#""kernel": 9223372036854775807"#, "kernel", "9223372036854775807"),
        (r#""kernel": -9223372036854775808"#, "kernel", "-9223372036854775808"),
        (r#""kernel": 3, "stride": 9223372036854775807"#, "stride", "9223372036854775807"),
        (r#""kernel": 3, "stride": 0"#, "stride", "0"),
    ] {
        let err = refused(&pool(fields));
        names(&err, "pool", &format!("max_pool {field}"));
        assert!(err.contains(value), "{fields}: {err}");
    }
    // The largest legal padding of the largest legal kernel.
    let g = graph(&one_layer_model(
        [1, 1, 1, 1],
        r#"{"kind": "max_pool", "name": "pool", "kernel": 16777216, "padding": 8388608}"#,
    ));
    assert_eq!(g.output_shape(), [1, 1, 1, 1]);
}

/// A field value at or past a bound: sizes up to `small` (mostly), 0 and −1, the
/// spec's `MAX_DIM` and one past, the element limit 2^31, 2^32, 2^62 and
/// the ends of i64.
fn any_field(small: i64) -> impl Strategy<Value = i64> + Clone {
    let edges = vec![
        -1,
        0,
        i64::MIN,
        i64::MAX,
        i64::MAX - 1,
        1 << 24,
        (1 << 24) + 1,
        1 << 31,
        1 << 32,
        1 << 62,
    ];
    prop_oneof![8 => 1i64..=small, 1 => prop::sample::select(edges)]
}

/// One layer of a random kind with every numeric field from [`any_field`].
fn wild_layer() -> impl Strategy<Value = String> {
    let f = any_field(4);
    (0usize..7, [f.clone(), f.clone(), f.clone(), f.clone()], [f.clone(), f.clone(), f], any::<bool>())
        .prop_map(|(kind, [a, b, c, d], [e, g, h], transposed)| match kind {
            0 => {
                let op = if transposed { "conv_transpose2d" } else { "conv2d" };
                format!(
                    r#"{{"kind": "conv", "name": "l", "op": "{op}", "out_channels": {a}, "kernel": {b},
                        "stride": {c}, "padding": {d}, "dilation": {e}, "groups": {},
                        "output_padding": {}}}"#,
                    // Mostly one group: few small counts divide the channels.
                    if (1..=4).contains(&g) { 1 } else { g },
                    h.saturating_sub(1)
                )
            }
            1 => format!(r#"{{"kind": "linear", "name": "l", "out_features": {a}}}"#),
            2 => format!(r#"{{"kind": "batchnorm", "name": "l", "num_features": {a}}}"#),
            3 => format!(
                r#"{{"kind": "dsc", "name": "l", "out_channels": {a}, "kernel": {b},
                    "stride": {c}, "padding": {d}, "dilation": {e}}}"#
            ),
            4 => format!(
                r#"{{"kind": "acblock", "name": "l", "out_channels": {a}, "kernel": {},
                    "stride": {c}, "padding": {d}, "dilation": {e}, "groups": {}}}"#,
                (b / 2).saturating_mul(2).saturating_add(1),
                if (1..=4).contains(&g) { 1 } else { g }
            ),
            _ => format!(
                r#"{{"kind": "max_pool", "name": "l", "kernel": {b}, "stride": {c}, "padding": {}}}"#,
                d.saturating_sub(1)
            ),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any value of any field of any layer, on any input shape: shape
    /// inference refuses the model naming the layer (or the model, for
    /// its input), or every tensor it infers is within the element limit
    /// and the JIT's run matches the reference run (and a max_pool,
    /// whose one loop both runs share, a brute-force pool). Never a panic
    /// (pool fields near 2^63 once wrapped).
    #[test]
    fn any_field_value_is_refused_or_runs_correctly(
        input in [any_field(2), any_field(6), any_field(12), any_field(12)],
        layer in wild_layer(),
        seed in any::<u64>(),
    ) {
        let json = one_layer_model(input, &layer);
        let model = Model::from_json(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        let graph = match Graph::new(&model) {
            Ok(graph) => graph,
            Err(e) => {
                let err = e.to_string();
                prop_assert!(
                    matches!(e, convjit::Error::Model { .. })
                        && (err.contains("layer \"l\"") || err.contains(net::MODEL)),
                    "{json}: {err}"
                );
                return Ok(());
            }
        };
        let limit = convjit::spec::MAX_TENSOR_ELEMENTS as usize;
        for node in graph.nodes() {
            prop_assert!(node.output_shape().iter().product::<usize>() <= limit);
        }
        // Run what is small enough to run in a test.
        let elements = |s: [usize; 4]| s.iter().product::<usize>();
        let (inputs, outputs) = (elements(graph.input_shape()), elements(graph.output_shape()));
        if inputs > 50_000 || outputs > 50_000 || graph.total().macs > 2_000_000 {
            return Ok(());
        }
        let shape = graph.input_shape();
        let node = graph.nodes()[0].clone();
        let network = Network::new(graph, None).unwrap_or_else(|e| panic!("{json}: {e}"));
        let x = random_tensor(seed, inputs);
        // The fused dsc kernel, as before auto: auto would compile both
        // forms of every wild block (auto is tested in tests/blocks.rs).
        let options = Options { dsc: DscMode::Fused, ..Options::default() };
        let y = run(&network, &options, &x);
        check_net(&json, &network.graph().output_shape(), &y, &reference(&network, &x));
        if node.kind() == LayerKind::MaxPool {
            let model: serde_json::Value = serde_json::from_str(&json).unwrap();
            let l = &model["layers"][0];
            let k = l["kernel"].as_u64().unwrap() as usize;
            let s = l["stride"].as_u64().unwrap() as usize;
            let p = l["padding"].as_u64().unwrap() as usize;
            let expected = brute_max_pool(&x, shape, [k, k], [s, s], [p, p]);
            check(&json, &network.graph().output_shape(), &y, &expected, 0.0);
        }
    }
}

/// `Tensors::insert` with a shape whose product of sizes overflows is
/// refused, not a panic; a safetensors file declaring one is refused
/// naming the file.
#[test]
fn bug_tensor_shapes_that_overflow_are_refused() {
    let mut tensors = Tensors::new();
    let err = tensors.insert("w", &[usize::MAX, 2], vec![]).unwrap_err().to_string();
    assert!(err.contains("tensor w") && err.contains("overflows"), "{err}");
    assert!(tensors.insert("w", &[1 << 62, 0], vec![]).is_ok(), "an empty tensor is one");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.safetensors");
    let header = br#"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,0]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    std::fs::write(&path, bytes).unwrap();
    let err = Tensors::load(&path).unwrap_err().to_string();
    assert!(err.contains("huge.safetensors") && err.contains("overflow"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Max pooling of every window shape (rectangular kernels, strides
    /// and paddings, windows clipped at either border or whole) matches
    /// PyTorch's definition exactly, NaN and ±∞ included, and of 0 and −0
    /// the first in row-major order.
    #[test]
    fn max_pool_matches_its_definition(
        (h, w) in (1usize..14, 1usize..14),
        (kh, kw) in (1usize..6, 1usize..6),
        (sh, sw) in (1usize..5, 1usize..5),
        (ph, pw) in (0usize..3, 0usize..3),
        channels in 1usize..3,
        specials in proptest::collection::vec((0usize..400, 0usize..5), 0..12),
        seed in any::<u64>(),
    ) {
        let (ph, pw) = (ph.min(kh / 2), pw.min(kw / 2));
        prop_assume!(h + 2 * ph >= kh && w + 2 * pw >= kw);
        let shape = [1, channels, h, w];
        let mut x = random_tensor(seed, channels * h * w);
        for (at, which) in specials {
            let len = x.len();
            x[at % len] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0][which];
        }
        let layer = format!(
            r#"{{"kind": "max_pool", "name": "p", "kernel": [{kh}, {kw}], "stride": [{sh}, {sw}], "padding": [{ph}, {pw}]}}"#
        );
        let y = one_layer(shape, &layer, &x, None);
        let expected = brute_max_pool(&x, shape, [kh, kw], [sh, sw], [ph, pw]);
        prop_assert_eq!(y.len(), expected.len());
        for (a, e) in y.iter().zip(&expected) {
            prop_assert!(a.to_bits() == e.to_bits() || (a.is_nan() && e.is_nan()), "{layer}: {a} vs {e}");
        }
    }
}

/// `avg_pool` of `x` (NCHW of `shape`) from PyTorch's definition, in f64:
/// each output the sum of its window's inputs (the padding zeros) over the
/// window's size, or over the inputs it holds.
fn brute_avg_pool(
    x: &[f32],
    shape: [usize; 4],
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
    count_include_pad: bool,
) -> Vec<f64> {
    let windows = pool_windows(x, shape, k, s, p);
    let size = |w: &[f32]| if count_include_pad { (k[0] * k[1]) as f64 } else { w.len() as f64 };
    windows.iter().map(|w| w.iter().map(|&v| f64::from(v)).sum::<f64>() / size(w)).collect()
}

/// Bilinear upsampling of `x` (NCHW of `shape`) by `f` from PyTorch's
/// definition, in f64: output pixel `o` reads input coordinate
/// `o · (in − 1)/(out − 1)` (align_corners) or `(o + ½)/f − ½` clamped at
/// 0, between the two pixels around it.
fn brute_bilinear(x: &[f32], shape: [usize; 4], f: [usize; 2], align_corners: bool) -> Vec<f64> {
    let [n, c, h, w] = shape;
    let (oh, ow) = (h * f[0], w * f[1]);
    let source = |o: usize, size: usize, out: usize, f: usize| -> (usize, usize, f64) {
        let s = if align_corners {
            if out > 1 { o as f64 * (size - 1) as f64 / (out - 1) as f64 } else { 0.0 }
        } else {
            ((o as f64 + 0.5) / f as f64 - 0.5).max(0.0)
        };
        let i0 = (s.floor() as usize).min(size - 1);
        (i0, (i0 + 1).min(size - 1), s - i0 as f64)
    };
    let mut y = Vec::new();
    for plane in 0..n * c {
        let at = |i: usize, j: usize| f64::from(x[(plane * h + i) * w + j]);
        for oy in 0..oh {
            let (r0, r1, a) = source(oy, h, oh, f[0]);
            for ox in 0..ow {
                let (c0, c1, b) = source(ox, w, ow, f[1]);
                let top = (1.0 - b) * at(r0, c0) + b * at(r0, c1);
                let bottom = (1.0 - b) * at(r1, c0) + b * at(r1, c1);
                y.push((1.0 - a) * top + a * bottom);
            }
        }
    }
    y
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Average pooling of every window shape, counting its padding or
    /// not, matches PyTorch's definition.
    #[test]
    fn avg_pool_matches_its_definition(
        (h, w) in (1usize..14, 1usize..14),
        (kh, kw) in (1usize..6, 1usize..6),
        (sh, sw) in (1usize..5, 1usize..5),
        (ph, pw) in (0usize..3, 0usize..3),
        channels in 1usize..3,
        count_include_pad in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (ph, pw) = (ph.min(kh / 2), pw.min(kw / 2));
        prop_assume!(h + 2 * ph >= kh && w + 2 * pw >= kw);
        let shape = [2, channels, h, w];
        let x = random_tensor(seed, 2 * channels * h * w);
        let layer = format!(
            r#"{{"kind": "avg_pool", "name": "p", "kernel": [{kh}, {kw}], "stride": [{sh}, {sw}], "padding": [{ph}, {pw}], "count_include_pad": {count_include_pad}}}"#
        );
        let y = one_layer(shape, &layer, &x, None);
        let expected = brute_avg_pool(&x, shape, [kh, kw], [sh, sw], [ph, pw], count_include_pad);
        prop_assert_eq!(y.len(), expected.len());
        for (a, e) in y.iter().zip(&expected) {
            prop_assert!((f64::from(*a) - e).abs() <= 1e-5 * (1.0 + e.abs()), "{layer}: {a} vs {e}");
        }
    }

    /// Upsampling by whole factors matches PyTorch's definitions: nearest
    /// exactly (output pixel `o` is input pixel `o / f`), bilinear with
    /// align_corners either way.
    #[test]
    fn upsample_matches_its_definition(
        (h, w) in (1usize..9, 1usize..9),
        (fh, fw) in (1usize..5, 1usize..5),
        channels in 1usize..3,
        mode in 0usize..3,
        seed in any::<u64>(),
    ) {
        let shape = [2, channels, h, w];
        let x = random_tensor(seed, 2 * channels * h * w);
        let fields = ["\"mode\": \"nearest\"", "\"mode\": \"bilinear\"", "\"mode\": \"bilinear\", \"align_corners\": true"][mode];
        let layer = format!(r#"{{"kind": "upsample", "name": "u", "scale_factor": [{fh}, {fw}], {fields}}}"#);
        let y = one_layer(shape, &layer, &x, None);
        let (oh, ow) = (h * fh, w * fw);
        prop_assert_eq!(y.len(), 2 * channels * oh * ow);
        if mode == 0 {
            for (k, &v) in y.iter().enumerate() {
                let (plane, oy, ox) = (k / (oh * ow), k / ow % oh, k % ow);
                prop_assert_eq!(v.to_bits(), x[(plane * h + oy / fh) * w + ox / fw].to_bits());
            }
        } else {
            let expected = brute_bilinear(&x, shape, [fh, fw], mode == 2);
            for (a, e) in y.iter().zip(&expected) {
                prop_assert!((f64::from(*a) - e).abs() <= 1e-5 * (1.0 + e.abs()), "{layer}: {a} vs {e}");
            }
        }
    }
}

/// A pad puts the input inside borders of its value ([left, right, top,
/// bottom], as `nn.ConstantPad2d`); an affine layer multiplies and adds
/// per channel, a product alone keeping the sign of a zero.
#[test]
fn pad_and_affine_follow_their_definitions() {
    let x = [1.0, 2.0, 3.0, 4.0];
    let pad = r#"{"kind": "pad", "name": "p", "padding": [1, 0, 0, 2], "value": -1.5}"#;
    #[rustfmt::skip]
    let want = [
        -1.5, 1.0, 2.0,
        -1.5, 3.0, 4.0,
        -1.5, -1.5, -1.5,
        -1.5, -1.5, -1.5,
    ];
    assert_eq!(one_layer([1, 1, 2, 2], pad, &x, None), want);
    let mut tensors = Tensors::new();
    tensors.insert("a.weight", &[2], vec![2.0, -1.0]).unwrap();
    tensors.insert("a.bias", &[2], vec![0.5, 0.25]).unwrap();
    let affine = r#"{"kind": "affine", "name": "a", "num_parameters": 2}"#;
    let y = one_layer([1, 2, 1, 2], affine, &[1.0, -3.0, 4.0, 0.0], Some(&tensors));
    assert_eq!(y, [2.5, -5.5, -3.75, 0.25]);
    let mut tensors = Tensors::new();
    tensors.insert("m.weight", &[1], vec![3.0]).unwrap();
    let scale = r#"{"kind": "affine", "name": "m", "bias": false}"#;
    let y = one_layer([1, 1, 1, 2], scale, &[-0.0, 2.0], Some(&tensors));
    assert_eq!((y[0].to_bits(), y[1]), ((-0.0f32).to_bits(), 6.0));
}

/// An activation that alone reads an add (`relu(x + f(x))`) is computed in
/// the add's loop — its row folded into the add's, the output the
/// reference's — and one that shares the add's output with another reader
/// runs on its own. (Neither operand's conv can take the add: one has an
/// activation, the other's output has two readers.)
#[test]
fn an_activation_after_an_add_folds_into_it() {
    let json = |extra: &str| {
        format!(
            r#"{{"name": "m", "input": [1, 4, 6, 6], "layers": [
            {{"kind": "conv", "name": "c1", "out_channels": 4, "kernel": 3, "padding": 1}},
            {{"kind": "conv", "name": "c2", "out_channels": 4, "kernel": 3, "padding": 1,
              "activation": "relu"}},
            {{"kind": "add", "name": "sum", "with": "c1"}},
            {{"kind": "activation", "name": "act", "activation": "leaky_relu", "negative_slope": 0.2}}{extra}]}}"#
        )
    };
    let also_read = r#", {"kind": "add", "name": "again", "input": "act", "with": "sum"}"#;
    for (extra, folds) in [("", true), (also_read, false)] {
        let network = Network::new(graph(&json(extra)), None).unwrap();
        let x = net::random_input(network.graph().input_shape(), 5).unwrap();
        let mut prepared = network.prepare(&Options::default(), None).unwrap();
        let (y, report) = prepared.measure(&x, 1).unwrap();
        let act = report.layers.iter().find(|l| l.name == "act").unwrap();
        assert_eq!(act.folded_into.as_deref(), folds.then_some("sum"), "{extra}");
        assert!(network.check(&x, &y).unwrap().within(TOLERANCE), "{extra}");
    }
}

/// A residual add folds into the conv that computes one of its operands —
/// the one computed last, whose output nothing else reads — with the
/// activation after it: the kernel adds the other operand in its epilogue.
/// A Winograd kernel (no sum epilogue) adds after its run, as a fused
/// depthwise-separable kernel does; every output is the reference's.
#[test]
fn a_residual_add_folds_into_the_conv_that_computes_an_operand() {
    let json = r#"{"name": "m", "input": [1, 6, 10, 9], "layers": [
        {"kind": "conv", "name": "a", "out_channels": 8, "kernel": 3, "padding": 1},
        {"kind": "conv", "name": "b", "input": "input", "out_channels": 8, "kernel": 3,
         "padding": 1, "bias": false},
        {"kind": "batchnorm", "name": "b_bn"},
        {"kind": "add", "name": "sum", "input": "a", "with": "b_bn"},
        {"kind": "activation", "name": "act", "activation": "leaky_relu", "negative_slope": 0.2},
        {"kind": "dsc", "name": "block", "out_channels": 8, "kernel": 3, "padding": 1,
         "activations": ["relu6", "none"]},
        {"kind": "add", "name": "res", "input": "block", "with": "act"}]}"#;
    let network = Network::new(graph(json), None).unwrap();
    let x = net::random_input(network.graph().input_shape(), 3).unwrap();
    let winograd = convjit::Compiler::host().unwrap().with_source(std::sync::Arc::new(Winograds));
    let b = r#"{"op":"conv2d","in_channels":6,"out_channels":8,"height":10,"width":9,"kernel":3,
        "padding":1,"activation":"leaky_relu","negative_slope":0.2}"#;
    use convjit::source::ScheduleSource;
    assert!(Winograds.schedule(&common::spec(b), 1).is_some(), "b computed through Winograd");
    let modes =
        [(DscMode::Unfused, None), (DscMode::Fused, Some(&winograd)), (DscMode::Auto, None)];
    for (dsc, compiler) in modes {
        let options = Options { dsc, ..Options::default() };
        let mut prepared = network.prepare(&options, compiler).unwrap();
        let (y, report) = prepared.measure(&x, 1).unwrap();
        let folded = |name: &str| {
            let layer = report.layers.iter().find(|l| l.name == name).unwrap();
            layer.folded_into.clone()
        };
        // `a` is computed before `b`: the add (of `a` and `b`'s BatchNorm,
        // in that order) folds into `b`.
        for (name, into) in [("b_bn", "b"), ("sum", "b"), ("act", "b"), ("res", "block")] {
            assert_eq!(folded(name).as_deref(), Some(into), "{name} ({dsc})");
        }
        assert!(network.check(&x, &y).unwrap().within(TOLERANCE), "{dsc}");
    }
}

/// A conv takes one add: of two chained residual adds, the second runs on
/// its own (it had once been folded too, and its operand dropped).
#[test]
fn a_conv_takes_one_residual_add() {
    let json = r#"{"name": "m", "input": [1, 4, 6, 7], "layers": [
        {"kind": "conv", "name": "c", "out_channels": 4, "kernel": 3, "padding": 1},
        {"kind": "add", "name": "first", "with": "input"},
        {"kind": "add", "name": "second", "with": "input"}]}"#;
    let network = Network::new(graph(json), None).unwrap();
    let x = net::random_input(network.graph().input_shape(), 4).unwrap();
    let mut prepared = network.prepare(&Options::default(), None).unwrap();
    let (y, report) = prepared.measure(&x, 1).unwrap();
    let folded = |name: &str| {
        let layer = report.layers.iter().find(|l| l.name == name).unwrap();
        layer.folded_into.clone()
    };
    assert_eq!(folded("first").as_deref(), Some("c"));
    assert_eq!(folded("second"), None);
    assert!(network.check(&x, &y).unwrap().within(TOLERANCE));
}

/// Winograd schedules for every layer they compute (3×3, stride 1).
struct Winograds;

impl convjit::source::ScheduleSource for Winograds {
    fn schedule(&self, spec: &convjit::ValidSpec, threads: usize) -> Option<convjit::Schedule> {
        let config = convjit::schedule::Winograd { output_tile: 2, panel: 64 };
        let isa = convjit::target::Isa::host();
        convjit::schedule::winograd_with(spec, config, threads, isa)
    }

    fn describe(&self) -> String {
        "Winograd for every layer".to_string()
    }
}

/// A model file of named inputs: layers read them by name, a concat joins
/// their channels (the JIT's run is the reference's), the file prints and
/// reads back as the same model; what does not fit is refused naming it.
#[test]
fn named_inputs_and_concat() {
    let json = r#"{"name": "two", "input": [
            {"name": "rec", "shape": [2, 2, 5, 6]}, {"name": "qp", "shape": [2, 1, 5, 6]}],
        "layers": [
            {"kind": "conv", "name": "head", "out_channels": 4, "kernel": 3, "padding": 1},
            {"kind": "concat", "name": "cat", "inputs": ["head", "qp", "rec", "qp"]},
            {"kind": "conv", "name": "tail", "out_channels": 2, "kernel": 3, "padding": 1},
            {"kind": "add", "name": "residual", "with": "rec"}]}"#;
    let model = Model::from_json(json).unwrap();
    assert_eq!(Model::from_json(&model.to_json()).unwrap(), model);
    let network = Network::new(graph(json), None).unwrap();
    let cat = &network.graph().nodes()[1];
    assert_eq!(cat.output_shape(), [2, 4 + 1 + 2 + 1, 5, 6]);
    let xs = [random_tensor(1, 2 * 2 * 30), random_tensor(2, 2 * 30)];
    let xs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
    let mut prepared = network.prepare(&Options::default(), None).unwrap();
    let y = prepared.run_inputs(&xs).unwrap().to_vec();
    assert!(network.check_inputs(&xs, &y).unwrap().within(TOLERANCE));
    // The concat copies each operand's planes in turn, per batch item.
    let reference = Options { engine: Engine::Reference, ..Options::default() };
    let one = r#"{"name": "c", "input": [{"name": "a", "shape": [2, 1, 1, 2]},
        {"name": "b", "shape": [2, 2, 1, 2]}],
        "layers": [{"kind": "concat", "name": "cat", "inputs": ["b", "a"]}]}"#;
    let network = Network::new(graph(one), None).unwrap();
    let (a, b) = ([1.0, 2.0, 3.0, 4.0], [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]);
    for options in [Options::default(), reference] {
        let mut prepared = network.prepare(&options, None).unwrap();
        let y = prepared.run_inputs(&[&a, &b]).unwrap();
        assert_eq!(y, [10.0, 11.0, 12.0, 13.0, 1.0, 2.0, 14.0, 15.0, 16.0, 17.0, 3.0, 4.0]);
    }
    // Refused, naming the layer or the input.
    let edited = |from: &str, to: &str| json.replace(from, to);
    let err = refused(&edited(r#""shape": [2, 1, 5, 6]"#, r#""shape": [2, 1, 5, 7]"#));
    assert!(err.contains(r#"layer "cat""#) && err.contains("N, H and W differ"), "{err}");
    let err = refused(&edited(r#""name": "qp""#, r#""name": "rec""#));
    assert!(err.contains(r#"input "rec""#) && err.contains("each its own"), "{err}");
    let err = refused(&edited(r#""name": "head""#, r#""name": "qp""#));
    assert!(err.contains("nor an input's"), "{err}");
    let err = refused(&edited(r#""inputs": ["head", "qp", "rec", "qp"]"#, r#""inputs": []"#));
    assert!(err.contains("at least one tensor"), "{err}");
    let err = refused(&edited(r#""shape": [2, 1, 5, 6]}]"#, r#""size": [2, 1, 5, 6]}]"#));
    assert!(err.contains("a list of named inputs"), "{err}");
}

/// Pixel shuffles move each channel's values as PyTorch's `PixelShuffle`
/// (`crd`) and ONNX's DepthToSpace default (`dcr`) do; an unshuffle of
/// the same order undoes a shuffle; a PReLU has a slope per channel, and
/// one of a single slope folds into the conv before it.
#[test]
fn pixel_shuffles_and_prelu_follow_their_definitions() {
    let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
    for (order, want) in [
        ("crd", [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),
        ("dcr", [0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0]),
    ] {
        let layer =
            format!(r#"{{"kind": "pixel_shuffle", "name": "s", "factor": 2, "order": "{order}"}}"#);
        assert_eq!(one_layer([1, 8, 1, 1], &layer, &x, None), want, "{order}");
        let both = format!(
            r#"{{"name": "m", "input": [2, 8, 3, 5], "layers": [{layer},
            {{"kind": "pixel_unshuffle", "name": "u", "factor": 2, "order": "{order}"}}]}}"#
        );
        let network = Network::new(graph(&both), None).unwrap();
        assert_eq!(network.graph().nodes()[0].output_shape(), [2, 2, 6, 10]);
        let x = random_tensor(4, 2 * 8 * 15);
        for options in
            [Options::default(), Options { engine: Engine::Reference, ..Options::default() }]
        {
            assert_eq!(run(&network, &options, &x), x, "{order}");
        }
    }
    // On a batch of two, 2×3 planes: each value where PyTorch's
    // definition puts it.
    let x: Vec<f32> = (0..2 * 8 * 6).map(|v| v as f32).collect();
    for (order, dcr) in [("crd", false), ("dcr", true)] {
        let layer =
            format!(r#"{{"kind": "pixel_shuffle", "name": "s", "factor": 2, "order": "{order}"}}"#);
        let y = one_layer([2, 8, 2, 3], &layer, &x, None);
        for (b, c, oy, ox) in indices([2, 2, 4, 6]) {
            let (i, j) = (oy % 2, ox % 2);
            let packed = if dcr { (i * 2 + j) * 2 + c } else { c * 4 + i * 2 + j };
            let want = x[((b * 8 + packed) * 2 + oy / 2) * 3 + ox / 2];
            assert_eq!(y[((b * 2 + c) * 4 + oy) * 6 + ox], want, "{order} {b} {c} {oy} {ox}");
        }
    }
    let refused_shuffle = refused(&one_layer_model(
        [1, 6, 2, 2],
        r#"{"kind": "pixel_shuffle", "name": "s", "factor": 2}"#,
    ));
    assert!(refused_shuffle.contains("multiple of 4"), "{refused_shuffle}");

    // A slope per channel: x where x > 0, else a · x.
    let mut tensors = Tensors::new();
    tensors.insert("p.weight", &[2], vec![0.5, -2.0]).unwrap();
    let prelu = r#"{"kind": "prelu", "name": "p", "num_parameters": 2}"#;
    let x = [-2.0, 3.0, -2.0, 3.0, -4.0, 0.5, -4.0, 0.5];
    let y = one_layer([2, 2, 1, 2], prelu, &x, Some(&tensors));
    assert_eq!(y, [-1.0, 3.0, 4.0, 3.0, -2.0, 0.5, 8.0, 0.5]);
    // One slope folds into the conv as a leaky ReLU; one per channel runs
    // on its own; both as the reference computes them.
    for (parameters, folds) in [(1, true), (3, false)] {
        let json = format!(
            r#"{{"name": "m", "input": [1, 2, 6, 6], "layers": [
            {{"kind": "conv", "name": "c", "out_channels": 3, "kernel": 3, "padding": 1}},
            {{"kind": "prelu", "name": "p", "num_parameters": {parameters}}}]}}"#
        );
        let network = Network::new(graph(&json), None).unwrap();
        let x = net::random_input(network.graph().input_shape(), 9).unwrap();
        let mut prepared = network.prepare(&Options::default(), None).unwrap();
        let (y, report) = prepared.measure(&x, 1).unwrap();
        assert_eq!(report.layers[1].folded_into.as_deref(), folds.then_some("c"));
        assert!(network.check(&x, &y).unwrap().within(TOLERANCE));
    }
    let err = refused(&one_layer_model(
        [1, 2, 2, 2],
        r#"{"kind": "prelu", "name": "p", "num_parameters": 3}"#,
    ));
    assert!(err.contains("num_parameters 3"), "{err}");
}

/// Every index `[a, b, c, d]` below `shape`, in row-major order.
fn indices(shape: [usize; 4]) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..shape.iter().product::<usize>()).map(move |k| {
        let d = k % shape[3];
        let c = (k / shape[3]) % shape[2];
        let b = (k / (shape[3] * shape[2])) % shape[1];
        (k / (shape[3] * shape[2] * shape[1]), b, c, d)
    })
}

/// The functions of an `activation` layer that no kernel fuses, and `mul`
/// and `sub`, compute PyTorch's definitions; a PReLU of one slope after an
/// add folds into the add.
#[test]
fn functions_and_binary_layers_follow_their_definitions() {
    let inf = f32::INFINITY;
    let x = [-inf, -100.0, -3.0, 0.0, 1.0, 3.0, inf, f32::NAN];
    // PyTorch's values, written out (sigmoid(1) = 0.7310586, tanh(1) =
    // 0.7615942); NaN stays NaN, and so does silu and hardswish of −∞
    // (−∞ · 0).
    let nan = f32::NAN;
    let cases: [(&str, [f32; 8]); 5] = [
        ("sigmoid", [0.0, 0.0, 0.047_425_874, 0.5, 0.731_058_6, 0.952_574_13, 1.0, nan]),
        ("tanh", [-1.0, -1.0, -0.995_055, 0.0, 0.761_594_2, 0.995_055, 1.0, nan]),
        ("hardswish", [nan, -0.0, -0.0, 0.0, 0.666_666_7, 3.0, inf, nan]),
        ("hardsigmoid", [0.0, 0.0, 0.0, 0.5, 0.666_666_7, 1.0, 1.0, nan]),
        ("silu", [nan, -0.0, -0.142_277_62, 0.0, 0.731_058_6, 2.857_722_5, inf, nan]),
    ];
    for (name, want) in cases {
        let layer = format!(r#"{{"kind": "activation", "name": "f", "activation": "{name}"}}"#);
        let y = one_layer([1, 1, 2, 4], &layer, &x, None);
        for ((&a, &w), &v) in y.iter().zip(&want).zip(&x) {
            let close =
                a == w || (a.is_nan() && w.is_nan()) || (a - w).abs() <= 1e-6 * (1.0 + w.abs());
            assert!(close, "{name}({v}) = {a}, expected {w}");
        }
    }
    let hard = r#"{"kind": "activation", "name": "f", "activation": "hardsigmoid", "alpha": 0.2, "beta": 0.4}"#;
    assert_eq!(one_layer([1, 1, 1, 3], hard, &[-5.0, 1.0, 5.0], None), [0.0, 0.6, 1.0]);
    let err = refused(&one_layer_model(
        [1, 1, 1, 3],
        r#"{"kind": "activation", "name": "f", "activation": "tanh", "alpha": 0.2}"#,
    ));
    assert!(err.contains("only allowed with hardsigmoid"), "{err}");
    let err = refused(&one_layer_model(
        [1, 2, 1, 3],
        r#"{"kind": "global_avg_pool", "name": "g", "input": "input"}, {"kind": "mul", "name": "m", "input": "g", "with": "input"}"#,
    ));
    assert!(err.contains("multiplies [1, 2, 1, 1]") && err.contains("the shapes differ"), "{err}");
    // A gate of one value per plane, [N, C, 1, 1], multiplies each plane
    // (squeeze and excitation), or is subtracted from it.
    for (kind, f) in [("mul", (|a, b| a * b) as fn(f32, f32) -> f32), ("sub", |a, b| a - b)] {
        let json = one_layer_model(
            [2, 3, 2, 3],
            &format!(
                r#"{{"kind": "global_avg_pool", "name": "g", "input": "input"}},
                {{"kind": "activation", "name": "gate", "activation": "sigmoid"}},
                {{"kind": "{kind}", "name": "m", "input": "input", "with": "gate"}}"#
            ),
        );
        let network = Network::new(graph(&json), None).unwrap();
        let x = random_tensor(9, 2 * 3 * 6);
        for options in
            [Options::default(), Options { engine: Engine::Reference, ..Options::default() }]
        {
            let y = run(&network, &options, &x);
            for (plane, (y, x)) in y.chunks(6).zip(x.chunks(6)).enumerate() {
                let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / 6.0;
                let gate = 1.0 / (1.0 + (-mean).exp());
                for (&y, &x) in y.iter().zip(x) {
                    let want = f(x, gate as f32);
                    assert!((y - want).abs() <= 1e-6, "{kind} plane {plane}: {y} vs {want}");
                }
            }
        }
    }

    // mul and sub of the input and another layer; a PReLU after an add.
    let json = r#"{"name": "m", "input": [2, 1, 1, 3], "layers": [
        {"kind": "activation", "name": "sq", "activation": "none"},
        {"kind": "mul", "name": "prod", "with": "input"},
        {"kind": "sub", "name": "diff", "input": "prod", "with": "sq"},
        {"kind": "add", "name": "sum", "with": "prod"},
        {"kind": "prelu", "name": "p"}]}"#;
    let mut tensors = Tensors::new();
    tensors.insert("p.weight", &[1], vec![0.5]).unwrap();
    let network = Network::new(graph(json), Some(&tensors)).unwrap();
    let x = [-1.0, 2.0, -3.0, 0.5, -0.5, 4.0];
    let mut prepared = network.prepare(&Options::default(), None).unwrap();
    let (y, report) = prepared.measure(&x, 1).unwrap();
    let want: Vec<f32> = x
        .iter()
        .map(|&v| {
            let s = (v * v - v) + v * v;
            if s > 0.0 { s } else { 0.5 * s }
        })
        .collect();
    assert_eq!(y, want);
    assert_eq!(report.layers[4].folded_into.as_deref(), Some("sum"));
    assert!(network.check(&x, &y).unwrap().within(TOLERANCE));
}

/// A conv2d's `"same_upper"` and `"same_lower"` padding (ONNX's auto_pad)
/// gives the output `ceil(size / stride)` on each axis, the odd pixel of
/// padding after or before, dilated and strided too; the JIT's output is
/// the reference's.
#[test]
fn same_upper_and_lower_padding_resolve_on_the_input() {
    let json = r#"{"name": "m", "input": [1, 2, 9, 7], "layers": [
        {"kind": "conv", "name": "a", "out_channels": 3, "kernel": 3, "stride": 2, "dilation": 2, "padding": "same_upper"},
        {"kind": "conv", "name": "b", "out_channels": 2, "kernel": [4, 2], "padding": "same_lower"},
        {"kind": "conv", "name": "c", "out_channels": 2, "kernel": 2, "stride": 3, "padding": "same_upper"}]}"#;
    let network = Network::new(graph(json), None).unwrap();
    let nodes = network.graph().nodes();
    let shapes: Vec<[usize; 4]> = nodes.iter().map(|n| n.output_shape()).collect();
    assert_eq!(shapes, [[1, 3, 5, 4], [1, 2, 5, 4], [1, 2, 2, 2]]);
    let convs = network.jit_convs(&Options::default()).unwrap();
    let pads: Vec<[usize; 4]> = (convs.iter().map(|c| c.spec.padding()))
        .map(|p| [p.top, p.left, p.bottom, p.right])
        .collect();
    // a: 4 rows and 4 columns of padding in all, split evenly; b: 3 rows
    // (the odd one before) and 1 column (before); c: no row (the 5 rows
    // fill two windows of 2 at stride 3), 1 column after.
    assert_eq!(pads, [[2, 2, 2, 2], [2, 1, 1, 0], [0, 0, 0, 1]]);
    let x = net::random_input(network.graph().input_shape(), 2).unwrap();
    let y = run(&network, &Options::default(), &x);
    assert!(network.check(&x, &y).unwrap().within(TOLERANCE));
}

/// A model file lists its outputs — layers by name, or named outputs of
/// layers — and the run gives each, in order: an output that a later
/// activation also reads keeps its value (the activation then runs on
/// its own), on the JIT as on the reference. The list survives the trip
/// through JSON; an unknown layer, a name given twice and a malformed
/// list are refused.
#[test]
fn a_model_gives_the_outputs_it_lists() {
    let json = r#"{"name": "m", "input": [1, 3, 8, 8], "layers": [
        {"kind": "conv", "name": "c1", "out_channels": 4, "kernel": 3, "padding": 1},
        {"kind": "activation", "name": "r1", "activation": "relu"},
        {"kind": "conv", "name": "c2", "out_channels": 2, "kernel": 1}],
        "outputs": [{"name": "final", "layer": "c2"}, "c1"]}"#;
    let model = Model::from_json(json).unwrap();
    assert_eq!(Model::from_json(&model.to_json()).unwrap(), model);
    let network = Network::new(Graph::new(&model).unwrap(), None).unwrap();
    assert_eq!(network.graph().outputs(), [("final", [1, 2, 8, 8]), ("c1", [1, 4, 8, 8])]);
    let x = random_tensor(7, 3 * 64);
    let mut jit = network.prepare(&Options::default(), None).unwrap();
    let reference = Options { engine: Engine::Reference, ..Options::default() };
    let mut oracle = network.prepare(&reference, None).unwrap();
    let first = jit.run(&x).unwrap().to_vec();
    oracle.run(&x).unwrap();
    let (got, want) = (jit.outputs(), oracle.outputs());
    assert_eq!(got[0], first.as_slice());
    for (g, w) in got.iter().zip(&want) {
        check("outputs", &[g.len(), 1, 1, 1], g, w, 1e-6);
    }
    // c1 before the ReLU: some of it is negative.
    assert!(got[1].iter().any(|&v| v < 0.0));
    let deviations = network.check_outputs(&[&x], &got).unwrap();
    assert!(deviations.len() == 2 && deviations.iter().all(|d| d.within(TOLERANCE)));
    let edited =
        |outputs: &str| json.replace(r#"[{"name": "final", "layer": "c2"}, "c1"]"#, outputs);
    for (outputs, message) in [
        (r#"["c3"]"#, r#"output "c3": no layer is named "c3""#),
        (r#"["c1", {"name": "c1", "layer": "c2"}]"#, r#"output "c1": outputs need names"#),
        (r#"[{"layer": "c2"}]"#, "outputs: give a list of layer names"),
        (r#"[{"name": "y", "layer": "c2", "shape": [1]}]"#, "outputs: give a list of layer names"),
    ] {
        let err = refused(&edited(outputs));
        assert!(err.contains(message), "{err}");
    }
}

/// A reshape keeps each image's elements in order in another shape; a
/// permute reorders an image's axes (`x.permute(0, 2, 3, 1)`: output
/// `[n, i, j, k]` is input `[n, k, i, j]`); bad shapes and dims are
/// refused naming the layer.
#[test]
fn reshape_and_permute_follow_their_definitions() {
    // Two images of 2 × 2 × 3: image n, element e holds 100n + e.
    let x: Vec<f32> = (0..2).flat_map(|n| (0..12).map(move |e| (100 * n + e) as f32)).collect();
    let reshape = r#"{"kind": "reshape", "name": "r", "shape": [3, -1, 1]}"#;
    assert_eq!(one_layer([2, 2, 2, 3], reshape, &x, None), x);
    let permute = r#"{"kind": "permute", "name": "p", "dims": [0, 2, 3, 1]}"#;
    let y = one_layer([2, 2, 2, 3], permute, &x, None);
    let mut want = Vec::new();
    for n in 0..2 {
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..2 {
                    want.push((100 * n + k * 6 + i * 3 + j) as f32);
                }
            }
        }
    }
    assert_eq!(y, want);
    let json = one_layer_model([2, 2, 2, 3], permute);
    assert_eq!(graph(&json).output_shape(), [2, 2, 3, 2]);
    for (layer, message) in [
        (r#"{"kind": "reshape", "name": "s", "shape": [5, -1, 1]}"#, "shape [5, -1, 1]"),
        (r#"{"kind": "reshape", "name": "s", "shape": [-1, -1, 6]}"#, "shape [-1, -1, 6]"),
        (r#"{"kind": "reshape", "name": "s", "shape": [0, 6, 2]}"#, "shape [0, 6, 2]"),
        (r#"{"kind": "reshape", "name": "s", "shape": [9223372036854775807, 2, -1]}"#, "shape"),
        (r#"{"kind": "reshape", "name": "s", "shape": [-9223372036854775808, 1, 1]}"#, "shape"),
        (r#"{"kind": "permute", "name": "s", "dims": [1, 0, 2, 3]}"#, "dims [1, 0, 2, 3]"),
        (r#"{"kind": "permute", "name": "s", "dims": [0, 2, 2, 1]}"#, "dims [0, 2, 2, 1]"),
        (r#"{"kind": "permute", "name": "s", "dims": [0, 1, 2, 4]}"#, "dims [0, 1, 2, 4]"),
    ] {
        names(&refused(&one_layer_model([1, 6, 2, 2], layer)), "s", message);
    }
    // Sizes past the most any axis may have.
    let long = r#"{"kind": "reshape", "name": "s", "shape": [1, 1, -1]}"#;
    names(&refused(&one_layer_model([1, 2, 4096, 4096], long)), "s", "33554432");
}

/// A slice keeps a range of the channels, and a channel shuffle of g
/// groups makes output channel k·g + j the input's j·(C/g) + k
/// (`nn.ChannelShuffle`), per batch item; bad ranges and groups are
/// refused naming the layer.
#[test]
fn slice_and_channel_shuffle_follow_their_definitions() {
    // Two items of six one-pixel channels: item n, channel c holds 10n + c.
    let x: Vec<f32> = (0..2).flat_map(|n| (0..6).map(move |c| (10 * n + c) as f32)).collect();
    let slice = r#"{"kind": "slice", "name": "s", "start": 1, "end": 4}"#;
    assert_eq!(one_layer([2, 6, 1, 1], slice, &x, None), [1.0, 2.0, 3.0, 11.0, 12.0, 13.0]);
    let shuffle = r#"{"kind": "channel_shuffle", "name": "s", "groups": 2}"#;
    let want = [0.0, 3.0, 1.0, 4.0, 2.0, 5.0, 10.0, 13.0, 11.0, 14.0, 12.0, 15.0];
    assert_eq!(one_layer([2, 6, 1, 1], shuffle, &x, None), want);
    for (layer, message) in [
        (r#"{"kind": "slice", "name": "s", "start": 4, "end": 7}"#, "channels 4..7 of 6"),
        (r#"{"kind": "slice", "name": "s", "start": 2, "end": 2}"#, "channels 2..2 of 6"),
        (r#"{"kind": "channel_shuffle", "name": "s", "groups": 4}"#, "groups 4"),
        (r#"{"kind": "channel_shuffle", "name": "s", "groups": 0}"#, "groups 0"),
    ] {
        names(&refused(&one_layer_model([1, 6, 2, 2], layer)), "s", message);
    }
}
