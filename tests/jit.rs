//! The JIT against the reference: random specs of every kind with random
//! legal schedules, named regressions, every suite layer, and bad input.

mod common;

use common::{any_spec, check_kernel, random_tensor, spec};
use convjit::algorithm;
use convjit::geometry::{self, Geometry};
use convjit::schedule::{
    self, Algorithm, Depthwise, Direct, InputCopy, Layout, LoopNest, Run, Schedule, Split,
    Strategy as Family, Tile, Width,
};
use convjit::spec::ActivationKind;
use convjit::target::{Isa, LANES};
use convjit::{Compiler, Epilogue, Error, ValidSpec, suite};
use proptest::prelude::*;

/// The loop nest with rows outer or not, in column blocks when given
/// (which exist only with rows outer).
fn nest(rows_outer: bool, col_block: Option<usize>) -> LoopNest {
    match (rows_outer, col_block) {
        (false, _) => LoopNest::ChannelsOuter,
        (true, None) => LoopNest::RowsOuter,
        (true, Some(b)) => LoopNest::ColumnBlocks(b),
    }
}

/// A random schedule that is legal for `spec`.
fn any_schedule(spec: &ValidSpec) -> impl Strategy<Value = Schedule> + use<> {
    // Every algorithm of the registry that accepts the layer.
    // Each with each of its vector ISAs the host has: CI runs every
    // backend the machine has.
    let accepted: Vec<(Family, Isa)> = algorithm::accepting(spec)
        .flat_map(|f| {
            let isas = Isa::available().filter(move |i| f.isas().contains(i));
            isas.map(move |i| (f.strategy(), i))
        })
        .collect();
    let knobs = (0..accepted.len(), 1usize..=3, 1usize..=14, 1usize..=4, any::<bool>());
    let block = prop_oneof![Just(None), (1usize..=40).prop_map(Some)];
    let copy = prop_oneof![
        Just(InputCopy::Image),
        Just(InputCopy::Group),
        (1usize..=9).prop_map(InputCopy::Bands)
    ];
    (knobs, 1usize..=3, any::<bool>(), copy, block, any::<bool>(), 1usize..=4).prop_map(
        move |(
            (family, oc_vectors, tile, unroll, rows_outer),
            threads,
            split_rows,
            copy,
            col_block,
            interleave,
            rows,
        )| {
            let (strategy, isa) = accepted[family];
            let most = algorithm::isa_accumulators(isa, oc_vectors);
            let tile = match strategy {
                // Channels (more than one on the assembled ISAs) × vectors
                // of pixels × rows, as many as the registers hold.
                Family::Width => {
                    let m = if isa.is_assembled() { oc_vectors } else { 1 };
                    let (mut pv, mut rt) = (tile.min(14 / m).max(1), rows);
                    let fits = |pv: usize, rt: usize| {
                        m * pv * rt <= algorithm::isa_accumulators(isa, m.min(pv * rt))
                    };
                    while !fits(pv, rt) {
                        if rt > 1 { rt -= 1 } else { pv -= 1 }
                    }
                    Tile { oc_vectors: m, pixel_tile: LANES * pv, row_tile: rt }
                }
                _ => {
                    let pixel_tile = tile.min(most / oc_vectors);
                    // As many rows per tile as the accumulators allow, up
                    // to `rows`.
                    let row_tile = rows.min(most / (oc_vectors * pixel_tile)).max(1);
                    Tile { oc_vectors, pixel_tile, row_tile }
                }
            };
            // The depthwise algorithm has no reduction, only the direct one
            // an NHWC copy.
            let unroll = if strategy == Family::Depthwise { 1 } else { unroll };
            let nhwc = interleave && strategy == Family::Direct;
            let algorithm = common::algorithm(strategy, tile, unroll, nhwc);
            Schedule {
                winograd: None,
                isa,
                algorithm,
                loop_nest: nest(rows_outer, col_block),
                // A copy per group shares groups between threads, bands
                // share rows.
                run: Run {
                    threads,
                    split: match copy {
                        InputCopy::Image if split_rows => Split::Rows,
                        InputCopy::Image | InputCopy::Group => Split::Items,
                        InputCopy::Bands(_) => Split::Rows,
                    },
                },
                copy,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Every valid spec, every legal schedule: the JIT matches the reference.
    #[test]
    fn jit_matches_reference(
        (spec, schedule) in any_spec().prop_flat_map(|s| {
            let sched = any_schedule(&s);
            (Just(s), sched)
        }),
        seed in any::<u64>(),
    ) {
        prop_assert!(schedule.legal(&spec).is_ok(), "{schedule:?} illegal for {spec}");
        check_kernel(&spec, &schedule, seed);
    }

    /// The heuristic's schedule, for any thread count, is always legal and
    /// correct.
    #[test]
    fn heuristic_matches_reference(spec in any_spec(), threads in 1usize..=4, seed in any::<u64>()) {
        let schedule = schedule::choose_threaded(&spec, threads);
        prop_assert!(schedule.legal(&spec).is_ok());
        check_kernel(&spec, &schedule, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The sum epilogue, on every legal schedule: the kernel adds what
    /// the output held, then activates.
    #[test]
    fn sum_epilogue_adds_the_residual_before_the_activation(
        (spec, schedule) in any_spec().prop_flat_map(|s| {
            let sched = any_schedule(&s);
            (Just(s), sched)
        }),
        activation in 0usize..4,
        seed in any::<u64>(),
    ) {
        check_sum(&spec, &schedule, activation, seed);
    }

    /// The same on the heuristic's schedules, Winograd's among them (which
    /// have no sum epilogue: refused).
    #[test]
    fn sum_epilogue_on_the_heuristic_schedules(
        spec in any_spec(),
        threads in 1usize..=4,
        activation in 0usize..4,
        seed in any::<u64>(),
    ) {
        check_sum(&spec, &schedule::choose_threaded(&spec, threads), activation, seed);
    }

    /// The same on the tiles of the special forms: merged column phases,
    /// joined rows and the image's rows (the last two AVX-512 only).
    #[test]
    fn sum_epilogue_on_merged_phases_joined_and_image_rows(
        (spec, schedule) in prop_oneof![
            scheduled(merged_columns_spec(), merged_columns_schedule)
                .prop_map(|(spec, schedule)| (spec, Some(schedule))),
            scheduled(joinable_spec(), joined_schedule),
            scheduled(image_row_spec(), image_row_schedule),
        ],
        activation in 0usize..4,
        seed in any::<u64>(),
    ) {
        if let Some(schedule) = schedule.filter(|s| s.isa.on_host()) {
            check_sum(&spec, &schedule, activation, seed);
        }
    }
}

/// Checks the sum epilogue of `spec` with `schedule` and activation
/// number `activation` (none, ReLU, ReLU6, leaky): refused exactly where
/// it does not apply (a Winograd schedule, output pixels no tap reaches);
/// elsewhere equal to the same schedule's kernel without activation (its
/// outputs checked against the reference) plus the residual, activated.
/// The two kernels sum the same products in the same order, so the
/// outputs are compared as floats, not within a tolerance.
fn check_sum(spec: &ValidSpec, schedule: &Schedule, activation: usize, seed: u64) {
    let with = |kind: ActivationKind| {
        let mut conv = spec.to_conv_spec();
        conv.activation = kind;
        conv.negative_slope = (kind == ActivationKind::LeakyRelu).then_some(0.125);
        conv.validate().expect("the spec with another activation")
    };
    let kinds = [
        ActivationKind::None,
        ActivationKind::Relu,
        ActivationKind::Relu6,
        ActivationKind::LeakyRelu,
    ];
    let (plain, activated) = (with(ActivationKind::None), with(kinds[activation]));
    let compiler = Compiler::host().expect("host compiler");
    let compiler = if seed.is_multiple_of(4) { compiler.checked() } else { compiler };
    let summing = compiler.compile_epilogue(&activated, schedule, Epilogue::Sum);
    if schedule.winograd.is_some() || Geometry::of(spec).holes {
        assert!(matches!(summing, Err(Error::Unsupported(_))), "{spec} with {schedule:?}");
        return;
    }
    let summing = summing.unwrap_or_else(|e| panic!("{spec} with {schedule:?}: {e}"));
    assert_eq!(summing.epilogue(), Epilogue::Sum);
    let storing = compiler.compile_with(&plain, schedule).expect("the kernel without a sum");
    let x = random_tensor(seed, spec.input_len());
    let w = random_tensor(seed ^ 0x9e37_79b9, spec.weight_len());
    let b = spec.has_bias().then(|| random_tensor(seed ^ 0x7f4a_7c15, spec.out_channels()));
    let residual = random_tensor(seed ^ 0x5bd1_e995, spec.output_len());
    let mut conv = vec![f32::NAN; spec.output_len()];
    storing.run(&x, &storing.pack(&w, b.as_deref()).expect("pack"), &mut conv).expect("run");
    let oracle =
        convjit::reference::Oracle::for_schedule(&plain, Some(schedule), &x, &w, b.as_deref());
    assert!(oracle.and_then(|o| o.verify(&conv)).expect("verify").passed(), "{plain}");
    let mut y = residual.clone();
    summing.run(&x, &summing.pack(&w, b.as_deref()).expect("pack"), &mut y).expect("run");
    let act = activated.activation();
    for (i, (&got, (&c, &r))) in y.iter().zip(conv.iter().zip(&residual)).enumerate() {
        let want = act.apply_f32(c + r);
        assert!(
            got == want,
            "{spec} ({}) with {schedule:?}: element {i} at {:?} is {got}, expected {want} \
             ({c} + {r}, activated)",
            activated.to_conv_spec().to_json(),
            common::coordinates(&spec.output_shape(), i),
        );
    }
}

/// A 1×1 conv2d of stride 1 without padding, whose input and output
/// planes are the same pixels: the layers the width algorithm may compute
/// in rows of another length. Up to 3 groups of up to 40 channels (tails
/// of every tile the heuristic and the space take), planes of up to
/// 24 × 24 pixels, 1 or 2 images.
fn flat_spec() -> impl Strategy<Value = ValidSpec> {
    ((1i64..=2, 1i64..=3, 1i64..=40, 1i64..=40), [0i64..=23, 0i64..=23], (any::<bool>(), 0usize..5))
        .prop_filter_map("invalid spec", |((batch, groups, cig, cog), extra, output)| {
            let kernel = ([1, 1], [1, 1], [1, 1]);
            common::build_spec(
                (false, batch, groups, cig, cog),
                kernel,
                ([0; 4], extra, [0, 0]),
                output,
            )
        })
}

/// A legal width schedule for the flat `spec` on its planes cut into rows
/// of a length that divides them (any, the plane's own width and the
/// whole plane among them): any tile, channels and ISA, any loop nest,
/// copy and threads.
fn any_flat_schedule(spec: &ValidSpec) -> impl Strategy<Value = Schedule> + use<> {
    let pixels = spec.height() * spec.width();
    let lengths: Vec<usize> = (1..=pixels).filter(|l| pixels.is_multiple_of(*l)).collect();
    let spec = spec.clone();
    (any_schedule(&spec), prop::sample::select(lengths), 1usize..=14, 1usize..=3).prop_map(
        move |(mut schedule, len, channels, vectors)| {
            let isa = schedule.isa;
            let m = if isa.is_assembled() { channels } else { 1 };
            let fits = |v: usize| m * v <= algorithm::isa_accumulators(isa, m.min(v));
            let Some(pixel_vectors) = (1..=vectors).rev().find(|&v| fits(v)) else {
                return schedule;
            };
            let width = Width {
                pixel_vectors,
                row_tile: 1,
                reduction_unroll: schedule.reduction_unroll().min(spec.in_per_group()),
                channels: m,
                row_length: Some(len),
                joined: false,
                image: false,
            };
            let candidate = Schedule { algorithm: Algorithm::Width(width), ..schedule };
            if candidate.legal(&spec).is_ok() {
                schedule = candidate;
            }
            schedule
        },
    )
}

/// A k×1 conv2d of stride 1 without columns of padding (any kernel height
/// up to 7, row dilation and row padding), whose planes may be computed
/// each as one row. Up to 3 groups of up to 20 channels, 1 or 2 images.
fn flat_columns_spec() -> impl Strategy<Value = ValidSpec> {
    let shape = (1i64..=2, 1i64..=3, 1i64..=20, 1i64..=20);
    let rows = (1i64..=7, 1i64..=3, 0i64..=3, 0i64..=3);
    (shape, rows, [0i64..=12, 0i64..=20], (any::<bool>(), 0usize..5)).prop_filter_map(
        "invalid spec",
        |((batch, groups, cig, cog), (kh, dh, top, bottom), extra, output)| {
            common::build_spec(
                (false, batch, groups, cig, cog),
                ([kh, 1], [1, 1], [dh, 1]),
                ([top, 0, bottom, 0], extra, [0, 0]),
                output,
            )
        },
    )
}

/// A legal schedule for the flat-columns `spec` with its planes computed
/// each as one row (`row_length` = `H·W`), of the direct or the width
/// algorithm (any tile, ISA, loop nest, copy and threads), where one was
/// drawn that takes it; else the drawn schedule.
fn one_row_schedule(spec: &ValidSpec) -> impl Strategy<Value = Schedule> + use<> {
    let len = spec.height() * spec.width();
    let spec = spec.clone();
    any_schedule(&spec).prop_map(move |schedule| {
        let mut candidate = schedule;
        match &mut candidate.algorithm {
            Algorithm::Direct(d) => d.row_length = Some(len),
            Algorithm::Width(w) => {
                (w.row_length, w.joined, w.image) = (Some(len), false, false);
            }
            Algorithm::Depthwise(_) => {}
        }
        if candidate.legal(&spec).is_ok() { candidate } else { schedule }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// A flat layer computed on its planes cut into rows of any length
    /// that divides them (a vector's pixels then span the layer's rows)
    /// matches the reference, with every ISA, tile, loop nest, copy and
    /// thread count — and so does the heuristic's schedule for it.
    #[test]
    fn flat_planes_in_rows_of_any_length_match_reference(
        (spec, schedule) in scheduled(flat_spec(), any_flat_schedule),
        seed in any::<u64>(),
    ) {
        check_with_heuristic(&spec, &schedule, seed)?;
    }

    /// A k×1 layer computed on each plane as one row (its taps a row of
    /// pixels apart, a tile's pixels running on past an image row's end)
    /// matches the reference with the direct and width algorithms, every
    /// ISA, tile, loop nest, copy and thread count — and so does the
    /// heuristic's schedule for it.
    #[test]
    fn flat_columns_as_one_row_match_reference(
        (spec, schedule) in scheduled(flat_columns_spec(), one_row_schedule),
        seed in any::<u64>(),
    ) {
        check_with_heuristic(&spec, &schedule, seed)?;
    }
}

/// A conv_transpose2d whose kernel is as wide as its stride (2 to 4
/// columns) or twice as wide, so that one tile may compute its column
/// phases together: any kernel height, row stride and row dilation, row
/// padding, and now and then column padding or dilation (whose phases may
/// not merge); up to 3 groups of up to 20 channels, 1 or 2 images, output
/// padding, every activation.
fn merged_columns_spec() -> impl Strategy<Value = ValidSpec> {
    let shape = (1i64..=2, 1i64..=3, 1i64..=20, 1i64..=20);
    let rows = (1i64..=4, 1i64..=3, 1i64..=2, 0i64..=2, 0i64..=2);
    let pads = prop_oneof![6 => Just(0i64), 1 => 1i64..=2];
    let widths = prop_oneof![4 => Just(1i64), 1 => Just(2i64)];
    let cols = ((2i64..=4, widths), pads, prop_oneof![6 => Just(1i64), 1 => Just(2i64)]);
    let sizes = ([0i64..=12, 0i64..=20], [0i64..=3, 0i64..=3], (any::<bool>(), 0usize..5));
    (shape, rows, cols, sizes).prop_filter_map(
        "invalid spec",
        |(
            (batch, groups, cig, cog),
            (kh, sh, dh, top, bottom),
            ((sw, n), pad, dw),
            (extra, op, output),
        )| {
            common::build_spec(
                (true, batch, groups, cig, cog),
                ([kh, sw * n], [sh, sw], [dh, dw]),
                ([top, pad, bottom, pad], extra, op),
                output,
            )
        },
    )
}

/// A legal schedule for `spec` with its column phases merged (the direct
/// algorithm on an assembled ISA, any pixel tile of one row, unroll,
/// layout, loop nest, copy and threads), where one was drawn that takes
/// it; else the drawn schedule.
fn merged_columns_schedule(spec: &ValidSpec) -> impl Strategy<Value = Schedule> + use<> {
    let spec = spec.clone();
    let isas: Vec<Isa> = Isa::available().filter(|i| i.is_assembled()).collect();
    let isa = prop::sample::select(if isas.is_empty() { vec![Isa::Sse] } else { isas });
    let knobs = (isa, 1usize..=8, 1usize..=4, any::<bool>());
    (any_schedule(&spec), knobs).prop_map(move |(schedule, (isa, pixels, unroll, nhwc))| {
        let direct = Direct {
            tile: Tile { oc_vectors: 1, pixel_tile: pixels, row_tile: 1 },
            reduction_unroll: unroll.min(spec.in_per_group()),
            layout: if nhwc { Layout::Nhwc } else { Layout::Nchw },
            row_length: None,
            merged_columns: true,
        };
        let candidate = Schedule { isa, algorithm: Algorithm::Direct(direct), ..schedule };
        if candidate.legal(&spec).is_ok() { candidate } else { schedule }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A transposed conv whose column phases one tile computes together
    /// (each a vector of accumulators of the same channels, their pixels
    /// stored interleaved) matches the reference, with every assembled
    /// ISA, pixel tile, loop nest, copy and thread count, in the checked
    /// lowering too — and so does the heuristic's schedule for it.
    #[test]
    fn merged_column_phases_match_reference(
        (spec, schedule) in scheduled(merged_columns_spec(), merged_columns_schedule),
        seed in any::<u64>(),
    ) {
        check_with_heuristic(&spec, &schedule, seed)?;
    }
}

/// A conv2d of stride 1 whose output rows are as wide as its input rows:
/// the layers whose rows an AVX-512 width tile may join. Kernels up to
/// 5 × 5, dilation 1 or 2, any vertical padding, the horizontal padding
/// as wide as the kernel reaches split left and right in any way; up to
/// 3 groups of up to 12 channels (depthwise among them), planes up to
/// 20 × 20, 1 or 2 images, every activation.
fn joinable_spec() -> impl Strategy<Value = ValidSpec> {
    let shape = (1i64..=2, 1i64..=3, 1i64..=12, 1i64..=12);
    // Kernels of more taps than are unrolled (9 × 8) now and then: their
    // tiles read a padded copy, the others the image itself.
    let size = prop_oneof![8 => 1i64..=5, 1 => 8i64..=9];
    let kernel = ((size.clone(), size), (1i64..=2, 1i64..=2));
    let pads = (0i64..=3, 0i64..=3, 0i64..=8);
    let sizes = ([0i64..=19, 0i64..=19], (any::<bool>(), 0usize..5));
    (shape, kernel, pads, sizes).prop_filter_map(
        "invalid spec",
        |(
            (batch, groups, cig, cog),
            ((kh, kw), (dh, dw)),
            (top, bottom, left),
            (extra, output),
        )| {
            let across = (kw - 1) * dw;
            let left = left.min(across);
            common::build_spec(
                (false, batch, groups, cig, cog),
                ([kh, kw], [1, 1], [dh, dw]),
                ([top, left, bottom, across - left], extra, [0, 0]),
                output,
            )
        },
    )
}

/// A joined-rows width schedule for `spec`, if one of the drawn shape is
/// legal: `row_tile` rows (up to the plane's) as one run, 1 to 3
/// channels, any unroll, copy, loop nest, threads and split (rows where
/// the copy allows it: a kernel that reads the image shares items).
fn joined_schedule(spec: &ValidSpec) -> impl Strategy<Value = Option<Schedule>> + use<> {
    let spec = spec.clone();
    let copy = prop_oneof![
        Just(InputCopy::Image),
        Just(InputCopy::Group),
        (1usize..=4).prop_map(InputCopy::Bands)
    ];
    let run = (1usize..=2, any::<bool>());
    (1usize..=20, 1usize..=3, 1usize..=4, copy, any::<bool>(), run).prop_map(
        move |(rows, channels, unroll, copy, rows_outer, (threads, split_rows))| {
            let rows = rows.min(spec.out_height());
            let width = Width {
                pixel_vectors: (rows * spec.width()).div_ceil(Isa::Avx512.lanes()),
                row_tile: rows,
                reduction_unroll: unroll.min(spec.in_per_group()),
                channels: channels.min(spec.out_per_group()),
                row_length: None,
                joined: true,
                image: false,
            };
            let split = match copy {
                InputCopy::Bands(_) => Split::Rows,
                InputCopy::Image if split_rows => Split::Rows,
                _ => Split::Items,
            };
            let schedule = Schedule {
                winograd: None,
                isa: Isa::Avx512,
                algorithm: Algorithm::Width(width),
                loop_nest: nest(rows_outer, None),
                copy,
                run: Run { threads, split },
            };
            schedule.legal(&spec).is_ok().then_some(schedule)
        },
    )
}

/// Joined rows are refused, naming the field, where they do not apply:
/// below AVX-512, on strided or transposed layers, on output rows
/// narrower than the input's, with another row length, and with other
/// than the run's vectors.
#[test]
fn joined_rows_are_refused_where_they_do_not_apply() {
    let joined = |isa: Isa, pixel_vectors: usize, row_length: Option<usize>| Schedule {
        winograd: None,
        isa,
        algorithm: Algorithm::Width(Width {
            pixel_vectors,
            row_tile: 2,
            reduction_unroll: 1,
            channels: 1,
            row_length,
            joined: true,
            image: false,
        }),
        loop_nest: LoopNest::RowsOuter,
        copy: InputCopy::Image,
        run: Run::default(),
    };
    // 2 rows of 12 pixels: 2 vectors of 16.
    let same = spec(
        r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":12,"width":12,"kernel":3,"padding":1,"groups":4}"#,
    );
    assert!(joined(Isa::Avx512, 2, None).legal(&same).is_ok());
    let refused = |spec: &ValidSpec, s: Schedule, field: &str| {
        let e = s.legal(spec).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidSchedule { field: f, .. } if *f == field),
            "{spec} with {s:?}: {e}"
        );
    };
    // Its tiles read the image itself, however padded (their masks zero
    // what lies outside); a kernel of more taps than are unrolled reads a
    // padded copy.
    let plan = convjit::codegen::plan::Plan::new(&same, &joined(Isa::Avx512, 2, None));
    assert!(plan.reads_image && !plan.needs_copy && plan.origin() == 12 + 1);
    let wide = spec(
        r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":12,"width":12,"kernel":9,"padding":4,"groups":4}"#,
    );
    let plan = convjit::codegen::plan::Plan::new(&wide, &joined(Isa::Avx512, 2, None));
    assert!(!plan.reads_image && plan.needs_copy && plan.origin() == 0);
    refused(&same, joined(Isa::Avx2, 2, None), "joined");
    refused(&same, joined(Isa::Sse, 2, None), "joined");
    refused(&same, joined(Isa::Avx512, 3, None), "pixel_vectors");
    // A 1×1 layer's planes may be cut into rows of another length, but
    // not joined as well.
    let flat = spec(
        r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":12,"width":12,"kernel":1}"#,
    );
    assert!(joined(Isa::Avx512, 2, None).legal(&flat).is_ok());
    refused(&flat, joined(Isa::Avx512, 3, Some(24)), "joined");
    let others = [
        r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":12,"width":12,"kernel":3,"padding":1,"stride":2}"#,
        r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":12,"width":12,"kernel":3}"#,
        r#"{"op":"conv_transpose2d","in_channels":4,"out_channels":4,"height":12,"width":12,"kernel":3,"padding":1}"#,
    ];
    for json in others {
        let layer = spec(json);
        let vectors = (2 * layer.out_width()).div_ceil(16);
        refused(&layer, joined(Isa::Avx512, vectors, None), "joined");
    }
}

/// A conv2d of column stride 1 or 2 (any row stride, kernel, dilation,
/// padding and groups), a few channels: the layers whose tiles may read
/// the image's rows (with deinterleaved loads at column stride 2).
fn image_row_spec() -> impl Strategy<Value = ValidSpec> {
    let shape = (1i64..=2, 1i64..=3, 1i64..=3, 1i64..=4);
    let size = prop_oneof![8 => 1i64..=5, 1 => 8i64..=9];
    let kernel = ((size.clone(), size), (1i64..=2, 1i64..=2), (1i64..=3, 1i64..=2));
    let pads = (0i64..=3, 0i64..=3, 0i64..=3, 0i64..=3);
    let sizes = ([0i64..=20, 0i64..=40], (any::<bool>(), 0usize..5));
    (shape, kernel, pads, sizes).prop_filter_map(
        "invalid spec",
        |(
            (batch, groups, cig, cog),
            ((kh, kw), (dh, dw), (sh, sw)),
            (top, left, bottom, right),
            (extra, output),
        )| {
            common::build_spec(
                (false, batch, groups, cig, cog),
                ([kh, kw], [sh, sw], [dh, dw]),
                ([top, left, bottom, right], extra, [0, 0]),
                output,
            )
        },
    )
}

/// A width schedule of the image's rows for `spec`, if one of the drawn
/// shape is legal: a whole output row (or a vector more) per tile row, 1
/// to 8 rows, 1 to 3 channels, any unroll, loop nest, threads and split.
fn image_row_schedule(spec: &ValidSpec) -> impl Strategy<Value = Option<Schedule>> + use<> {
    let spec = spec.clone();
    let run = (1usize..=2, any::<bool>());
    (0usize..=1, 1usize..=8, 1usize..=3, 1usize..=4, any::<bool>(), run).prop_map(
        move |(more, rows, channels, unroll, rows_outer, (threads, split_rows))| {
            let width = Width {
                pixel_vectors: spec.out_width().div_ceil(Isa::Avx512.lanes()) + more,
                row_tile: rows,
                reduction_unroll: unroll.min(spec.in_per_group()),
                channels: channels.min(spec.out_per_group()),
                row_length: None,
                joined: false,
                image: true,
            };
            let schedule = Schedule {
                winograd: None,
                isa: Isa::Avx512,
                algorithm: Algorithm::Width(width),
                loop_nest: nest(rows_outer, None),
                copy: InputCopy::Image,
                run: Run { threads, split: if split_rows { Split::Rows } else { Split::Items } },
            };
            schedule.legal(&spec).is_ok().then_some(schedule)
        },
    )
}

#[test]
fn image_rows_are_refused_where_they_do_not_apply() {
    let loads = |isa: Isa, pixel_vectors: usize, joined: bool| Schedule {
        winograd: None,
        isa,
        algorithm: Algorithm::Width(Width {
            pixel_vectors,
            row_tile: 2,
            reduction_unroll: 1,
            channels: 1,
            row_length: None,
            joined,
            image: true,
        }),
        loop_nest: LoopNest::RowsOuter,
        copy: InputCopy::Image,
        run: Run::default(),
    };
    // Output rows of 20 pixels: 2 vectors of 16.
    let strided = spec(
        r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":40,"width":40,"kernel":3,"padding":1,"stride":2,"groups":4}"#,
    );
    assert!(loads(Isa::Avx512, 2, false).legal(&strided).is_ok());
    // It reads the image itself.
    let plan = convjit::codegen::plan::Plan::new(&strided, &loads(Isa::Avx512, 2, false));
    assert!(plan.reads_image && !plan.needs_copy && plan.col_phases == 1);
    let refused = |spec: &ValidSpec, s: Schedule, field: &str| {
        let e = s.legal(spec).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidSchedule { field: f, .. } if *f == field),
            "{spec} with {s:?}: {e}"
        );
    };
    refused(&strided, loads(Isa::Avx2, 2, false), "image");
    refused(&strided, loads(Isa::Sse, 2, false), "image");
    refused(&strided, loads(Isa::Avx512, 1, false), "pixel_vectors");
    // Unstrided rows of 20 pixels: 2 vectors, as many as a tile row needs.
    let unstrided = spec(
        r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":40,"width":20,"kernel":3,"padding":1,"groups":4}"#,
    );
    assert!(loads(Isa::Avx512, 2, false).legal(&unstrided).is_ok());
    refused(&unstrided, loads(Isa::Avx512, 1, false), "pixel_vectors");
    // Joined rows (2 rows of 20 pixels: 3 vectors) are not the image's.
    refused(&unstrided, loads(Isa::Avx512, 3, true), "image");
    let others = [
        r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":40,"width":60,"kernel":3,"padding":1,"stride":3}"#,
        r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":40,"width":40,"kernel":9,"padding":4,"stride":2}"#,
        r#"{"op":"conv_transpose2d","in_channels":4,"out_channels":4,"height":20,"width":10,"kernel":3,"padding":1,"stride":2,"output_padding":1}"#,
    ];
    for json in others {
        let layer = spec(json);
        let vectors = layer.out_width().div_ceil(16);
        refused(&layer, loads(Isa::Avx512, vectors, false), "image");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Tiles of the image's rows (the lanes outside the image masked off,
    /// those of the rows above and below by tiles of their own; each input
    /// vector loaded once for the taps that share it; at column stride 2,
    /// deinterleaved loads: two vectors of the image's pixels, every second
    /// one kept) match the reference, plain and checked, on every thread
    /// count and split; on hosts without AVX-512 every such schedule is
    /// refused instead.
    #[test]
    fn image_rows_match_reference(
        (spec, schedule) in scheduled(image_row_spec(), image_row_schedule),
        seed in any::<u64>(),
    ) {
        check_avx512_kernel(&spec, schedule, seed)?;
    }

    /// Rows joined into runs (a vector spanning the end of one row and the
    /// start of the next, each tap's lanes across a row's edge masked)
    /// match the reference, plain and checked (`check_kernel` checks a
    /// quarter of its seeds), with every copy and thread count. On hosts
    /// without AVX-512 every such schedule is refused instead.
    #[test]
    fn joined_rows_match_reference(
        (spec, schedule) in scheduled(joinable_spec(), joined_schedule),
        seed in any::<u64>(),
    ) {
        check_avx512_kernel(&spec, schedule, seed)?;
    }
}

/// Checks the legal `schedule` drawn for `spec` against the reference,
/// and the heuristic's schedule for it.
fn check_with_heuristic(
    spec: &ValidSpec,
    schedule: &Schedule,
    seed: u64,
) -> Result<(), TestCaseError> {
    prop_assert!(schedule.legal(spec).is_ok(), "{schedule:?} illegal for {spec}");
    check_kernel(spec, schedule, seed);
    check_kernel(spec, &schedule::choose(spec), seed);
    Ok(())
}

/// A spec of `specs` with a schedule `schedules` draws for it.
fn scheduled<S: Strategy>(
    specs: impl Strategy<Value = ValidSpec>,
    schedules: fn(&ValidSpec) -> S,
) -> impl Strategy<Value = (ValidSpec, S::Value)> {
    specs.prop_flat_map(move |s| {
        let schedule = schedules(&s);
        (Just(s), schedule)
    })
}

/// Checks an AVX-512 schedule drawn for `spec` (if one was legal)
/// against the reference, or, on a host without AVX-512, that it is
/// refused.
fn check_avx512_kernel(
    spec: &ValidSpec,
    schedule: Option<Schedule>,
    seed: u64,
) -> Result<(), TestCaseError> {
    let Some(schedule) = schedule else { return Ok(()) };
    if !Isa::Avx512.on_host() {
        prop_assert!(Compiler::host().unwrap().compile_with(spec, &schedule).is_err());
        return Ok(());
    }
    check_kernel(spec, &schedule, seed);
    Ok(())
}

/// A knob value at or past one of `Schedule::legal`'s bounds: small values
/// (0 and each accumulator count), the bounds and one past them (56
/// pixels, 256 threads, 2^24), and values that overflow any product or
/// rounding (2^32, 2^63, 2^64 − 1).
fn any_knob() -> impl Strategy<Value = usize> + Clone {
    let edges = vec![
        56,
        57,
        schedule::MAX_THREADS,
        schedule::MAX_THREADS + 1,
        schedule::MAX_KNOB - 1,
        schedule::MAX_KNOB,
        schedule::MAX_KNOB + 1,
        1 << 32,
        1 << 63,
        (1 << 63) + 1,
        usize::MAX - 1,
        usize::MAX,
    ];
    prop_oneof![12 => 1usize..=3, 1 => 0usize..=16, 1 => prop::sample::select(edges)]
}

/// A schedule with every numeric knob drawn from [`any_knob`] and every
/// other field at random: mostly illegal.
fn wild_schedule() -> impl Strategy<Value = Schedule> {
    let k = any_knob();
    let copy = prop_oneof![
        Just(InputCopy::Image),
        Just(InputCopy::Group),
        k.clone().prop_map(InputCopy::Bands)
    ];
    let isas: Vec<Isa> = Isa::available().collect();
    (
        (0usize..3, k.clone(), k.clone(), k.clone(), k.clone()),
        (any::<bool>(), prop::option::of(k.clone()), k.clone(), any::<bool>(), copy, any::<bool>()),
        (
            prop::sample::select(isas),
            prop::option::of(k),
            (any::<bool>(), any::<bool>(), any::<bool>()),
        ),
    )
        .prop_map(
            |(
                (family, oc_vectors, pixel_tile, reduction_unroll, row_tile),
                (rows_outer, col_block, threads, split_rows, copy, interleave),
                (isa, row_length, (joined, image, merged_columns)),
            )| {
                let tile = Tile { oc_vectors, pixel_tile, row_tile };
                let algorithm = match family {
                    0 => Algorithm::Direct(Direct {
                        tile,
                        reduction_unroll,
                        layout: if interleave { Layout::Nhwc } else { Layout::Nchw },
                        row_length,
                        merged_columns,
                    }),
                    1 => Algorithm::Depthwise(Depthwise { tile }),
                    // The width tile in vectors: any knob value, as drawn.
                    _ => Algorithm::Width(Width {
                        pixel_vectors: pixel_tile,
                        row_tile,
                        reduction_unroll,
                        channels: oc_vectors,
                        row_length,
                        joined,
                        image,
                    }),
                };
                Schedule {
                    winograd: None,
                    isa,
                    algorithm,
                    loop_nest: nest(rows_outer, col_block),
                    run: Run {
                        threads,
                        split: if split_rows { Split::Rows } else { Split::Items },
                    },
                    copy,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Any value of any knob: `legal` refuses the schedule naming a field,
    /// or the kernel compiles and matches the reference. Never a panic
    /// (an overflowing product of knobs once passed `legal`).
    #[test]
    fn any_knob_value_is_refused_or_computes_the_layer(
        spec in any_spec(),
        schedule in wild_schedule(),
        seed in any::<u64>(),
    ) {
        match schedule.legal(&spec) {
            Ok(()) => check_kernel(&spec, &schedule, seed),
            Err(e) => prop_assert!(matches!(e, Error::InvalidSchedule { .. }), "{e}"),
        }
    }
}

/// Random specs past the emitter's limits: kernels of up to 90 taps per
/// axis (a loop over kernel rows; chunks of a kernel row's columns, in a
/// width copy split into column phases too), strides to 40 (transposed
/// phases in runs, pixels no tap reaches), padding past the kernel's reach
/// (taps that meet only padding dropped), with one, two or three channels.
fn large_spec() -> impl Strategy<Value = ValidSpec> {
    (
        (any::<bool>(), 1i64..=3, 1i64..=2),
        ([1i64..=90, 1i64..=90], [1i64..=40, 1i64..=40], [1i64..=3, 1i64..=3]),
        ([0i64..=50, 0i64..=50, 0i64..=50, 0i64..=50], [0i64..=3, 0i64..=3], [0i64..=2, 0i64..=2]),
        (any::<bool>(), 0usize..5),
    )
        .prop_filter_map(
            "invalid spec",
            |((transposed, groups, cog), geometry, borders, output)| {
                let (k, s, d) = geometry;
                // Keep the outputs and the reference small: a short kernel on
                // one axis when the other is long.
                let k = if k[0] * k[1] > 1200 { [k[0], 1] } else { k };
                let s = if transposed { s } else { [s[0].min(4), s[1].min(4)] };
                common::build_spec((transposed, 1, groups, 1, cog), (k, s, d), borders, output)
            },
        )
        .prop_filter("small enough for the reference", |v| {
            v.output_len() <= 200_000 && convjit::Complexity::of(v).macs <= 20_000_000
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Past the limits, every legal schedule still matches the reference
    /// (half the cases in the checked lowering) — or, for a transposed conv
    /// whose phases come in more runs than the JIT compiles, is refused in
    /// one error while the im2col engine computes it.
    #[test]
    fn large_kernels_and_strides_match_reference(
        (spec, schedule) in large_spec().prop_flat_map(|s| {
            let sched = any_schedule(&s);
            (Just(s), sched)
        }),
        seed in any::<u64>(),
    ) {
        let plan = convjit::codegen::Plan::new(&spec, &schedule);
        if plan.compilable().is_err() {
            let refused = Compiler::host().unwrap().compile_with(&spec, &schedule).unwrap_err();
            prop_assert!(refused.to_string().contains("im2col"), "{refused}");
            common::check_engine(convjit::Engine::Im2col, 1, &spec, seed);
        } else {
            check_kernel(&spec, &schedule, seed & !1);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The parts the runtime hands the code tile every phase's rows
    /// exactly: in order, without a gap or an overlap, for any count of
    /// parts; and the `pieces` pieces of a part (a thread's last band, cut
    /// for the threads of a run) tile the part's rows and read only input
    /// rows the part reads, which its band's copy holds.
    #[test]
    fn part_rows_tile_every_phase(
        (spec, schedule) in any_spec().prop_flat_map(|s| {
            let sched = any_schedule(&s);
            (Just(s), sched)
        }),
        parts in 1usize..9,
        pieces in 1usize..4,
    ) {
        let plan = convjit::codegen::Plan::new(&spec, &schedule);
        let mut next: Vec<usize> = vec![0; plan.geometry.phases.len()];
        for part in 0..parts {
            for (phase, rows) in plan.part_rows(part..part + 1, parts).enumerate() {
                prop_assert_eq!(rows.start, next[phase]);
                prop_assert!(rows.start <= rows.end);
                next[phase] = rows.end;
            }
            let reads = plan.span_rows(part..part + 1, parts);
            let whole: Vec<_> = plan.part_rows(part..part + 1, parts).collect();
            // All of a part's pieces at once are the part.
            let all = part * pieces..(part + 1) * pieces;
            prop_assert_eq!(&plan.part_rows(all.clone(), parts * pieces).collect::<Vec<_>>(), &whole);
            prop_assert_eq!(plan.span_rows(all, parts * pieces), reads.clone());
            let mut at: Vec<usize> = whole.iter().map(|rows| rows.start).collect();
            for piece in part * pieces..(part + 1) * pieces {
                let span = piece..piece + 1;
                for (phase, rows) in plan.part_rows(span.clone(), parts * pieces).enumerate() {
                    prop_assert_eq!(rows.start, at[phase]);
                    at[phase] = rows.end;
                }
                let read = plan.span_rows(span, parts * pieces);
                prop_assert!(
                    read.is_empty() || (reads.start <= read.start && read.end <= reads.end),
                    "piece {} of {} reads rows {:?} outside its part's {:?}", piece, parts * pieces, read, reads
                );
            }
            let ends: Vec<usize> = whole.iter().map(|rows| rows.end).collect();
            prop_assert_eq!(at, ends);
        }
        for (phase, &end) in next.iter().enumerate() {
            prop_assert_eq!(end, plan.geometry.phases[phase].rows.count);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every algorithm's work items and lanes reach every output channel
    /// exactly once, and no other: the packing, the plan and the emitted
    /// item decoding all read this one map, so a lane that reached no
    /// channel or two would leave an output unwritten or write it twice.
    /// The items of one group of items are consecutive and share their
    /// group's input: each reaches only channels of one conv group (or,
    /// depthwise, of the groups of one block of lanes).
    #[test]
    fn work_items_reach_every_channel_once(spec in any_spec(), oc_vectors in 1usize..=3) {
        let families = algorithm::accepting(&spec)
            .flat_map(|f| f.isas().iter().map(move |&isa| (f, isa)));
        for (family, isa) in families {
            let work = family.work(&spec, isa, oc_vectors);
            prop_assert_eq!(work.groups() * work.group_items, work.items);
            let mut seen = vec![0u32; spec.out_channels()];
            for item in 0..work.items {
                let q = item / work.group_items;
                for lane in 0..work.lanes {
                    let Some(oc) = work.channel(item, lane) else { continue };
                    prop_assert!(oc < spec.out_channels(), "{}: {item}/{lane} → {oc}", family.name());
                    seen[oc] += 1;
                    let group = oc / spec.out_per_group();
                    let input_group = if work.blocked_input { group / work.lanes } else { group };
                    prop_assert_eq!(input_group, q, "{}: item {} lane {}", family.name(), item, lane);
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1), "{}: {:?}", family.name(), seen);
        }
    }
}

/// Checks `json` with the heuristic schedule and with every strategy,
/// vector count and loop order that is legal for it.
fn check_all(json: &str) {
    let spec = spec(json);
    check_kernel(&spec, &schedule::choose(&spec), 7);
    for strategy in [Family::Direct, Family::Depthwise, Family::Width] {
        for oc_vectors in 1..=3 {
            // The width algorithm computes one channel per tile.
            if strategy == Family::Width && oc_vectors > 1 {
                continue;
            }
            for rows_outer in [false, true] {
                let tile = Tile {
                    oc_vectors,
                    pixel_tile: if strategy == Family::Width { 16 } else { 6 / oc_vectors },
                    // Two rows per tile on one loop order, one on the other.
                    row_tile: if rows_outer { 2 } else { 1 },
                };
                let unroll = if strategy == Family::Direct { 3 } else { 1 };
                let s = Schedule {
                    winograd: None,
                    isa: Isa::Sse,
                    algorithm: common::algorithm(strategy, tile, unroll, false),
                    loop_nest: if rows_outer {
                        LoopNest::ColumnBlocks(5)
                    } else {
                        LoopNest::ChannelsOuter
                    },
                    run: Run {
                        threads: oc_vectors,
                        split: if oc_vectors == 2 { Split::Rows } else { Split::Items },
                    },
                    copy: InputCopy::Image,
                };
                let group =
                    Schedule { copy: InputCopy::Group, run: s.run.split(Split::Items), ..s };
                let bands =
                    Schedule { copy: InputCopy::Bands(3), run: s.run.split(Split::Rows), ..s };
                let mut variants = vec![s, group, bands];
                // The NHWC copy is the direct algorithm's, as are the
                // assembled tiles of the wider ISAs.
                if strategy == Family::Direct {
                    let nhwc = common::algorithm(strategy, tile, unroll, true);
                    variants.extend([s, group, bands].map(|v| Schedule { algorithm: nhwc, ..v }));
                    let wide = Isa::available().filter(|isa| isa.is_assembled());
                    let wide: Vec<Schedule> = wide
                        .flat_map(|isa| {
                            variants.clone().into_iter().map(move |v| Schedule { isa, ..v })
                        })
                        .collect();
                    variants.extend(wide);
                }
                // Every other variant in the checked lowering (seed 12).
                for (i, s) in variants.iter().enumerate() {
                    if s.legal(&spec).is_ok() {
                        check_kernel(&spec, s, 11 + i as u64 % 2);
                    }
                }
            }
        }
    }
}

/// A stride-2 row split into column phases whose stored length happens to
/// equal the image width (no padding; the last vector reaches exactly the
/// last column): the width strategy must still read a copy, not the image.
#[test]
fn width_strategy_column_phases_without_padding() {
    check_all(
        r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":4,"width":18,"kernel":3,"stride":2}"#,
    );
    check_all(
        r#"{"op":"conv2d","in_channels":3,"out_channels":3,"height":7,"width":18,"kernel":3,"stride":2,"groups":3}"#,
    );
}

#[test]
fn depthwise_separable_block() {
    check_all(
        r#"{"op":"conv2d","in_channels":32,"out_channels":32,"height":14,"width":14,"kernel":3,"padding":1,"groups":32,"activation":"relu6"}"#,
    );
    check_all(
        r#"{"op":"conv2d","in_channels":32,"out_channels":16,"height":14,"width":14,"kernel":1,"activation":"relu6"}"#,
    );
}

#[test]
fn depthwise_channel_multiplier() {
    check_all(
        r#"{"op":"conv2d","in_channels":6,"out_channels":18,"height":9,"width":11,"kernel":3,"padding":1,"groups":6}"#,
    );
    check_all(
        r#"{"op":"conv2d","in_channels":5,"out_channels":10,"height":9,"width":11,"kernel":5,"stride":2,"padding":2,"groups":5}"#,
    );
}

#[test]
fn acnet_asymmetric_kernels() {
    check_all(
        r#"{"op":"conv2d","in_channels":8,"out_channels":12,"height":10,"width":13,"kernel":[1,3],"padding":[0,1]}"#,
    );
    check_all(
        r#"{"op":"conv2d","in_channels":8,"out_channels":12,"height":10,"width":13,"kernel":[3,1],"padding":[1,0]}"#,
    );
}

#[test]
fn alexnet_groups_two() {
    check_all(
        r#"{"op":"conv2d","in_channels":12,"out_channels":20,"height":13,"width":13,"kernel":5,"padding":2,"groups":2}"#,
    );
}

#[test]
fn dilation_two_and_four() {
    check_all(
        r#"{"op":"conv2d","in_channels":6,"out_channels":8,"height":17,"width":17,"kernel":3,"padding":2,"dilation":2}"#,
    );
    check_all(
        r#"{"op":"conv2d","in_channels":6,"out_channels":8,"height":17,"width":17,"kernel":3,"padding":4,"dilation":4}"#,
    );
}

#[test]
fn transposed_3x3_no_padding_no_stride() {
    check_all(
        r#"{"op":"conv_transpose2d","in_channels":5,"out_channels":7,"height":6,"width":9,"kernel":3}"#,
    );
}

#[test]
fn transposed_4x4_stride_2_padding_1() {
    check_all(
        r#"{"op":"conv_transpose2d","in_channels":8,"out_channels":4,"height":8,"width":8,"kernel":4,"stride":2,"padding":1}"#,
    );
}

#[test]
fn transposed_output_padding_1() {
    check_all(
        r#"{"op":"conv_transpose2d","in_channels":3,"out_channels":5,"height":7,"width":5,"kernel":3,"stride":2,"padding":1,"output_padding":1}"#,
    );
    check_all(
        r#"{"op":"conv_transpose2d","in_channels":4,"out_channels":6,"height":5,"width":6,"kernel":3,"stride":3,"dilation":2,"output_padding":[2,1],"groups":2}"#,
    );
}

#[test]
fn odd_channel_counts() {
    for c in [1, 3, 5, 7, 13] {
        check_all(&format!(
            r#"{{"op":"conv2d","in_channels":{c},"out_channels":{c},"height":7,"width":9,"kernel":3,"padding":1}}"#
        ));
        check_all(&format!(
            r#"{{"op":"conv_transpose2d","in_channels":{c},"out_channels":{c},"height":4,"width":5,"kernel":2,"stride":2}}"#
        ));
    }
}

#[test]
fn tiny_images() {
    check_all(
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":1,"width":1,"kernel":1}"#,
    );
    check_all(
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":1,"width":1,"kernel":3,"padding":1}"#,
    );
    check_all(
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":1,"width":29,"kernel":[1,3],"padding":[0,1]}"#,
    );
    check_all(
        r#"{"op":"conv_transpose2d","in_channels":3,"out_channels":5,"height":1,"width":1,"kernel":3}"#,
    );
}

#[test]
fn kernel_as_large_as_padded_input() {
    check_all(
        r#"{"op":"conv2d","in_channels":4,"out_channels":6,"height":5,"width":4,"kernel":[7,6],"padding":1}"#,
    );
}

/// Kernels past the unroll limit (`codegen::MAX_UNROLLED_TAPS`): a loop
/// over kernel rows, a loop over chunks of a long kernel row's columns (a
/// width-strategy copy split into 3 column phases too), and the one-tap
/// loop where a copy of 150 column phases breaks the chunks' pattern.
#[test]
fn kernels_past_the_unroll_limit() {
    for json in [
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":20,"width":20,"kernel":9,"padding":2}"#,
        r#"{"op":"conv2d","in_channels":2,"out_channels":3,"height":3,"width":110,"kernel":[1,100],"padding":[0,3]}"#,
        r#"{"op":"conv2d","in_channels":1,"out_channels":2,"height":2,"width":400,"kernel":[1,150],"stride":[1,3]}"#,
        r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":2,"width":460,"kernel":[1,200],"stride":[1,150]}"#,
        // 65 taps, fewer than a chunk of 66 (22 column phases of 3): the
        // chunk loop once indexed an empty list of chunks (a panic).
        r#"{"op":"conv2d","in_channels":2,"out_channels":2,"groups":2,"height":1,"width":86,"kernel":[1,65],"stride":[1,3]}"#,
        r#"{"op":"conv2d","in_channels":2,"out_channels":2,"height":12,"width":12,"kernel":5,"dilation":2,"groups":2}"#,
        r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":3,"height":4,"width":4,"kernel":12}"#,
        r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":2,"height":5,"width":5,"kernel":20,"stride":2,"padding":3}"#,
    ] {
        check_all(json);
    }
    // A 1→1-channel 128×128 kernel: compiled in a moment, not gigabytes.
    let big = spec(
        r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":130,"width":131,"kernel":128}"#,
    );
    for strategy in [Family::Direct, Family::Width] {
        let heuristic = schedule::choose(&big);
        let tile = match strategy {
            Family::Width => Tile { oc_vectors: 1, pixel_tile: LANES, ..heuristic.tile() },
            _ => heuristic.tile(),
        };
        let algorithm = common::algorithm(strategy, tile, heuristic.reduction_unroll(), false);
        let s = Schedule { algorithm, ..heuristic };
        check_kernel(&big, &s, 4); // checked (a seed that is a multiple of 4)
    }
}

/// Taps that meet only padding, for every output, are not kept, and the
/// copy is padded only as far as the kept ones reach: a padding and a
/// dilation of 2^24 around a 1×1 image compute (the copy once asked for
/// 288 PB, and with 16384 channels its size overflowed), and a stride that
/// steps over the image leaves no tap at all (the output is the bias).
#[test]
fn padding_past_every_tap() {
    for json in [
        r#"{"op":"conv2d","in_channels":4,"out_channels":3,"height":1,"width":1,"kernel":3,"dilation":16777216,"padding":16777216}"#,
        r#"{"op":"conv2d","in_channels":2,"out_channels":3,"height":1,"width":3,"kernel":1,"stride":2,"padding":1,"activation":"relu"}"#,
        r#"{"op":"conv2d","in_channels":3,"out_channels":2,"height":2,"width":5,"kernel":[3,4],"stride":3,"padding":[4,6],"dilation":[1,2]}"#,
    ] {
        check_all(json);
    }
    let wide = spec(
        r#"{"op":"conv2d","in_channels":16384,"out_channels":4,"height":1,"width":1,"kernel":3,"dilation":16777216,"padding":16777216}"#,
    );
    let geometry = Geometry::of(&wide);
    assert_eq!((geometry.pad, geometry.padded), ([0; 4], [1, 1]));
    check_kernel(&wide, &schedule::choose(&wide), 4);
}

/// Transposed convs whose stride passes the kernel: the phases of an axis
/// come in runs the code loops over (a few, however large the stride),
/// and the pixels no tap reaches (residues of the stride, or of a dilation
/// sharing a factor with it) hold the activated bias.
#[test]
fn transposed_strides_past_the_kernel() {
    for json in [
        r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":3,"height":2,"width":3,"kernel":1,"stride":3}"#,
        r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":2,"height":4,"width":4,"kernel":3,"stride":2,"dilation":2,"activation":"relu"}"#,
        r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":2,"height":3,"width":3,"kernel":64,"stride":32,"padding":16}"#,
        r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":3,"width":2,"kernel":[67,9],"stride":[45,7],"dilation":[2,3],"padding":[3,1]}"#,
        r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":2,"height":2,"width":2,"kernel":4,"stride":[300,257],"activation":"leaky_relu"}"#,
    ] {
        check_all(json);
    }
    let layer = spec(
        r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":2,"width":2,"kernel":4,"stride":4096}"#,
    );
    let geometry = Geometry::of(&layer);
    assert!(geometry.holes);
    assert!(geometry.phases.len() <= 4, "{} phases", geometry.phases.len());
    let members: usize = geometry.phases.iter().map(|p| p.rows.members * p.cols.members).sum();
    assert_eq!(members, 16, "one phase for each tap's residue on each axis");
    check_kernel(&layer, &schedule::choose(&layer), 8);
}

/// A dilation sharing no pattern with the stride breaks the phases of a
/// large kernel into runs of two or three: past `geometry::MAX_PHASES` runs the
/// JIT refuses the layer in one error (compile memory would grow with
/// them), which names the engines that compute it, and they do.
#[test]
fn transposed_phases_past_the_limit_are_refused_not_compiled() {
    for json in [
        r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":2,"height":3,"width":3,"kernel":40,"stride":16,"dilation":7}"#,
        r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":473,"width":473,"kernel":1009,"stride":1009,"dilation":471,"padding":474958}"#,
    ] {
        let layer = spec(json);
        let geometry = Geometry::of(&layer);
        assert!(geometry.phase_count > geometry::MAX_PHASES, "{}", geometry.phase_count);
        assert!(geometry.phases.is_empty());
        let refused = Compiler::host().unwrap().compile(&layer).unwrap_err();
        assert!(matches!(refused, Error::Jit(_)) && refused.to_string().contains("im2col"));
    }
    let small = spec(
        r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":2,"height":3,"width":3,"kernel":40,"stride":16,"dilation":7}"#,
    );
    for engine in [convjit::Engine::Im2col, convjit::Engine::Naive] {
        common::check_engine(engine, 1, &small, 3);
    }
}

#[test]
fn every_suite_layer() {
    for layer in suite::builtin() {
        let spec = layer.validate().expect("suite layers are valid");
        check_kernel(&spec, &schedule::choose(&spec), 3);
    }
}

fn small() -> ValidSpec {
    spec(
        r#"{"op":"conv2d","in_channels":3,"out_channels":4,"height":5,"width":5,"kernel":3,"padding":1}"#,
    )
}

#[test]
fn wrong_lengths_are_refused() {
    let spec = small();
    let kernel = Compiler::host().unwrap().compile(&spec).unwrap();
    let w = random_tensor(1, spec.weight_len());
    let b = random_tensor(2, 4);
    assert!(matches!(
        kernel.pack(&w[1..], Some(&b)),
        Err(Error::BufferLength { what: "weight", .. })
    ));
    assert!(matches!(kernel.pack(&w, None), Err(Error::Bias(_))));
    assert!(matches!(
        kernel.pack(&w, Some(&b[1..])),
        Err(Error::BufferLength { what: "bias", .. })
    ));
    let packed = kernel.pack(&w, Some(&b)).unwrap();
    let x = random_tensor(3, spec.input_len());
    let mut y = vec![0.0; spec.output_len()];
    assert!(matches!(
        kernel.run(&x[1..], &packed, &mut y),
        Err(Error::BufferLength { what: "input", .. })
    ));
    let mut short = vec![0.0; spec.output_len() - 1];
    assert!(matches!(
        kernel.run(&x, &packed, &mut short),
        Err(Error::BufferLength { what: "output", .. })
    ));
    let mut long = vec![0.0; spec.output_len() + 1];
    assert!(matches!(
        kernel.run(&x, &packed, &mut long),
        Err(Error::BufferLength { what: "output", .. })
    ));
}

#[test]
fn weights_of_another_kernel_are_refused() {
    let spec = small();
    let compiler = Compiler::host().unwrap();
    let a = compiler.compile(&spec).unwrap();
    let b = compiler.compile(&spec).unwrap();
    let packed = a.pack(&random_tensor(1, spec.weight_len()), Some(&random_tensor(2, 4))).unwrap();
    let x = random_tensor(3, spec.input_len());
    let mut y = vec![0.0; spec.output_len()];
    assert!(matches!(b.run(&x, &packed, &mut y), Err(Error::ForeignWeights)));
}

#[test]
fn illegal_schedules_are_refused() {
    let spec = small();
    let compiler = Compiler::host().unwrap();
    let base = schedule::choose(&spec);
    let t = base.tile();
    let direct = |tile: Tile, reduction_unroll: usize| Schedule {
        algorithm: Algorithm::Direct(Direct {
            tile,
            reduction_unroll,
            layout: Layout::Nchw,
            row_length: None,
            merged_columns: false,
        }),
        ..base
    };
    let width = |pixel_vectors: usize, row_tile: usize| Schedule {
        algorithm: Algorithm::Width(Width {
            pixel_vectors,
            row_tile,
            reduction_unroll: 1,
            channels: 1,
            row_length: None,
            joined: false,
            image: false,
        }),
        ..base
    };
    let bad = [
        Schedule { algorithm: Algorithm::Depthwise(Depthwise { tile: t }), ..base },
        width(15, t.row_tile),
        width(0, 1),
        width(2, 8),
        direct(Tile { oc_vectors: 0, ..t }, 1),
        direct(Tile { oc_vectors: 4, ..t }, 1),
        direct(Tile { pixel_tile: 0, ..t }, 1),
        direct(Tile { pixel_tile: 15, ..t }, 1),
        direct(Tile { oc_vectors: 2, pixel_tile: 8, ..t }, 1),
        direct(t, 0),
        direct(t, 5),
        direct(Tile { row_tile: 0, ..t }, 1),
        direct(Tile { row_tile: 2, pixel_tile: 8, ..t }, 1),
        Schedule { run: Run::threads(0), ..base },
        Schedule { loop_nest: LoopNest::ColumnBlocks(0), ..base },
        Schedule { copy: InputCopy::Group, run: Run { threads: 2, split: Split::Rows }, ..base },
        Schedule { copy: InputCopy::Bands(0), ..base },
        Schedule {
            copy: InputCopy::Bands(2),
            run: Run { threads: 2, split: Split::Items },
            ..base
        },
        Schedule { run: Run::threads(schedule::MAX_THREADS + 1), ..base },
        Schedule { loop_nest: LoopNest::ColumnBlocks(schedule::MAX_KNOB + 1), ..base },
        Schedule { copy: InputCopy::Bands(schedule::MAX_KNOB + 1), ..base },
    ];
    for s in bad {
        assert!(
            matches!(compiler.compile_with(&spec, &s), Err(Error::InvalidSchedule { .. })),
            "{s:?}"
        );
    }
    // What the typed form cannot write down, the flat form of older files
    // could: such a file is refused as it is read, naming the field.
    for (json, field) in [
        (
            r#"{"strategy":"width","oc_vectors":2,"pixel_tile":8,"reduction_unroll":1,"loop_order":"rows_outer"}"#,
            "oc_vectors",
        ),
        (
            r#"{"strategy":"width","oc_vectors":1,"pixel_tile":6,"reduction_unroll":1,"loop_order":"rows_outer"}"#,
            "pixel_tile",
        ),
        (
            r#"{"strategy":"depthwise","oc_vectors":1,"pixel_tile":6,"reduction_unroll":2,"loop_order":"rows_outer"}"#,
            "reduction_unroll",
        ),
        (
            r#"{"strategy":"direct","oc_vectors":1,"pixel_tile":6,"reduction_unroll":1,"loop_order":"channels_outer","col_block":8}"#,
            "col_block",
        ),
        (
            r#"{"strategy":"width","oc_vectors":1,"pixel_tile":8,"reduction_unroll":1,"loop_order":"rows_outer","interleave":true}"#,
            "interleave",
        ),
    ] {
        let e = Schedule::from_json(json).unwrap_err().to_string();
        assert!(e.contains(field), "{json}: {e}");
    }
    assert!(Schedule::from_json(r#"{"strategy":"direct"}"#).is_err());
    let json = base.to_json();
    assert_eq!(Schedule::from_json(&json).unwrap(), base);
}

/// Knob values whose arithmetic overflowed: a `col_block` of 2^64 − 1
/// rounded up to whole pixel tiles wrapped to 0 and the compiler divided
/// by it; a `pixel_tile` or `row_tile` of 2^63 made the accumulator count
/// `oc_vectors · pixel_tile · row_tile` wrap to 0, within the limit of 14.
/// Each passed `legal`; each is now refused naming its field, and the
/// largest legal column block and band still compute the layer.
#[test]
fn bug_overflowing_knobs_are_refused() {
    let spec = small();
    let compiler = Compiler::host().unwrap();
    let base = Schedule { loop_nest: LoopNest::RowsOuter, ..schedule::choose(&spec) };
    let direct = |tile: Tile| Schedule {
        algorithm: Algorithm::Direct(Direct {
            tile,
            reduction_unroll: 1,
            layout: Layout::Nchw,
            row_length: None,
            merged_columns: false,
        }),
        ..base
    };
    let (max, half) = (usize::MAX, 1usize << 63);
    for (field, value, s) in [
        ("loop_nest", max, Schedule { loop_nest: LoopNest::ColumnBlocks(max), ..base }),
        ("loop_nest", half, Schedule { loop_nest: LoopNest::ColumnBlocks(half), ..base }),
        ("pixel_tile", half, direct(Tile { oc_vectors: 2, pixel_tile: half, row_tile: 1 })),
        ("row_tile", half, direct(Tile { oc_vectors: 2, pixel_tile: 1, row_tile: half })),
        (
            "copy",
            max,
            Schedule { copy: InputCopy::Bands(max), run: base.run.split(Split::Rows), ..base },
        ),
    ] {
        match compiler.compile_with(&spec, &s) {
            Err(Error::InvalidSchedule { field: f, value: v, .. }) => {
                assert_eq!(f, field, "{s:?}");
                assert!(v.contains(&value.to_string()), "{field}: {v}");
            }
            other => panic!("{s:?}: {other:?}"),
        }
    }
    let largest = Schedule {
        loop_nest: LoopNest::ColumnBlocks(schedule::MAX_KNOB),
        copy: InputCopy::Bands(schedule::MAX_KNOB),
        run: base.run.split(Split::Rows),
        ..base
    };
    check_kernel(&spec, &largest, 5);
}

#[test]
fn nan_and_infinity_propagate() {
    for act in ["none", "relu", "relu6", "leaky_relu"] {
        let spec = spec(&format!(
            r#"{{"op":"conv2d","in_channels":2,"out_channels":4,"height":6,"width":6,"kernel":3,"padding":1,"activation":"{act}"}}"#
        ));
        let kernel = Compiler::host().unwrap().compile(&spec).unwrap();
        let mut x = random_tensor(1, spec.input_len());
        x[7] = f32::NAN;
        x[20] = f32::INFINITY;
        let w = random_tensor(2, spec.weight_len());
        let b = random_tensor(3, 4);
        let packed = kernel.pack(&w, Some(&b)).unwrap();
        let mut y = vec![0.0; spec.output_len()];
        kernel.run(&x, &packed, &mut y).unwrap();
        let verdict = convjit::reference::verify(&spec, &x, &w, Some(&b), &y).unwrap();
        assert!(verdict.passed(), "{act}: {verdict:?}");
        assert!(y.iter().any(|v| v.is_nan()), "{act}: NaN did not propagate");
    }
}

#[test]
fn a_kernel_runs_again_on_new_input() {
    // The padded input copy is kept between runs: a second run with other
    // data must not see the first one's.
    for json in [
        r#"{"op":"conv2d","batch":2,"in_channels":5,"out_channels":6,"height":7,"width":9,"kernel":3,"padding":[2,1,0,3]}"#,
        r#"{"op":"conv2d","in_channels":6,"out_channels":6,"height":7,"width":9,"kernel":3,"padding":1,"groups":6}"#,
        r#"{"op":"conv_transpose2d","in_channels":3,"out_channels":5,"height":4,"width":6,"kernel":4,"stride":2,"padding":1}"#,
    ] {
        let spec = spec(json);
        let kernel = Compiler::host().unwrap().compile(&spec).unwrap();
        let w = random_tensor(1, spec.weight_len());
        let b = random_tensor(2, spec.out_channels());
        let packed = kernel.pack(&w, Some(&b)).unwrap();
        for seed in [3, 4] {
            let x = random_tensor(seed, spec.input_len());
            let mut y = vec![f32::NAN; spec.output_len()];
            kernel.run(&x, &packed, &mut y).unwrap();
            let verdict = convjit::reference::verify(&spec, &x, &w, Some(&b), &y).unwrap();
            assert!(verdict.passed(), "{json}, run with seed {seed}: {verdict:?}");
        }
    }
}

#[test]
fn a_kernel_is_shared_by_threads_and_splits_its_own_runs() {
    fn shareable<T: Send + Sync>() {}
    shareable::<convjit::Kernel>();
    // Two runs at once of one kernel that itself runs on two threads: the
    // second run finds the padded copies in use and makes its own. Every
    // way of sharing an image: items, rows, and whole groups.
    let json = r#"{"op":"conv2d","batch":2,"in_channels":12,"out_channels":20,"height":9,"width":11,"kernel":3,"padding":1,"groups":2}"#;
    let spec = spec(json);
    let shares = [
        (Split::Items, InputCopy::Image),
        (Split::Rows, InputCopy::Image),
        (Split::Items, InputCopy::Group),
        (Split::Rows, InputCopy::Bands(2)),
    ];
    for (split, copy) in shares {
        let sched = Schedule { run: Run { threads: 2, split }, copy, ..schedule::choose(&spec) };
        let kernel = Compiler::host().unwrap().compile_with(&spec, &sched).unwrap();
        assert_eq!(kernel.threads(), 2.min(rayon_threads()));
        runs_at_once(&spec, &kernel);
    }
}

#[test]
fn a_kernel_takes_another_run_without_compiling_again() {
    // One kernel compiled for one thread, then run on two by every split
    // its copy allows; a run its copy cannot take is refused, naming the
    // field, and the kernel is not changed by asking.
    let json = r#"{"op":"conv2d","batch":2,"in_channels":12,"out_channels":20,"height":9,"width":11,"kernel":3,"padding":1,"groups":2}"#;
    let spec = spec(json);
    let compiler = Compiler::host().unwrap();
    for (copy, splits, refused) in [
        (InputCopy::Image, &[Split::Items, Split::Rows][..], None),
        (InputCopy::Group, &[Split::Items], Some(Split::Rows)),
        (InputCopy::Bands(2), &[Split::Rows], Some(Split::Items)),
    ] {
        let one =
            Schedule { copy, run: Run::threads(1).split(splits[0]), ..schedule::choose(&spec) };
        let mut kernel = compiler.compile_with(&spec, &one).unwrap();
        assert_eq!(kernel.threads(), 1);
        for &split in splits {
            let run = Run { threads: 2, split };
            kernel.set_run(run).unwrap();
            assert_eq!(kernel.schedule().run, run);
            assert_eq!(kernel.schedule().code_key(), one.code_key());
            assert_eq!(kernel.threads(), 2.min(rayon_threads()));
            runs_at_once(&spec, &kernel);
        }
        let kept = *kernel.schedule();
        if let Some(split) = refused {
            match kernel.set_run(Run { threads: 2, split }) {
                Err(Error::InvalidSchedule { field: "split", .. }) => {}
                other => panic!("{copy:?} with split {split:?}: {other:?}"),
            }
        }
        let zero = kernel.set_run(Run::threads(0));
        assert!(matches!(zero, Err(Error::InvalidSchedule { field: "threads", .. })), "{zero:?}");
        assert_eq!(*kernel.schedule(), kept, "a refused run changes nothing");
        runs_at_once(&spec, &kernel);
    }
}

/// Runs `kernel` on three threads at once, twenty times each, checking
/// every output.
fn runs_at_once(spec: &ValidSpec, kernel: &convjit::Kernel) {
    let w = random_tensor(1, spec.weight_len());
    let b = random_tensor(2, spec.out_channels());
    let packed = kernel.pack(&w, Some(&b)).unwrap();
    std::thread::scope(|s| {
        for seed in [3, 4, 5] {
            let (packed, w, b) = (&packed, &w, &b);
            s.spawn(move || {
                for _ in 0..20 {
                    let x = random_tensor(seed, spec.input_len());
                    let mut y = vec![f32::NAN; spec.output_len()];
                    kernel.run(&x, packed, &mut y).unwrap();
                    let verdict = convjit::reference::verify(spec, &x, w, Some(b), &y).unwrap();
                    assert!(verdict.passed(), "seed {seed}: {verdict:?}");
                }
            });
        }
    });
}

/// Threads in the pool the kernels split their runs across.
fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from).max(1)
}

/// Schedules in the flat form that files held before schedules were typed
/// (the tuning caches under docs/tuning were written so) migrate field for
/// field, and the typed form round-trips.
#[test]
fn flat_schedules_of_older_files_migrate() {
    // An enum's name in JSON.
    fn text<T: serde::Serialize>(value: &T) -> String {
        serde_json::to_value(value).unwrap().as_str().unwrap().to_string()
    }
    let mut seen = 0;
    for file in ["docs/tuning/cache-10s.json", "docs/tuning/cache-120s.json"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let cache: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for entry in cache["entries"].as_array().unwrap() {
            let flat = &entry["schedule"];
            let s = Schedule::from_json(&flat.to_string()).unwrap();
            let n = |field: &str| flat[field].as_u64().unwrap() as usize;
            let name = |field: &str| flat[field].as_str().unwrap().to_string();
            assert_eq!(text(&s.strategy()), name("strategy"), "{flat}");
            assert_eq!(
                (s.oc_vectors(), s.pixel_tile(), s.row_tile(), s.reduction_unroll()),
                (n("oc_vectors"), n("pixel_tile"), n("row_tile"), n("reduction_unroll")),
                "{flat}"
            );
            assert_eq!(s.interleave(), flat["interleave"].as_bool().unwrap(), "{flat}");
            let nest = match (name("loop_order").as_str(), flat["col_block"].as_u64()) {
                ("channels_outer", None) => LoopNest::ChannelsOuter,
                ("rows_outer", None) => LoopNest::RowsOuter,
                ("rows_outer", Some(b)) => LoopNest::ColumnBlocks(b as usize),
                other => panic!("{other:?}"),
            };
            assert_eq!(s.loop_nest, nest, "{flat}");
            assert_eq!(
                (s.run.threads, text(&s.run.split)),
                (n("threads"), name("split")),
                "{flat}"
            );
            assert_eq!(serde_json::to_value(s.copy).unwrap(), flat["copy"], "{flat}");
            assert_eq!(Schedule::from_json(&s.to_json()).unwrap(), s);
            seen += 1;
        }
    }
    assert!(seen >= 10, "{seen} schedules");
}

/// Assembled channels tiles of two and three vectors of channels, with
/// more than 16 channels per group and every activation: the AVX-512
/// tile's epilogue sets its activation's constants again for each vector
/// (the transpose of the vector before reuses their registers; a relu on
/// the second vector once compared with leftovers of the first).
#[test]
fn assembled_tiles_activate_every_vector_of_channels() {
    for activation in ["none", "relu", "relu6", "leaky_relu"] {
        let spec = spec(&format!(
            r#"{{"op":"conv2d","in_channels":8,"out_channels":40,"height":6,"width":16,
                "kernel":3,"padding":1,"activation":"{activation}"}}"#
        ));
        for isa in Isa::available().filter(|isa| isa.is_assembled()) {
            for (oc_vectors, pixel_tile) in [(2, 6), (3, 4)] {
                let tile = Tile { oc_vectors, pixel_tile, row_tile: 1 };
                let schedule = Schedule {
                    isa,
                    algorithm: common::algorithm(Family::Direct, tile, 1, false),
                    ..schedule::choose(&spec)
                };
                // Plain (the tile's own epilogue) and checked (the IR's).
                for seed in [1, 4] {
                    check_kernel(&spec, &schedule, seed);
                }
            }
        }
    }
}

/// Layers an assembled tile cannot take (a kernel row of more than 256
/// taps) get a legal schedule of Cranelift's tiles from the heuristic,
/// whatever algorithm it would have chosen.
#[test]
fn the_heuristic_falls_back_to_sse_past_the_assembled_tiles_limits() {
    for json in [
        r#"{"op":"conv2d","in_channels":2,"out_channels":2,"groups":2,"height":2,"width":300,"kernel":[1,270]}"#,
        r#"{"op":"conv2d","in_channels":1,"out_channels":20,"height":1,"width":300,"kernel":[1,270]}"#,
    ] {
        let spec = spec(json);
        let schedule = schedule::choose(&spec);
        assert!(schedule.legal(&spec).is_ok(), "{schedule:?}");
        assert_eq!(schedule.isa, Isa::Sse);
        check_kernel(&spec, &schedule, 3);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Groups of more output channels than one vector of the widest ISA
    /// holds (which `any_spec` does not draw), with every activation, on
    /// assembled direct tiles of one to three vectors of channels: every
    /// vector's epilogue against the reference, plain and checked.
    #[test]
    fn assembled_tiles_of_wide_groups_match_reference(
        (cin, cout, h, w, k, pad) in (1usize..=6, 17usize..=52, 1usize..=7, 1usize..=20, 1usize..=3, 0usize..=1),
        activation in prop::sample::select(vec!["none", "relu", "relu6", "leaky_relu"]),
        (oc_vectors, pixel_tile) in (1usize..=3, 1usize..=7),
        seed in any::<u64>(),
    ) {
        let spec = spec(&format!(
            r#"{{"op":"conv2d","in_channels":{cin},"out_channels":{cout},"height":{},"width":{},
                "kernel":{k},"padding":{pad},"activation":"{activation}"}}"#,
            h + k, w + k
        ));
        for isa in Isa::available().filter(|isa| isa.is_assembled()) {
            let most = algorithm::isa_accumulators(isa, oc_vectors);
            let tile = Tile { oc_vectors, pixel_tile: pixel_tile.min(most / oc_vectors), row_tile: 1 };
            let schedule = Schedule {
                isa,
                algorithm: common::algorithm(Family::Direct, tile, 1, false),
                ..schedule::choose(&spec)
            };
            prop_assert!(schedule.legal(&spec).is_ok(), "{schedule:?}");
            check_kernel(&spec, &schedule, seed);
        }
    }
}

/// Rows of another length are a schedule of flat planes only (a 1×1
/// conv2d of stride 1 without padding) and of lengths that divide a
/// plane: anything else is refused naming the field; a legal one reads
/// and writes the same tensors as the layer's own rows.
#[test]
fn rows_of_another_length_are_for_flat_planes_and_columns_only() {
    let compiler = Compiler::host().unwrap();
    let in_rows = |spec: &ValidSpec, len: usize| Schedule {
        algorithm: Algorithm::Width(Width {
            pixel_vectors: 1,
            row_tile: 1,
            reduction_unroll: 1,
            channels: 1,
            row_length: Some(len),
            joined: false,
            image: false,
        }),
        isa: Isa::Sse,
        ..schedule::choose(spec)
    };
    let refused = |layer: &ValidSpec, len: usize| {
        let e = compiler.compile_with(layer, &in_rows(layer, len)).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidSchedule { field: "row_length", .. }),
            "{layer} {len}: {e}"
        );
    };
    let accepted = |layer: &ValidSpec, len: usize| {
        let schedule = in_rows(layer, len);
        check_kernel(layer, &schedule, len as u64);
        assert_eq!(Schedule::from_json(&schedule.to_json()).unwrap(), schedule);
    };
    let flat = spec(
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":1,"bias":true}"#,
    );
    for json in [
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":3}"#,
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":1,"stride":2}"#,
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":1,"padding":1}"#,
        r#"{"op":"conv_transpose2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":1}"#,
    ] {
        refused(&spec(json), 12);
    }
    for len in [0, 7, 61, 120] {
        refused(&flat, len);
    }
    for len in [1, 4, 12, 60] {
        accepted(&flat, len);
    }
    // A k×1 layer without columns of padding: its whole plane as one row
    // (60 pixels), and no other length; a column of padding, a stride or
    // a kernel wider than one column refuses that too.
    let columns = spec(
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":[3,1],"padding":[1,0],"dilation":[2,1],"bias":true}"#,
    );
    for len in [10, 12, 30] {
        refused(&columns, len);
    }
    accepted(&columns, 60);
    for json in [
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":[3,1],"padding":1}"#,
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":[3,1],"stride":[2,1]}"#,
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":[3,2]}"#,
    ] {
        refused(&spec(json), 60);
    }
}

/// Merged column phases are a transposed conv's whose kernel is as wide as
/// its stride, on an assembled ISA, with one vector of channels, one row
/// and at most 16 output pixels a tile: every other schedule that asks
/// for them is refused, naming the field.
#[test]
fn merged_columns_are_for_column_phases_one_tile_can_take() {
    let Some(isa) = Isa::available().filter(|i| i.is_assembled()).max() else { return };
    let merged = |layer: &ValidSpec, tile: Tile, isa: Isa| Schedule {
        isa,
        algorithm: Algorithm::Direct(Direct {
            tile,
            reduction_unroll: 1,
            layout: Layout::Nchw,
            row_length: None,
            merged_columns: true,
        }),
        ..schedule::choose(layer)
    };
    let tile = |oc_vectors, pixel_tile, row_tile| Tile { oc_vectors, pixel_tile, row_tile };
    let refused = |layer: &ValidSpec, schedule: Schedule| {
        let e = Compiler::host().unwrap().compile_with(layer, &schedule).unwrap_err();
        let named = matches!(&e, Error::InvalidSchedule { field: "merged_columns", .. });
        assert!(named, "{layer} {schedule:?}: {e}");
    };
    for json in [
        r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":2,"stride":2}"#,
        r#"{"op":"conv_transpose2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":4,"stride":2,"padding":1}"#,
        r#"{"op":"conv_transpose2d","in_channels":3,"out_channels":5,"height":6,"width":10,"kernel":[2,1],"stride":[2,1]}"#,
    ] {
        let layer = spec(json);
        refused(&layer, merged(&layer, tile(1, 4, 1), isa));
    }
    let layer = spec(
        r#"{"op":"conv_transpose2d","in_channels":3,"out_channels":20,"height":6,"width":10,"kernel":2,"stride":2,"bias":true}"#,
    );
    refused(&layer, merged(&layer, tile(1, 4, 1), Isa::Sse));
    refused(&layer, merged(&layer, tile(2, 4, 1), isa));
    refused(&layer, merged(&layer, tile(1, 4, 2), isa));
    refused(&layer, merged(&layer, tile(1, 9, 1), isa)); // 18 pixels a row
    for pixels in [1, 3, 6] {
        let schedule = merged(&layer, tile(1, pixels, 1), isa);
        check_kernel(&layer, &schedule, pixels as u64);
        assert_eq!(Schedule::from_json(&schedule.to_json()).unwrap(), schedule);
    }
}

/// A compiler shares a kernel it made among the layers of one spec (their
/// names aside) and
/// schedule while one of them holds it — each packing its own weights and
/// computing its own output — keeps none alive itself, and never shares
/// between its checked and plain lowerings.
#[test]
fn identical_layers_share_one_compiled_kernel() {
    let spec = spec(
        r#"{"op": "conv2d", "batch": 1, "in_channels": 8, "out_channels": 8, "height": 9, "width": 7, "kernel": 3, "padding": 1}"#,
    );
    let compiler = Compiler::host().unwrap();
    let schedule = compiler.schedule_for(&spec, 1);
    let first = compiler.compile_shared(&spec, &schedule).unwrap();
    // Of another name, the same layer.
    let named = convjit::ConvSpec { name: Some("other".into()), ..spec.to_conv_spec() };
    let named = named.validate().unwrap();
    let second = compiler.clone().compile_shared(&named, &schedule).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &second));
    let checked = compiler.clone().checked().compile_shared(&spec, &schedule).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &checked));
    // Two layers of their own weights on one kernel.
    let x = random_tensor(1, spec.input_len());
    for (kernel, seed) in [(&first, 2), (&second, 3)] {
        let w = random_tensor(seed, spec.weight_len());
        let b = random_tensor(seed + 10, spec.out_channels());
        let packed = kernel.pack(&w, Some(&b)).unwrap();
        let mut y = vec![f32::NAN; spec.output_len()];
        kernel.run(&x, &packed, &mut y).unwrap();
        let verdict =
            convjit::reference::Oracle::for_schedule(&spec, Some(&schedule), &x, &w, Some(&b))
                .and_then(|o| o.verify(&y))
                .unwrap();
        assert!(verdict.passed());
    }
    // The compiler keeps no kernel alive: once no layer holds it, it is
    // freed, and the next layer compiles it again.
    let weak = std::sync::Arc::downgrade(&first);
    drop((first, second));
    assert!(weak.upgrade().is_none());
    assert!(compiler.compile_shared(&spec, &schedule).is_ok());
}
