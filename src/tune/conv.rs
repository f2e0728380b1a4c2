//! A convolution layer as a [`Tunable`] op: its schedule space, its kernels,
//! and its random test data checked against the reference.

use std::cell::RefCell;
use std::rc::Rc;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::Space;
use super::Tunable;
use super::cache::Workload;
use super::memo::Memo;
use crate::complexity::Complexity;
use crate::data::LayerData;
use crate::error::Result;
use crate::jit::Compiler;
use crate::kernel::{Kernel, PackedWeights};
use crate::reference::Oracle;
use crate::schedule::{self, CodeKey, Run, Schedule, Winograd};
use crate::spec::ValidSpec;

/// Layers of up to this many MACs (the dense count) are verified on every
/// output element; the reference runs at about 10⁸ MACs per second, twice
/// (values and magnitudes), so this costs about 0.3 s once per layer.
pub const FULL_ORACLE_MACS: u64 = 16_000_000;

/// A kernel and the layer's weights packed for it, shared by every
/// candidate whose schedule compiles to it.
type Built = (Kernel, PackedWeights);

/// One layer being tuned on `threads` threads at most.
pub(crate) struct ConvTuning<'a> {
    compiler: &'a Compiler,
    spec: &'a ValidSpec,
    threads: usize,
    data: LayerData,
    oracle: Oracle,
    /// The output of the last run.
    pub(super) output: Vec<f32>,
    /// Whether the last run computed through Winograd's transforms, and
    /// how: its output is held to their bound.
    ran_winograd: Option<Winograd>,
    /// The oracles with Winograd's bounds made so far, by output tile.
    winograd_oracles: RefCell<Vec<(usize, Rc<Oracle>)>>,
    heuristic: Schedule,
    space: Space,
    /// The kernel of each code still held (by a finalist, the heuristic or
    /// the recent few): a candidate that differs from another only in its
    /// [`Run`] runs on the same kernel, compiled once.
    built: Memo<CodeKey, Built>,
}

impl<'a> ConvTuning<'a> {
    /// Makes the layer's test data and its reference (on the planes
    /// [`oracle_planes`] picks), drawing both from `rng`.
    pub(crate) fn new(
        compiler: &'a Compiler,
        spec: &'a ValidSpec,
        threads: usize,
        rng: &mut StdRng,
    ) -> Result<ConvTuning<'a>> {
        let data = LayerData::random(spec, rng)?;
        let output = crate::alloc::filled(spec.output_len(), f32::NAN, "the output")?;
        let LayerData { input, weight, bias } = &data;
        let oracle = match oracle_planes(spec, threads, rng) {
            None => Oracle::new(spec, input, weight, bias.as_deref())?,
            Some(planes) => Oracle::of_planes(spec, input, weight, bias.as_deref(), &planes)?,
        };
        Ok(ConvTuning {
            compiler,
            spec,
            threads,
            data,
            oracle,
            output,
            ran_winograd: None,
            winograd_oracles: RefCell::default(),
            heuristic: schedule::choose_for(spec, threads, compiler.vector_isa()),
            space: Space::up_to(spec, threads, compiler.vector_isa()),
            built: Memo::default(),
        })
    }
}

impl ConvTuning<'_> {
    /// The oracle with Winograd's bound for `w` ([`Oracle::widened`]) on
    /// the same planes, made once for each output tile (the bound depends
    /// on the transforms, not on the panel).
    fn winograd_oracle(&self, w: Winograd) -> Result<Rc<Oracle>> {
        let mut made = self.winograd_oracles.borrow_mut();
        if let Some((_, oracle)) = made.iter().find(|(m, _)| *m == w.output_tile) {
            return Ok(Rc::clone(oracle));
        }
        let LayerData { input, weight, bias } = &self.data;
        let transform = w.transform(self.spec);
        let oracle =
            self.oracle.clone().widened(self.spec, &transform, input, weight, bias.as_deref())?;
        made.push((w.output_tile, Rc::new(oracle)));
        Ok(Rc::clone(&made[made.len() - 1].1))
    }
}

