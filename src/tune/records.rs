//! The tuning log: one JSON line per evaluated candidate (AutoTVM's log
//! format in spirit), appended as the tuner goes, so the search can be
//! studied and plotted afterwards (`examples/tuning_curve.rs`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cache::Workload;
use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// One evaluated candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// What was tuned.
    pub workload: Workload,
    /// The layer's name, when it has one.
    pub layer: Option<String>,
    /// Which part of the search proposed it: `heuristic`, `exhaustive`,
    /// `random` or `local`; or which stage of the final confirmation timed
    /// it again: `confirm-select` (the best few and the heuristic) or
    /// `confirm-validate` (the winner and the heuristic, afresh).
    pub phase: String,
    /// The candidate.
    pub schedule: Schedule,
    /// When the layer's tuning started, in milliseconds since the Unix
    /// epoch: it tells runs apart in a file several runs appended to.
    #[serde(default)]
    pub started_at_ms: u64,
    /// Seconds since the layer's tuning started, when the evaluation ended.
    pub elapsed_s: f64,
    /// Time to compile it, milliseconds.
    pub compile_ms: f64,
    /// Time to run it once and check the output, milliseconds.
    pub verify_ms: f64,
    /// Time spent timing it (with the heuristic's runs it was paired with),
    /// milliseconds.
    pub measure_ms: f64,
    /// Timed runs (for a candidate cut after its first, cold run: that
    /// one).
    pub runs: usize,
    /// Median TSC ticks of a run (absent when it failed).
    pub cycles: Option<u64>,
    /// `macs_valid` per TSC tick of the median run.
    pub macs_per_cycle: Option<f64>,
    /// Its run time over the heuristic's, the median over runs paired with
    /// the heuristic's (for a candidate cut after its cold first run, that
    /// run over the heuristic's median): below 1 is faster. The search
    /// ranks on this.
    pub relative: Option<f64>,
    /// Whether timing stopped early because it was clearly slower than the
    /// best so far.
    pub cut: bool,
    /// Why it was dropped: a compile error or a verification failure (both
    /// compiler bugs), or a run that failed while it was timed.
    pub error: Option<String>,
}

/// A records file open for appending.
#[derive(Debug)]
pub struct RecordLog {
    path: PathBuf,
    file: File,
}

impl RecordLog {
    /// Opens `path` for appending, creating it. A last line cut short (by
    /// an interrupted run) is ended first, so new records start on a line
    /// of their own.
    pub fn open(path: &Path) -> Result<RecordLog> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let mut file =
            OpenOptions::new().create(true).read(true).append(true).open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
            file.read_exact(&mut last).map_err(io)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io)?;
            }
        }
        Ok(RecordLog { path: path.to_path_buf(), file })
    }

    /// Appends one record as one line.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record).expect("a record always serialises");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|source| Error::Io { path: self.path.clone(), source })
    }
}

/// Reads a records file: the records that parse, and how many lines did
/// not (each skipped with a warning).
pub fn read(path: &Path) -> Result<(Vec<Record>, usize)> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let bytes = std::fs::read(path).map_err(io)?;
    let (mut records, mut skipped) = (Vec::new(), 0);
    for (number, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(record) => records.push(record),
            Err(e) => {
                skipped += 1;
                log::warn!("{}:{}: not a tuning record ({e}); skipped", path.display(), number + 1);
            }
        }
    }
    Ok((records, skipped))
}
