//! Helpers shared by the integration tests.
//!
//! Every comparison of two tensors goes through [`check`], which uses
//! `convjit::reference::compare` and, on failure, reports the worst element
//! with its NCHW coordinates.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use convjit::reference::compare;
use convjit::{ConvSpec, ValidSpec};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Asserts that `actual` matches `expected`: the normwise relative error of
/// `reference::compare` (largest |actual − expected| over the largest finite
/// |expected|) must not exceed `tolerance`. NaN must meet NaN and an infinity
/// the same infinity. A tolerance of 0 demands bit-for-bit equal values (up
/// to the sign of zero). `shape` only serves to name the worst element.
pub fn check(what: &str, shape: &[usize], actual: &[f32], expected: &[f32], tolerance: f64) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} elements, expected {} (shape {shape:?})",
        actual.len(),
        expected.len()
    );
    assert_eq!(
        shape.iter().product::<usize>(),
        expected.len(),
        "{what}: shape {shape:?} does not describe {} elements",
        expected.len()
    );
    let dev = compare(actual, expected);
    if dev.max_rel <= tolerance {
        return;
    }
    let worst = dev.worst.expect("a deviation above the tolerance has a worst element");
    panic!(
        "{what}: max relative error {:.3e} exceeds the tolerance {tolerance:.3e}; \
         worst element #{worst} at {:?} of shape {shape:?}: actual {:?}, expected {:?} \
         (|difference| {:.3e})",
        dev.max_rel,
        coordinates(shape, worst),
        actual[worst],
        expected[worst],
        dev.max_abs,
    );
}

/// The coordinates of the element at `index` of a C-order tensor of `shape`.
pub fn coordinates(shape: &[usize], mut index: usize) -> Vec<usize> {
    let mut coords = vec![0; shape.len()];
    for (axis, &extent) in shape.iter().enumerate().rev() {
        coords[axis] = index % extent;
        index /= extent;
    }
    coords
}

/// Parses and validates a spec that the test expects to be valid.
pub fn spec(json: &str) -> ValidSpec {
    let parsed = ConvSpec::from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    parsed.validate().unwrap_or_else(|e| panic!("{json}: {e}"))
}

