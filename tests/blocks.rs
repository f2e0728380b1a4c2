//! Blocks: BatchNorm folding, ACNet's deploy fusion and the fused
//! depthwise-separable kernel, each against the unfused computation and the
//! reference interpreter.

mod common;

use common::{check, random_tensor, spec};
use convjit::blocks::{AcBlock, BatchNorm, Conv, Dsc, DscMode};
use convjit::codegen::dsc::DscSchedule;
use convjit::reference::{Oracle, compare};
use convjit::{Activation, Compiler, Engine, ValidSpec};
use proptest::prelude::*;

/// "Within 1e-5 relative": the largest difference over the largest |value|
/// of the expected output (a normwise relative error, meaningful where
/// single outputs cancel to about 0).
const RELATIVE: f64 = 1e-5;

/// The reference output of `conv` then `bn`.
fn conv_then_bn(conv: &Conv, bn: &BatchNorm, x: &[f32]) -> Vec<f32> {
    let mut y = conv.reference(x).expect("reference");
    bn.apply(&mut y, conv.spec().output_shape()).expect("batchnorm");
    y
}

fn conv_with(json: &str, seed: u64) -> Conv {
    Conv::random(spec(json), seed).expect("random conv")
}

/// One spec of every kind, transposed ones with groups, strides and output
/// padding.
const EVERY_KIND: &[&str] = &[
    r#"{"op":"conv2d","in_channels":5,"out_channels":6,"height":9,"width":8,"kernel":3,"padding":1}"#,
    r#"{"op":"conv2d","in_channels":6,"out_channels":9,"height":9,"width":9,"kernel":3,"padding":1,"groups":3,"bias":false}"#,
    r#"{"op":"conv2d","in_channels":7,"out_channels":14,"height":8,"width":10,"kernel":3,"stride":2,"padding":1,"groups":7}"#,
    r#"{"op":"conv2d","in_channels":12,"out_channels":5,"height":6,"width":7,"kernel":1}"#,
    r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":12,"width":12,"kernel":3,"padding":2,"dilation":2}"#,
    r#"{"op":"conv2d","in_channels":4,"out_channels":8,"height":10,"width":9,"kernel":[3,1],"padding":[1,0]}"#,
    r#"{"op":"conv2d","in_channels":3,"out_channels":8,"height":15,"width":15,"kernel":7,"stride":2,"padding":3,"bias":false}"#,
    r#"{"op":"conv_transpose2d","in_channels":6,"out_channels":4,"height":5,"width":6,"kernel":4,"stride":2,"padding":1}"#,
    r#"{"op":"conv_transpose2d","in_channels":6,"out_channels":9,"height":5,"width":5,"kernel":3,"stride":2,"padding":1,"output_padding":1,"groups":3,"bias":false}"#,
    r#"{"op":"conv_transpose2d","in_channels":4,"out_channels":4,"height":4,"width":4,"kernel":2,"stride":2,"groups":4}"#,
];

#[test]
fn bn_folding_equals_conv_then_bn_for_every_kind() {
    let compiler = Compiler::host().expect("host");
    for (i, json) in EVERY_KIND.iter().enumerate() {
        let conv = conv_with(json, i as u64);
        let bn = BatchNorm::random(conv.spec().out_channels(), 100 + i as u64);
        let x = random_tensor(200 + i as u64, conv.spec().input_len());
        let folded = conv.fold(&bn).expect("fold");
        assert!(folded.spec().has_bias());
        let expected = conv_then_bn(&conv, &bn, &x);
        let shape = conv.spec().output_shape();
        check(json, &shape, &folded.reference(&x).expect("reference"), &expected, RELATIVE);
        // The JIT runs the folded conv within its own error bound.
        let jit = folded.prepare(Engine::Jit, Some(&compiler), 1).expect("prepare");
        let mut y = vec![f32::NAN; folded.spec().output_len()];
        jit.run(&x, &mut y).expect("run");
        let verdict =
            convjit::reference::verify(folded.spec(), &x, folded.weight(), folded.bias(), &y)
                .expect("verify");
        assert!(verdict.passed(), "{json}: jit of the folded conv: {verdict:?}");
        check(json, &shape, &y, &expected, RELATIVE);
    }
}

