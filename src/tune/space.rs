//! The space of schedules a tuner searches for one layer: every legal
//! schedule built from the values below, without the ones that are the same
//! kernel run the same way as another member or that cannot fill the FMA
//! pipes.
//!
//! | knob | values |
//! |---|---|
//! | isa | every vector ISA of the host (or up to the compiler's), among the algorithm's |
//! | algorithm | direct, width, and depthwise when a group has one input channel |
//! | register tile | `oc_vectors` × `pixel_tile` × `row_tile` with at most 14 accumulators, fewer where an assembled tile's operands need the registers (at least 4, unless the tile covers a whole phase), no larger than the output |
//! | reduction unroll | 1 to 4 input channels, at most the group's (1 for depthwise) |
//! | loop nest | channels outer; rows outer with whole rows or column blocks of 16, 32 or 64 pixels (narrower than the row) |
//! | threads | 1 to the count asked for; how they split (items or rows) when more than one |
//! | input copy | whole image; per group (grouped layers); bands of 1, 2, 4 or 8 rows (at most the rows a phase has) — when the kernel reads a copy at all |
//! | layout | NCHW or NHWC (direct) |
//! | row length | the layer's rows; for a 1×1 conv2d of stride 1 without padding (width), its planes as rows of 1, 2, 4 or 8 vectors, or as one row; for a k×1 conv2d of stride 1 without columns of padding (direct, width), its planes as one row |
//! | joined | the width tile's rows apart, or joined into one run (AVX-512, conv2d of stride 1 whose output rows are as wide as its input rows) |
//! | image | the width tile over a padded copy, or reading the image's rows (AVX-512, conv2d of column stride 1 or 2) |
//! | merged columns | the direct tile's column phases one at a time, or all in one tile (AVX2, AVX-512, conv_transpose2d whose column phases read the same input pixels) |
//! | winograd | none; or, for a conv2d of stride 1 and dilation 1 with a kernel of 2 taps or more on an axis, Winograd F(m, r) on each such axis (F(m × m, r × r), or the 1-D F(1 × m, 1 × r) and F(m × 1, r × 1)) for every m its transforms are built for, in panels of 16, 32 and 64 tiles, its products scheduled by the heuristic (`schedule::winograd_with`) — the other knobs of such a member are its products' and not searched |
//!
//! Threads and split are the [`Run`], not the code: the members that
//! differ only in them are listed one after another and share one compiled
//! kernel (each run still verified and timed on its own).
//!
//! Borders are not a knob: every schedule reads a zero-padded copy (or the
//! input itself when it needs no padding), see [`crate::schedule`].
//!
//! Two schedules are neighbours when they differ in exactly one knob; the
//! register tile and the loop nest count as one knob each, so that a local
//! search can reshape a tile without passing through illegal ones. So does
//! Winograd's configuration: its members are neighbours of one another
//! (another tile or panel, another thread count), not of the direct ones,
//! so a local search stays with the computation it starts from (the
//! heuristic's); a random or exhaustive one draws from both.

use std::collections::{HashMap, HashSet};

use crate::algorithm::winograd::{MAX_ALPHA, Winograd};
use crate::algorithm::{self, Algorithm, Layout};
use crate::geometry::Geometry;
use crate::schedule::{InputCopy, LoopNest, Run, Schedule, Split, Strategy};
use crate::spec::ValidSpec;
use crate::target::Isa;

/// Fewer accumulators than this leave the two FMA pipes (4 cycles of
/// latency each) mostly idle; smaller tiles are only kept when they cover a
/// whole phase of the output.
const MIN_ACCUMULATORS: usize = 4;

/// Column blocks the loop nest may take (pixels), when narrower than a row.
const COL_BLOCKS: [usize; 3] = [16, 32, 64];

/// Band heights the input copy may take (output rows).
const BAND_ROWS: [usize; 4] = [1, 2, 4, 8];

/// The tiles of Winograd's members' panels (or all the tiles, where
/// fewer): one, two and four vectors of the products' tiles.
const WINOGRAD_PANELS: [usize; 3] = [16, 32, 64];

/// The knobs, in the order [`Space::knobs`] reports them.
pub const KNOBS: [&str; 14] = [
    "isa",
    "algorithm",
    "tile",
    "reduction_unroll",
    "loop_nest",
    "threads",
    "split",
    "copy",
    "layout",
    "row_length",
    "joined",
    "image",
    "merged_columns",
    "winograd",
];

