//! Winograd kernels ([`convjit::schedule::Winograd`]) against the
//! reference: random conv2d layers of square kernels, of 1-D ones (1 × r
//! and r × 1) and of rectangles, stride 1 (groups,
//! batch, asymmetric padding 0–2, odd sizes, every activation), every
//! output tile the transforms are built for, panels that cut tile rows and
//! images, the products' tiles and the transforms on every ISA the host
//! has, one and two threads. Each output is held to the Winograd bound
//! (`Oracle::for_schedule`, docs/correctness.md) and, on this data, to the
//! tolerance users hold a convolution to.

mod common;

use common::{build_spec, check_kernel_on, random_tensor};
use convjit::schedule::{self, Isa, Run, Schedule, Winograd};
use convjit::{Compiler, ValidSpec, reference};
use proptest::prelude::*;

/// A Winograd schedule for `spec`: its batched products on `isa` as
/// `schedule::winograd_with` schedules them, or as the heuristic schedules
/// any layer of their shape (`direct`).
fn winograd(
    spec: &ValidSpec,
    output_tile: usize,
    panel: usize,
    isa: Isa,
    direct: bool,
) -> Schedule {
    let config = Winograd { output_tile, panel };
    let gemm = config.gemm(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let products = Schedule { winograd: Some(config), ..schedule::choose_for(&gemm, 1, isa) };
    match direct {
        true => products,
        false => schedule::winograd_with(spec, config, 1, isa).unwrap_or(products),
    }
}

/// The output tiles F(m, r) is built for with a kernel of `[r_h, r_w]`
/// taps (`r` the larger).
fn tiles(kernel: [usize; 2]) -> Vec<usize> {
    let r = kernel[0].max(kernel[1]);
    (2..=convjit::algorithm::winograd::MAX_ALPHA + 1 - r).collect()
}

fn layer() -> impl Strategy<Value = ValidSpec> {
    let kernel = prop_oneof![
        4 => Just([3i64, 3]),
        1 => Just([2, 2]),
        1 => Just([5, 5]),
        2 => Just([1, 3]),
        2 => Just([3, 1]),
        1 => Just([1, 7]),
        1 => Just([7, 1]),
        1 => Just([3, 5]),
        1 => Just([5, 3]),
        1 => Just([2, 1]),
    ];
    (
        (1i64..=2, 1i64..=2, 1i64..=6, 1i64..=9),
        kernel,
        ([0i64..=2, 0i64..=2, 0i64..=2, 0i64..=2], [0i64..=9, 0i64..=9]),
        (any::<bool>(), 0usize..5),
    )
        .prop_filter_map("a valid layer", |((batch, groups, cig, cog), k, (p, extra), act)| {
            let shape = (false, batch, groups, cig, cog);
            build_spec(shape, (k, [1, 1], [1, 1]), (p, extra, [0, 0]), act)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 224, ..ProptestConfig::default() })]

    #[test]
    fn winograd_kernels_match_the_reference(
        spec in layer(),
        tile in any::<prop::sample::Index>(),
        panel in 1usize..=80,
        isa in any::<prop::sample::Index>(),
        direct in any::<bool>(),
        threads in 1usize..=2,
        seed in any::<u64>(),
    ) {
        let tiles = tiles(spec.kernel());
        let m = tiles[tile.index(tiles.len())];
        // Every ISA the host has, for the products and the transforms.
        let isas: Vec<Isa> = Isa::available().collect();
        let isa = isas[isa.index(isas.len())];
        let mut schedule = winograd(&spec, m, panel, isa, direct);
        schedule.run = Run::threads(threads);
        check_kernel_on(isa, &spec, &schedule, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// ±∞ and NaN at random inputs and weights (none, some or both): the
    /// outputs the transforms leave non-finite are recomputed directly, so
    /// every NaN, infinity and finite value is where the direct sum puts
    /// it (a tile no longer spreads one input's NaN, and a padded tap of
    /// an infinite weight multiplies nothing).
    #[test]
    fn nonfinite_values_give_the_direct_sums(
        spec in layer(),
        tile in any::<prop::sample::Index>(),
        panel in 1usize..=80,
        threads in 1usize..=2,
        seed in any::<u64>(),
        weights in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3), 0..3),
        inputs in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3), 0..4),
    ) {
        let tiles = tiles(spec.kernel());
        let m = tiles[tile.index(tiles.len())];
        let mut schedule = winograd(&spec, m, panel, Isa::host(), false);
        schedule.run = Run::threads(threads);
        let mut x = random_tensor(seed, spec.input_len());
        let mut w = random_tensor(seed ^ 1, spec.weight_len());
        let b = spec.has_bias().then(|| random_tensor(seed ^ 2, spec.out_channels()));
        common::poison(&mut w, &weights);
        common::poison(&mut x, &inputs);
        let kernel = Compiler::host().unwrap().compile_with(&spec, &schedule).unwrap();
        let packed = kernel.pack(&w, b.as_deref()).unwrap();
        let mut y = vec![12345.0; spec.output_len()];
        kernel.run(&x, &packed, &mut y).unwrap();
        let oracle = reference::Oracle::for_schedule(&spec, Some(&schedule), &x, &w, b.as_deref());
        let verdict = oracle.unwrap().verify(&y).unwrap();
        prop_assert!(verdict.passed(), "{spec} with {schedule:?}: {verdict:?}");
    }
}

