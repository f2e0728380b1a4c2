//! The geometry of a layer, from its spec alone: which input pixels
//! each output pixel reads, as a list of phases of ordinary (gathering)
//! convolutions over a padded input. It depends on the spec alone, so the
//! heuristic, the tuning space and every plan read the same one.
//!
//! conv2d is one phase. conv_transpose2d with stride s is split into up to
//! s_h·s_w phases (the sub-pixel decomposition): output row `oy = r + s·t`
//! receives `x[t + q_i]·w[i]` for the taps `i` with `r + pad − i·d ≡ 0 (mod s)`,
//! where `q_i = (r + pad − i·d) / s`; that is a stride-1 convolution in `t`
//! with a constant input offset per tap. Every output pixel belongs to exactly
//! one phase and is written once, so there is no scatter and no race.

use crate::error::{Error, Result};
use crate::spec::{Op, ValidSpec};

/// One tap of one axis: the kernel index and the offset, in padded input
/// coordinates, of the input it reads for output position 0 of its phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tap {
    /// Index into the kernel along this axis.
    pub kernel: usize,
    /// Padded-input offset read at phase position 0.
    pub offset: usize,
}

/// One axis (rows or columns) of one phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Axis {
    /// Output coordinate of phase position 0.
    pub out_start: usize,
    /// Output coordinate step between phase positions.
    pub out_step: usize,
    /// Phase positions (output pixels of this phase along the axis).
    pub count: usize,
    /// Padded-input step between phase positions (the conv2d stride, or 1).
    pub in_step: usize,
    /// The taps that contribute along this axis.
    pub taps: Vec<Tap>,
    /// How many axes this one stands for: member `j` is this axis with its
    /// output start moved by `j · shift.out` and every tap's kernel index
    /// and offset by `j · shift.kernel` and `j · shift.offset` (member 0 is
    /// the axis as written). A transposed conv's phases along an axis come
    /// in a few such runs, so the code loops over a run's members instead of
    /// being emitted once per phase: a stride of 512 has up to 512 phases
    /// per axis but one to four runs (a dilation that shares no pattern with
    /// the stride makes more; see [`MAX_PHASES`]). conv2d's one axis has one
    /// member.
    pub members: usize,
    /// The step between consecutive members.
    pub shift: Shift,
}

/// The step from one member of an [`Axis`] to the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shift {
    /// Output coordinates.
    pub out: i64,
    /// Kernel indices, of every tap.
    pub kernel: i64,
    /// Padded-input offsets, of every tap.
    pub offset: i64,
}

impl Axis {
    /// Whether one register tile can compute every member of this axis at
    /// once: its members are consecutive output pixels (`out_step` of
    /// them, one output apart, so that a position's members fill the gap
    /// to the next position's), each reading the same input pixels with
    /// the next kernel index. A transposed conv whose kernel is as long
    /// as its stride along the axis (and a few others) has such a run.
    pub fn merges(&self) -> bool {
        self.members > 1
            && self.out_step == self.members
            && self.shift == Shift { out: 1, kernel: 1, offset: 0 }
    }

    /// The smallest and largest padded-input offset any tap of any member
    /// reads at phase position 0 (`None` without taps).
    pub fn offset_range(&self) -> Option<(usize, usize)> {
        let low = self.taps.iter().map(|t| t.offset).min()? as i64;
        let high = self.taps.iter().map(|t| t.offset).max()? as i64;
        let last = (self.members as i64 - 1) * self.shift.offset;
        Some(((low + last.min(0)) as usize, (high + last.max(0)) as usize))
    }

    /// Parts `span` of `parts` equal slices of the positions:
    /// `[count·span.start / parts, count·span.end / parts)`, so that
    /// consecutive spans tile the positions and the span `2b..2b + 2` of
    /// `2·parts` is part `b..b + 1` of `parts`.
    pub fn part(&self, span: std::ops::Range<usize>, parts: usize) -> std::ops::Range<usize> {
        self.count * span.start / parts..self.count * span.end / parts
    }
}

/// A rectangle of output pixels computed as one ordinary convolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    /// The rows.
    pub rows: Axis,
    /// The columns.
    pub cols: Axis,
}

/// The most phases (runs of rows × runs of columns) the JIT compiles, each
/// a loop nest of its own: compile memory grows with them. Real layers have
/// 1 to 4 (FCN-32s' stride-32 upsampling has 1 to 4); a dilation that shares
/// no pattern with the stride can make runs of two or three phases, and a
/// kernel as wide as a large stride then hundreds of runs per axis.
pub const MAX_PHASES: usize = 64;

