//! The fused depthwise-separable block as a [`Tunable`] op: the space of its
//! [`DscSchedule`]s, its kernels, and its random input checked against the
//! reference of the two convs (the depthwise errors carried through the
//! pointwise weights, [`Oracle::then_pointwise`]).
//!
//! | knob | values |
//! |---|---|
//! | band rows | 1, 2, 4, 8, 16, 32 (at most the output's rows) and the heuristic's |
//! | depthwise tile | `dw_rows` 1 to 14 (at most the band's rows), each with the most vectors of pixels that fit 14 accumulators and the row |
//! | pointwise tile | `pw_vectors` 1 to 3 × `pw_outputs`, 4 to 14 accumulators, at most the output channels |
//! | pointwise unroll | 1 to 4 input channels |
//! | threads | 1 to the count asked for |

use std::rc::Rc;

use rand::rngs::StdRng;

use super::Tunable;
use super::cache::Workload;
use super::memo::Memo;
use super::space::one_knob_apart;
use crate::blocks::Dsc;
use crate::blocks::dsc::DscKernel;
use crate::codegen::dsc::DscSchedule;
use crate::complexity::Complexity;
use crate::data::LayerData;
use crate::error::Result;
use crate::jit::Compiler;
use crate::reference::Oracle;
use crate::schedule::{MAX_ACCUMULATORS, MAX_THREADS};
use crate::spec::ValidSpec;
use crate::target::LANES;

/// Band heights the space tries (output rows), besides the heuristic's.
const BAND_ROWS: [usize; 6] = [1, 2, 4, 8, 16, 32];

/// Fewer accumulators than this leave the FMA pipes idle (as for a conv
/// layer's tiles).
const MIN_ACCUMULATORS: usize = 4;

/// The knobs, in the order [`DscSpace::knobs`] reports them.
pub const DSC_KNOBS: [&str; 5] = ["band_rows", "dw_tile", "pw_tile", "pw_unroll", "threads"];

/// The schedules a tuner may try for one fused block.
#[derive(Clone, Debug)]
pub struct DscSpace {
    members: Vec<DscSchedule>,
}

impl DscSpace {
    /// Every legal schedule of the space for the block `dw` then `pw` on at
    /// most `max_threads` threads (clamped to 1..=[`MAX_THREADS`]), in a
    /// fixed order, the heuristic's among them.
    pub fn of(dw: &ValidSpec, pw: &ValidSpec, max_threads: usize) -> DscSpace {
        let max_threads = max_threads.clamp(1, MAX_THREADS);
        let (height, vectors) = (dw.out_height(), dw.out_width().div_ceil(LANES));
        let heuristic = DscSchedule::choose(dw, pw, max_threads);
        let mut bands: Vec<usize> = BAND_ROWS.iter().copied().filter(|&b| b <= height).collect();
        if !bands.contains(&heuristic.band_rows) {
            bands.push(heuristic.band_rows);
        }
        let mut pw_tiles = Vec::new();
        for pw_vectors in 1..=3 {
            let most = (MAX_ACCUMULATORS / pw_vectors).min(pw.out_channels());
            let least = MIN_ACCUMULATORS.div_ceil(pw_vectors).min(most);
            pw_tiles.extend((least..=most).map(|outputs| (pw_vectors, outputs)));
        }
        let mut members = Vec::new();
        for &band_rows in &bands {
            for dw_rows in 1..=band_rows.min(MAX_ACCUMULATORS) {
                let dw_vectors = (MAX_ACCUMULATORS / dw_rows).min(vectors).max(1);
                for &(pw_vectors, pw_outputs) in &pw_tiles {
                    for pw_unroll in 1..=4 {
                        for threads in 1..=max_threads {
                            let s = DscSchedule {
                                band_rows,
                                dw_rows,
                                dw_vectors,
                                pw_vectors,
                                pw_outputs,
                                pw_unroll,
                                threads,
                            };
                            if s.legal().is_ok() {
                                members.push(s);
                            }
                        }
                    }
                }
            }
        }
        if !members.contains(&heuristic) {
            members.push(heuristic);
        }
        DscSpace { members }
    }

    /// The schedules, in a fixed order.
    pub fn members(&self) -> &[DscSchedule] {
        &self.members
    }

    /// The members that differ from `schedule` in exactly one knob
    /// ([`DSC_KNOBS`]), in the space's order.
    pub fn neighbours(&self, schedule: &DscSchedule) -> Vec<DscSchedule> {
        one_knob_apart(&self.members, schedule, DscSpace::knobs)
    }

