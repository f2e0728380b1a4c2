//! A lowering's plan: the layer's [`Geometry`] (its phases over a padded
//! input) with what the schedule adds to it — how channels are grouped into
//! vector blocks and work items, and how the padded copy is laid out.

use crate::algorithm::Work;
use crate::geometry::{Geometry, Phase};
use crate::schedule::{InputCopy, Schedule};
use crate::spec::ValidSpec;

/// An image cut into bands of output rows: band `b` of `parts` is part `b`
/// of `parts` of every phase's rows (see `codegen`'s `row_slice`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bands {
    /// Bands per image.
    pub parts: usize,
    /// Stored rows of a band's copy: the most padded input rows a band
    /// reads.
    pub rows: usize,
    /// Pieces the threads of a run may cut a band into, at the end of a
    /// thread's range (`runtime::Shares`): 2 where each half of the phase
    /// with the most rows keeps at least two rows and a whole register
    /// tile of rows ([`pieces`]), else 1 (a phase with fewer rows may get
    /// less).
    pub pieces: usize,
}

/// Everything the emitter and the run-time input copy need to agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The layer's phases and padding.
    pub geometry: Geometry,
    /// How the algorithm's work items map onto channels (and whether it
    /// reads a channel-blocked copy).
    pub work: Work,
    /// Whether the input copy is interleaved (`[Hp][row][C]`, or `[Hp][row]
    /// [C/groups]` for a copy per group) rather than planar.
    pub interleaved: bool,
    /// Each stored padded row holds its columns in this many phases:
    /// padded column `c` is element `(c mod col_phases) · sub_row + c /
    /// col_phases` of the row. 1 (plain rows) except for the width strategy
    /// on a column stride, where it is the stride: each tap then reads
    /// consecutive elements of one phase.
    pub col_phases: usize,
    /// Elements of one column phase of a stored row (at least the padded
    /// width / `col_phases`, plus zeros the width strategy's whole-vector
    /// reads past a row's last pixel need).
    pub sub_row: usize,
    /// Whether the compiled code reads a padded copy of the input rather
    /// than the NCHW image itself.
    pub needs_copy: bool,
    /// Whether that copy holds one group (the generated code then reads
    /// every group's planes at `x`) rather than the whole image.
    pub copy_per_group: bool,
    /// When the copy holds bands of rows: how many bands, and the most
    /// padded input rows one band reads (the rows of each stored plane).
    pub bands: Option<Bands>,
    /// Whether the copy's rows hold no columns of padding (the width
    /// algorithm's joined rows): padded column `c` of stored row `r` is
    /// element `r · sub_row + c`, so a row's last pixels run `left`
    /// elements into the next row (whose padding columns they are), and
    /// each plane ends with `left` more elements for its last row's.
    pub joined: bool,
    /// Whether the code reads the NCHW image itself
    /// ([`crate::algorithm::Algorithm::reads_image`]): padded row
    /// `r`, column `c` of a plane is then element `(r − top) · width + c −
    /// left` of the image's, a pixel outside the image never read (the
    /// tiles that reach past its top or bottom rows have masks of their
    /// own, so the code computes every row of a plane: threads share
    /// work items, never rows).
    pub reads_image: bool,
    /// Whether the epilogue adds what the output holds before the call to
    /// each output, before the activation: `y = act(conv(x) + b + y)`, a
    /// residual added in the register tile ([`crate::Epilogue::Sum`]).
    pub sum: bool,
}

impl Plan {
    /// The plan for `spec` computed with `schedule` (which must be legal).
    pub fn new(spec: &ValidSpec, schedule: &Schedule) -> Plan {
        Plan::of(spec, Geometry::of(spec), schedule)
    }

