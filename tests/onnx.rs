//! ONNX models in (`convjit::net::onnx`), against onnxruntime: the models
//! of `tests/fixtures/onnx/` (built by `scripts/onnx_fixtures.py`, with
//! an input and onnxruntime's output each) run on the JIT and the
//! reference engine within `1e-4 · (1 + max|y|)` of onnxruntime; what is
//! not read is refused naming the node, its operator and opset; a
//! truncated or corrupted file is refused, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use convjit::net::{self, Network, Options};
use convjit::{Engine, npy};
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx").join(name)
}

/// Fixture model `name` (its file `name.onnx`) and its weights, after
/// asserting that, as a model file, it holds each of `parts` (layers as
/// the import writes them).
fn imports_as(name: &str, parts: &[&str]) -> (net::Model, net::Tensors) {
    let (model, tensors) = net::onnx::load(&fixture(&format!("{name}.onnx"))).unwrap();
    let json = model.to_json();
    for part in parts {
        assert!(json.contains(part), "{part} in {json}");
    }
    (model, tensors)
}

/// Runs fixture model `name` on `engine` with its input.
fn run(name: &str, engine: Engine) -> (Vec<f32>, Vec<f32>) {
    let (model, tensors) = net::onnx::load(&fixture(&format!("{name}.onnx"))).unwrap();
    let graph = net::Graph::new(&model).unwrap();
    let network = Network::new(graph, Some(&tensors)).unwrap();
    assert!(network.unused_tensors().is_empty(), "{:?}", network.unused_tensors());
    let input_shape = network.graph().input_shape();
    let x = npy::read_f32(&fixture(&format!("{name}.input.npy")), "input", &input_shape).unwrap();
    let [n, c, h, w] = network.graph().output_shape();
    assert_eq!([h, w], [1, 1], "the fixtures end in a linear layer");
    let want = npy::read_f32(&fixture(&format!("{name}.output.npy")), "output", &[n, c]).unwrap();
    let options = Options { engine, ..Options::default() };
    let mut prepared = network.prepare(&options, None).unwrap();
    (prepared.run(&x).unwrap().to_vec(), want)
}

