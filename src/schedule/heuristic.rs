//! The deterministic heuristic: a legal schedule for every valid spec, each
//! rule with the measurement behind it.

use super::{
    Algorithm, Direct, InputCopy, LoopNest, MAX_ACCUMULATORS, MAX_THREADS, Run, Schedule, Split,
    Strategy, Tile, Width, Winograd,
};
use crate::algorithm::even_blocks;
use crate::geometry::Geometry;
use crate::spec::ValidSpec;
use crate::target::{Isa, LANES};

/// The fewest MACs (`macs_valid`) per thread the heuristic splits a layer
/// into: about 12 thousand TSC ticks (5 µs) of work at 8 MACs per tick,
/// where handing a share to a spinning worker takes 1–4 thousand.
pub const MIN_MACS_PER_THREAD: u64 = 100_000;

/// Output rows below which threads share channel blocks instead of rows
/// (rows measured as fast as channel blocks or faster on every suite layer,
/// `docs/schedules.md`): 16 rows cut in 2 or 4 equal slices; fewer
/// leave threads unevenly loaded.
const MIN_ROWS_TO_SPLIT: usize = 16;

/// The deterministic heuristic for one thread: a legal schedule for every
/// valid spec.
pub fn choose(spec: &ValidSpec) -> Schedule {
    choose_threaded(spec, 1)
}

/// The deterministic heuristic for a run on `threads` threads (clamped to
/// 1..=[`MAX_THREADS`]) with the host's vector ISAs.
pub fn choose_threaded(spec: &ValidSpec, threads: usize) -> Schedule {
    choose_for(spec, threads, Isa::host())
}

/// The deterministic heuristic for a run on `threads` threads (clamped to
/// 1..=[`MAX_THREADS`]) with vector ISAs up to `widest` (those of them the
/// host has). The measurements behind each choice are in
/// `docs/schedules.md` (`examples/compare_schedules.rs`).
pub fn choose_for(spec: &ValidSpec, threads: usize, widest: Isa) -> Schedule {
    let threads = worth_threads(spec, threads);
    winograd(spec, threads, widest).unwrap_or_else(|| direct(spec, threads, widest))
}

/// What [`choose_for`] picks where Winograd is not an option: the layer
/// computed by its own algorithm (direct, width or depthwise).
pub fn choose_direct_for(spec: &ValidSpec, threads: usize, widest: Isa) -> Schedule {
    direct(spec, worth_threads(spec, threads), widest)
}

/// `threads` clamped to 1..=[`MAX_THREADS`] and to as many as give each
/// at least `MIN_MACS_PER_THREAD` of the work. With the runtime's spinning
/// workers, the suites' layers of 0.3 to 4 M MACs (depthwise, grouped,
/// 1×1) ran 1.8–2.0× faster on two threads than on one
/// (docs/schedules.md), where a worker woken from rayon's parked pool
/// made them 0.9–1.3×.
fn worth_threads(spec: &ValidSpec, threads: usize) -> usize {
    let macs = crate::complexity::Complexity::of(spec).macs_valid;
    let worth = usize::try_from(macs / MIN_MACS_PER_THREAD).unwrap_or(usize::MAX);
    threads.min(worth).clamp(1, MAX_THREADS)
}