    /// The plan for `spec`, whose geometry is `geometry`, computed with
    /// `schedule` (which must be legal).
    pub fn of(spec: &ValidSpec, geometry: Geometry, schedule: &Schedule) -> Plan {
        let work = schedule.algorithm.work(spec, schedule.isa);
        let (col_phases, sub_row) = schedule.algorithm.row_phases(&geometry, schedule.isa);
        let interleaved = schedule.interleave();
        let needs_copy = schedule.algorithm.reads_copy(spec, &geometry, schedule.isa);
        let bands = match schedule.copy {
            InputCopy::Bands(rows) if needs_copy => {
                let phases = &geometry.phases;
                let most = phases.iter().map(|p| p.rows.count).max().unwrap_or(1);
                let parts = most.div_ceil(rows).max(1);
                let rows = (0..parts).map(|b| band_input_rows(phases, b..b + 1, parts).len()).max();
                let pieces = pieces(most / parts, schedule.row_tile(), 2);
                Some(Bands { parts, rows: rows.unwrap_or(0).max(1), pieces })
            }
            _ => None,
        };
        Plan {
            geometry,
            work,
            needs_copy,
            copy_per_group: needs_copy && schedule.copy == InputCopy::Group,
            bands,
            interleaved,
            col_phases,
            sub_row,
            joined: schedule.algorithm.joined(),
            reads_image: schedule.algorithm.reads_image(spec),
            sum: false,
        }
    }

    /// Whether the JIT compiles this plan ([`Geometry::compilable`]).
    pub fn compilable(&self) -> crate::error::Result<()> {
        self.geometry.compilable()
    }

    /// Elements of one stored padded row (every column phase).
    pub fn row_len(&self) -> usize {
        self.col_phases * self.sub_row
    }

    /// Elements between padded column 0 and padded column `col` of a row.
    pub fn col_offset(&self, col: usize) -> usize {
        (col % self.col_phases) * self.sub_row + col / self.col_phases
    }

    /// Elements of one stored pixel: 1, a block of one vector's channels,
    /// or all the channels of the copy when interleaved.
    pub fn pixel_len(&self) -> usize {
        if self.work.blocked_input {
            self.work.input_block()
        } else if self.interleaved {
            self.work.group_planes * if self.copy_per_group { 1 } else { self.groups() }
        } else {
            1
        }
    }

    /// Elements between one input plane (channel, or block of one vector's
    /// channels) and the next: a whole padded plane, or 1 when interleaved.
    pub fn plane_step(&self) -> usize {
        if self.interleaved { 1 } else { self.plane_len() }
    }

    /// Elements of one padded input plane (a channel, or a block of one
    /// vector's channels; a whole interleaved copy).
    pub fn plane_len(&self) -> usize {
        if self.reads_image {
            let [top, _, bottom, _] = self.geometry.pad;
            return (self.geometry.padded[0] - top - bottom) * self.row_len();
        }
        let spill = if self.joined { self.geometry.pad[1] } else { 0 };
        self.stored_rows() * self.row_len() * self.pixel_len() + spill
    }

    /// Elements from padded row 0, column 0 of a plane to its first pixel
    /// of the image: 0 in a padded copy, which stores the padding;
    /// `top · width + left` when the code reads the image itself
    /// ([`Plan::reads_image`]).
    pub fn origin(&self) -> usize {
        if self.reads_image {
            let [top, left, _, _] = self.geometry.pad;
            return top * self.row_len() + left;
        }
        0
    }

    /// How threads share a run's work: as `split` says, but by work items
    /// when the code computes every row of a plane ([`Plan::reads_image`]).
    pub fn split(&self, split: crate::schedule::Split) -> crate::schedule::Split {
        if self.reads_image { crate::schedule::Split::Items } else { split }
    }

    /// Rows of each stored plane: a band's, or the padded height.
    pub fn stored_rows(&self) -> usize {
        self.bands.map_or(self.geometry.padded[0], |b| b.rows)
    }