/// `len` values uniform in [-1, 1), reproducible from `seed`.
pub fn random_tensor(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Random small valid specs of both ops: batch ≤ 2, ≤ 3 groups of ≤ 3
/// channels, kernels ≤ 4, stride and dilation ≤ 3, asymmetric padding ≤ 3,
/// output_padding where legal, inputs a few pixels beyond the smallest legal
/// size, any bias and activation. Small enough for brute force.
pub fn small_spec() -> impl proptest::strategy::Strategy<Value = ValidSpec> {
    use proptest::prelude::*;
    (
        (any::<bool>(), 1i64..=2, 1i64..=3, 1i64..=3, 1i64..=3),
        ([1i64..=4, 1i64..=4], [1i64..=3, 1i64..=3], [1i64..=3, 1i64..=3]),
        ([0i64..=3, 0i64..=3, 0i64..=3, 0i64..=3], [0i64..=5, 0i64..=5], [0i64..=2, 0i64..=2]),
        (any::<bool>(), 0usize..5),
    )
        .prop_filter_map("empty output", |(shape, geometry, borders, (bias, act))| {
            let (transposed, batch, groups, cig, cog) = shape;
            build_spec((transposed, batch, groups, cig, cog), geometry, borders, (bias, act))
        })
}

/// The spec a draw describes — (transposed, batch, groups, in/group,
/// out/group), (kernel, stride, dilation), (padding t/l/b/r, extra input
/// pixels beyond the smallest legal size, output_padding seed), (bias,
/// activation index) — or `None` when it is invalid (a transposed
/// conv cropped to nothing). Output padding is reduced to a legal value.
pub fn build_spec(
    (transposed, batch, groups, cig, cog): (bool, i64, i64, i64, i64),
    (k, s, d): ([i64; 2], [i64; 2], [i64; 2]),
    (p, extra, op): ([i64; 4], [i64; 2], [i64; 2]),
    (bias, act): (bool, usize),
) -> Option<ValidSpec> {
    use convjit::spec::{ActivationKind, PaddingSpec};
    let axis = |a: usize| {
        if transposed {
            1 + extra[a]
        } else {
            // The smallest input the dilated kernel fits in, padding counted.
            (d[a] * (k[a] - 1) + 1 - p[a] - p[a + 2]).max(1) + extra[a]
        }
    };
    let output_padding = if transposed {
        // Legal values are below the stride or below the dilation.
        [op[0] % s[0].max(d[0]), op[1] % s[1].max(d[1])]
    } else {
        [0, 0]
    };
    let (activation, negative_slope) = match act {
        0 => (ActivationKind::None, None),
        1 => (ActivationKind::Relu, None),
        2 => (ActivationKind::Relu6, None),
        3 => (ActivationKind::LeakyRelu, None),
        _ => (ActivationKind::LeakyRelu, Some(0.25)),
    };
    ConvSpec {
        name: None,
        op: if transposed { convjit::Op::ConvTranspose2d } else { convjit::Op::Conv2d },
        batch,
        in_channels: groups * cig,
        out_channels: groups * cog,
        height: axis(0),
        width: axis(1),
        kernel: k.into(),
        stride: s.into(),
        padding: PaddingSpec::List(p.to_vec()),
        dilation: d.into(),
        groups,
        output_padding: output_padding.into(),
        bias,
        activation,
        negative_slope,
    }
    .validate()
    .ok()
}

/// Compiles `spec` with `schedule`, runs it on random tensors drawn from
/// `seed`, and asserts that every element is within the error bound of
/// `convjit::reference::Oracle::for_schedule` (docs/correctness.md): the
/// reduction length's, or with Winograd its transforms'. One seed in four compiles the checked lowering (`Compiler::checked`),
/// whose every access is tested against its buffer's bounds: an access out
/// of bounds fails the run with `Error::CheckedAccess` instead of touching
/// memory, so the property tests of every strategy hunt for them too.
pub fn check_kernel(spec: &ValidSpec, schedule: &convjit::Schedule, seed: u64) {
    check_kernel_on(convjit::target::Isa::host(), spec, schedule, seed)
}

/// [`check_kernel`] with a compiler held to vectors of `isa` (its kernels,
/// and a Winograd kernel's transforms, use none wider).
pub fn check_kernel_on(
    isa: convjit::target::Isa,
    spec: &ValidSpec,
    schedule: &convjit::Schedule,
    seed: u64,
) {
    let compiler = convjit::Compiler::host().expect("host compiler");
    let compiler = compiler.with_vector_isa(isa).expect("an ISA the host has");
    let compiler = if seed.is_multiple_of(4) { compiler.checked() } else { compiler };
    let kernel = compiler
        .compile_with(spec, schedule)
        .unwrap_or_else(|e| panic!("{spec} with {schedule:?}: {e}"));
    let x = random_tensor(seed, spec.input_len());
    let w = random_tensor(seed ^ 0x9e37_79b9, spec.weight_len());
    let b = spec.has_bias().then(|| random_tensor(seed ^ 0x7f4a_7c15, spec.out_channels()));
    let packed = kernel.pack(&w, b.as_deref()).expect("pack");
    // Poison the output so that an element the kernel forgets to write fails.
    let mut y = vec![f32::NAN; spec.output_len()];
    kernel.run(&x, &packed, &mut y).expect("run");
    // A Winograd schedule is held to its transforms' bound.
    let oracle =
        convjit::reference::Oracle::for_schedule(spec, Some(schedule), &x, &w, b.as_deref());
    let verdict = oracle.and_then(|o| o.verify(&y)).expect("verify");
    if !verdict.passed() {
        let i = verdict.worst.expect("a failed verdict has a worst element");
        let expected = convjit::reference::conv(spec, &x, &w, b.as_deref()).expect("reference");
        panic!(
            "{spec} ({}) with {schedule:?}: element {i} at {:?} is {} but the reference says {} \
             ({:.2}× past the error bound)",
            spec.to_conv_spec().to_json(),
            coordinates(&spec.output_shape(), i),
            y[i],
            expected[i],
            verdict.worst_ratio
        );
    }
}

/// Prepares `spec` with `engine` on up to `threads` threads, runs it on
/// random tensors drawn from `seed`, and asserts that every element is
/// within the error bound of `Oracle::for_schedule` (the reduction
/// length's, or with a Winograd schedule its transforms').
pub fn check_engine(engine: convjit::Engine, threads: usize, spec: &ValidSpec, seed: u64) {
    let x = random_tensor(seed, spec.input_len());
    let w = random_tensor(seed ^ 0x9e37_79b9, spec.weight_len());
    let b = spec.has_bias().then(|| random_tensor(seed ^ 0x7f4a_7c15, spec.out_channels()));
    let layer = engine
        .prepare_threaded(spec, &w, b.as_deref(), threads)
        .unwrap_or_else(|e| panic!("{engine} on {spec}: {e}"));
    // Poison the output so that an element the engine forgets to write fails.
    let mut y = vec![f32::NAN; spec.output_len()];
    layer.run(&x, &mut y).expect("run");
    // The jit's schedule may compute through Winograd's transforms.
    let schedule = layer.schedule();
    let oracle =
        convjit::reference::Oracle::for_schedule(spec, schedule.as_ref(), &x, &w, b.as_deref());
    let verdict = oracle.and_then(|o| o.verify(&y)).expect("verify");
    if !verdict.passed() {
        let i = verdict.worst.expect("a failed verdict has a worst element");
        let expected = convjit::reference::conv(spec, &x, &w, b.as_deref()).expect("reference");
        panic!(
            "{engine} ({threads} threads) on {spec} ({}): element {i} at {:?} is {} but the \
             reference says {} ({:.2}× past the error bound)",
            spec.to_conv_spec().to_json(),
            coordinates(&spec.output_shape(), i),
            y[i],
            expected[i],
            verdict.worst_ratio
        );
    }
}

/// Random valid specs of every kind, sized so that channel tails, several
/// vector blocks (or GEMM register tiles), pixel tails and every phase of a
/// transposed conv occur.
pub fn any_spec() -> impl proptest::strategy::Strategy<Value = ValidSpec> {
    use proptest::prelude::*;
    (
        (any::<bool>(), 1i64..=2, 0usize..4, 1i64..=9, 1i64..=9),
        ([1i64..=5, 1i64..=5], [1i64..=3, 1i64..=3], [1i64..=3, 1i64..=3]),
        ([0i64..=3, 0i64..=3, 0i64..=3, 0i64..=3], [0i64..=13, 0i64..=13], [0i64..=2, 0i64..=2]),
        (any::<bool>(), 0usize..5),
    )
        .prop_filter_map(
            "invalid spec",
            |((transposed, batch, grouping, cig, cog), geometry, borders, output)| {
                // grouping: 0 dense, 1 two groups, 2 three groups, 3 depthwise.
                let (groups, cig) = match grouping {
                    0 => (1, cig),
                    1 => (2, cig),
                    2 => (3, cig),
                    _ => (cig + 1, 1),
                };
                build_spec((transposed, batch, groups, cig, cog), geometry, borders, output)
            },
        )
}

/// A suite layer in miniature: the same kernel, stride, padding, dilation,
/// groups and kind, with at most `channels` channels per group, `size`
/// pixels per side and 2 images.
pub fn miniature(layer: &ConvSpec, channels: i64, size: i64) -> ValidSpec {
    let full = layer.validate().expect("suite layers are valid");
    let mut small = layer.clone();
    let g = full.groups() as i64;
    small.in_channels = g * (full.in_per_group() as i64).min(channels);
    small.out_channels = g * (full.out_per_group() as i64).min(channels);
    small.height = layer.height.min(size);
    small.width = layer.width.min(size);
    small.batch = layer.batch.min(2);
    let small = small.validate().expect("the miniature is valid");
    assert_eq!(small.kind(), full.kind(), "{layer:?}");
    small
}

/// The names of the entries of a folder, sorted: what a failed command must
/// leave as it found.
pub fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `schedule` with its register tile `pixels` wide and `rows` high: the
/// direct and depthwise algorithms' tile (the width algorithm's is whole
/// vectors; a test that needs it says so).
pub fn with_tile(schedule: convjit::Schedule, pixels: usize, rows: usize) -> convjit::Schedule {
    use convjit::schedule::Algorithm;
    let mut s = schedule;
    match &mut s.algorithm {
        Algorithm::Direct(convjit::schedule::Direct { tile, .. })
        | Algorithm::Depthwise(convjit::schedule::Depthwise { tile }) => {
            tile.pixel_tile = pixels;
            tile.row_tile = rows;
        }
        Algorithm::Width(_) => panic!("the width algorithm's tile is whole vectors"),
    }
    s
}

/// `schedule` with its register tile `pixels` wide ([`with_tile`]).
pub fn with_pixel_tile(schedule: convjit::Schedule, pixels: usize) -> convjit::Schedule {
    with_tile(schedule, pixels, schedule.row_tile())
}

/// The algorithm of `family` with a register tile in the terms every family
/// shares (pixels, also for the width family, whose tile must then be its
/// channels by whole f32x4 vectors of pixels), as tests draw them.
pub fn algorithm(
    family: convjit::schedule::Strategy,
    tile: convjit::schedule::Tile,
    reduction_unroll: usize,
    nhwc: bool,
) -> convjit::schedule::Algorithm {
    use convjit::schedule::{Algorithm, Depthwise, Direct, Layout, Strategy, Width};
    use convjit::target::LANES;
    assert!(!nhwc || family == Strategy::Direct, "only the direct algorithm reads NHWC");
    match family {
        Strategy::Direct => Algorithm::Direct(Direct {
            tile,
            reduction_unroll,
            layout: if nhwc { Layout::Nhwc } else { Layout::Nchw },
            row_length: None,
            merged_columns: false,
        }),
        Strategy::Depthwise => {
            assert_eq!(reduction_unroll, 1, "the depthwise algorithm has no channel reduction");
            Algorithm::Depthwise(Depthwise { tile })
        }
        // The width tile's channels are `oc_vectors`, its vectors of
        // pixels counted in f32x4 vectors (whatever the ISA's lanes).
        Strategy::Width => {
            assert!(tile.pixel_tile.is_multiple_of(LANES), "{tile:?}");
            Algorithm::Width(Width {
                pixel_vectors: tile.pixel_tile / LANES,
                row_tile: tile.row_tile,
                reduction_unroll,
                channels: tile.oc_vectors,
                row_length: None,
                joined: false,
                image: false,
            })
        }
    }
}

/// ±∞ and NaN, the values [`poison`] places.
pub const SPECIALS: [f32; 3] = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN];

/// Places `SPECIALS[kind]` at each drawn position `(at, kind)` of `values`.
pub fn poison(values: &mut [f32], picks: &[(proptest::sample::Index, usize)]) {
    for (at, kind) in picks {
        values[at.index(values.len())] = SPECIALS[*kind];
    }
}