/// The heuristic's schedule of the layer's own algorithm, for `threads`
/// threads already clamped.
fn direct(spec: &ValidSpec, threads: usize, widest: Isa) -> Schedule {
    if let Some(schedule) = flat_plane(spec, threads, widest) {
        return schedule;
    }
    if let Some(schedule) = flat_columns(spec, threads, widest) {
        return schedule;
    }
    if let Some(schedule) = image_rows(spec, threads, widest) {
        return schedule;
    }
    if let Some(schedule) = joined_rows(spec, threads, widest) {
        return schedule;
    }
    let geometry = Geometry::of(spec);
    let taps = geometry.most_taps();
    let depthwise = depthwise(spec);
    // With AVX2 or more, an assembled depthwise tile (8 or 16 channels in
    // lanes, over a copy blocked by as many) on rows under 8 output pixels
    // and on strided rows of up to 28: measured (docs/schedules.md), on
    // AVX2 1.25× the f32x4 depthwise tile at 7 pixels and 1.12–1.16× the
    // width tile on mbv2_dw3x3_s2 and effnet_dw5x5_s2; on AVX-512, whose
    // tile stores its outputs itself, 1.11–1.15× and 1.19–1.24× AVX2's
    // tile there (which ran 0.93–1.14× the width tile); the width tile
    // stays on wider or unstrided rows (the depthwise tile ran 0.54–0.82×
    // there; on AVX-512 `image_rows` and `joined_rows` take the unstrided
    // ones first).
    let depthwise_isa = Isa::host().min(widest).min(Isa::Avx512);
    let assembled_depthwise = depthwise
        && spec.op() == crate::spec::Op::Conv2d
        && depthwise_isa >= Isa::Avx2
        && (spec.out_width() < MIN_WIDTH_FOR_ROWS
            || (spec.stride()[1] > 1 && spec.out_width() <= MAX_NARROW_ROW));
    let strategy = match depthwise {
        true if assembled_depthwise => Strategy::Depthwise,
        // One input channel per group. Along the row, each FMA takes its
        // input vector straight from the NCHW copy and the stores are whole
        // vectors; across channels (a channel-blocked copy), no lane idles
        // on rows shorter than two vectors. Measured: the width strategy ran
        // 1.2–2.2× faster on depthwise layers 14 to 112 pixels wide, and
        // 0.9× on a 7-pixel one.
        true if spec.out_width() >= MIN_WIDTH_FOR_ROWS => Strategy::Width,
        true => Strategy::Depthwise,
        // With assembled tiles, a group of few output channels, or a short
        // reduction, takes the width algorithm with several channels per
        // tile: the direct tile's lanes would idle on the channels, or its
        // epilogue (a transpose per 16 channels) would weigh on few FMAs.
        // Measured (AVX-512, docs/schedules.md): 1.28–1.36× on grouped
        // layers of 4 and 8 channels per group, 1.19–1.34× on a 1×1 layer
        // of 32 input channels and a 5×5 one of 1; 0.64–0.89× on 1×1 layers
        // of 64 to 256.
        false
            if widest_assembled(widest)
                && ((spec.groups() > 1 && spec.out_per_group() <= MAX_WIDTH_GROUP)
                    || spec.in_per_group() * taps <= MAX_WIDTH_REDUCTION) =>
        {
            Strategy::Width
        }
        // One weight vector against 12 fresh broadcasts: the best measured
        // shape of the register tile (`codegen::tile`), the ceiling's.
        false => Strategy::Direct,
    };
    // The register tile: 12–14 accumulators (rule 2 of `codegen::tile`). Measured
    // (docs/schedules.md): for the width strategy, one vector of 4 pixels
    // in each of 14 rows ran 1.1–1.3× faster than whole rows of up to 14
    // vectors on depthwise layers 14 to 112 pixels wide; for the direct
    // strategy, 7 pixels in each of 2 rows ran 1.15–1.45× faster than 12
    // pixels of one row on 3×3 layers with rows of 7 to 28 pixels (no
    // 4-pixel tail tile, twice the accumulators on short rows), but only
    // 0–3% on wider rows, where its second, one-row body (for a slice of
    // odd rows) costs compile time, and 3–4% slower on the few-tap layers.
    let narrow = geometry.most_cols() <= MAX_NARROW_ROW;
    let isa = match strategy {
        Strategy::Direct => direct_isa(spec, widest),
        Strategy::Width if widest_assembled(widest) => Isa::host().min(widest),
        Strategy::Depthwise if assembled_depthwise => depthwise_isa,
        _ => Isa::Sse,
    };
    // The assembled tiles take up to 14 accumulators, the measured best on
    // AVX-512 (one more register holds the weights, the pixels are
    // broadcast from memory inside each FMA) and as many as AVX2's 16
    // registers leave room for (with its weights and broadcast pixel),
    // the row cut into equal tiles rather than 14s and a short tail
    // (33 pixels: 3 × 11, not 14 + 14 + 5).
    let cols = geometry.most_cols();
    // The assembled width tile: one channel per tile for depthwise
    // layers, else up to 7 (4 when the reduction is long), and 14
    // accumulators' worth of pixel vectors, along the row first (measured:
    // on depthwise layers 14 to 56 pixels wide, rows of 4, 2 or 1 vectors
    // in 3, 7 or 14 rows ran 1.1–1.5× faster than the f32x4 tile).
    let width_channels = match depthwise {
        true => 1,
        false if spec.in_per_group() * taps <= MAX_WIDTH_REDUCTION => spec.out_per_group().min(7),
        false => spec.out_per_group().min(4),
    };
    // On AVX2, two vectors of channels (16) by up to 6 pixels where a
    // group's channels fill whole pairs of vectors: each broadcast pixel
    // then feeds two FMAs, 8 loads per 12 FMAs where one vector by 14
    // pixels takes 15 per 14 (AVX2 has no broadcast inside the FMA, and
    // the cores measured load two vectors per cycle). Measured (AVX2,
    // docs/schedules.md): 1.05–1.39× the one-vector tile of 14 on the
    // dense, strided, dilated and asymmetric layers (alexnet_g2_3x3 as
    // fast) and on unet_tconv2x2s2; but 0.74–0.95× on the transposed layers whose
    // phases have several taps (dcgan_tconv4x4s2, fcn_tconv4x4s2), which
    // keep one vector.
    let pairs = isa == Isa::Avx2
        && strategy == Strategy::Direct
        && (spec.op() == crate::spec::Op::Conv2d || taps == 1)
        && spec.out_per_group().div_ceil(isa.lanes()).is_multiple_of(2);
    let (pixel_tile, row_tile) = match strategy {
        Strategy::Direct if pairs => {
            let most = crate::algorithm::isa_accumulators(isa, AVX2_CHANNEL_VECTORS)
                / AVX2_CHANNEL_VECTORS;
            (even_blocks(cols, most), 1)
        }
        Strategy::Width if isa.is_assembled() => {
            let m = width_channels;
            let fits = |j: usize| m * j <= crate::algorithm::isa_accumulators(isa, m.min(j));
            let vectors = (1..=MAX_ACCUMULATORS).rev().find(|&j| fits(j)).unwrap_or(1);
            let along = vectors.min(cols_of(&geometry).div_ceil(isa.lanes())).max(1);
            (along * isa.lanes(), (vectors / along).clamp(1, geometry.most_rows().max(1)))
        }
        Strategy::Width => (LANES, MAX_ACCUMULATORS),
        Strategy::Depthwise if assembled_depthwise => (MAX_ACCUMULATORS, 1),
        Strategy::Direct if narrow && taps > 3 => (7, 2),
        Strategy::Direct if isa.is_assembled() => {
            let most = MAX_ACCUMULATORS;
            (even_blocks(cols, most), 1)
        }
        _ => (12, 1),
    };
    // Unroll the channel loop until an iteration holds up to 36 taps (4
    // channels of a 3×3 kernel or of any smaller phase). The autotuner
    // found this (docs/autotuning.md): 4 channels per iteration ran 5–11%
    // faster than 1 on the suite's 3×3 layers and 16% on the 2×2-stride-2
    // transposed one (whose phases have one tap each), where one channel of
    // 9 taps leaves the loop's overhead and the accumulators' moves on every
    // 9 FMAs; on a 7×7 kernel 4 channels (196 taps) ran 10% slower (code
    // size), so kernels of more than 18 taps per phase are not unrolled.
    // The assembled tiles' loop bodies are longer in bytes (EVEX FMAs
    // with memory operands): one channel of 3 taps or more per iteration
    // ran 8–21% faster than 4 on the suite's 3×3 layers and 8–19% on its
    // 1×3 and 3×1 ones (AVX-512, `compare_schedules`, docs/schedules.md).
    let cig = spec.in_per_group();
    let reduction_unroll = match strategy {
        Strategy::Depthwise => 1,
        _ if isa.is_assembled() => (MAX_ASSEMBLED_BODY_TAPS / taps).clamp(1, 4),
        _ => (MAX_BODY_TAPS / taps).clamp(1, 4),
    }
    .min(cig);
    // Kernels of a few taps per phase read one input pixel per FMA per
    // channel: with many channels, an NCHW input spreads each pixel tile's
    // reduction over as many planes. The NHWC copy keeps a tile's channels
    // together; it measured 1.3–1.5× faster on the suite's 1×1, 3×1 and
    // 2×2-stride-2 transposed layers with 64–256 input channels, and 0.9×
    // on 3×3 layers and on 32 channels.
    // With the assembled tiles, only the 1×1 layers keep it: on 1×3 and
    // 3×1 the NCHW input ran as fast or faster.
    let few_taps = if isa.is_assembled() { 1 } else { 3 };
    let interleave = strategy == Strategy::Direct && taps <= few_taps && cig >= 64;
    let (copy, split) = staging(spec, &geometry, threads);
    let oc_vectors = match strategy {
        Strategy::Width => width_channels,
        _ if pairs => AVX2_CHANNEL_VECTORS,
        _ => 1,
    };
    let tile = Tile { oc_vectors, pixel_tile, row_tile };
    let algorithm = Algorithm::from_knobs(strategy, tile, reduction_unroll, interleave, isa);
    let run = Run { threads, split };
    let schedule =
        Schedule { isa, algorithm, winograd: None, loop_nest: LoopNest::RowsOuter, copy, run };
    // A layer the assembled tiles cannot take (a kernel row of more than
    // 256 taps, buffers past their 32-bit displacements) gets the
    // schedule Cranelift's tiles would have.
    if isa.is_assembled() && schedule.legal(spec).is_err() {
        return choose_for(spec, threads, Isa::Sse);
    }
    merged_columns(spec, &geometry, schedule).unwrap_or(schedule)
}

