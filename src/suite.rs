//! The built-in layer suite: the layers every performance figure is measured
//! on (a copy of the team's `bench/layers.json`, embedded in the binary).

use crate::spec::ConvSpec;

/// The suite's JSON text.
pub const BUILTIN_JSON: &str = include_str!("../suite/layers.json");

/// The built-in suite's specs, in order.
pub fn builtin() -> Vec<ConvSpec> {
    ConvSpec::suite_from_json(BUILTIN_JSON).expect("the built-in suite is valid JSON")
}