/// Users hold a convolution to `max|y − ref| ≤ 3e-5 · √R · (1 + max|ref|)`
/// (`R` = in_channels/groups × taps): every variant stays well inside it
/// (below a quarter) on the data of the tests, at ResNet-like depths.
#[test]
fn every_variant_is_well_inside_the_users_tolerance() {
    let compiler = Compiler::host().unwrap();
    let kernels = [([3, 3], 64), ([3, 3], 256), ([5, 5], 32), ([1, 3], 64), ([3, 1], 256)];
    for ([kh, kw], cig) in kernels.into_iter().chain([([1, 7], 128), ([7, 1], 128)]) {
        let spec = common::spec(&format!(
            r#"{{"op": "conv2d", "in_channels": {cig}, "out_channels": 16, "height": 13,
                "width": 11, "kernel": [{kh}, {kw}], "padding": [{}, {}]}}"#,
            kh / 2,
            kw / 2
        ));
        let x = random_tensor(1, spec.input_len());
        let w = random_tensor(2, spec.weight_len());
        let b = random_tensor(3, spec.out_channels());
        let expected = reference::conv(&spec, &x, &w, Some(&b)).unwrap();
        let largest = expected.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs()));
        let tolerance = 3e-5 * ((cig * kh * kw) as f64).sqrt() * (1.0 + largest);
        for m in tiles([kh, kw]) {
            let schedule = winograd(&spec, m, 37, Isa::host(), false);
            let kernel = compiler.compile_with(&spec, &schedule).unwrap();
            let packed = kernel.pack(&w, Some(&b)).unwrap();
            let mut y = vec![f32::NAN; spec.output_len()];
            kernel.run(&x, &packed, &mut y).unwrap();
            let error = y
                .iter()
                .zip(&expected)
                .fold(0.0f64, |a, (&y, &e)| a.max((f64::from(y) - f64::from(e)).abs()));
            assert!(
                error < tolerance / 4.0,
                "F({m}) of {kh}×{kw}, {cig} channels: {error:e} of {tolerance:e}"
            );
        }
    }
}