/// `schedule` with its direct AVX-512 tile computing both column phases
/// of a transposed conv of column stride 2 whose phases merge
/// ([`crate::algorithm::Direct::merged_columns`]: a kernel two columns
/// wide, or four without padding): 2 × up to 7 pixels, the row in
/// near-equal tiles. Each broadcast input pixel then feeds both phases'
/// FMAs, and each channel's 14 outputs are one store where each phase
/// stored its 7 pixels at every other lane (half a cache line at a time).
/// Measured (the AMD AVX-512 host, `compare_schedules --relative`,
/// docs/schedules.md): 1.08–1.11× on unet_tconv2x2s2, 1.06–1.19× on five
/// layers like it of 17 to 64 columns and 64 to 256 channels, and
/// 1.02–1.10× on 4×4 stride-2 unpadded ones of 16 to 56 columns. Three
/// column phases (4 pixels each) ran 0.96×: `None` for them, as for every
/// other layer.
fn merged_columns(spec: &ValidSpec, geometry: &Geometry, schedule: Schedule) -> Option<Schedule> {
    let Algorithm::Direct(direct) = schedule.algorithm else { return None };
    if schedule.isa != Isa::Avx512 || geometry.merged_columns() != Some(2) {
        return None;
    }
    // As many pixels as the register file and the stores take: 7.
    let most = crate::algorithm::isa_accumulators(Isa::Avx512, 2)
        .min(crate::algorithm::MAX_MERGED_PIXELS)
        / 2;
    let tile =
        Tile { oc_vectors: 1, pixel_tile: even_blocks(geometry.most_cols(), most), row_tile: 1 };
    let algorithm = Algorithm::Direct(Direct { tile, merged_columns: true, ..direct });
    let merged = Schedule { algorithm, ..schedule };
    merged.legal(spec).is_ok().then_some(merged)
}