/// The schedules a tuner may try for one layer.
#[derive(Clone, Debug)]
pub struct Space {
    members: Vec<Schedule>,
    index: HashSet<Schedule>,
}

impl Space {
    /// Every schedule of the space for `spec` on at most `max_threads`
    /// threads (clamped to 1..=[`crate::schedule::MAX_THREADS`]) with the
    /// host's vector ISAs, in a fixed order.
    pub fn of(spec: &ValidSpec, max_threads: usize) -> Space {
        Space::up_to(spec, max_threads, Isa::host())
    }

    /// [`Space::of`] with the vector ISAs up to `isa` (those of them the
    /// host has).
    pub fn up_to(spec: &ValidSpec, max_threads: usize, isa: Isa) -> Space {
        let isas: Vec<Isa> = Isa::available().filter(|&i| i <= isa).collect();
        let max_threads = max_threads.clamp(1, crate::schedule::MAX_THREADS);
        let mut members = Vec::new();
        let mut reads_copy = HashMap::new();
        let threads: Vec<usize> = (1..=max_threads).collect();
        let families = algorithm::accepting(spec)
            .flat_map(|f| isas.iter().filter(|i| f.isas().contains(i)).map(move |&i| (f, i)));
        for (family, isa) in families {
            let strategy = family.strategy();
            let unrolls: Vec<usize> = (1..=family.max_unroll(spec)).collect();
            let interleaves: Vec<bool> =
                family.layouts().iter().map(|&l| l == Layout::Nhwc).collect();
            let views = match strategy {
                Strategy::Width => row_lengths(spec, isa),
                Strategy::Direct => {
                    [None].into_iter().chain(spec.one_row_length().map(Some)).collect()
                }
                Strategy::Depthwise => vec![None],
            };
            // The layer's own rows once more, joined into runs
            // ([`algorithm::Width::joined`]), where an AVX-512 width tile
            // may join them.
            let joinable = strategy == Strategy::Width && isa == Isa::Avx512 && spec.rows_join();
            // And read from the image itself, whole rows per tile
            // ([`algorithm::Width::image`]), where that is legal.
            let imageable = strategy == Strategy::Width && isa == Isa::Avx512;
            // And, on a transposed conv's column phases that one tile can
            // take, with them merged ([`algorithm::Direct::merged_columns`]).
            let mergeable = strategy == Strategy::Direct
                && isa.is_assembled()
                && Geometry::of(spec).merged_columns().is_some();
            let views = views
                .into_iter()
                .map(|v| (v, false, false, false))
                .chain(joinable.then_some((None, true, false, false)))
                .chain(imageable.then_some((None, false, true, false)))
                .chain(mergeable.then_some((None, false, false, true)));
            for (row_length, joined, image, merged) in views {
                // The layer as the schedules of this view compute it.
                let lowered = row_length.and_then(|len| spec.as_rows(len));
                let view = lowered.as_ref().unwrap_or(spec);
                let geometry = Geometry::of(view);
                let (nests, copies) = staging(view, &geometry);
                let mut tiles = family.tiles(view, &geometry, MIN_ACCUMULATORS, isa);
                if joined {
                    // Each tile's channels and rows, its pixels the run's.
                    let run = |rows: usize| rows * spec.width();
                    for t in &mut tiles {
                        t.pixel_tile = run(t.row_tile).next_multiple_of(isa.lanes());
                    }
                    let mut seen = HashSet::new();
                    tiles.retain(|t| seen.insert(*t));
                }
                if image {
                    // A whole output row per tile row.
                    tiles.retain(|t| t.pixel_tile >= spec.out_width());
                }
                // Joined tiles and those of the image's rows span whole
                // rows: a column block is the row.
                let nests: Vec<LoopNest> = match joined || image {
                    true => nests
                        .into_iter()
                        .filter(|n| !matches!(n, LoopNest::ColumnBlocks(_)))
                        .collect(),
                    false => nests,
                };
                for (tile, reduction_unroll) in product(&tiles, &unrolls) {
                    for (loop_nest, (copy, interleave)) in
                        product(&nests, &product(&copies, &interleaves))
                    {
                        // The runs of one code innermost: the tuner
                        // compiles it once and times them one after
                        // another.
                        for (threads, split) in runs(&threads, copy) {
                            let mut algorithm = Algorithm::from_knobs(
                                strategy,
                                tile,
                                reduction_unroll,
                                interleave,
                                isa,
                            );
                            match &mut algorithm {
                                Algorithm::Width(w) => {
                                    (w.row_length, w.joined, w.image) = (row_length, joined, image)
                                }
                                Algorithm::Direct(d) => {
                                    (d.row_length, d.merged_columns) = (row_length, merged)
                                }
                                Algorithm::Depthwise(_) => {}
                            }
                            let run = Run { threads, split };
                            let s =
                                Schedule { isa, algorithm, winograd: None, loop_nest, copy, run };
                            if s.legal(spec).is_err() {
                                continue;
                            }
                            // Without a copy to make, every copy
                            // granularity is the same kernel.
                            let copied = *reads_copy
                                .entry((strategy, isa, interleave, row_length, joined, image))
                                .or_insert_with(|| s.algorithm.reads_copy(view, &geometry, isa));
                            // Code that reads the image itself computes
                            // whole planes: its threads share items
                            // whatever the split (`Plan::split`).
                            let shares_rows = threads > 1 && split == Split::Rows;
                            if shares_rows && s.algorithm.reads_image(view) {
                                continue;
                            }
                            if copied || copy == InputCopy::Image {
                                members.push(s);
                            }
                        }
                    }
                }
            }
        }
        let widest = isas.last().copied().unwrap_or_default();
        members.extend(winograd(spec, &threads, widest));
        let index = members.iter().copied().collect();
        Space { members, index }
    }