/// The outputs of the fixture models are onnxruntime's, on both engines.
#[test]
fn models_match_onnxruntime() {
    for name in ["resnet_like", "mobilenet_like"] {
        for engine in [Engine::Jit, Engine::Reference] {
            let (y, want) = run(name, engine);
            assert_eq!(y.len(), want.len());
            let peak = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let error = y.iter().zip(&want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(error <= 1e-4 * (1.0 + peak), "{name} on {engine}: {error:e} (peak {peak})");
        }
    }
}

/// The import names each layer after its node, keeps its weights under
/// PyTorch's names for that layer (`{node}.weight`, ...), and reads the
/// operators as the model file's layers.
#[test]
fn layers_and_weights_take_pytorch_names() {
    let (model, tensors) = imports_as(
        "mobilenet_like",
        &[
            r#""kind":"conv","name":"depthwise""#,
            r#""groups":8"#,
            r#""kind":"activation","name":"relu6_dw","input":"bn_dw","activation":"relu6""#,
            r#""kind":"activation","name":"leaky","input":"pointwise","activation":"leaky_relu","negative_slope":0.1"#,
            r#""padding":[2,0,4,0]"#,
            r#""op":"conv_transpose2d""#,
            r#""output_padding":[1,1]"#,
            r#""kind":"activation","name":"relu_up","input":"upsample","activation":"relu""#,
            r#""kind":"global_avg_pool","name":"gap","input":"relu_up""#,
            r#""kind":"linear","name":"fc","input":"gap","in_features":6,"out_features":5"#,
        ],
    );
    let names: Vec<&str> = tensors.names().collect();
    for name in ["bn0.running_var", "depthwise.weight", "fc.bias", "upsample.bias"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let input = net::NamedInput { name: "x".into(), shape: [2, 3, 24, 20] };
    assert_eq!(model.input, net::Inputs::Named(vec![input]));
}

/// What is not read is refused in one error naming the node, its operator
/// and the opset, with the operators there are.
#[test]
fn what_is_not_read_is_refused_naming_it() {
    let error = |name: &str| net::onnx::load(&fixture(name)).unwrap_err().to_string();
    let softmax = error("refused_operator.onnx");
    for part in ["gate (Softmax, opset 17)", "operator Softmax", "Conv, ConvTranspose"] {
        assert!(softmax.contains(part), "{part} in {softmax}");
    }
    let refused = [
        ("refused_concat_axis", &["rows (Concat", "along the channels (axis 1)"][..]),
        ("refused_prelu_slopes", &["prelu (PRelu", "slopes of shape [8]"]),
        ("refused_constant_broadcast", &["scale (Mul", "of shape [8]", "one per channel"]),
        ("refused_resize_cubic", &["cubic (Resize", "mode cubic"]),
        ("refused_resize_fraction", &["up (Resize", "scales [1.0, 1.0, 1.5, 1.5]", "whole"]),
        ("refused_pad_reflect", &["mirror (Pad", "mode reflect"]),
        ("refused_transpose", &["swap_batch (Transpose", "perm [1, 0, 2, 3]", "batch first"]),
        ("refused_divide_by_zero", &["divide (Div", "Div of 1 and 0 overflows or divides by 0"]),
        ("refused_gather_index", &["gather (Gather", "index 9 of 4 values"]),
        ("refused_flatten_add", &["mixed (Add", "a matrix [N, F] and an image"]),
        ("refused_kernel_shape", &["conv (Conv", "kernel_shape [5, 5]", "disagree"]),
        ("refused_int_alpha", &["leaky (LeakyRelu", "alpha is of type INT, not FLOAT"]),
        ("refused_ceil_mode", &["pool (MaxPool", "ceil_mode"]),
        ("refused_reshape", &["to_3d (Reshape", "shape [1, 3, -1]", "a matrix [N, F]", "images"]),
        ("refused_reshape_batch", &["merge (Reshape", "shape [-1, 96] of [2, 3, 4, 4]", "N"]),
    ];
    for (name, parts) in refused {
        let text = error(&format!("{name}.onnx"));
        for part in parts {
            assert!(text.contains(part), "{name}: {part} in {text}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A truncated or corrupted file is refused or read, never a panic;
    /// what is read is a model the graph then judges.
    #[test]
    fn damaged_files_never_panic(
        which in 0usize..4,
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..6),
    ) {
        let name = ["resnet_like", "shuffle_block", "resample", "transposed"][which];
        let mut bytes = std::fs::read(fixture(&format!("{name}.onnx"))).unwrap();
        // Cut short at a fraction of the file (whole above 0.9: flips only).
        let keep = if cut > 0.9 { bytes.len() } else { ((bytes.len() as f64) * cut / 0.9) as usize };
        bytes.truncate(keep);
        for (at, value) in flips {
            let i = ((bytes.len() as f64) * at) as usize;
            if let Some(b) = bytes.get_mut(i) {
                *b ^= value;
            }
        }
        let file = tempfile::Builder::new().suffix(".onnx").tempfile().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        if let Ok((model, tensors)) = net::onnx::load(file.path())
            && let Ok(graph) = net::Graph::new(&model)
        {
            let _ = Network::new(graph, Some(&tensors));
        }
    }
}

/// `convjit net --model F.onnx` runs the file with its weights, checked,
/// and writes onnxruntime's output; `--weights` is refused beside it.
#[test]
fn the_cli_runs_an_onnx_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.npy");
    let run = |extra: &[&str]| {
        let (model, input) = (fixture("resnet_like.onnx"), fixture("resnet_like.input.npy"));
        Command::new(env!("CARGO_BIN_EXE_convjit"))
            .args(["net", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&input)
            .args(extra)
            .output()
            .unwrap()
    };
    let done = run(&["--check", "--runs", "1", "--output", out.to_str().unwrap()]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let y = npy::read_f32(&out, "output", &[1, 10, 1, 1]).unwrap();
    let want = npy::read_f32(&fixture("resnet_like.output.npy"), "output", &[1, 10]).unwrap();
    let error = y.iter().zip(&want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(error <= 1e-4 * 2.0, "{error:e}");
    let refused = run(&["--weights", "w.safetensors"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("carries its own weights"));
}

/// `convjit macs --model` counts an ONNX model from its shapes, as
/// `convjit net` does, without compiling it.
#[test]
fn macs_counts_a_model_without_running_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_convjit"))
        .args(["macs", "--json", "--model"])
        .arg(fixture("resnet_like.onnx"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 14);
    let sum = |key: &str| layers.iter().map(|l| l[key].as_u64().unwrap()).sum::<u64>();
    for key in ["params", "macs", "macs_valid", "macs_ptflops"] {
        assert_eq!(report["total"][key].as_u64(), Some(sum(key)), "{key}");
    }
    // The stem: 16 × 3 × 3 × 3 weights and 16 biases, 16 × 16 × 16 outputs
    // of 27 multiply-adds each.
    assert_eq!(layers[0]["params"], 448);
    assert_eq!(layers[0]["macs"], 16 * 16 * 16 * 27);
    let ptflops = report["total"]["macs_ptflops"].as_f64().unwrap();
    assert_eq!(report["kmac_per_pixel"].as_f64(), Some(ptflops / (32.0 * 32.0) / 1000.0));
}

/// `convjit tune --model` tunes the distinct conv kernels of a model within
/// one budget and saves them; a second run finds them in the cache and
/// goes on with the others; `net --tuned` compiles the model with them, and its
/// output still matches the reference run.
#[test]
fn tune_model_saves_what_net_tuned_uses() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tuning.json");
    let model = fixture("resnet_like.onnx");
    let convjit = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_convjit"))
            .args(args)
            .arg("--model")
            .arg(&model)
            .arg("--cache")
            .arg(&cache)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let out = convjit(&["tune", "--budget", "3", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tuned = report["results"].as_array().unwrap();
    assert!(!tuned.is_empty(), "{report}");
    let saved = convjit::tune::TuningCache::load(&cache);
    assert_eq!(saved.entries().len(), tuned.len());
    // Each saved schedule is the one a kernel of the model asks for.
    let (onnx, tensors) = net::onnx::load(&model).unwrap();
    let network = Network::new(net::Graph::new(&onnx).unwrap(), Some(&tensors)).unwrap();
    let compiler = convjit::Compiler::host().unwrap().with_tuning_cache(&cache);
    let convs = network.jit_convs(&Options::default()).unwrap();
    let found = convs.iter().filter(|c| compiler.tuned_schedule(&c.spec, 1).is_some()).count();
    assert_eq!(found, tuned.len());
    // A second run goes on with the kernels the first left.
    let again = convjit(&["tune", "--budget", "3", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    let layer = |r: &serde_json::Value| r["layer"].as_str().unwrap().to_string();
    let first: Vec<String> = tuned.iter().map(layer).collect();
    for r in report["results"].as_array().unwrap() {
        assert!(!first.contains(&layer(r)), "{} tuned twice", layer(r));
    }
    let said = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(said.contains(&format!("here, {} already in the cache", first.len())), "{said}");
    let done = convjit(&["net", "--tuned", "--check", "--runs", "1"]);
    let tuned_now = first.len() + report["results"].as_array().unwrap().len();
    let said = String::from_utf8_lossy(&done.stderr).to_string();
    let holds = format!("the cache holds {tuned_now} of the model's {} conv kernels", convs.len());
    assert!(said.contains(&holds), "{said}");
}

/// The kernels the JIT compiles for a model: each distinct spec once, with
/// the BatchNorm folded (a bias), the activation fused and the residual
/// add folded into the conv computing its operand last, and the layers
/// that run it.
#[test]
fn jit_convs_are_the_distinct_kernels_as_compiled() {
    let graph = net::Graph::new(&net::resnet18()).unwrap();
    let network = Network::new(graph, None).unwrap();
    let convs = network.jit_convs(&Options::default()).unwrap();
    let nodes = network.graph().nodes();
    // The stem; layer1's 3×3 convs; per later stage the stride-2 3×3, the
    // 3×3 whose output the add reads (the downsampling 1×1 after it takes
    // the add and its ReLU), the downsampling 1×1 and the other 3×3s; the
    // classifier.
    let names: Vec<&str> = convs.iter().map(|c| nodes[c.nodes[0]].name()).collect();
    assert_eq!(convs.len(), 1 + 1 + 3 * 4 + 1, "{names:?}");
    assert_eq!(convs.iter().map(|c| c.nodes.len()).sum::<usize>(), 1 + 16 + 3 + 1);
    let stem = &convs[0];
    assert!(stem.spec.has_bias(), "the BatchNorm folded into a bias");
    assert_eq!(stem.spec.activation(), convjit::Activation::Relu);
    // layer1's four 3×3 convs: two with their own ReLU, two with the
    // residual's add and the ReLU after it — one spec.
    let layer1: Vec<_> =
        convs.iter().filter(|c| nodes[c.nodes[0]].name().starts_with("layer1.")).collect();
    assert_eq!(layer1.len(), 1, "{names:?}");
    assert_eq!(layer1[0].spec.activation(), convjit::Activation::Relu);
    assert_eq!(layer1[0].nodes.len(), 4);
    let downsample = convs.iter().find(|c| nodes[c.nodes[0]].name() == "layer2.0.downsample.0");
    assert_eq!(downsample.unwrap().spec.activation(), convjit::Activation::Relu);
}

/// Models of two inputs match onnxruntime on both engines: an NNVC-style
/// filter, and a reconstruction and QP map concatenated twice along the
/// channels with the residual added to the first, also through the CLI,
/// its inputs given by name in any order or by position.
#[test]
fn models_of_two_inputs_match_onnxruntime() {
    // The NNVC-style filter: SpaceToDepth, Concat, PRelu of one slope
    // and of one per channel, DepthToSpace of both orders, the residual.
    let (model, _, _) = fixture_model("nnvc_like");
    let names: Vec<&str> = model.graph().inputs().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["rec", "qp"]);
    let (network, xs, close) = fixture_model("two_inputs");
    let xs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
    let shape = network.graph().output_shape();
    for engine in [Engine::Jit, Engine::Reference] {
        let options = Options { engine, ..Options::default() };
        let mut prepared = network.prepare(&options, None).unwrap();
        // One tensor for a model of two is refused, naming the inputs.
        let err = prepared.run(xs[0]).unwrap_err().to_string();
        assert!(err.contains("1 input tensor given; the model has 2 (rec, qp)"), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.npy");
    let given =
        |name: &str| format!("{name}={}", fixture(&format!("two_inputs.{name}.npy")).display());
    let cli = |inputs: &[String]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_convjit"));
        command.args(["net", "--runs", "1", "--check", "--model"]).arg(fixture("two_inputs.onnx"));
        for input in inputs {
            command.args(["--input", input]);
        }
        command.arg("--output").arg(&out).output().unwrap()
    };
    for inputs in [[given("rec"), given("qp")], [given("qp"), given("rec")]] {
        let done = cli(&inputs);
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
        close(&npy::read_f32(&out, "output", &shape).unwrap(), "the CLI");
    }
    // The file of the first input not named, by position.
    let rec = fixture("two_inputs.rec.npy").display().to_string();
    let done = cli(&[given("qp"), rec.clone()]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    close(&npy::read_f32(&out, "output", &shape).unwrap(), "the CLI, by position");
    let twice = cli(&[given("qp"), given("qp")]);
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("input qp is given twice"));
    let three = cli(&[given("qp"), rec.clone(), rec]);
    assert!(!three.status.success());
    assert!(String::from_utf8_lossy(&three.stderr).contains("every input of the model"));
    let typo = cli(&[format!("recc={}", fixture("two_inputs.rec.npy").display())]);
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("no input named recc (rec, qp)"));
}

/// Fixture model `name`, loaded, its inputs read (`{name}.input.npy`, or
/// `{name}.{input}.npy` each of several), and a check of an output against
/// onnxruntime's; the model's output on both engines is checked with it
/// first.
#[allow(clippy::type_complexity)]
fn fixture_model(name: &str) -> (Network, Vec<Vec<f32>>, Box<dyn Fn(&[f32], &str)>) {
    let (model, tensors) = net::onnx::load(&fixture(&format!("{name}.onnx"))).unwrap();
    let network = Network::new(net::Graph::new(&model).unwrap(), Some(&tensors)).unwrap();
    assert!(network.unused_tensors().is_empty(), "{:?}", network.unused_tensors());
    let file = format!("{name}.{{}}.npy");
    let read = move |part: &str, shape: &[usize]| {
        npy::read_f32(&fixture(&file.replace("{}", part)), "tensor", shape).unwrap()
    };
    let inputs = network.graph().inputs().to_vec();
    let one = inputs.len() == 1;
    let xs: Vec<Vec<f32>> =
        inputs.iter().map(|(n, s)| read(if one { "input" } else { n }, s)).collect();
    // Each output's onnxruntime values: M.output.npy, or of a model of
    // several M.output.<name>.npy each; a matrix [N, F] (held as [N, F,
    // 1, 1]) is stored as one.
    let outputs: Vec<(String, [usize; 4])> =
        network.graph().outputs().iter().map(|(n, s)| (n.to_string(), *s)).collect();
    let wants: Vec<Vec<f32>> = (outputs.iter())
        .map(|(output, shape)| {
            let part =
                if outputs.len() == 1 { "output".into() } else { format!("output.{output}") };
            let path = fixture(&format!("{name}.{part}.npy"));
            npy::read_f32(&path, "output", shape)
                .or_else(|_| npy::read_f32(&path, "output", &shape[..2]))
                .unwrap()
        })
        .collect();
    let within = |y: &[f32], want: &[f32], what: &str| {
        let peak = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(y.len(), want.len(), "{what}");
        let error = y.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(error <= 1e-4 * (1.0 + peak), "{what}: {error:e} (peak {peak})");
    };
    let slices: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
    for engine in [Engine::Jit, Engine::Reference] {
        let options = Options { engine, ..Options::default() };
        let mut prepared = network.prepare(&options, None).unwrap();
        prepared.run_inputs(&slices).unwrap();
        for ((y, want), (output, _)) in prepared.outputs().iter().zip(&wants).zip(&outputs) {
            within(y, want, &format!("{name}, output {output} on {engine}"));
        }
    }
    let (model_name, first) = (name.to_string(), wants[0].clone());
    let close = move |y: &[f32], what: &str| within(y, &first, &format!("{model_name}, {what}"));
    (network, xs, Box::new(close))
}

/// Elementwise functions — Sigmoid, Tanh, HardSigmoid of its own alpha and
/// beta, HardSwish, SiLU as Sigmoid and Mul (fused into one silu), a Sub
/// of two branches, a SiLU whose Sigmoid is read again (not fused) — match
/// onnxruntime on both engines, on a batch of two.
#[test]
fn functions_match_onnxruntime() {
    let (network, _, _) = fixture_model("functions");
    let nodes = network.graph().nodes();
    let kind = |name: &str| nodes.iter().find(|n| n.name() == name).map(|n| n.kind().to_string());
    // Sigmoid then Mul is one silu, named after the Sigmoid; a Sigmoid
    // that another node reads too stays, and so does its Mul.
    let (model, _) = net::onnx::load(&fixture("functions.onnx")).unwrap();
    let json = model.to_json();
    assert!(json.contains(r#""name":"sigmoid","input":"c1","activation":"silu""#), "{json}");
    assert_eq!((kind("silu"), kind("silu_unfused")), (None, Some("mul".into())));
    assert_eq!(kind("silu_aliased"), Some("mul".into()));
    assert_eq!(
        (kind("sigmoid_shared"), kind("diff")),
        (Some("activation".into()), Some("sub".into()))
    );
}

/// Pools, resizes, a pad and arithmetic with constants match onnxruntime
/// on both engines: AveragePool counting its padding or not, Resize
/// nearest (asymmetric floor; half_pixel rounding) and linear
/// (pytorch_half_pixel by sizes, align_corners by scales), Pad of 0.5,
/// Add, Mul and Sub of constants on either side, one Constant shared by
/// two nodes.
#[test]
fn resampling_and_constants_match_onnxruntime() {
    let (_, tensors) = imports_as(
        "resample",
        &[
            r#""kind":"avg_pool","name":"avg_exclude","input":"c1","kernel":[3,3],"stride":[2,2],"padding":[1,1],"count_include_pad":false"#,
            r#""kind":"upsample","name":"nearest_floor","input":"avg_exclude","scale_factor":[2,2],"mode":"nearest""#,
            r#""kind":"pad","name":"pad","input":"sum","padding":[2,1,1,0],"value":0.5"#,
            r#""kind":"affine","name":"gain","input":"pad","num_parameters":4,"weight":true,"bias":false"#,
            r#""kind":"affine","name":"one_less","input":"gain","num_parameters":1,"weight":true,"bias":true"#,
            r#""kind":"upsample","name":"bilinear_sizes","input":"one_less","size":[22,33],"mode":"bilinear","align_corners":false"#,
            r#""kind":"upsample","name":"bilinear_corners","input":"avg","scale_factor":[2,1],"mode":"bilinear","align_corners":true"#,
        ],
    );
    // c − x is the weight −1 and the bias c; x − c the bias −c.
    let values = |name: &str| tensors.get(name).unwrap().1.to_vec();
    assert_eq!((values("one_less.weight"), values("one_less.bias")), (vec![-1.0], vec![1.0]));
    assert_eq!(values("less_one.bias"), vec![-1.0]);
    let (network, _, _) = fixture_model("resample");
    let kinds: Vec<String> = network.graph().nodes().iter().map(|n| n.kind().to_string()).collect();
    for kind in ["avg_pool", "upsample", "pad", "affine"] {
        assert!(kinds.contains(&kind.to_string()), "{kind} in {kinds:?}");
    }
}

/// ConvTranspose sized by `output_shape` (an odd total padding, and an
/// output past what padding reaches, made with output padding) and by
/// `auto_pad` SAME_UPPER and SAME_LOWER matches onnxruntime on both
/// engines.
#[test]
fn conv_transpose_output_shape_and_same_match_onnxruntime() {
    imports_as(
        "transposed",
        &[
            r#""name":"a","input":"x","op":"conv_transpose2d","in_channels":3,"out_channels":4,"kernel":[3,3],"stride":[2,2],"padding":[1,0,0,0],"dilation":[1,1],"groups":1,"output_padding":[0,0]"#,
            r#""name":"e","input":"x","op":"conv_transpose2d","in_channels":3,"out_channels":2,"kernel":[3,3],"stride":[2,2],"padding":[0,1,0,0],"dilation":[1,1],"groups":1,"output_padding":[1,0]"#,
        ],
    );
    let (network, _, _) = fixture_model("transposed");
    assert_eq!(network.graph().outputs(), [("y", [1, 3, 28, 26]), ("z", [1, 2, 16, 12])]);
}

/// ShuffleNet V2's operators as exports write them — a chunk computed
/// from the shape (Shape, Gather, Add, Div, Mul folded at import, then
/// Slices of the channels), a channel shuffle as Reshape, Transpose and
/// Reshape, a Split, ReduceMean, a view to [N, -1] from the shape — match
/// onnxruntime on both engines.
#[test]
fn shuffle_block_matches_onnxruntime() {
    imports_as(
        "shuffle_block",
        &[
            r#""kind":"slice","name":"first_half","input":"c","start":0,"end":4"#,
            r#""kind":"slice","name":"second_half","input":"c","start":4,"end":8"#,
            r#""kind":"channel_shuffle","name":"shuffle","input":"cat","groups":2"#,
            r#""kind":"slice","name":"s2","input":"shuffle","start":4,"end":8"#,
            r#""kind":"global_avg_pool","name":"mean","input":"joined""#,
            r#""kind":"linear","name":"fc","input":"mean""#,
        ],
    );
    let (network, _, _) = fixture_model("shuffle_block");
    assert_eq!(network.graph().output_shape(), [1, 5, 1, 1]);
}

/// Reshapes of images (a 0 copying the batch, a -1 resolved at import) and of a flattened
/// matrix back to an image, and Transposes to NHWC and back around a conv,
/// match onnxruntime on both engines.
#[test]
fn reshape_and_transpose_match_onnxruntime() {
    imports_as(
        "reshape_permute",
        &[
            r#""kind":"reshape","name":"rows","input":"a","shape":[16,3,6]"#,
            r#""kind":"permute","name":"to_nhwc","input":"rows","dims":[0,2,3,1]"#,
            r#""kind":"permute","name":"to_nchw","input":"b_relu","dims":[0,3,1,2]"#,
            r#""kind":"reshape","name":"image","input":"to_nchw","shape":[24,4,4]"#,
        ],
    );
    let (network, _, _) = fixture_model("reshape_permute");
    assert_eq!(network.graph().output_shape(), [1, 2, 4, 4]);
}

/// Integer arithmetic of an empty tensor and a scalar is read (an empty
/// result), not a panic.
#[test]
fn arithmetic_of_no_integers_is_read() {
    let (network, _, _) = fixture_model("empty_integers");
    assert_eq!(network.graph().nodes().len(), 1);
}

/// One initializer read by two convs (exporters store equal constants
/// once) is each one's copy, and the model matches onnxruntime.
#[test]
fn an_initializer_of_two_layers_is_each_ones() {
    let (network, _, _) = fixture_model("shared_weights");
    assert_eq!(network.graph().nodes().len(), 2);
}

/// Convs padded by `auto_pad` SAME_UPPER and SAME_LOWER — strided on odd
/// sizes, of an even kernel — match onnxruntime on both engines.
#[test]
fn auto_pad_same_matches_onnxruntime() {
    let (network, _, _) = fixture_model("auto_pad");
    let shapes: Vec<[usize; 4]> =
        network.graph().nodes().iter().map(|n| n.output_shape()).collect();
    assert_eq!(shapes, [[1, 5, 5, 4], [1, 4, 5, 4], [1, 3, 2, 2]]);
}

/// `macs --input-shape` counts a model on inputs of other shapes, each
/// named or the first, and `--pixels-of` names the input whose pixels the
/// kMAC per pixel counts; a name the model does not have is refused.
#[test]
fn macs_counts_a_model_on_other_input_shapes() {
    let macs = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_convjit"))
            .args(["macs", "--json", "--model"])
            .arg(fixture("two_inputs.onnx"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out =
        macs(&["--input-shape", "qp=1x1x4x6", "--input-shape", "1x1x4x6", "--pixels-of", "qp"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.last().unwrap()["output_shape"], serde_json::json!([1, 1, 4, 6]));
    let ptflops = report["total"]["macs_ptflops"].as_f64().unwrap();
    assert_eq!(report["kmac_per_pixel"].as_f64(), Some(ptflops / 24.0 / 1000.0));
    // The head conv: 8 outputs of 2 × 3 × 3 taps at each of the 24 pixels.
    assert_eq!(layers[1]["macs"], 24 * 8 * 18);
    let wrong = macs(&["--input-shape", "qpp=1x1x4x6"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("no input named qpp (rec, qp)"));
    let odd = macs(&["--input-shape", "qp=1x1x4x7"]);
    assert!(!odd.status.success(), "rec and qp differ in width: the concat refuses");
}

/// A model of two graph outputs — the last node's, and a conv's output
/// that a Relu also reads (which then runs on its own instead of in the
/// conv's kernel) — gives both as onnxruntime does, on both engines and
/// through the CLI (`--output NAME=Y.npy`, `--output Y.npy` for the
/// first), checked against the reference.
#[test]
fn models_of_two_outputs_match_onnxruntime() {
    let (model, tensors) = net::onnx::load(&fixture("two_outputs.onnx")).unwrap();
    let network = Network::new(net::Graph::new(&model).unwrap(), Some(&tensors)).unwrap();
    let outputs = network.graph().outputs();
    assert_eq!(outputs, [("y", [1, 4, 10, 9]), ("pre", [1, 6, 10, 9])]);
    let x = npy::read_f32(&fixture("two_outputs.input.npy"), "x", &[1, 3, 10, 9]).unwrap();
    let want: Vec<Vec<f32>> = (outputs.iter())
        .map(|(name, shape)| {
            npy::read_f32(&fixture(&format!("two_outputs.output.{name}.npy")), name, shape).unwrap()
        })
        .collect();
    let close = |y: &[f32], want: &[f32], what: &str| {
        let peak = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let error = y.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(y.len() == want.len() && error <= 1e-4 * (1.0 + peak), "{what}: {error:e}");
    };
    for engine in [Engine::Jit, Engine::Reference] {
        let mut prepared =
            network.prepare(&Options { engine, ..Options::default() }, None).unwrap();
        let first = prepared.run(&x).unwrap().to_vec();
        close(&first, &want[0], "the first output");
        for ((y, want), (name, _)) in prepared.outputs().iter().zip(&want).zip(&outputs) {
            close(y, want, &format!("{name} on {engine}"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (pre, y) = (dir.path().join("pre.npy"), dir.path().join("y.npy"));
    let run = |outputs: &[String]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_convjit"));
        command.args(["net", "--runs", "1", "--check", "--model"]).arg(fixture("two_outputs.onnx"));
        command.arg("--input").arg(fixture("two_outputs.input.npy"));
        for output in outputs {
            command.arg("--output").arg(output);
        }
        command.output().unwrap()
    };
    let done = run(&[format!("pre={}", pre.display()), y.display().to_string()]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    close(&npy::read_f32(&y, "y", &[1, 4, 10, 9]).unwrap(), &want[0], "y.npy");
    close(&npy::read_f32(&pre, "pre", &[1, 6, 10, 9]).unwrap(), &want[1], "pre.npy");
    for (outputs, message) in [
        (vec![format!("post={}", pre.display())], "no output named post (y, pre)"),
        (vec![format!("y={}", y.display()), y.display().to_string()], "output y is given twice"),
    ] {
        let refused = run(&outputs);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && stderr.contains(message), "{stderr}");
    }
}

/// A squeeze-and-excitation block (a gate `[N, C, 1, 1]` times the
/// features, the gate the Mul's first operand) and a classifier of MatMul
/// and a bias Add match onnxruntime on both engines.
#[test]
fn squeeze_excitation_and_matmul_match_onnxruntime() {
    imports_as(
        "squeeze_excite",
        &[
            r#""kind":"mul","name":"excite","input":"hardswish","with":"gate""#,
            r#""kind":"linear","name":"fc","input":"pool","in_features":8,"out_features":5,"bias":false"#,
            r#""kind":"affine","name":"fc_bias","input":"fc","num_parameters":5,"weight":false,"bias":true"#,
        ],
    );
    let (network, _, _) = fixture_model("squeeze_excite");
    assert_eq!(network.graph().output_shape(), [2, 5, 1, 1]);
}
