//! Non-finite weights and inputs, with padding: every engine agrees with the
//! reference. The semantics (docs/correctness.md) is that a tap meeting the
//! padding, or for a transposed conv no input pixel, is not multiplied, so
//! an infinite or NaN weight there leaves the output finite; engines that
//! multiply the zeros of a padded copy redo those outputs exactly.

mod common;

use common::{SPECIALS, check_engine, random_tensor, small_spec, spec};
use convjit::blocks::{Conv, Dsc, DscMode};
use convjit::schedule::{self, Schedule, Strategy, Tile};
use convjit::{Activation, Compiler, Engine, ValidSpec, reference};
use proptest::prelude::*;

/// Runs every engine (and the JIT with each strategy legal for `spec`) on
/// `x`, `w`, `b` and asserts that each agrees with the reference.
fn every_engine_agrees(spec: &ValidSpec, x: &[f32], w: &[f32], b: Option<&[f32]>) {
    let oracle = reference::Oracle::new(spec, x, w, b).unwrap();
    let verify = |what: &str, y: &[f32]| {
        let verdict = oracle.verify(y).unwrap();
        assert!(verdict.passed(), "{what} on {spec}: {verdict:?}");
    };
    for &engine in Engine::ALL {
        for threads in [1, 2] {
            let layer = engine.prepare_threaded(spec, w, b, threads).unwrap();
            let mut y = vec![12345.0; spec.output_len()];
            layer.run(x, &mut y).unwrap();
            let what = format!("{engine} on {threads} threads");
            let schedule = layer.schedule();
            if schedule.is_some_and(|s| s.winograd.is_some()) {
                let oracle = reference::Oracle::for_schedule(spec, schedule.as_ref(), x, w, b);
                let verdict = oracle.unwrap().verify(&y).unwrap();
                assert!(verdict.passed(), "{what} on {spec}: {verdict:?}");
                continue;
            }
            verify(&what, &y);
        }
    }
    let compiler = Compiler::host().unwrap();
    let heuristic = schedule::choose(spec);
    for strategy in [Strategy::Direct, Strategy::Depthwise, Strategy::Width] {
        let tile = heuristic.tile();
        let algorithm = match strategy {
            Strategy::Width => {
                let tile = Tile { oc_vectors: 1, pixel_tile: 8, ..tile };
                common::algorithm(strategy, tile, heuristic.reduction_unroll(), false)
            }
            Strategy::Direct => common::algorithm(strategy, tile, 1, heuristic.interleave()),
            Strategy::Depthwise => common::algorithm(strategy, tile, 1, false),
        };
        let s = Schedule { algorithm, ..heuristic };
        if s.legal(spec).is_err() {
            continue;
        }
        let kernel = compiler.compile_with(spec, &s).unwrap();
        let packed = kernel.pack(w, b).unwrap();
        let mut y = vec![12345.0; spec.output_len()];
        kernel.run(x, &packed, &mut y).unwrap();
        verify(&format!("jit {strategy:?}"), &y);
    }
}

fn tensors(spec: &ValidSpec, seed: u64) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let x = random_tensor(seed, spec.input_len());
    let w = random_tensor(seed ^ 1, spec.weight_len());
    let b = spec.has_bias().then(|| random_tensor(seed ^ 2, spec.out_channels()));
    (x, w, b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random specs of both ops (padding, strides, dilation, groups), with
    /// ±∞ and NaN at random weights and inputs.
    #[test]
    fn engines_agree_on_nonfinite_weights_and_inputs(
        spec in small_spec(),
        seed in any::<u64>(),
        weights in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3), 1..4),
        inputs in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3), 0..3),
    ) {
        let (mut x, mut w, b) = tensors(&spec, seed);
        common::poison(&mut w, &weights);
        common::poison(&mut x, &inputs);
        every_engine_agrees(&spec, &x, &w, b.as_deref());
    }
}

/// The case that showed the disagreement: an infinite weight on the first
/// tap of a padded 3×3 conv. At the top-left output that tap meets the
/// padding, so the output there is finite.
#[test]
fn an_infinite_weight_over_padding_leaves_the_border_finite() {
    let spec = spec(
        r#"{"op":"conv2d","in_channels":3,"out_channels":8,"height":9,"width":10,"kernel":3,"padding":1}"#,
    );
    let (x, mut w, b) = tensors(&spec, 5);
    w[0] = f32::INFINITY; // output channel 0, input channel 0, tap (0, 0)
    w[3 * 9 * 5 + 8] = f32::NAN; // output channel 5, tap (2, 2)
    let expected = reference::conv(&spec, &x, &w, b.as_deref()).unwrap();
    assert!(expected[0].is_finite(), "the tap at (0, 0) meets the padding");
    assert!(expected[10 + 1].is_infinite(), "inside, it meets a real pixel");
    every_engine_agrees(&spec, &x, &w, b.as_deref());
}