    /// The output rows, of each phase, that parts `span` of `parts`
    /// compute: `[count·span.start / parts, count·span.end / parts)` of a
    /// phase of `count` rows, so that the parts tile every phase exactly.
    /// The one place the partition is computed: the runtime passes these
    /// ranges to the code, and the band copies hold the input rows they
    /// read.
    pub fn part_rows(
        &self,
        span: std::ops::Range<usize>,
        parts: usize,
    ) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.geometry.phases.iter().map(move |phase| phase.rows.part(span.clone(), parts))
    }

    /// The padded input rows band `b` reads (see [`Bands`]).
    pub fn band_rows(&self, b: usize) -> std::ops::Range<usize> {
        let parts = self.bands.map_or(1, |bands| bands.parts);
        self.span_rows(b..b + 1, parts)
    }

    /// The padded input rows that parts `span` of `parts` read: within
    /// band `b`'s when the span lies within parts `b·k..(b + 1)·k` of
    /// `parts = k · Bands::parts`, since a phase's rows of the span then
    /// lie within the band's.
    pub fn span_rows(&self, span: std::ops::Range<usize>, parts: usize) -> std::ops::Range<usize> {
        band_input_rows(&self.geometry.phases, span, parts)
    }

    /// Groups of work items (see `group_items`).
    pub fn groups(&self) -> usize {
        self.work.groups()
    }

    /// Elements of one padded input image.
    pub fn padded_image_len(&self) -> usize {
        // A blocked copy covers every lane a work item reads: whole blocks of
        // `lanes` channels, zero past the last real channel.
        self.groups() * self.group_len()
    }

    /// Elements of one group's padded input planes.
    pub fn group_len(&self) -> usize {
        if self.interleaved {
            self.stored_rows() * self.row_len() * self.work.group_planes
        } else {
            self.work.group_planes * self.plane_len()
        }
    }

    /// Elements of the copy the generated code reads (one group, or the
    /// image).
    pub fn copy_len(&self) -> usize {
        if self.copy_per_group { self.group_len() } else { self.padded_image_len() }
    }
}

/// Into how many pieces (1 to `most`) threads may cut a share of `rows`
/// output rows, computed by register tiles of `row_tile` rows: each piece
/// keeps two rows and a register tile of rows at least, so that no piece
/// leaves its rows to tail tiles or pays a kernel's halo for one row.
pub fn pieces(rows: usize, row_tile: usize, most: usize) -> usize {
    (rows / row_tile.max(2)).clamp(1, most.max(1))
}

/// The padded input rows that parts `span` of `parts` of every phase's
/// output rows read (empty when they read none).
fn band_input_rows(
    phases: &[Phase],
    span: std::ops::Range<usize>,
    parts: usize,
) -> std::ops::Range<usize> {
    let mut rows: Option<(usize, usize)> = None;
    for phase in phases {
        let std::ops::Range { start: first, end: last } = phase.rows.part(span.clone(), parts);
        let Some((low, high)) = phase.rows.offset_range() else { continue };
        if first == last || phase.cols.taps.is_empty() {
            continue;
        }
        let (lo, hi) =
            (first * phase.rows.in_step + low, (last - 1) * phase.rows.in_step + high + 1);
        rows = Some(rows.map_or((lo, hi), |(a, z)| (a.min(lo), z.max(hi))));
    }
    rows.map_or(0..0, |(lo, hi)| lo..hi)
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn pieces_keep_two_rows_and_a_register_tile() {
        // Rows, row tile, most pieces: pieces.
        let cases = [
            (4, 1, 2, 2),
            (3, 1, 2, 1),
            (8, 2, 2, 2),
            (7, 2, 2, 2),
            (3, 2, 2, 1),
            (28, 1, 4, 4),
            (7, 4, 4, 1),
        ];
        for (rows, row_tile, most, want) in cases {
            assert_eq!(pieces(rows, row_tile, most), want, "{rows} rows, tiles of {row_tile}");
        }
        assert_eq!(pieces(0, 1, 4), 1);
    }
}