    /// The schedules, in a fixed order.
    pub fn members(&self) -> &[Schedule] {
        &self.members
    }

    /// How many schedules the space holds.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the space holds no schedule (never, for a valid spec).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `schedule` is a member.
    pub fn contains(&self, schedule: &Schedule) -> bool {
        self.index.contains(schedule)
    }

    /// The members that differ from `schedule` in exactly one knob
    /// ([`KNOBS`]), in the space's order.
    pub fn neighbours(&self, schedule: &Schedule) -> Vec<Schedule> {
        one_knob_apart(&self.members, schedule, Space::knobs)
    }

    /// The value of every knob of `schedule` (in the order of [`KNOBS`]),
    /// encoded as a number: two schedules differ in a knob exactly when
    /// these differ.
    pub fn knobs(schedule: &Schedule) -> [u64; 14] {
        let s = schedule;
        let threads = s.run.threads as u64;
        if let Some(w) = s.winograd {
            // Its products' schedule is the heuristic's, no knob.
            let config = (w.output_tile * 1_000_000 + w.panel) as u64;
            return [s.isa as u64, 3, 0, 0, 0, threads, 0, 0, 0, 0, 0, 0, 0, config];
        }
        let strategy = match s.strategy() {
            Strategy::Direct => 0,
            Strategy::Depthwise => 1,
            Strategy::Width => 2,
        };
        let tile = (s.oc_vectors() * 10_000 + s.pixel_tile() * 100 + s.row_tile()) as u64;
        let nest = match s.loop_nest {
            LoopNest::ChannelsOuter => 0,
            LoopNest::RowsOuter => 1,
            LoopNest::ColumnBlocks(b) => 1 + b as u64,
        };
        let copy = match s.copy {
            InputCopy::Image => 0,
            InputCopy::Group => 1,
            InputCopy::Bands(rows) => 2 + rows as u64,
        };
        [
            s.isa as u64,
            strategy,
            tile,
            s.reduction_unroll() as u64,
            nest,
            s.run.threads as u64,
            // One thread splits nothing: its split is no knob (the space
            // ties it to the copy), so a copy change is one step.
            u64::from(s.run.threads > 1 && s.run.split == Split::Items),
            copy,
            u64::from(s.interleave()),
            s.algorithm.row_length().unwrap_or(0) as u64,
            u64::from(s.algorithm.joined()),
            u64::from(s.algorithm.image_rows()),
            u64::from(s.algorithm.merged_columns()),
            0,
        ]
    }
}