/// The sum epilogue with an infinite weight over padding: the border's
/// outputs, recomputed after the run, still add what the output held.
#[test]
fn the_sum_epilogue_recomputes_the_border_with_its_residual() {
    let json = r#"{"op":"conv2d","in_channels":3,"out_channels":8,"height":9,"width":10,"kernel":3,"padding":1"#;
    let plain = spec(&format!("{json}}}"));
    let activated = spec(&format!(r#"{json},"activation":"relu"}}"#));
    let (x, mut w, b) = tensors(&plain, 5);
    w[0] = f32::INFINITY;
    let residual = random_tensor(6, plain.output_len());
    let conv = reference::conv(&plain, &x, &w, b.as_deref()).unwrap();
    let compiler = Compiler::host().unwrap();
    let kernel = compiler
        .compile_epilogue(&activated, &schedule::choose(&activated), convjit::Epilogue::Sum)
        .unwrap();
    let mut y = residual.clone();
    kernel.run(&x, &kernel.pack(&w, b.as_deref()).unwrap(), &mut y).unwrap();
    assert!(y[0].is_finite(), "the tap at (0, 0) meets the padding");
    let expected: Vec<f32> =
        conv.iter().zip(&residual).map(|(&c, &r)| Activation::Relu.apply_f32(c + r)).collect();
    common::check("sum epilogue", &plain.output_shape(), &y, &expected, 1e-5);
}

/// Transposed convs: a tap whose input lies outside the image (the JIT's
/// phases read the copy's padding there).
#[test]
fn transposed_convs_with_nonfinite_weights() {
    for json in [
        r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":3,"height":5,"width":4,"kernel":3}"#,
        r#"{"op":"conv_transpose2d","in_channels":4,"out_channels":4,"height":4,"width":4,"kernel":4,"stride":2,"padding":1,"groups":2}"#,
        r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":2,"height":3,"width":3,"kernel":3,"stride":3,"dilation":2,"activation":"relu"}"#,
    ] {
        let spec = spec(json);
        for (i, special) in SPECIALS.into_iter().enumerate() {
            let (x, mut w, b) = tensors(&spec, i as u64);
            w[i] = special;
            let last = w.len() - 1 - i;
            w[last] = special;
            every_engine_agrees(&spec, &x, &w, b.as_deref());
        }
    }
}

/// A depthwise-separable block whose depthwise weights hold an infinity
/// runs unfused, whatever mode was asked, and agrees with the reference.
#[test]
fn a_dsc_block_with_a_nonfinite_depthwise_weight() {
    let dw = spec(
        r#"{"op":"conv2d","in_channels":6,"out_channels":6,"height":8,"width":9,"kernel":3,"padding":1,"groups":6}"#,
    );
    let pw =
        spec(r#"{"op":"conv2d","in_channels":6,"out_channels":5,"height":8,"width":9,"kernel":1}"#);
    let mut weight = random_tensor(4, dw.weight_len());
    weight[0] = f32::INFINITY;
    let depthwise = Conv::new(dw.clone(), weight, Some(random_tensor(5, 6))).unwrap();
    let depthwise = depthwise.with_activation(Activation::Relu6).unwrap();
    let pointwise = Conv::random(pw, 6).unwrap();
    let block = Dsc::new(depthwise, pointwise).unwrap();
    let prepared = block.prepare(DscMode::Fused, None, 1).unwrap();
    assert_eq!(prepared.mode(), DscMode::Unfused);
    // Auto does not try the fused kernel it cannot run.
    assert_eq!(block.prepare(DscMode::Auto, None, 1).unwrap().mode(), DscMode::Unfused);
    let x = random_tensor(7, dw.input_len());
    let mut y = vec![f32::NAN; block.pointwise().spec().output_len()];
    prepared.run(&x, &mut y).unwrap();
    let expected = block.reference(&x).unwrap();
    common::check("dsc", &block.pointwise().spec().output_shape(), &y, &expected, 1e-5);
}

/// Finite weights: the engines still match (they take their own path; the
/// border is redone only when a weight is not finite).
#[test]
fn finite_weights_still_match() {
    let spec = spec(
        r#"{"op":"conv2d","in_channels":3,"out_channels":4,"height":7,"width":7,"kernel":3,"padding":2,"dilation":2}"#,
    );
    for &engine in Engine::ALL {
        check_engine(engine, 1, &spec, 3);
    }
}
