//! The subcommands of `convjit`, one module each, and what they share
//! (`common`: reading specs and suites, the tuning cache's path, errors).

pub mod bench;
pub mod common;
pub mod demo;
pub mod ir;
pub mod macs;
pub mod net;
pub mod run;
pub mod tune;
