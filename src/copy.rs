//! The padded input copies the compiled code reads (`codegen::Plan`
//! fixes their layout): NCHW, NHWC (interleaved) or channel-blocked,
//! with strided rows split into column phases, or rows back to back
//! without columns of padding (joined rows, whose padding columns hold
//! the neighbouring rows' pixels, read only by masked-off lanes); of a
//! whole image, one group, or one band of rows. Only a copy's interior is
//! ever written, so its zero borders are made once, by
//! [`crate::runtime::Scratch::zeroed`].

use std::ops::Range;

use crate::codegen::Plan;
use crate::runtime;
use crate::spec::ValidSpec;

/// Makes the copies of one kernel's plan.
pub(crate) struct Copier<'a> {
    pub(crate) spec: &'a ValidSpec,
    pub(crate) plan: &'a Plan,
}

impl Copier<'_> {
    /// Copies one image into the plan's padded (and maybe channel-blocked)
    /// layout, split by planes (a channel, or a block of a vector's channels)
    /// across `threads`. The borders of `scratch` are zero and stay zero:
    /// only the interior is written.
    pub(crate) fn image(&self, x: &[f32], scratch: &mut [f32], threads: usize) {
        if self.plan.interleaved {
            // Split by runs of stored rows instead: one plane is the whole
            // copy.
            let row = self.plan.row_len() * self.plan.pixel_len();
            let channels = 0..self.spec.in_channels();
            let per_share = self.plan.geometry.padded[0].div_ceil(threads).max(1);
            let copy = |(i, dst): (usize, &mut [f32])| {
                let first = i * per_share;
                let rows = first..first + dst.len() / row;
                self.interleave_rows(x, &channels, rows, dst)
            };
            on_chunks(scratch, per_share * row, threads, copy);
            return;
        }
        let plane = self.plan.plane_len();
        let interior = self.interior_rows();
        let copy = |(p, dst): (usize, &mut [f32])| {
            let dst = &mut dst[interior.start * self.plan.row_len() * self.plan.pixel_len()..];
            self.plane(x, p, interior.clone(), dst)
        };
        on_chunks(scratch, plane, threads, copy);
    }

    /// Copies the planes of group `g` into `scratch` (one group's planes),
    /// the interior only.
    pub(crate) fn group(&self, x: &[f32], g: usize, scratch: &mut [f32]) {
        let first = g * self.plan.work.group_planes;
        if self.plan.interleaved {
            let channels = first..first + self.plan.work.group_planes;
            self.interleave_rows(x, &channels, 0..self.plan.geometry.padded[0], scratch);
            return;
        }
        let interior = self.interior_rows();
        for (i, dst) in scratch.chunks_mut(self.plan.plane_len()).enumerate() {
            let dst = &mut dst[interior.start * self.plan.row_len() * self.plan.pixel_len()..];
            self.plane(x, first + i, interior.clone(), dst);
        }
    }

    /// The padded rows that hold input pixels.
    fn interior_rows(&self) -> Range<usize> {
        let top = self.plan.geometry.pad[0];
        top..top + self.spec.height()
    }

    /// Copies the padded input rows that parts `span` of `parts` read
    /// (`Plan::span_rows`: at most a band's) into `scratch` (one band's
    /// planes, each of `Bands::rows` stored rows).
    pub(crate) fn band(&self, x: &[f32], span: Range<usize>, parts: usize, scratch: &mut [f32]) {
        let rows = self.plan.span_rows(span, parts);
        if self.plan.interleaved {
            let channels = 0..self.spec.in_channels();
            self.interleave_rows(x, &channels, rows, scratch);
            return;
        }
        for (p, dst) in scratch.chunks_mut(self.plan.plane_len()).enumerate() {
            self.plane(x, p, rows.clone(), dst);
        }
    }

    /// Writes the interior of padded rows `rows` of an interleaved copy of
    /// `channels` into `dst`, which holds those stored rows from
    /// `rows.start` on: pixel by pixel, each pixel's channels together, and
    /// zeros in border rows (a reused band buffer may hold pixels there).
    /// Channels outer, rows inner, so each input plane is read in one
    /// sequential run rather than one row of every plane at a time.
    fn interleave_rows(
        &self,
        x: &[f32],
        channels: &Range<usize>,
        rows: Range<usize>,
        dst: &mut [f32],
    ) {
        let (h, w) = (self.spec.height(), self.spec.width());
        let [top, left, _, _] = self.plan.geometry.pad;
        let n = channels.len();
        let stride = self.plan.row_len() * n;
        let start = self.plan.col_offset(left) * n;
        let interior = rows.start.max(top)..rows.end.min(top + h);
        for r in rows.clone().filter(|r| !interior.contains(r)) {
            dst[(r - rows.start) * stride + start..][..w * n].fill(0.0);
        }
        // Blocks of 4 channels × 4 pixels as 4×4 transposes, then the
        // channels and pixels left over one by one.
        let (quads, cols) = (n / 4 * 4, w / 4 * 4);
        let src = |c: usize, r: usize| &x[((channels.start + c) * h + r - top) * w..][..w];
        let out = |r: usize| {
            let first = (r - rows.start) * stride + start;
            first..first + w * n
        };
        for c in (0..quads).step_by(4) {
            for r in interior.clone() {
                let planes = [src(c, r), src(c + 1, r), src(c + 2, r), src(c + 3, r)];
                let dst = &mut dst[out(r)];
                for p in (0..cols).step_by(4) {
                    transpose4(&planes, p, &mut dst[p * n + c..], n);
                }
                for p in cols..w {
                    for (i, plane) in planes.iter().enumerate() {
                        dst[p * n + c + i] = plane[p];
                    }
                }
            }
        }
        for c in quads..n {
            for r in interior.clone() {
                let first = out(r).start;
                for (p, &v) in src(c, r).iter().enumerate() {
                    dst[first + p * n + c] = v;
                }
            }
        }
    }

    /// Writes the interior of padded rows `rows` of plane `p` into `dst`,
    /// which holds those stored rows from `rows.start` on: the plane's
    /// channels, zeros in border rows and in the lanes of a block past the
    /// last channel (a reused buffer may hold real pixels there).
    fn plane(&self, x: &[f32], p: usize, rows: Range<usize>, dst: &mut [f32]) {
        let (h, w) = (self.spec.height(), self.spec.width());
        let plan = &self.plan;
        let [top, left, _, _] = plan.geometry.pad;
        let lanes = if plan.work.blocked_input { plan.work.input_block() } else { 1 };
        let stride = plan.row_len() * lanes;
        if plan.joined {
            // Rows back to back, row i's pixels from element i · stride +
            // left on (running into the next row's padding columns): the
            // image rows among `rows` are one run, copied at once.
            let inside = if p < self.spec.in_channels() {
                rows.start.max(top)..rows.end.min(top + h)
            } else {
                0..0
            };
            if !inside.is_empty() {
                let at = (inside.start - rows.start) * stride + left;
                let src = &x[(p * h + inside.start - top) * w..][..inside.len() * w];
                dst[at..at + src.len()].copy_from_slice(src);
            }
            for r in rows.clone().filter(|r| !inside.contains(r)) {
                dst[(r - rows.start) * stride + left..][..w].fill(0.0);
            }
            return;
        }
        for (r, dst_row) in rows.zip(dst.chunks_mut(stride)) {
            // The row of each lane's channel, or none (zeros).
            let src = |lane: usize| {
                let c = p * lanes + lane;
                let inside = c < self.spec.in_channels() && (top..top + h).contains(&r);
                inside.then(|| &x[(c * h + r - top) * w..][..w])
            };
            if lanes == 1 {
                match src(0) {
                    Some(src) => copy_row(src, dst_row, left, plan),
                    None => (0..w).for_each(|i| dst_row[plan.col_offset(left + i)] = 0.0),
                }
                continue;
            }
            // A blocked row: pixel-major, `lanes` channels each. Quads of
            // channels are transposed 4 × 4 pixels at a time.
            let mut lane = 0;
            while lane < lanes {
                let quad = (lane + 4 <= lanes)
                    .then(|| [src(lane), src(lane + 1), src(lane + 2), src(lane + 3)]);
                if let Some([Some(a), Some(b), Some(c), Some(d)]) = quad {
                    let rows = [a, b, c, d];
                    let quads = w / 4 * 4;
                    for i in (0..quads).step_by(4) {
                        let at = (left + i) * lanes + lane;
                        transpose4(&rows, i, &mut dst_row[at..], lanes);
                    }
                    for (k, row) in rows.iter().enumerate() {
                        for (i, &v) in row.iter().enumerate().skip(quads) {
                            dst_row[(left + i) * lanes + lane + k] = v;
                        }
                    }
                    lane += 4;
                    continue;
                }
                match src(lane) {
                    Some(src) => {
                        for (i, &v) in src.iter().enumerate() {
                            dst_row[(left + i) * lanes + lane] = v;
                        }
                    }
                    None => (0..w).for_each(|i| dst_row[(left + i) * lanes + lane] = 0.0),
                }
                lane += 1;
            }
        }
    }
}