#[test]
fn bn_refuses_what_does_not_fold() {
    let conv = conv_with(EVERY_KIND[0], 1);
    let wrong = BatchNorm::random(5, 1);
    assert!(conv.fold(&wrong).unwrap_err().to_string().contains("5 channels"));
    let relu = conv.with_activation(Activation::Relu).expect("relu");
    let bn = BatchNorm::random(6, 1);
    assert!(relu.fold(&bn).unwrap_err().to_string().contains("does not fold"));
    let bad = BatchNorm::new(vec![1.0], vec![0.0], vec![0.0], vec![-1.0], 1e-5);
    assert!(bad.unwrap_err().to_string().contains("running_var"));
    let short = BatchNorm::new(vec![1.0, 1.0], vec![0.0], vec![0.0; 2], vec![1.0; 2], 1e-5);
    assert!(short.unwrap_err().to_string().contains("bias has 1"));
}

/// ACNet blocks: k 3 and 5, padding k//2 and smaller (down to 0, where the
/// asymmetric branches crop), groups 1 and more, strides and dilation.
fn acnet_specs() -> Vec<ValidSpec> {
    let mut specs = Vec::new();
    for (k, p, g, s, d) in [
        (3, 1, 1, 1, 1),
        (3, 0, 1, 1, 1),
        (3, 1, 4, 2, 1),
        (3, 0, 2, 2, 1),
        (5, 2, 1, 1, 1),
        (5, 1, 1, 1, 1),
        (5, 0, 4, 1, 1),
        (5, 1, 2, 2, 1),
        (3, 2, 1, 1, 2),
        (3, 1, 2, 1, 2),
    ] {
        specs.push(spec(&format!(
            r#"{{"op":"conv2d","in_channels":8,"out_channels":8,"height":13,"width":11,
                "kernel":{k},"padding":{p},"groups":{g},"stride":{s},"dilation":{d},"activation":"relu"}}"#
        )));
    }
    specs
}

#[test]
fn acnet_deploy_equals_training_form() {
    let compiler = Compiler::host().expect("host");
    for (i, spec) in acnet_specs().into_iter().enumerate() {
        let block = AcBlock::random(&spec, i as u64).expect("block");
        let x = random_tensor(50 + i as u64, spec.input_len());
        let shape = spec.output_shape();
        let mut training = vec![f32::NAN; spec.output_len()];
        block
            .training(Engine::Reference, None, 1)
            .expect("training form")
            .run(&x, &mut training)
            .expect("run");
        let deploy = block.deploy().expect("deploy");
        assert_eq!(deploy.spec().kernel(), spec.kernel());
        let what = format!("acblock {spec}");
        check(&what, &shape, &deploy.reference(&x).expect("reference"), &training, RELATIVE);
        // Both forms compiled: the fused one is one kernel.
        let mut jit_training = vec![f32::NAN; spec.output_len()];
        block
            .training(Engine::Jit, Some(&compiler), 1)
            .expect("training form")
            .run(&x, &mut jit_training)
            .expect("run");
        let mut jit_deploy = vec![f32::NAN; spec.output_len()];
        deploy
            .prepare(Engine::Jit, Some(&compiler), 1)
            .expect("jit")
            .run(&x, &mut jit_deploy)
            .expect("run");
        check(&what, &shape, &jit_deploy, &training, RELATIVE);
        check(&what, &shape, &jit_training, &training, RELATIVE);
    }
}

