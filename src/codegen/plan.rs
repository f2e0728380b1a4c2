//! The geometry of a lowering: which input pixels each output pixel reads,
//! as a list of phases of ordinary (gathering) convolutions over a padded
//! input, and how channels are grouped into vector blocks.
//!
//! conv2d is one phase. conv_transpose2d with stride s is split into up to
//! s_h·s_w phases (the sub-pixel decomposition): output row `oy = r + s·t`
//! receives `x[t + q_i]·w[i]` for the taps `i` with `r + pad − i·d ≡ 0 (mod s)`,
//! where `q_i = (r + pad − i·d) / s`; that is a stride-1 convolution in `t`
//! with a constant input offset per tap. Every output pixel belongs to exactly
//! one phase and is written once, so there is no scatter and no race.

use crate::schedule::{Schedule, Strategy};
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
}

/// A rectangle of output pixels computed as one ordinary convolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    /// The rows.
    pub rows: Axis,
    /// The columns.
    pub cols: Axis,
}

/// Channels per block of a channel-blocked input copy: one f32x4.
pub const INPUT_BLOCK: usize = 4;

/// Everything the emitter and the run-time input copy need to agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Zero rows above / columns left / rows below / columns right of each
    /// input channel in the padded copy.
    pub pad: [usize; 4],
    /// Padded input height and width.
    pub padded: [usize; 2],
    /// Whether the input copy is channel-blocked by 4 (`[C/4][Hp][Wp][4]`)
    /// rather than planar (`[C][Hp][Wp]`).
    pub blocked_input: bool,
    /// Channels per vector block: `4 · oc_vectors`.
    pub lanes: usize,
    /// Work items: `(group, output-channel block)` pairs (Direct) or
    /// `(channel block, multiplier index)` pairs (Depthwise).
    pub items: usize,
    /// The phases.
    pub phases: Vec<Phase>,
}

impl Plan {
    /// The plan for `spec` computed with `schedule` (which must be legal).
    pub fn new(spec: &ValidSpec, schedule: &Schedule) -> Plan {
        let p = spec.padding();
        let (rows, cols, pad) = match spec.op() {
            Op::Conv2d => (
                conv_axis(
                    spec.out_height(),
                    spec.kernel()[0],
                    spec.stride()[0],
                    spec.dilation()[0],
                ),
                conv_axis(spec.out_width(), spec.kernel()[1], spec.stride()[1], spec.dilation()[1]),
                [p.top, p.left, p.bottom, p.right],
            ),
            Op::ConvTranspose2d => {
                let (rows, [top, bottom]) = transposed_axis(
                    spec.height(),
                    spec.out_height(),
                    spec.kernel()[0],
                    spec.stride()[0],
                    spec.dilation()[0],
                    p.top,
                );
                let (cols, [left, right]) = transposed_axis(
                    spec.width(),
                    spec.out_width(),
                    spec.kernel()[1],
                    spec.stride()[1],
                    spec.dilation()[1],
                    p.left,
                );
                (rows, cols, [top, left, bottom, right])
            }
        };
        let phases = rows
            .iter()
            .flat_map(|r| cols.iter().map(move |c| Phase { rows: r.clone(), cols: c.clone() }))
            .collect();
        let lanes = 4 * schedule.oc_vectors;
        let items = match schedule.strategy {
            Strategy::Direct => spec.groups() * spec.out_per_group().div_ceil(lanes),
            Strategy::Depthwise => spec.groups().div_ceil(lanes) * spec.out_per_group(),
        };
        Plan {
            pad,
            padded: [spec.height() + pad[0] + pad[2], spec.width() + pad[1] + pad[3]],
            blocked_input: schedule.strategy == Strategy::Depthwise,
            lanes,
            items,
            phases,
        }
    }

    /// Elements of one padded input image.
    pub fn padded_image_len(&self, in_channels: usize) -> usize {
        // A blocked copy covers every lane a work item reads: whole blocks of
        // `lanes` channels, zero past the last real channel.
        let channels =
            if self.blocked_input { in_channels.next_multiple_of(self.lanes) } else { in_channels };
        channels * self.padded[0] * self.padded[1]
    }
}

/// conv2d along one axis: one phase, output position o reads padded input
/// `o·s + i·d` for every tap i.
fn conv_axis(out: usize, k: usize, s: usize, d: usize) -> Vec<Axis> {
    vec![Axis {
        out_start: 0,
        out_step: 1,
        count: out,
        in_step: s,
        taps: (0..k).map(|i| Tap { kernel: i, offset: i * d }).collect(),
    }]
}

/// conv_transpose2d along one axis: one phase per residue of the output
/// coordinate modulo the stride. Taps that never read a real input pixel are
/// dropped; the padding returned makes every remaining read in bounds.
fn transposed_axis(
    input: usize,
    out: usize,
    k: usize,
    s: usize,
    d: usize,
    crop: usize,
) -> (Vec<Axis>, [usize; 2]) {
    let (n, s_i, d_i) = (input as i64, s as i64, d as i64);
    // (residue, count, [(kernel index, q)]) with input index t + q.
    let mut raw = Vec::new();
    for r in 0..s.min(out) {
        let count = (out - r).div_ceil(s);
        let taps: Vec<(usize, i64)> = (0..k)
            .filter_map(|i| {
                let num = (r + crop) as i64 - i as i64 * d_i;
                (num.rem_euclid(s_i) == 0).then(|| (i, num.div_euclid(s_i)))
            })
            // Keep a tap only if some t in 0..count reads a real pixel.
            .filter(|&(_, q)| q < n && q + count as i64 > 0)
            .collect();
        raw.push((r, count, taps));
    }
    let low = raw.iter().flat_map(|(_, _, t)| t.iter().map(|&(_, q)| -q)).max().unwrap_or(0).max(0);
    let high = raw
        .iter()
        .flat_map(|(_, c, t)| t.iter().map(move |&(_, q)| q + *c as i64 - n))
        .max()
        .unwrap_or(0)
        .max(0);
    let axes = raw
        .into_iter()
        .map(|(r, count, taps)| Axis {
            out_start: r,
            out_step: s,
            count,
            in_step: 1,
            taps: taps
                .into_iter()
                .map(|(i, q)| Tap { kernel: i, offset: (q + low) as usize })
                .collect(),
        })
        .collect();
    (axes, [low as usize, high as usize])
}