/// The input copy and how threads share the work, for `spec` (whose
/// geometry is `geometry`) on `threads` threads.
fn staging(spec: &ValidSpec, geometry: &Geometry, threads: usize) -> (InputCopy, Split) {
    // A group's planes copied just before its work items stay in cache, where
    // a whole-image copy goes to memory and back: depthwise layers ran 1.7–2×
    // faster with it. Threads then share whole groups, so there must be
    // enough of them to go round evenly.
    let groups = spec.groups();
    let per_group = groups > 1 && (groups.is_multiple_of(threads) || groups >= 4 * threads);
    // Likewise the rows a band of output rows reads: bands of up to 4 rows
    // measured 3–14% faster than a whole-image copy on one thread on the
    // suite's 1×1, transposed and 128×128 layers (the copy stays in L2), as
    // fast elsewhere, and on two threads up to 1.4× faster, as each thread
    // copies its own bands in the one parallel region. Smaller bands when
    // there are few rows, so that threads share them evenly.
    let rows = geometry.most_rows();
    if per_group {
        (InputCopy::Group, Split::Items)
    } else if rows >= MIN_ROWS_TO_SPLIT {
        // As many bands for every thread: of up to twice the rows, the
        // count nearest that cuts them so (33 rows on two threads: 6
        // bands of 5 or 6 rows, where bands of 4 left one thread 5 bands
        // and the other 4).
        let nominal = (rows / (4 * threads)).clamp(1, 4);
        let even = (1..=2 * nominal)
            .filter(|&b| rows.div_ceil(b).is_multiple_of(threads))
            .min_by_key(|&b| b.abs_diff(nominal));
        (InputCopy::Bands(even.unwrap_or(nominal)), Split::Rows)
    } else {
        (InputCopy::Image, Split::Items)
    }
}

/// The schedule of a k×1 conv2d of stride 1 without columns of padding
/// ([`ValidSpec::columns_are_flat`], `k` > 1) whose tile is the direct
/// algorithm's: each plane computed as one row of `H·W` pixels, its taps
/// `W` pixels apart (`row_length`), with the schedule the rules choose
/// for that row. A tile's pixels then run on past the end of an image
/// row: no tile is cut short at a row's end (17-pixel rows: 14 + 3), and
/// the padded copy is the plane with `top·W` and `bottom·W` zeros around
/// it rather than rows each padded. Measured (the AMD AVX-512 host,
/// `compare_schedules --relative`, docs/schedules.md): 1.05–1.06× on
/// inception_7x1 (17×17) and on acnet_3x1 (56×56). `None` for other
/// layers.
fn flat_columns(spec: &ValidSpec, threads: usize, widest: Isa) -> Option<Schedule> {
    let len = spec.one_row_length()?;
    let row = spec.as_rows(len)?;
    let mut schedule = choose_for(&row, threads, widest);
    match &mut schedule.algorithm {
        Algorithm::Direct(direct) => direct.row_length = Some(len),
        _ => return None,
    }
    schedule.legal(spec).ok()?;
    Some(schedule)
}