/// Runs `copy((i, chunk))` on every `chunk`-long piece `i` of `scratch`
/// (the last may be shorter), the pieces dealt to `threads` threads in
/// contiguous ranges (`runtime::on_threads`: the calling thread and the
/// process's spinning workers).
fn on_chunks(
    scratch: &mut [f32],
    chunk: usize,
    threads: usize,
    copy: impl Fn((usize, &mut [f32])) + Sync,
) {
    let chunk = chunk.max(1);
    let n = scratch.len().div_ceil(chunk);
    let mut parts = Vec::with_capacity(threads.max(1));
    let mut rest = scratch;
    for t in 0..threads.max(1) {
        let shares = runtime::share(n, t, threads.max(1));
        let len = (shares.len() * chunk).min(rest.len());
        let (part, after) = std::mem::take(&mut rest).split_at_mut(len);
        parts.push((shares.start, part));
        rest = after;
    }
    runtime::on_threads(&mut parts, |_, (first, part)| {
        part.chunks_mut(chunk).enumerate().for_each(|(i, piece)| copy((*first + i, piece)))
    });
}

/// Writes `rows[i][p + j]` to `dst[j · stride + i]` for `i, j < 4`.
fn transpose4(rows: &[&[f32]; 4], p: usize, dst: &mut [f32], stride: usize) {
    let quad = |i: usize| -> [f32; 4] { rows[i][p..p + 4].try_into().expect("4 pixels") };
    let [a, b, c, d] = [quad(0), quad(1), quad(2), quad(3)];
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let dst = &mut dst[..3 * stride + 4];
        // SAFETY: SSE is part of x86-64; every load reads one of the 4-element
        // arrays above and every store writes 4 elements inside `dst`, whose
        // length was just checked.
        unsafe {
            let (a, b, c, d) = (
                _mm_loadu_ps(a.as_ptr()),
                _mm_loadu_ps(b.as_ptr()),
                _mm_loadu_ps(c.as_ptr()),
                _mm_loadu_ps(d.as_ptr()),
            );
            let (ab_lo, ab_hi) = (_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b));
            let (cd_lo, cd_hi) = (_mm_unpacklo_ps(c, d), _mm_unpackhi_ps(c, d));
            let out = [
                _mm_movelh_ps(ab_lo, cd_lo),
                _mm_movehl_ps(cd_lo, ab_lo),
                _mm_movelh_ps(ab_hi, cd_hi),
                _mm_movehl_ps(cd_hi, ab_hi),
            ];
            for (j, v) in out.into_iter().enumerate() {
                _mm_storeu_ps(dst[j * stride..j * stride + 4].as_mut_ptr(), v);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for j in 0..4 {
        dst[j * stride..j * stride + 4].copy_from_slice(&[a[j], b[j], c[j], d[j]]);
    }
}

/// Copies one input row into a stored padded row whose interior starts at
/// padded column `left`: as is when the row has one column phase, else
/// each phase takes every `col_phases`-th pixel.
fn copy_row(src: &[f32], dst: &mut [f32], left: usize, plan: &Plan) {
    let phases = plan.col_phases;
    if phases == 1 {
        dst[left..left + src.len()].copy_from_slice(src);
        return;
    }
    // Whole runs of `phases` pixels first, then the last partial run.
    let runs = src.len() / phases;
    let (whole, rest) = src.split_at(runs * phases);
    let (a, b) = (plan.col_offset(left), plan.col_offset(left + 1));
    if phases == 2 {
        // The common stride 2, as one deinterleaving loop the compiler
        // vectorises. The two phases are different sub-rows: disjoint.
        let (first, second) = if a < b {
            let (lo, hi) = dst.split_at_mut(b);
            (&mut lo[a..a + runs], &mut hi[..runs])
        } else {
            let (lo, hi) = dst.split_at_mut(a);
            (&mut hi[..runs], &mut lo[b..b + runs])
        };
        for ((x, y), pair) in first.iter_mut().zip(second.iter_mut()).zip(whole.chunks_exact(2)) {
            *x = pair[0];
            *y = pair[1];
        }
    } else {
        for first in 0..phases {
            let start = plan.col_offset(left + first);
            for (d, run) in dst[start..start + runs].iter_mut().zip(whole.chunks_exact(phases)) {
                *d = run[first];
            }
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        dst[plan.col_offset(left + whole.len() + i)] = v;
    }
}