impl Tunable for ConvTuning<'_> {
    type Config = Schedule;
    type Compiled = (Rc<Built>, Run);

    fn name(&self) -> Option<&str> {
        self.spec.name()
    }

    fn summary(&self) -> String {
        self.spec.shape_summary()
    }

    fn workload(&self) -> Workload {
        Workload::host(self.spec, self.threads)
    }

    fn counted_macs(&self) -> u64 {
        Complexity::of(self.spec).macs_valid
    }

    fn heuristic(&self) -> Schedule {
        self.heuristic
    }

    fn members(&self) -> &[Schedule] {
        self.space.members()
    }

    fn neighbours(&self, schedule: &Schedule) -> Vec<Schedule> {
        self.space.neighbours(schedule)
    }

    fn knobs(&self, schedule: &Schedule) -> Vec<u64> {
        Space::knobs(schedule).to_vec()
    }

    /// Compiles the schedule's code, or finds it compiled for another run.
    fn compile(&self, schedule: &Schedule) -> Result<(Rc<Built>, Run)> {
        schedule.legal(self.spec)?;
        let built = self.built.get_or_build(schedule.code_key(), || {
            let kernel = self.compiler.compile_with(self.spec, schedule)?;
            let weights = kernel.pack(&self.data.weight, self.data.bias.as_deref())?;
            Ok((kernel, weights))
        })?;
        Ok((built, schedule.run))
    }

    fn poison_output(&mut self) {
        self.output.fill(f32::NAN);
    }

    fn run(&mut self, (built, run): &(Rc<Built>, Run)) -> Result<()> {
        let (kernel, weights) = &**built;
        self.ran_winograd = kernel.schedule().winograd;
        kernel.run_as(run, &self.data.input, weights, &mut self.output)
    }

    fn verify(&self) -> Result<Option<String>> {
        let verdict = match self.ran_winograd {
            Some(w) => self.winograd_oracle(w)?.verify(&self.output)?,
            None => self.oracle.verify(&self.output)?,
        };
        Ok(verdict.failure())
    }

    fn checked(&self) -> usize {
        self.oracle.checked()
    }

    fn output_len(&self) -> usize {
        self.spec.output_len()
    }
}

/// The output planes `(image, channel)` a layer's candidates are checked
/// on, or `None` for every element (layers of up to [`FULL_ORACLE_MACS`]).
/// Otherwise the first and last image, and in each: the first and last 12
/// channels (every lane of the first and last channel block of any tile,
/// and the channel tail); the first and last channel of every group (each
/// group's tail); the 12 channels on each side of where `threads` or fewer
/// threads splitting the channels would meet (the items split); and
/// channels drawn at random, as many as keep the reference near
/// [`FULL_ORACLE_MACS`]. Every pixel of a plane is checked, so borders,
/// tile tails, bands and row splits all are.
pub fn oracle_planes(
    spec: &ValidSpec,
    threads: usize,
    rng: &mut StdRng,
) -> Option<Vec<(usize, usize)>> {
    let macs = Complexity::of(spec).macs;
    if macs <= FULL_ORACLE_MACS {
        return None;
    }
    let (batch, channels) = (spec.batch(), spec.out_channels());
    let images: Vec<usize> = if batch == 1 { vec![0] } else { vec![0, batch - 1] };
    let near = |c: usize| c.saturating_sub(12)..(c + 12).min(channels);
    let mut must = std::collections::BTreeSet::new();
    must.extend(near(0));
    must.extend(near(channels));
    let per_group = spec.out_per_group();
    for g in 1..spec.groups() {
        must.extend([g * per_group - 1, g * per_group]);
    }
    for parts in 2..=threads.min(channels) {
        for t in 1..parts {
            must.extend(near(t * channels / parts));
        }
    }
    let per_plane = (macs / (batch * channels) as u64).max(1);
    let affordable = (FULL_ORACLE_MACS / per_plane / images.len() as u64) as usize;
    let mut rest: Vec<usize> = (0..channels).filter(|c| !must.contains(c)).collect();
    rest.shuffle(rng);
    let more = affordable.saturating_sub(must.len());
    let chosen: Vec<usize> = must.into_iter().chain(rest.into_iter().take(more)).collect();
    Some(images.iter().flat_map(|&n| chosen.iter().map(move |&c| (n, c))).collect())
}