/// The schedule of a 1×1 conv2d of stride 1 without padding (whose input
/// and output planes are the same pixels, [`ValidSpec::plane_is_flat`])
/// with assembled tiles, for planes of at least [`MIN_FLAT_PIXELS`]
/// pixels: a GEMM of the weights by the plane. The width tile of up to 6
/// output channels by 2 vectors of 8 pixels on AVX2 (12 accumulators, 2
/// pixel vectors, a broadcast weight), up to 12 channels by one vector of
/// 16 on AVX-512 (whose FMAs broadcast the weight from memory: a pixel
/// vector per 12 FMAs), on the plane cut
/// into rows of whole tiles — the longest of 4, 2 or 1 tiles that
/// divides it, else the plane as one row, computed in
/// column blocks of 32 pixels that stay in cache while every channel block
/// passes. No tile stops at a row's end: the layer's own 14-, 28- or
/// 56-pixel rows leave vectors half empty, and its NHWC direct tile
/// reads 14 pixels' channels a cache line each. Measured (AVX2,
/// `compare_schedules`, docs/schedules.md): 1.19–1.52× the direct NHWC
/// tile on 1×1 layers of 64 to 256 input channels on 56×56, 28×28 and
/// 14×14 planes, 3.2× on one of 1,024 channels at 14×14; 0.73× on a 7×7
/// one of 2,048 channels (49 pixels, left to the direct tile). On
/// AVX-512 (an AMD host, `compare_schedules`, the same 1×1 layers): 1.05–1.74×
/// the direct NHWC tile on planes of 14×14 to 112×112, 0.95–0.97× on the
/// 7×7 ones; 12 channels by one vector then 1.00–1.13× 6 by 2 on the
/// suite's and holdout's 1×1 layers. `None` for other layers and for
/// `sse`.
fn flat_plane(spec: &ValidSpec, threads: usize, widest: Isa) -> Option<Schedule> {
    flat_plane_of(spec, threads, widest, MIN_FLAT_PIXELS)
}

/// [`flat_plane`] for planes of at least `fewest` pixels.
fn flat_plane_of(spec: &ValidSpec, threads: usize, widest: Isa, fewest: usize) -> Option<Schedule> {
    let isa = Isa::host().min(widest);
    let pixels = spec.out_height() * spec.out_width();
    if !isa.is_assembled() || !spec.plane_is_flat() || depthwise(spec) || pixels < fewest {
        return None;
    }
    let (channels, vectors) = flat_tile(isa, spec.out_per_group());
    let tile = vectors * isa.lanes();
    let whole = [4, 2, 1].map(|t| t * tile).into_iter().find(|&len| pixels.is_multiple_of(len));
    let len = whole.unwrap_or(pixels);
    let lowered = spec.as_rows(len)?;
    let geometry = Geometry::of(&lowered);
    let (copy, split) = staging(&lowered, &geometry, threads);
    let loop_nest = match geometry.most_rows() {
        1 => LoopNest::ColumnBlocks(FLAT_COLUMN_BLOCK),
        _ => LoopNest::RowsOuter,
    };
    let algorithm = Algorithm::Width(Width {
        pixel_vectors: vectors,
        row_tile: 1,
        reduction_unroll: MAX_ASSEMBLED_BODY_TAPS.min(spec.in_per_group()),
        channels,
        // The layer's own rows when they are whole tiles already.
        row_length: (len != spec.width()).then_some(len),
        joined: false,
        image: false,
    });
    let run = Run { threads, split };
    let schedule = Schedule { isa, algorithm, winograd: None, loop_nest, copy, run };
    schedule.legal(spec).ok()?;
    // Rows of whole vectors need no copy (no padding, no room past a
    // row): the code reads the image itself, in any band, and one thread
    // splits nothing.
    if algorithm.reads_copy(&lowered, &geometry, isa) {
        return Some(schedule);
    }
    let split = if threads > 1 { split } else { Split::Items };
    Some(Schedule { copy: InputCopy::Image, run: Run { threads, split }, ..schedule })
}