#[test]
fn acnet_crops_as_the_reference_code() {
    // k = 3, padding 0: the vertical branch crops one column on each side,
    // the horizontal one a row.
    let s =
        spec(r#"{"op":"conv2d","in_channels":2,"out_channels":2,"height":6,"width":7,"kernel":3}"#);
    let block = AcBlock::random(&s, 3).expect("block");
    let [square, vertical, horizontal] = block.branch_specs().expect("branches");
    assert_eq!(square.1, Default::default());
    assert_eq!((vertical.1.rows, vertical.1.cols), (0, 1));
    assert_eq!((horizontal.1.rows, horizontal.1.cols), (1, 0));
    assert_eq!([vertical.0.height(), vertical.0.width()], [6, 5]);
    assert_eq!(vertical.0.kernel(), [3, 1]);
    assert_eq!(horizontal.0.kernel(), [1, 3]);
    // k = 5, padding 2 = k//2: no crop, the asymmetric kernels pad 0 across.
    let s = spec(
        r#"{"op":"conv2d","in_channels":2,"out_channels":2,"height":6,"width":7,"kernel":5,"padding":2}"#,
    );
    let [_, vertical, _] = AcBlock::random(&s, 3).expect("block").branch_specs().expect("branches");
    assert_eq!(vertical.1, Default::default());
    assert_eq!(vertical.0.padding().left, 0);
    assert_eq!(vertical.0.padding().top, 2);
    // Even kernels have no centre.
    let even =
        spec(r#"{"op":"conv2d","in_channels":2,"out_channels":2,"height":6,"width":7,"kernel":4}"#);
    assert!(AcBlock::random(&even, 1).unwrap_err().to_string().contains("odd square kernel"));
}

/// Checks the fused block against the reference: each element within the
/// pointwise layer's error bound on the reference's intermediate plus the
/// depthwise errors carried through the pointwise weights.
fn check_dsc(block: &Dsc, x: &[f32], y: &[f32], what: &str) {
    let (dw, pw) = (block.depthwise(), block.pointwise());
    let oracle = Oracle::new(dw.spec(), x, dw.weight(), dw.bias())
        .and_then(|dw_oracle| dw_oracle.then_pointwise(pw.spec(), pw.weight(), pw.bias()))
        .expect("the block's oracle");
    let verdict = oracle.verify(y).expect("verify");
    if let Some(i) = verdict.worst.filter(|_| !verdict.passed()) {
        let (a, e, bound) = (y[i], oracle.expected()[i], oracle.bounds()[i]);
        panic!(
            "{what}: element {i} ({:?}) is {a}, the reference {e}, past the bound {bound:.3e}",
            common::coordinates(&pw.spec().output_shape(), i)
        );
    }
}

/// `Oracle::then_pointwise` against its formula, computed here by hand:
/// the pointwise oracle on the depthwise reference's output, each bound
/// widened by the depthwise bounds carried through the pointwise weights'
/// magnitudes (and by no more than a hair past that); and the oracles it
/// refuses to chain.
#[test]
fn the_chained_oracle_is_its_formula() {
    let dw = dsc_spec(6, [7, 9], 3, 1, 1, 1, 2);
    let block = Dsc::random(&dw, 5, [Activation::Relu6, Activation::None], 9).expect("block");
    let (d, p) = (block.depthwise(), block.pointwise());
    let x = random_tensor(4, dw.input_len());
    let dw_oracle = Oracle::new(d.spec(), &x, d.weight(), d.bias()).expect("dw oracle");
    let chained = dw_oracle.then_pointwise(p.spec(), p.weight(), p.bias()).expect("chained");
    let pw_oracle =
        Oracle::new(p.spec(), dw_oracle.expected(), p.weight(), p.bias()).expect("pw oracle");
    assert_eq!(chained.expected(), pw_oracle.expected());
    let [_, cout, h, w] = p.spec().output_shape();
    let (cin, plane) = (p.spec().in_channels(), h * w);
    for (i, &bound) in chained.bounds().iter().enumerate() {
        let (img, oc, px) = (i / (cout * plane), (i / plane) % cout, i % plane);
        let carried: f64 = (0..cin)
            .map(|c| {
                let m = (img * cin + c) * plane + px;
                f64::from(p.weight()[oc * cin + c]).abs() * dw_oracle.bounds()[m]
            })
            .sum();
        let own = pw_oracle.bounds()[i];
        assert!(bound >= own + carried, "element {i}: {bound} < {own} + {carried}");
        assert!(bound <= own + carried * (1.0 + 1e-4), "element {i}: {bound} ≫ {own} + {carried}");
    }
    // Only a pointwise conv2d on the whole of the first output chains.
    let refused = |second: &ValidSpec, first: &Oracle| {
        let weight = random_tensor(5, second.weight_len());
        let bias = second.has_bias().then(|| random_tensor(6, second.out_channels()));
        first.then_pointwise(second, &weight, bias.as_deref()).is_err()
    };
    let mid = r#""batch":2,"in_channels":6,"out_channels":5,"height":7,"width":9"#;
    let transposed = spec(&format!(r#"{{"op":"conv_transpose2d",{mid},"kernel":1}}"#));
    let three = spec(&format!(r#"{{"op":"conv2d",{mid},"kernel":3,"padding":1}}"#));
    assert!(refused(&transposed, &dw_oracle));
    assert!(refused(&three, &dw_oracle));
    let sampled =
        Oracle::of_planes(d.spec(), &x, d.weight(), d.bias(), &[(0, 0)]).expect("sampled");
    assert!(refused(p.spec(), &sampled));
}

fn dsc_spec(
    c: usize,
    size: [usize; 2],
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    n: usize,
) -> ValidSpec {
    dsc_spec_padded(c, size, k, s, [p; 4], d, n)
}

/// A depthwise spec with padding `[top, left, bottom, right]`.
fn dsc_spec_padded(
    c: usize,
    size: [usize; 2],
    k: usize,
    s: usize,
    p: [usize; 4],
    d: usize,
    n: usize,
) -> ValidSpec {
    spec(&format!(
        r#"{{"op":"conv2d","batch":{n},"in_channels":{c},"out_channels":{c},"height":{},"width":{},
            "kernel":{k},"stride":{s},"padding":{p:?},"dilation":{d},"groups":{c}}}"#,
        size[0], size[1]
    ))
}

#[test]
fn fused_dsc_matches_the_unfused_pair_on_mobilenet_shapes() {
    let compiler = Compiler::host().expect("host");
    let acts = [Activation::Relu6, Activation::None];
    for (c, hw, s, cout) in [(144, 56, 1, 24), (144, 56, 2, 32), (32, 112, 1, 16), (960, 7, 1, 160)]
    {
        let dw = dsc_spec(c, [hw, hw], 3, s, 1, 1, 1);
        let block = Dsc::random(&dw, cout, acts, c as u64).expect("block");
        let x = random_tensor(7, dw.input_len());
        let mut fused = vec![f32::NAN; block.pointwise().spec().output_len()];
        let mut unfused = fused.clone();
        block
            .prepare(DscMode::Fused, Some(&compiler), 1)
            .expect("fused")
            .run(&x, &mut fused)
            .expect("run");
        block
            .prepare(DscMode::Unfused, Some(&compiler), 1)
            .expect("unfused")
            .run(&x, &mut unfused)
            .expect("run");
        let what = format!("dsc {dw} → {cout}");
        check_dsc(&block, &x, &fused, &what);
        check_dsc(&block, &x, &unfused, &what);
        let dev = compare(&fused, &unfused);
        assert!(dev.max_rel <= RELATIVE, "{what}: fused vs unfused {dev:?}");
        // Auto keeps one of the two (whichever measured faster here), and
        // it computes the block.
        let auto = block.prepare(DscMode::Auto, Some(&compiler), 1).expect("auto");
        let mut y = vec![f32::NAN; block.pointwise().spec().output_len()];
        auto.run(&x, &mut y).expect("run");
        check_dsc(&block, &x, &y, &what);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random blocks and random legal schedules: channels and output
    /// channels off multiples of 4, every kernel to 5, strides, dilation,
    /// asymmetric padding, batch 2, every activation, threads.
    #[test]
    fn fused_dsc_matches_the_reference(
        (c, cout, k, s, d) in (1usize..=13, 1usize..=30, 1usize..=5, 1usize..=3, 1usize..=2),
        (h, w, p, n) in (1usize..=9, 1usize..=19, [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2], 1usize..=2),
        (a0, a1) in (0usize..4, 0usize..4),
        (band_rows, dw_rows, dw_vectors, pw_vectors, pw_outputs, unroll, threads)
            in (1usize..=5, 1usize..=3, 1usize..=4, 1usize..=3, 1usize..=4, 1usize..=4, 1usize..=3),
    ) {
        let acts = [Activation::None, Activation::Relu, Activation::Relu6,
                    Activation::LeakyRelu { negative_slope: 0.1 }];
        let extent = d * (k - 1) + 1;
        let h = h + extent.saturating_sub(p[0] + p[2]);
        let w = w + extent.saturating_sub(p[1] + p[3]);
        let dw = dsc_spec_padded(c, [h, w], k, s, p, d, n);
        let block = Dsc::random(&dw, cout, [acts[a0], acts[a1]], (c * 31 + cout) as u64).expect("block");
        let schedule = DscSchedule { band_rows, dw_rows, dw_vectors, pw_vectors, pw_outputs, pw_unroll: unroll, threads };
        let compiler = Compiler::host().expect("host");
        let kernel = convjit::blocks::dsc::DscKernel::compile(&compiler, &block, &schedule).expect("compile");
        let x = random_tensor(k as u64, dw.input_len());
        let mut y = vec![f32::NAN; block.pointwise().spec().output_len()];
        kernel.run(&x, &mut y).expect("run");
        check_dsc(&block, &x, &y, &format!("{dw} → {cout} with {schedule:?}"));
        // Runs again on reused buffers.
        let mut again = vec![f32::NAN; y.len()];
        kernel.run(&x, &mut again).expect("run");
        prop_assert_eq!(compare(&again, &y).max_abs, 0.0);
    }
}

/// A depthwise kernel past the fused kernel's unrolled taps: `fused` runs
/// the block as its two kernels (which loop over the taps), and compiling
/// the fused kernel itself is refused, not a blow-up.
#[test]
fn a_dsc_block_past_the_unroll_limit_runs_unfused() {
    let compiler = Compiler::host().expect("host");
    let dw = dsc_spec(5, [14, 13], 9, 1, 4, 1, 2);
    let block = Dsc::random(&dw, 6, [Activation::Relu6, Activation::None], 4).expect("block");
    let prepared = block.prepare(DscMode::Fused, Some(&compiler), 2).expect("prepares");
    assert_eq!(prepared.mode(), DscMode::Unfused);
    let x = random_tensor(3, dw.input_len());
    let mut y = vec![f32::NAN; block.pointwise().spec().output_len()];
    prepared.run(&x, &mut y).expect("run");
    check_dsc(&block, &x, &y, &format!("{dw}"));
    let schedule = DscSchedule::choose(block.depthwise().spec(), block.pointwise().spec(), 1);
    let refused = convjit::blocks::dsc::DscKernel::compile(&compiler, &block, &schedule);
    let Err(e) = refused else { panic!("a 9×9 fused kernel compiled") };
    assert!(e.to_string().contains("unfused"), "{e}");
}

/// A knob value at or past one of `DscSchedule::legal`'s bounds: small
/// values, the bounds and one past them, and values that overflow any
/// product (2^32, 2^63, 2^64 − 1).
fn any_knob() -> impl Strategy<Value = usize> + Clone {
    let edges = vec![
        14,
        15,
        256,
        257,
        convjit::schedule::MAX_KNOB,
        convjit::schedule::MAX_KNOB + 1,
        1 << 32,
        1 << 63,
        usize::MAX,
    ];
    prop_oneof![12 => 1usize..=3, 1 => 0usize..=16, 1 => prop::sample::select(edges)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any value of any knob of the fused kernel's schedule: `legal`
    /// refuses it naming a field, or the kernel compiles and matches the
    /// reference. Never a panic (`dw_vectors · dw_rows` and `pw_outputs ·
    /// pw_vectors` once wrapped past the accumulator limit).
    #[test]
    fn any_dsc_knob_value_is_refused_or_computes_the_block(
        (band_rows, dw_rows, dw_vectors, pw_vectors) in (any_knob(), any_knob(), any_knob(), any_knob()),
        (pw_outputs, pw_unroll, threads) in (any_knob(), any_knob(), any_knob()),
        (c, cout, s) in (1usize..=6, 1usize..=9, 1usize..=2),
    ) {
        let dw = dsc_spec(c, [7, 10], 3, s, 1, 1, 1);
        let block = Dsc::random(&dw, cout, [Activation::Relu, Activation::None], 5).expect("block");
        let schedule =
            DscSchedule { band_rows, dw_rows, dw_vectors, pw_vectors, pw_outputs, pw_unroll, threads };
        let compiler = Compiler::host().expect("host");
        match convjit::blocks::dsc::DscKernel::compile(&compiler, &block, &schedule) {
            Ok(kernel) => {
                prop_assert!(schedule.legal().is_ok());
                let x = random_tensor(3, dw.input_len());
                let mut y = vec![f32::NAN; block.pointwise().spec().output_len()];
                kernel.run(&x, &mut y).expect("run");
                check_dsc(&block, &x, &y, &format!("{dw} → {cout} with {schedule:?}"));
            }
            Err(e) => prop_assert!(matches!(e, convjit::Error::InvalidSchedule { .. }), "{e}"),
        }
    }
}

/// The knob values whose products wrapped: `dw_rows` or `pw_outputs` of
/// 2^63 times 2 is 0 in 64 bits, within the accumulator limit; each is now
/// refused naming its field.
#[test]
fn bug_overflowing_dsc_knobs_are_refused() {
    let dw = dsc_spec(4, [6, 6], 3, 1, 1, 1, 1);
    let block = Dsc::random(&dw, 3, [Activation::Relu, Activation::None], 1).expect("block");
    let base = DscSchedule::choose(block.depthwise().spec(), block.pointwise().spec(), 1);
    let half = 1usize << 63;
    let compiler = Compiler::host().expect("host");
    for (field, schedule) in [
        ("dw_rows", DscSchedule { dw_rows: half, dw_vectors: 2, ..base }),
        ("dw_vectors", DscSchedule { dw_rows: 2, dw_vectors: half, ..base }),
        ("pw_outputs", DscSchedule { pw_outputs: half, pw_vectors: 2, ..base }),
        ("band_rows", DscSchedule { band_rows: usize::MAX, ..base }),
    ] {
        match convjit::blocks::dsc::DscKernel::compile(&compiler, &block, &schedule) {
            Err(convjit::Error::InvalidSchedule { field: f, .. }) => assert_eq!(f, field),
            Err(e) => panic!("{schedule:?}: {e}"),
            Ok(_) => panic!("{schedule:?} compiled"),
        }
    }
}

/// The case proptest shrank a failure of an earlier fused kernel to: a
/// stride-2 row with no padding whose column phases are exactly as long
/// as the image row (the plan once skipped its copy).
#[test]
fn fused_dsc_stride_2_unpadded_row() {
    let compiler = Compiler::host().expect("host");
    for (c, width) in [(1, 18), (3, 15), (5, 19)] {
        let dw = dsc_spec(c, [4, width], 3, 2, 0, 1, 1);
        let block = Dsc::random(&dw, 2, [Activation::Relu, Activation::None], 3).expect("block");
        let x = random_tensor(9, dw.input_len());
        let mut y = vec![f32::NAN; block.pointwise().spec().output_len()];
        block
            .prepare(DscMode::Fused, Some(&compiler), 1)
            .expect("fused")
            .run(&x, &mut y)
            .expect("run");
        check_dsc(&block, &x, &y, &format!("{dw}"));
    }
}

#[test]
fn dsc_refuses_what_is_not_one() {
    let dw = dsc_spec(8, [6, 6], 3, 1, 1, 1, 1);
    let grouped = spec(
        r#"{"op":"conv2d","in_channels":8,"out_channels":8,"height":6,"width":6,"kernel":3,"padding":1,"groups":4}"#,
    );
    let pw =
        spec(r#"{"op":"conv2d","in_channels":8,"out_channels":4,"height":6,"width":6,"kernel":1}"#);
    let pw3 = spec(
        r#"{"op":"conv2d","in_channels":8,"out_channels":4,"height":6,"width":6,"kernel":3,"padding":1}"#,
    );
    let pw_wrong =
        spec(r#"{"op":"conv2d","in_channels":8,"out_channels":4,"height":5,"width":6,"kernel":1}"#);
    let conv = |s: &ValidSpec| Conv::random(s.clone(), 1).expect("random conv");
    assert!(Dsc::new(conv(&grouped), conv(&pw)).unwrap_err().to_string().contains("groups"));
    assert!(Dsc::new(conv(&dw), conv(&pw3)).unwrap_err().to_string().contains("1×1"));
    assert!(Dsc::new(conv(&dw), conv(&pw_wrong)).unwrap_err().to_string().contains("takes"));
    let block = Dsc::new(conv(&dw), conv(&pw)).expect("block");
    let prepared = block.prepare(DscMode::Fused, None, 1).expect("fused");
    let mut y = vec![0.0; 4 * 36];
    assert!(prepared.run(&[0.0; 10], &mut y).is_err());
    assert!(prepared.run(&vec![0.0; 8 * 36], &mut [0.0; 3]).is_err());
    let bad = DscSchedule { pw_vectors: 4, ..DscSchedule::choose(&dw, &pw, 1) };
    let compiler = Compiler::host().expect("host");
    let refused = convjit::blocks::dsc::DscKernel::compile(&compiler, &block, &bad);
    assert!(refused.err().expect("refused").to_string().contains("pw_vectors"));
}