/// A layer's phases and the padding of the copy they read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Zero rows above / columns left / rows below / columns right of each
    /// input channel in the padded copy.
    pub pad: [usize; 4],
    /// Padded input height and width.
    pub padded: [usize; 2],
    /// The runs of phases along the rows, and along the columns.
    pub rows: Vec<Axis>,
    /// See `rows`.
    pub cols: Vec<Axis>,
    /// The phases (each a run of members along each axis, rows × columns);
    /// none when there would be more than [`MAX_PHASES`].
    pub phases: Vec<Phase>,
    /// How many phases (runs of rows times runs of columns) the layer has.
    pub phase_count: usize,
    /// Whether some output pixels belong to no phase with taps on both
    /// axes (a transposed conv whose stride leaves residues no tap reaches):
    /// they hold the activated bias, which the run writes over the whole
    /// output before the phases with taps write theirs.
    pub holes: bool,
}

impl Geometry {
    /// The geometry of `spec`.
    pub fn of(spec: &ValidSpec) -> Geometry {
        let p = spec.padding();
        // One axis (0 rows, 1 columns): its phases and the copy's padding
        // before and after it.
        let axis = |a: usize, before: usize| {
            let input = [spec.height(), spec.width()][a];
            let out = [spec.out_height(), spec.out_width()][a];
            let (k, s, d) = (spec.kernel()[a], spec.stride()[a], spec.dilation()[a]);
            match spec.op() {
                Op::Conv2d => conv_axis(input, out, k, s, d, before),
                Op::ConvTranspose2d => transposed_axis(input, out, k, s, d, before),
            }
        };
        let (rows, [top, bottom]) = axis(0, p.top);
        let (cols, [left, right]) = axis(1, p.left);
        let pad = [top, left, bottom, right];
        let covered = |axes: &[Axis]| axes.iter().map(|a| a.members).sum::<usize>();
        let holes = match spec.op() {
            Op::Conv2d => false,
            Op::ConvTranspose2d => {
                covered(&rows) < spec.stride()[0].min(spec.out_height())
                    || covered(&cols) < spec.stride()[1].min(spec.out_width())
            }
        };
        let phase_count = rows.len().saturating_mul(cols.len());
        let phases: Vec<Phase> = if phase_count > MAX_PHASES {
            Vec::new() // not compilable: see `Geometry::compilable`
        } else {
            rows.iter()
                .flat_map(|r| cols.iter().map(move |c| Phase { rows: r.clone(), cols: c.clone() }))
                .collect()
        };
        let padded = [spec.height() + pad[0] + pad[2], spec.width() + pad[1] + pad[3]];
        Geometry { pad, padded, rows, cols, phases, phase_count, holes }
    }

    /// How many column phases a tile computes at once when the schedule
    /// merges them ([`crate::algorithm::Direct::merged_columns`]): the
    /// members of the column runs, when every run has as many and each
    /// [merges](Axis::merges); `None` for a layer without such runs.
    pub fn merged_columns(&self) -> Option<usize> {
        let first = self.cols.first()?;
        let all = self.cols.iter().all(|c| c.merges() && c.members == first.members);
        all.then_some(first.members)
    }

    /// Whether the JIT compiles this layer: at most [`MAX_PHASES`] phases.
    pub fn compilable(&self) -> Result<()> {
        if self.phase_count <= MAX_PHASES {
            return Ok(());
        }
        Err(Error::Jit(format!(
            "the transposed conv's phases come in {} runs of rows times columns, past the {} \
             the JIT compiles (a dilation and stride whose residues follow no pattern it can \
             loop over); the im2col and naive engines compute it",
            self.phase_count, MAX_PHASES
        )))
    }

    /// The most output columns a phase has (at least 1).
    pub fn most_cols(&self) -> usize {
        self.cols.iter().map(|a| a.count).max().unwrap_or(1).max(1)
    }

    /// The most output rows a phase has (at least 1).
    pub fn most_rows(&self) -> usize {
        self.rows.iter().map(|a| a.count).max().unwrap_or(1).max(1)
    }

    /// The most taps a phase multiplies (at least 1): the kernel's for a
    /// conv2d whose every tap meets a real pixel, about `⌈k/s⌉` per axis
    /// for conv_transpose2d.
    pub fn most_taps(&self) -> usize {
        let most = |axes: &[Axis]| axes.iter().map(|a| a.taps.len()).max().unwrap_or(1).max(1);
        most(&self.rows) * most(&self.cols)
    }
}