/// The schedule of a depthwise conv2d of stride 1 whose output rows are
/// as wide as its input rows, on AVX-512, where [`image_rows`] does not
/// take it (rows that fill less of their vectors): the width tile of one channel
/// on rows joined into runs ([`Width::joined`]), no lane idle at a row's
/// end. A plane of up to [`MAX_JOINED_VECTORS`] vectors (and rows) is
/// one run; a larger one runs [`JOINED_RUN_VECTORS`] vectors' worth of
/// whole rows at a time. The tiles read the image itself, with no copy
/// (`Algorithm::reads_image`), a channel's whole plane before the
/// next's (channels outer). Rows of more than 224 pixels (a row past 14
/// vectors) are left to the rules below. Measured (an AMD AVX-512 host,
/// `compare_schedules --relative`, docs/schedules.md), against the AVX2
/// depthwise tile and the width tile of the layer's own rows, with a
/// padded copy: 2.0× on 7×7 planes, 1.6× on 14×14, 1.2× on 28×28 (5×5
/// kernel), 1.2–1.3× on 56×56 and 1.1× on 112×112; reading the image,
/// 1.1–1.6× that (`scripts/compare_builds.py`, docs/schedules.md).
/// `None` for other layers and below AVX-512.
fn joined_rows(spec: &ValidSpec, threads: usize, widest: Isa) -> Option<Schedule> {
    if !depthwise(spec) || !spec.rows_join() || Isa::host().min(widest) != Isa::Avx512 {
        return None;
    }
    let lanes = Isa::Avx512.lanes();
    let (height, width) = (spec.out_height(), spec.width());
    // A tile holds at most `MAX_ACCUMULATORS` rows, as many vectors.
    let whole =
        height <= MAX_ACCUMULATORS && (height * width).div_ceil(lanes) <= MAX_JOINED_VECTORS;
    let rows = match whole {
        true => height,
        false => (JOINED_RUN_VECTORS * lanes / width).clamp(1, height.min(MAX_ACCUMULATORS)),
    };
    let width = Width {
        pixel_vectors: (rows * width).div_ceil(lanes),
        row_tile: rows,
        reduction_unroll: 1,
        channels: 1,
        row_length: None,
        joined: true,
        image: false,
    };
    reading_the_image(spec, width, threads)
}

/// The AVX-512 schedule of a depthwise layer whose width tile (of one
/// channel) reads the image itself (`Algorithm::reads_image`): each
/// channel's plane in turn, the order the image is stored in; `None`
/// where it is not legal.
fn reading_the_image(spec: &ValidSpec, width: Width, threads: usize) -> Option<Schedule> {
    let algorithm = Algorithm::Width(width);
    let run = Run { threads, split: Split::Items };
    let (loop_nest, copy) = (LoopNest::ChannelsOuter, InputCopy::Image);
    let schedule = Schedule { isa: Isa::Avx512, algorithm, winograd: None, loop_nest, copy, run };
    schedule.legal(spec).ok()?;
    Some(schedule)
}

/// The schedule of a depthwise conv2d of at most [`MAX_IMAGE_ROW_TAPS`]
/// taps on AVX-512, of column stride 2, or of stride 1 where a row's
/// vectors are at least [`MIN_IMAGE_ROW_LANES`] full: the width tile of
/// one channel reading the image's own rows ([`Width::image`]), a whole
/// output row per tile row, a channel's plane before the next's.
///
/// - Stride 1: as many rows as 14 accumulators hold, evened out over the
///   plane, so that each input vector loaded serves up to a kernel
///   column's taps. Measured (an AMD AVX-512 host, `compare_schedules`,
///   docs/schedules.md) against joined rows (`joined_rows`, which loads
///   a vector per tap): 1.30× on 56-pixel rows (3 rows), 1.40× on 112
///   (2 rows), 1.40× on 14×14 planes (14 rows), 1.36× with a 5×5 kernel
///   on 28×28 (7 rows); 0.94× on 7×7 planes, whose rows fill 7 of 16
///   lanes (joined rows keep those).
/// - Stride 2: deinterleaved loads, as many rows as leave 14 accumulators
///   or fewer (at most 4). Measured against the AVX-512 depthwise tile
///   over its channel-blocked copy (the rule below), with a row's
///   neighbouring taps loaded in pairs: 1.99–2.18× on a 3×3 layer of
///   56-pixel rows, 2.04–2.09× on one of 112, 1.00–1.12× on a 5×5 one.
///
/// `None` for other layers and below AVX-512.
fn image_rows(spec: &ValidSpec, threads: usize, widest: Isa) -> Option<Schedule> {
    let taps = spec.kernel()[0] * spec.kernel()[1];
    let lanes = Isa::Avx512.lanes();
    let pixel_vectors = spec.out_width().div_ceil(lanes);
    let stride = spec.stride()[1];
    let filled = spec.out_width() as f64 / (pixel_vectors * lanes) as f64;
    if !depthwise(spec)
        || spec.op() != crate::spec::Op::Conv2d
        || !(stride == 2 || (stride == 1 && filled >= MIN_IMAGE_ROW_LANES))
        || taps > MAX_IMAGE_ROW_TAPS
        || Isa::host().min(widest) != Isa::Avx512
    {
        return None;
    }
    let most = (MAX_ACCUMULATORS / pixel_vectors.max(1)).max(1);
    let height = spec.out_height();
    let row_tile = match stride {
        1 => even_blocks(height, most),
        _ => most.min(MAX_DEINTERLEAVED_ROWS),
    };
    let width = Width {
        pixel_vectors,
        row_tile,
        reduction_unroll: 1,
        channels: 1,
        row_length: None,
        joined: false,
        image: true,
    };
    reading_the_image(spec, width, threads)
}

