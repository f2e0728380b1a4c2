//! A layer's random operands: what every engine of a benchmark and every
//! candidate of a tuning run is run and checked on.

use rand::RngExt;
use rand::rngs::StdRng;

use crate::error::Result;
use crate::spec::ValidSpec;

/// A layer's input, weights and bias.
pub(crate) struct LayerData {
    pub(crate) input: Vec<f32>,
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Option<Vec<f32>>,
}

impl LayerData {
    /// Every element uniform in [-1, 1).
    pub(crate) fn random(spec: &ValidSpec, rng: &mut StdRng) -> Result<LayerData> {
        let mut tensor = |len, what| -> Result<Vec<f32>> {
            let mut v = crate::alloc::zeroed_f32(len, what)?;
            v.iter_mut().for_each(|x| *x = rng.random_range(-1.0f32..1.0));
            Ok(v)
        };
        Ok(LayerData {
            input: tensor(spec.input_len(), "the test input")?,
            weight: tensor(spec.weight_len(), "the test weights")?,
            bias: match spec.has_bias() {
                true => Some(tensor(spec.out_channels(), "the test bias")?),
                false => None,
            },
        })
    }
}