/// conv2d along one axis: one phase, output position o reads padded input
/// `o·s + offset_i` for every tap i kept, and the padding `[before, after]`
/// the copy needs. The taps kept run from the first to the last that reads
/// a real pixel for some output (a tap that meets only padding is not
/// multiplied: it adds nothing); the copy is padded as far as they reach
/// and no further — a padding of 2^24 around a 1×1 input with a dilation
/// to match asks for no copy of 2^48 pixels.
fn conv_axis(
    input: usize,
    out: usize,
    k: usize,
    s: usize,
    d: usize,
    pad: usize,
) -> (Vec<Axis>, [usize; 2]) {
    let (n, out_i, s_i, d_i, p) = (input as i64, out as i64, s as i64, d as i64, pad as i64);
    // Tap i reads o·s + i·d − p: its first output at or past the input's
    // start, and whether that one is before the input's end.
    let real = |i: i64| {
        let first =
            (p - i * d_i).max(0).div_euclid(s_i) + i64::from((p - i * d_i).max(0) % s_i != 0);
        first < out_i && first * s_i + i * d_i - p < n
    };
    let kept = (0..k as i64).find(|&i| real(i)).zip((0..k as i64).rev().find(|&i| real(i)));
    let axis = |taps: Vec<Tap>| Axis {
        out_start: 0,
        out_step: 1,
        count: out,
        in_step: s,
        taps,
        members: 1,
        shift: Shift::default(),
    };
    let Some((first, last)) = kept else { return (vec![axis(Vec::new())], [0, 0]) };
    let before = (p - first * d_i).max(0);
    let after = ((out_i - 1) * s_i + last * d_i - p - (n - 1)).max(0);
    let taps = (first..=last)
        .map(|i| Tap { kernel: i as usize, offset: (i * d_i - p + before) as usize })
        .collect();
    (vec![axis(taps)], [before as usize, after as usize])
}

/// conv_transpose2d along one axis: one phase per residue `r` of the output
/// coordinate modulo the stride that some tap reaches, grouped into runs
/// ([`Axis::members`]). Taps that never read a real input pixel are dropped;
/// the padding returned makes every remaining read in bounds. Residues no
/// tap reaches have no phase (see [`Geometry::holes`]).
///
/// Tap `i` serves the one residue `r ≡ i·d − crop (mod s)`, so the work is
/// over the `k` taps, not the `s` residues: a stride of 2^20 costs nothing.
fn transposed_axis(
    input: usize,
    out: usize,
    k: usize,
    s: usize,
    d: usize,
    crop: usize,
) -> (Vec<Axis>, [usize; 2]) {
    let (n, s_i, d_i) = (input as i64, s as i64, d as i64);
    let residues = s.min(out) as i64;
    let count = |r: i64| (out as i64 - r).div_euclid(s_i) + i64::from((out as i64 - r) % s_i != 0);
    // Residue → its taps `(kernel index, q)`, input index `t + q` for
    // output `r + s·t`.
    let mut by_residue: std::collections::BTreeMap<i64, Vec<(i64, i64)>> = Default::default();
    for i in 0..k as i64 {
        let r = (i * d_i - crop as i64).rem_euclid(s_i);
        if r >= residues {
            continue;
        }
        let q = (r + crop as i64 - i * d_i) / s_i;
        // Keep a tap only if some t in 0..count reads a real pixel.
        if q < n && q + count(r) > 0 {
            by_residue.entry(r).or_default().push((i, q));
        }
    }
    let low = by_residue.values().flatten().map(|&(_, q)| -q).max().unwrap_or(0).max(0);
    let high = by_residue
        .iter()
        .flat_map(|(&r, taps)| taps.iter().map(move |&(_, q)| q + count(r) - n))
        .max()
        .unwrap_or(0)
        .max(0);
    let phases: Vec<(i64, Vec<(i64, i64)>)> = by_residue.into_iter().collect();
    // Runs in order of the first kernel index (a dilation steps residues by
    // d) or of the residue: whichever makes fewer.
    let mut by_kernel = phases.clone();
    by_kernel.sort_by_key(|(_, taps)| taps[0].0);
    let (a, b) = (runs(&phases, &count), runs(&by_kernel, &count));
    let runs = if b.len() < a.len() { b } else { a };
    let axes = runs
        .into_iter()
        .map(|(r, taps, members, shift)| Axis {
            out_start: r as usize,
            out_step: s,
            count: count(r) as usize,
            in_step: 1,
            taps: taps
                .iter()
                .map(|&(i, q)| Tap { kernel: i as usize, offset: (q + low) as usize })
                .collect(),
            members,
            shift,
        })
        .collect();
    (axes, [low as usize, high as usize])
}