/// The most taps of a layer [`image_rows`] takes: a 5×5 kernel's (the
/// largest measured).
const MAX_IMAGE_ROW_TAPS: usize = 25;

/// The least share of a stride-1 row's vectors' lanes that are its pixels
/// for [`image_rows`] to take it (7 of 16 measured slower than joined
/// rows, 14 of 16 faster).
const MIN_IMAGE_ROW_LANES: f64 = 0.75;

/// The most output rows of a deinterleaved tile ([`image_rows`]): 4 to 7
/// measured alike on 28-pixel rows, 2 slower.
const MAX_DEINTERLEAVED_ROWS: usize = 4;

/// Whether `spec` is depthwise: groups of one input channel each (any
/// channel multiplier).
fn depthwise(spec: &ValidSpec) -> bool {
    spec.in_per_group() == 1 && spec.groups() > 1
}

/// The most vectors of a plane the heuristic computes as one run of
/// joined rows ([`joined_rows`]): the accumulators of an AVX-512 tile.
const MAX_JOINED_VECTORS: usize = MAX_ACCUMULATORS;

/// The vectors of one run of joined rows on larger planes
/// ([`joined_rows`]): 7 measured as fast as 14 or faster on 28 to 112
/// pixel rows.
const JOINED_RUN_VECTORS: usize = 7;

/// Vectors of output channels of the direct tile on AVX2, where a group's
/// channels fill them.
const AVX2_CHANNEL_VECTORS: usize = 2;

/// The fewest pixels of a plane the heuristic computes as a GEMM
/// ([`flat_plane`]).
const MIN_FLAT_PIXELS: usize = 64;

/// The output channels and pixel vectors of the GEMM's tile on `isa`
/// for a group of `channels` output channels ([`flat_plane`]): up to 12
/// channels by one vector on AVX-512 — the group cut into near-equal
/// blocks (64: five of 11 and one of 9, which ran 1.05–1.10× blocks of
/// 12 and one of 4 on resnet50_1x1) —, more vectors where the group has
/// too few channels to fill 12 accumulators; up to 6 by 2 on AVX2.
fn flat_tile(isa: Isa, channels: usize) -> (usize, usize) {
    match isa {
        Isa::Avx512 => {
            let m = even_blocks(channels, 12);
            (m, (12 / m).max(1))
        }
        _ => (channels.clamp(1, 6), 2),
    }
}

/// Pixels per column block of a plane computed as one row ([`flat_plane`]).
const FLAT_COLUMN_BLOCK: usize = 32;

/// The vector ISA of the direct algorithm's tiles, up to `widest`: the one
/// whose FMAs compute the most output channels of a group, with one
/// vector of channels per tile — a vector's lanes past a group's channels
/// idle —, the narrower on a tie. FMAs of every width issue at the same
/// rate on the cores measured (two per cycle), so a wider ISA is only as
/// much faster as its lanes hold channels: 8 output channels per group run
/// on AVX2, 3 on `sse`.
fn direct_isa(spec: &ValidSpec, widest: Isa) -> Isa {
    let cog = spec.out_per_group();
    let useful = |isa: Isa| cog as f64 / cog.div_ceil(isa.lanes()) as f64;
    let tile = Algorithm::from_knobs(
        Strategy::Direct,
        Tile { oc_vectors: 1, pixel_tile: 1, row_tile: 1 },
        1,
        false,
        Isa::Sse,
    );
    let candidates = Isa::available().filter(|&isa| isa <= widest);
    let fits = candidates.filter(|&isa| tile.legal(spec, isa).is_ok());
    fits.fold(Isa::Sse, |best, isa| if useful(isa) > useful(best) { isa } else { best })
}

/// The most taps the heuristic unrolls into one iteration of the channel
/// loop.
const MAX_BODY_TAPS: usize = 36;

/// Output channels per group up to which grouped layers take the
/// assembled width tile.
const MAX_WIDTH_GROUP: usize = 8;

/// Reduction lengths (input channels per group × taps) up to which layers
/// take the assembled width tile.
const MAX_WIDTH_REDUCTION: usize = 32;

/// Whether `widest` lets the heuristic use the assembled tiles on this
/// host.
fn widest_assembled(widest: Isa) -> bool {
    Isa::host().min(widest).is_assembled()
}

/// The most output columns of a phase.
fn cols_of(geometry: &Geometry) -> usize {
    geometry.most_cols().max(1)
}

/// The most taps the heuristic unrolls into one iteration of an assembled
/// tile's channel loop (4 channels of a 1×1 kernel, 2 of a 1×2, one of
/// anything larger).
const MAX_ASSEMBLED_BODY_TAPS: usize = 4;

/// The widest output rows (in pixels) that the direct strategy tiles two
/// rows at a time.
const MAX_NARROW_ROW: usize = 28;

