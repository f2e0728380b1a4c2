//! The baseline engines (naive loops, im2col + GEMM) against the reference:
//! random specs of every kind, every suite layer in miniature and a few at
//! full size, bad input, NaN, and reuse of the column buffer.

mod common;

use common::{any_spec, build_spec, check_engine, miniature, random_tensor, small_spec, spec};
use convjit::baseline::Im2col;
use convjit::{Engine, Error, Prepared, ValidSpec, suite};
use proptest::prelude::*;

/// Random 1×1 convolutions with stride 1 and no padding, where im2col
/// multiplies the input itself; dilation and groups vary.
fn pointwise_spec() -> impl Strategy<Value = ValidSpec> {
    (
        (1i64..=2, 1i64..=3, 1i64..=12, 1i64..=12),
        [1i64..=3, 1i64..=3],
        [1i64..=9, 1i64..=9],
        0usize..5,
    )
        .prop_filter_map("invalid spec", |((batch, groups, cig, cog), d, size, act)| {
            build_spec(
                (false, batch, groups, cig, cog),
                ([1, 1], [1, 1], d),
                ([0; 4], [size[0] - 1, size[1] - 1], [0, 0]),
                (act % 2 == 0, act),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// The naive loops match the reference on every kind of small layer.
    #[test]
    fn naive_matches_reference(spec in small_spec(), seed in any::<u64>()) {
        check_engine(Engine::Naive, 1, &spec, seed);
    }

    /// im2col + GEMM matches the reference on one thread and on two.
    #[test]
    fn im2col_matches_reference(spec in any_spec(), seed in any::<u64>(), threads in 1usize..=2) {
        check_engine(Engine::Im2col, threads, &spec, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Pointwise layers, where im2col skips the copy, in both baselines.
    #[test]
    fn pointwise_matches_reference(spec in pointwise_spec(), seed in any::<u64>(), threads in 1usize..=2) {
        check_engine(Engine::Naive, 1, &spec, seed);
        check_engine(Engine::Im2col, threads, &spec, seed);
    }
}

/// The suite's layers shrunk (same kernel, stride, padding, dilation and
/// groups; at most 8 channels per group, 20×20 pixels, batch 2): at full
/// size the f64 reference alone takes ~40 s to judge them in the test
/// profile.
#[test]
fn every_suite_layer_in_miniature() {
    for layer in suite::builtin() {
        let small = miniature(&layer, 8, 20);
        check_engine(Engine::Naive, 1, &small, 5);
        check_engine(Engine::Im2col, 1, &small, 6);
        check_engine(Engine::Im2col, 2, &small, 7);
    }
}

/// A few suite layers at full size, where the GEMM is large enough to block
/// and to split over threads: pointwise (the input is the column matrix),
/// grouped, depthwise strided, and transposed.
#[test]
fn im2col_on_full_size_suite_layers() {
    for name in ["resnet50_1x1", "resnext_g32_3x3", "mbv2_dw3x3_s2", "dcgan_tconv4x4s2"] {
        let layer = suite::builtin()
            .into_iter()
            .find(|l| l.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{name} is in the suite"));
        check_engine(Engine::Im2col, 2, &layer.validate().unwrap(), 8);
    }
}

#[test]
fn tiny_and_lopsided_layers() {
    for json in [
        r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":1,"width":1,"kernel":1}"#,
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":1,"width":1,"kernel":3,"padding":1}"#,
        r#"{"op":"conv2d","in_channels":4,"out_channels":6,"height":5,"width":4,"kernel":[7,6],"padding":1}"#,
        r#"{"op":"conv2d","in_channels":2,"out_channels":3,"height":1,"width":40,"kernel":[1,5],"stride":[1,3],"padding":[0,2,0,4]}"#,
        r#"{"op":"conv_transpose2d","in_channels":3,"out_channels":5,"height":1,"width":1,"kernel":3}"#,
        r#"{"op":"conv_transpose2d","in_channels":4,"out_channels":6,"height":5,"width":6,"kernel":3,"stride":3,"dilation":2,"output_padding":[2,1],"groups":2,"activation":"leaky_relu","negative_slope":0.3}"#,
        r#"{"op":"conv_transpose2d","in_channels":6,"out_channels":6,"height":4,"width":7,"kernel":[2,3],"stride":[1,2],"padding":[1,0,0,2],"groups":6,"bias":false}"#,
    ] {
        let spec = spec(json);
        check_engine(Engine::Naive, 1, &spec, 9);
        check_engine(Engine::Im2col, 1, &spec, 10);
        check_engine(Engine::Im2col, 2, &spec, 11);
    }
}

fn small() -> ValidSpec {
    spec(
        r#"{"op":"conv2d","in_channels":3,"out_channels":4,"height":5,"width":5,"kernel":3,"padding":1}"#,
    )
}

#[test]
fn wrong_lengths_and_thread_counts_are_refused() {
    let spec = small();
    let x = random_tensor(1, spec.input_len());
    let w = random_tensor(2, spec.weight_len());
    let b = random_tensor(3, spec.out_channels());
    assert!(matches!(Im2col::new(&spec, &w, Some(&b), 0), Err(Error::InvalidThreads(0))));
    for &engine in Engine::ALL {
        assert!(
            matches!(
                engine.prepare_threaded(&spec, &w, Some(&b), 0),
                Err(Error::InvalidThreads(0))
            ),
            "{engine}"
        );
        assert!(matches!(
            engine.prepare(&spec, &w[1..], Some(&b)),
            Err(Error::BufferLength { what: "weight", .. })
        ));
        assert!(matches!(engine.prepare(&spec, &w, None), Err(Error::Bias(_))));
        assert!(matches!(
            engine.prepare(&spec, &w, Some(&b[1..])),
            Err(Error::BufferLength { what: "bias", .. })
        ));
        let layer = engine.prepare_threaded(&spec, &w, Some(&b), 2).unwrap();
        let mut y = vec![0.0; spec.output_len()];
        for input in [&x[1..], &[x.as_slice(), &[0.0]].concat()[..]] {
            assert!(
                matches!(layer.run(input, &mut y), Err(Error::BufferLength { what: "input", .. })),
                "{engine}"
            );
        }
        for len in [spec.output_len() - 1, spec.output_len() + 1] {
            let mut y = vec![0.0; len];
            assert!(
                matches!(layer.run(&x, &mut y), Err(Error::BufferLength { what: "output", .. })),
                "{engine}"
            );
        }
    }
}

#[test]
fn thread_counts_are_reported() {
    let spec = small();
    let w = random_tensor(2, spec.weight_len());
    let b = random_tensor(3, spec.out_channels());
    for &engine in Engine::ALL {
        assert_eq!(engine.prepare(&spec, &w, Some(&b)).unwrap().threads(), 1, "{engine}");
        let threads = engine.prepare_threaded(&spec, &w, Some(&b), 2).unwrap().threads();
        let expected = if engine == Engine::Im2col {
            2.min(std::thread::available_parallelism().map_or(1, usize::from))
        } else {
            1
        };
        assert_eq!(threads, expected, "{engine}");
    }
}

#[test]
fn nan_and_infinity_propagate() {
    for act in ["none", "relu", "relu6", "leaky_relu"] {
        for json in [
            format!(
                r#"{{"op":"conv2d","in_channels":2,"out_channels":4,"height":6,"width":6,"kernel":3,"padding":1,"activation":"{act}"}}"#
            ),
            format!(
                r#"{{"op":"conv_transpose2d","in_channels":2,"out_channels":4,"height":4,"width":4,"kernel":3,"stride":2,"padding":1,"activation":"{act}"}}"#
            ),
        ] {
            let spec = spec(&json);
            let mut x = random_tensor(1, spec.input_len());
            x[7] = f32::NAN;
            x[20] = f32::INFINITY;
            let w = random_tensor(2, spec.weight_len());
            let b = random_tensor(3, spec.out_channels());
            for engine in [Engine::Naive, Engine::Im2col] {
                let layer = engine.prepare(&spec, &w, Some(&b)).unwrap();
                let mut y = vec![0.0; spec.output_len()];
                layer.run(&x, &mut y).unwrap();
                let verdict = convjit::reference::verify(&spec, &x, &w, Some(&b), &y).unwrap();
                assert!(verdict.passed(), "{engine} on {json}: {verdict:?}");
                assert!(y.iter().any(|v| v.is_nan()), "{engine} on {json}: NaN did not propagate");
            }
        }
    }
}

#[test]
fn im2col_reuses_its_columns_across_runs_and_threads() {
    // The column buffer is kept between runs: a second run on other data
    // must not see the first one's, and two runs at once must not share it.
    for json in [
        r#"{"op":"conv2d","batch":2,"in_channels":5,"out_channels":6,"height":7,"width":9,"kernel":3,"padding":[2,1,0,3]}"#,
        r#"{"op":"conv2d","in_channels":6,"out_channels":6,"height":7,"width":9,"kernel":3,"padding":1,"groups":6}"#,
        r#"{"op":"conv_transpose2d","batch":2,"in_channels":3,"out_channels":5,"height":4,"width":6,"kernel":4,"stride":2,"padding":1}"#,
    ] {
        let spec = spec(json);
        let w = random_tensor(1, spec.weight_len());
        let b = random_tensor(2, spec.out_channels());
        let layer = Im2col::new(&spec, &w, Some(&b), 1).unwrap();
        let run = |seed: u64| {
            let x = random_tensor(seed, spec.input_len());
            let mut y = vec![f32::NAN; spec.output_len()];
            layer.run(&x, &mut y).unwrap();
            let verdict = convjit::reference::verify(&spec, &x, &w, Some(&b), &y).unwrap();
            assert!(verdict.passed(), "{json}, run with seed {seed}: {verdict:?}");
        };
        run(3);
        run(4);
        std::thread::scope(|s| {
            for seed in 5..9 {
                s.spawn(move || run(seed));
            }
        });
    }
}

/// A legal layer whose im2col column matrix is 2048 · 1024 taps by 31746 ·
/// 32769 output pixels (8.7 PB): preparing it is refused naming the
/// matrix and its size, not an abort (nor an overflow in the length).
#[test]
fn a_column_matrix_past_the_memory_is_refused() {
    let spec = spec(
        r#"{"op":"conv2d","in_channels":2048,"out_channels":1,"height":1,"width":1,"kernel":[1024,1],"padding":16384,"bias":false}"#,
    );
    let weight = vec![0.5; spec.weight_len()];
    match Engine::Im2col.prepare(&spec, &weight, None) {
        Err(e @ Error::Allocation { .. }) => {
            let text = e.to_string();
            assert!(text.starts_with("cannot allocate the im2col column matrix: 8.7 PB"), "{text}");
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("an 8.7 PB column matrix was allocated"),
    }
    // Lengths past usize are refused as well.
    let e = convjit::alloc::zeroed_f64(usize::MAX, "a buffer").unwrap_err().to_string();
    assert!(e.starts_with("cannot allocate a buffer: 147.6 EB ("), "{e}");
}