/// A transposed axis's phases `(residue, taps)` taken in order into runs:
/// consecutive phases join a run while they have the run's output count and
/// tap count and step from the one before by the run's one shift (of the
/// residue, and of every tap's kernel index and `q`). Returns each run's
/// first phase, its members and shift.
#[allow(clippy::type_complexity)]
fn runs(
    phases: &[(i64, Vec<(i64, i64)>)],
    count: &impl Fn(i64) -> i64,
) -> Vec<(i64, Vec<(i64, i64)>, usize, Shift)> {
    let step = |a: &(i64, Vec<(i64, i64)>), b: &(i64, Vec<(i64, i64)>)| -> Option<Shift> {
        if count(a.0) != count(b.0) || a.1.len() != b.1.len() {
            return None;
        }
        let kernel = b.1[0].0 - a.1[0].0;
        let offset = b.1[0].1 - a.1[0].1;
        let same = a.1.iter().zip(&b.1).all(|(x, y)| y.0 - x.0 == kernel && y.1 - x.1 == offset);
        same.then_some(Shift { out: b.0 - a.0, kernel, offset })
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < phases.len() {
        let mut members = 1;
        let mut shift = Shift::default();
        if let Some(first) = phases.get(i + 1).and_then(|next| step(&phases[i], next)) {
            shift = first;
            members = 2;
            while let Some(next) = phases.get(i + members) {
                if step(&phases[i + members - 1], next) != Some(shift) {
                    break;
                }
                members += 1;
            }
        }
        out.push((phases[i].0, phases[i].1.clone(), members, shift));
        i += members;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(json: &str) -> Geometry {
        Geometry::of(&crate::ConvSpec::from_json(json).unwrap().validate().unwrap())
    }

    #[test]
    fn column_phases_merge_where_the_kernel_is_as_wide_as_the_stride() {
        let merged = |kernel: &str, stride: &str, padding: &str| {
            geometry(&format!(
                r#"{{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":5,"width":7,"kernel":{kernel},"stride":{stride},"padding":{padding}}}"#
            ))
            .merged_columns()
        };
        assert_eq!(merged("2", "2", "0"), Some(2));
        assert_eq!(merged("[2, 3]", "[2, 3]", "0"), Some(3));
        assert_eq!(merged("[3, 1]", "[2, 1]", "0"), None); // one column phase
        // Phases of two taps each, reading different pixels.
        assert_eq!(merged("4", "2", "1"), None);
        assert_eq!(merged("3", "2", "1"), None);
        // conv2d has one member per axis.
        let g = geometry(
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":9,"width":13,"kernel":2,"stride":2}"#,
        );
        assert_eq!(g.merged_columns(), None);
    }

    #[test]
    fn the_extents_are_the_phases_own() {
        // conv2d: one phase, the output's columns and rows, every tap.
        let g = geometry(
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":9,"width":13,"kernel":[3,5],"stride":2,"padding":1}"#,
        );
        assert_eq!((g.most_cols(), g.most_rows(), g.most_taps()), (6, 5, 15));
        // A tap that meets only padding is not multiplied: a 3×3 kernel on
        // one pixel padded by 1 is its centre tap.
        let g = geometry(
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":1,"width":1,"kernel":3,"padding":1}"#,
        );
        assert_eq!((g.most_cols(), g.most_rows(), g.most_taps()), (1, 1, 1));
        // conv_transpose2d, stride 2, kernel 3: residue 0 takes taps 0 and
        // 2 of each axis, residue 1 tap 1; its phases have ⌈out/2⌉ or
        // ⌊out/2⌋ positions.
        let g = geometry(
            r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":4,"width":5,"kernel":3,"stride":2}"#,
        );
        assert_eq!((g.most_cols(), g.most_rows(), g.most_taps()), (6, 5, 4));
        assert_eq!(g.phases.len(), 4);
        // Residues no tap reaches are holes, and have no phase.
        let g = geometry(
            r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":2,"width":2,"kernel":1,"stride":3}"#,
        );
        assert!(g.holes);
        assert_eq!((g.most_cols(), g.most_rows(), g.most_taps(), g.phases.len()), (2, 2, 1, 1));
    }
}