/// Output rows narrower than this vectorise depthwise layers across
/// channels: two vectors per row keep too few accumulators busy.
const MIN_WIDTH_FOR_ROWS: usize = 8;

/// Winograd for a conv2d of stride 1 and dilation 1 whose kernel has an
/// output tile here ([`winograd_tile`]), with at least
/// [`MIN_WINOGRAD_CHANNELS`] input and output channels a group and a
/// panel of [`WINOGRAD_PANEL`] tiles per thread, on AVX-512 (the
/// transforms' intrinsics and the products' 512-bit tiles). Measured
/// against the direct schedule (docs/schedules.md): F(4 × 4, 3 × 3)
/// 1.76–2.51× on the suites' dense 3 × 3 layers (64 to 192 channels a
/// group, 16 to 1024 tiles) and 0.2× with ResNeXt's 4 or 8 channels a
/// group; the 1-D F(6, 3) in panels of 16 1.15–1.22× on 1 × 3 and 3 × 1
/// layers of 64 channels, F(2, 7) 1.22–1.29× on 1 × 7 and 7 × 1 layers of
/// 128 (each range over two runs, the schedule timed as the heuristic's
/// and by its configuration). Fewer
/// tiles than a panel a thread leave threads idle that the direct
/// schedule keeps busy. The products as [`winograd_with`] schedules them.
fn winograd(spec: &ValidSpec, threads: usize, widest: Isa) -> Option<Schedule> {
    let isa = Isa::host().min(widest);
    let dense = spec.in_per_group() >= MIN_WINOGRAD_CHANNELS
        && spec.out_per_group() >= MIN_WINOGRAD_CHANNELS;
    if isa < Isa::Avx512 || !dense || Winograd::refuses(spec).is_some() {
        return None;
    }
    let config = Winograd { output_tile: winograd_tile(spec.kernel())?, panel: WINOGRAD_PANEL };
    if config.tiles(spec).count < WINOGRAD_PANEL * threads {
        return None;
    }
    winograd_with(spec, config, threads, widest)
}

/// The output tile the heuristic takes for a kernel, where Winograd
/// measured faster than direct: 4 for 3 × 3 (F(6 × 6, 3 × 3) is 0.93–1.08×
/// F(4 × 4) and grows the error twice as much), 6 for 1 × 3 and 3 × 1
/// (1.06–1.10× F(4, 3); its error grows 23 times, a tenth of F(4 × 4,
/// 3 × 3)'s), 2 for 1 × 7 and 7 × 1 (the only F(m, 7) the transforms are
/// built for).
fn winograd_tile(kernel: [usize; 2]) -> Option<usize> {
    match kernel {
        [3, 3] => Some(4),
        [1, 3] | [3, 1] => Some(6),
        [1, 7] | [7, 1] => Some(2),
        _ => None,
    }
}

/// The schedule of `spec` through Winograd as `config` says, on `threads`
/// threads, its products (a grouped 1×1 layer over a row of the panel's
/// tiles, [`Winograd::gemm`]) scheduled as [`flat_plane`] schedules a
/// plane of any size (with assembled tiles; the heuristic's own schedule
/// of them on `sse`): on AVX-512 each tile of up to 12 output channels by
/// a vector of tiles, on AVX2 up to 6 by two, which, on a panel of whole
/// vectors, read the transformed input where it lies, where the direct
/// NHWC tile would copy it across each group. `None` where Winograd does
/// not compute `spec` or the ISAs cannot run it.
pub fn winograd_with(
    spec: &ValidSpec,
    config: Winograd,
    threads: usize,
    widest: Isa,
) -> Option<Schedule> {
    let gemm = config.legal(spec).and_then(|()| config.gemm(spec)).ok()?;
    let products =
        flat_plane_of(&gemm, 1, widest, 1).unwrap_or_else(|| choose_for(&gemm, 1, widest));
    let schedule = Schedule { winograd: Some(config), run: Run::threads(threads), ..products };
    schedule.legal(spec).is_ok().then_some(schedule)
}

/// The fewest input and output channels a group has for the heuristic to
/// take Winograd: the dense layers measured have 64 and 128; 4 and 8
/// leave its products tiny matrices (0.2× direct).
const MIN_WINOGRAD_CHANNELS: usize = 64;

/// The tiles of a Winograd panel the heuristic takes: one chunk of the
/// transforms (16 lanes) and one vector of the products' tile, whose
/// transformed input and products stay in L2 (295 KB each at 128
/// channels). Measured (`compare_schedules --relative`, docs/schedules.md)
/// on the dense 3 × 3 layers: 1.00–1.20× panels of 32 and 1.05–1.31× panels
/// of 64; 24 (a vector and a half) ran 0.64–0.73× 32.
const WINOGRAD_PANEL: usize = 16;