/// Winograd's members for `spec` on each of `threads` (see the module's
/// table), the products scheduled by the heuristic with ISAs up to
/// `isa`; none for a layer Winograd does not compute.
fn winograd(spec: &ValidSpec, threads: &[usize], isa: Isa) -> Vec<Schedule> {
    let r = spec.kernel().into_iter().max().unwrap_or(1);
    if Winograd::refuses(spec).is_some() || r + 1 > MAX_ALPHA {
        return Vec::new();
    }
    let mut members = Vec::new();
    for output_tile in 2..=MAX_ALPHA + 1 - r {
        let tiles = Winograd { output_tile, panel: 1 }.tiles(spec).count;
        for &t in threads {
            let mut panels: Vec<usize> = WINOGRAD_PANELS.iter().map(|&p| p.min(tiles)).collect();
            panels.dedup();
            for panel in panels {
                let config = Winograd { output_tile, panel };
                members.extend(crate::schedule::winograd_with(spec, config, t, isa));
            }
        }
    }
    members
}

/// The loop nests and input copies the space tries on a layer of
/// `geometry`.
fn staging(spec: &ValidSpec, geometry: &Geometry) -> (Vec<LoopNest>, Vec<InputCopy>) {
    let (cols, rows) = (geometry.most_cols(), geometry.most_rows());
    let mut nests = vec![LoopNest::ChannelsOuter, LoopNest::RowsOuter];
    nests.extend(COL_BLOCKS.iter().filter(|&&b| b < cols).map(|&b| LoopNest::ColumnBlocks(b)));
    let mut copies = vec![InputCopy::Image];
    if spec.groups() > 1 {
        copies.push(InputCopy::Group);
    }
    copies.extend(BAND_ROWS.iter().filter(|&&b| b <= rows).map(|&b| InputCopy::Bands(b)));
    (nests, copies)
}

/// The row lengths the width algorithm may compute `spec`'s planes as
/// ([`crate::algorithm::Width::row_length`]): the layer's own rows, and
/// for a layer whose planes are flat ([`ValidSpec::plane_is_flat`]) rows
/// of 1, 2, 4 and 8 vectors of `isa` that divide a plane, and the plane as
/// one row; for a k×1 layer whose columns are flat, the plane as one row
/// ([`ValidSpec::one_row_length`]).
fn row_lengths(spec: &ValidSpec, isa: Isa) -> Vec<Option<usize>> {
    let mut lengths: Vec<Option<usize>> =
        [None].into_iter().chain(spec.one_row_length().map(Some)).collect();
    if spec.plane_is_flat() {
        let pixels = spec.height() * spec.width();
        let tiles = ROW_VECTORS.iter().map(|&v| v * isa.lanes()).chain([pixels]);
        let fit = tiles.filter(|&len| len != spec.width() && pixels.is_multiple_of(len));
        for len in fit {
            if !lengths.contains(&Some(len)) {
                lengths.push(Some(len));
            }
        }
    }
    lengths
}

/// Vectors per row the width algorithm may cut a flat plane into.
const ROW_VECTORS: [usize; 4] = [1, 2, 4, 8];

/// The members whose knobs (as `knobs` encodes them) differ from
/// `config`'s in exactly one position, in the members' order.
pub(super) fn one_knob_apart<C: Copy, const N: usize>(
    members: &[C],
    config: &C,
    knobs: impl Fn(&C) -> [u64; N],
) -> Vec<C> {
    let here = knobs(config);
    let apart = |m: &&C| knobs(m).iter().zip(&here).filter(|(a, b)| a != b).count() == 1;
    members.iter().filter(apart).copied().collect()
}

/// Every pair of an element of `a` and one of `b`, `a` outer.
fn product<A: Copy, B: Copy>(a: &[A], b: &[B]) -> Vec<(A, B)> {
    a.iter().flat_map(|&x| b.iter().map(move |&y| (x, y))).collect()
}

/// Every run a kernel with `copy` may take: each thread count, with the
/// ways it may split the work.
fn runs(threads: &[usize], copy: InputCopy) -> Vec<(usize, Split)> {
    threads.iter().flat_map(|&t| splits(t, copy).iter().map(move |&s| (t, s))).collect()
}

/// How `threads` threads may split the work with this copy: one thread
/// splits nothing, so it takes one value (the one the copy needs with
/// more threads) and the space holds no two schedules that are one kernel.
fn splits(threads: usize, copy: InputCopy) -> &'static [Split] {
    match (threads, copy) {
        (1, InputCopy::Bands(_)) => &[Split::Rows],
        (1, _) => &[Split::Items],
        _ => &[Split::Items, Split::Rows],
    }
}