    /// The value of every knob of `schedule` (in the order of
    /// [`DSC_KNOBS`]), encoded as a number.
    pub fn knobs(s: &DscSchedule) -> [u64; 5] {
        [
            s.band_rows as u64,
            (s.dw_rows * 1_000 + s.dw_vectors) as u64,
            (s.pw_vectors * 1_000 + s.pw_outputs) as u64,
            s.pw_unroll as u64,
            s.threads as u64,
        ]
    }
}

/// One fused block being tuned on `threads` threads at most.
pub(crate) struct DscTuning<'a> {
    compiler: &'a Compiler,
    block: &'a Dsc,
    threads: usize,
    input: Vec<f32>,
    oracle: Oracle,
    /// The output of the last run.
    output: Vec<f32>,
    heuristic: DscSchedule,
    space: DscSpace,
    /// The kernel of each schedule, by its schedule on one thread: the
    /// threads are the run's, so the candidates that differ only in them
    /// run on one kernel, compiled once.
    built: Memo<DscSchedule, DscKernel>,
}

impl<'a> DscTuning<'a> {
    /// Makes the block's random input (from `rng`) and its reference.
    pub(crate) fn new(
        compiler: &'a Compiler,
        block: &'a Dsc,
        threads: usize,
        rng: &mut StdRng,
    ) -> Result<DscTuning<'a>> {
        let (dw, pw) = (block.depthwise(), block.pointwise());
        let input = LayerData::random(dw.spec(), rng)?.input;
        let oracle = Oracle::new(dw.spec(), &input, dw.weight(), dw.bias())?.then_pointwise(
            pw.spec(),
            pw.weight(),
            pw.bias(),
        )?;
        let output = crate::alloc::filled(pw.spec().output_len(), f32::NAN, "the output")?;
        Ok(DscTuning {
            compiler,
            block,
            threads,
            input,
            oracle,
            output,
            heuristic: DscSchedule::choose(dw.spec(), pw.spec(), threads),
            space: DscSpace::of(dw.spec(), pw.spec(), threads),
            built: Memo::default(),
        })
    }
}

impl Tunable for DscTuning<'_> {
    type Config = DscSchedule;
    type Compiled = (Rc<DscKernel>, usize);

    fn name(&self) -> Option<&str> {
        self.block.depthwise().spec().name()
    }

    fn summary(&self) -> String {
        let (dw, pw) = (self.block.depthwise().spec(), self.block.pointwise().spec());
        format!("{} then {}", dw.shape_summary(), pw.shape_summary())
    }

    fn workload(&self) -> Workload {
        let (dw, pw) = (self.block.depthwise().spec(), self.block.pointwise().spec());
        Workload::host_block(dw, pw, self.threads)
    }

    fn counted_macs(&self) -> u64 {
        let (dw, pw) = (self.block.depthwise().spec(), self.block.pointwise().spec());
        Complexity::of(dw).macs_valid + Complexity::of(pw).macs_valid
    }

    fn heuristic(&self) -> DscSchedule {
        self.heuristic
    }

    fn members(&self) -> &[DscSchedule] {
        self.space.members()
    }

    fn neighbours(&self, schedule: &DscSchedule) -> Vec<DscSchedule> {
        self.space.neighbours(schedule)
    }

    fn knobs(&self, schedule: &DscSchedule) -> Vec<u64> {
        DscSpace::knobs(schedule).to_vec()
    }

    fn compile(&self, schedule: &DscSchedule) -> Result<(Rc<DscKernel>, usize)> {
        schedule.legal()?;
        let code = DscSchedule { threads: 1, ..*schedule };
        let kernel = self
            .built
            .get_or_build(code, || DscKernel::compile(self.compiler, self.block, &code))?;
        Ok((kernel, schedule.threads))
    }

    fn poison_output(&mut self) {
        self.output.fill(f32::NAN);
    }

    fn run(&mut self, (kernel, threads): &(Rc<DscKernel>, usize)) -> Result<()> {
        kernel.run_on(*threads, &self.input, &mut self.output)
    }

    fn verify(&self) -> Result<Option<String>> {
        Ok(self.oracle.verify(&self.output)?.failure())
    }

    fn checked(&self) -> usize {
        self.oracle.checked()
    }

    fn output_len(&self) -> usize {
        self.output.len()
    }
}