/// What Winograd refuses: other ops, strides, dilations, 1×1 kernels,
/// tiles past the transforms built; the error names the field.
#[test]
fn winograd_refuses_what_it_cannot_compute() {
    let refused = |json: &str, config: Winograd, field: &str| {
        let spec = common::spec(json);
        let s = Schedule { winograd: Some(config), ..schedule::choose(&spec) };
        match s.legal(&spec) {
            Err(convjit::Error::InvalidSchedule { field: f, .. }) => assert_eq!(f, field, "{json}"),
            other => panic!("{json}: {other:?}"),
        }
    };
    let f43 = Winograd { output_tile: 4, panel: 64 };
    let base = r#""in_channels": 4, "out_channels": 4, "height": 9, "width": 9"#;
    refused(&format!(r#"{{"op": "conv2d", {base}, "kernel": 3, "stride": 2}}"#), f43, "winograd");
    refused(&format!(r#"{{"op": "conv2d", {base}, "kernel": 3, "dilation": 2}}"#), f43, "winograd");
    refused(&format!(r#"{{"op": "conv2d", {base}, "kernel": 1}}"#), f43, "winograd");
    refused(&format!(r#"{{"op": "conv_transpose2d", {base}, "kernel": 3}}"#), f43, "winograd");
    let conv = format!(r#"{{"op": "conv2d", {base}, "kernel": 3}}"#);
    refused(&conv, Winograd { output_tile: 7, panel: 64 }, "output_tile");
    refused(&conv, Winograd { output_tile: 1, panel: 64 }, "output_tile");
    refused(&conv, Winograd { output_tile: 4, panel: 0 }, "panel");
    // A tile past every size, not an overflow.
    refused(&conv, Winograd { output_tile: usize::MAX, panel: 64 }, "output_tile");
    let eight = format!(r#"{{"op": "conv2d", {base}, "kernel": 8}}"#);
    refused(&eight, Winograd { output_tile: 2, panel: 64 }, "winograd");
    let line = format!(r#"{{"op": "conv2d", {base}, "kernel": [1, 8]}}"#);
    refused(&line, Winograd { output_tile: 2, panel: 64 }, "winograd");
    let seven = format!(r#"{{"op": "conv2d", {base}, "kernel": [7, 1]}}"#);
    refused(&seven, Winograd { output_tile: 3, panel: 64 }, "output_tile");
}

/// A schedule with Winograd reads and writes back as JSON, and a schedule
/// without one has no such field.
#[test]
fn winograd_schedules_round_trip_as_json() {
    let spec = common::spec(
        r#"{"op": "conv2d", "in_channels": 8, "out_channels": 8, "height": 9, "width": 9, "kernel": 3}"#,
    );
    let s = winograd(&spec, 4, 25, Isa::Sse, true);
    let json = s.to_json();
    assert!(json.contains(r#""winograd":{"output_tile":4,"panel":25}"#), "{json}");
    assert_eq!(Schedule::from_json(&json).unwrap(), s);
    assert!(!schedule::choose(&spec).to_json().contains("winograd"));
}

/// The sum epilogue on a Winograd schedule: the kernel refuses it; the JIT
/// engine runs the layer without its activation, then adds what the
/// output held and activates; the other engines refuse it.
#[test]
fn the_sum_epilogue_on_a_winograd_schedule_adds_after_the_kernel() {
    use convjit::source::ScheduleSource;
    struct Source(Schedule);
    impl ScheduleSource for Source {
        fn schedule(&self, _: &ValidSpec, _: usize) -> Option<Schedule> {
            Some(self.0)
        }
        fn describe(&self) -> String {
            "the test's schedule".into()
        }
    }
    let json = r#"{"op":"conv2d","in_channels":5,"out_channels":6,"height":9,"width":11,"kernel":3,"padding":1"#;
    let plain = common::spec(&format!("{json}}}"));
    let spec = common::spec(&format!(r#"{json},"activation":"relu6"}}"#));
    let schedule = winograd(&spec, 2, 64, Isa::host(), false);
    let compiler = Compiler::host().unwrap();
    let refused = compiler.compile_epilogue(&spec, &schedule, convjit::Epilogue::Sum);
    assert!(matches!(refused, Err(convjit::Error::Unsupported(_))));
    let compiler = compiler.with_source(std::sync::Arc::new(Source(schedule)));
    let x = common::random_tensor(1, spec.input_len());
    let w = common::random_tensor(2, spec.weight_len());
    let b = common::random_tensor(3, spec.out_channels());
    let residual = common::random_tensor(4, spec.output_len());
    let prepare = |engine: convjit::Engine| {
        engine.prepare_epilogue(Some(&compiler), &spec, &w, Some(&b), 1, convjit::Epilogue::Sum)
    };
    assert!(matches!(prepare(convjit::Engine::Naive), Err(convjit::Error::Unsupported(_))));
    let layer = prepare(convjit::Engine::Jit).unwrap();
    assert_eq!(layer.epilogue(), convjit::Epilogue::Sum);
    assert_eq!(layer.schedule(), Some(schedule));
    let mut y = residual.clone();
    layer.run(&x, &mut y).unwrap();
    let conv = reference::conv(&plain, &x, &w, Some(&b)).unwrap();
    let act = spec.activation();
    let expected: Vec<f32> =
        conv.iter().zip(&residual).map(|(&c, &r)| act.apply_f32(c + r)).collect();
    common::check("sum after winograd", &spec.output_shape(), &y, &expected, 1e-4);
}
