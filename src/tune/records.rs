//! The tuning log: one JSON line per evaluated candidate (AutoTVM's log
//! format in spirit), appended as the tuner goes, so the search can be
//! studied and plotted afterwards (`examples/tuning_curve.rs`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cache::Workload;
use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// One evaluated candidate (a config `C` of the op tuned).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record<C = Schedule> {
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
    pub schedule: C,
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
    /// Opens `path` for appending, creating it; anything but a regular file
    /// (after symbolic links) is refused. A last line cut short (by
    /// an interrupted run) is ended first, so new records start on a line
    /// of their own.
    pub fn open(path: &Path) -> Result<RecordLog> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        // Records are appended to a regular file: a FIFO would block the
        // tuner once its buffer filled, a device takes what it is given.
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => {
                return Err(Error::Output {
                    path: path.to_path_buf(),
                    reason: "not a regular file: records are appended to a file".into(),
                });
            }
            _ => {}
        }
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
    pub fn append<C: Serialize>(&mut self, record: &Record<C>) -> Result<()> {
        let mut line = serde_json::to_string(record).expect("a record always serialises");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|source| Error::Io { path: self.path.clone(), source })
    }
}

/// The longest line [`read`] parses, in bytes; a record takes under one
/// kilobyte. A longer line is skipped unread, like any that does not parse.
pub const MAX_LINE: usize = 64 << 10;

/// Reads a records file: the records that parse, and how many lines did
/// not (each skipped with a warning). The file must be a regular one of at
/// most [`crate::files::RECORDS`]' bound (1 GiB); it is read a line at a
/// time, a line longer than [`MAX_LINE`] skipped without being held.
pub fn read(path: &Path) -> Result<(Vec<Record>, usize)> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let kind = crate::files::RECORDS;
    let (file, size) = crate::files::open(path, kind.what)?;
    if size > kind.limit {
        return Err(crate::files::too_large(path, kind, Some(size)));
    }
    let mut reader = BufReader::new(file.take(kind.limit));
    let (mut records, mut skipped) = (Vec::new(), 0);
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read =
            (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).map_err(io)?;
        if read == 0 {
            break;
        }
        if line.len() > MAX_LINE && line.last() != Some(&b'\n') {
            skip_line(&mut reader).map_err(io)?;
            skipped += 1;
            log::warn!(
                "{}:{number}: a line longer than {MAX_LINE} bytes is no tuning record; skipped",
                path.display()
            );
            continue;
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice(&line) {
            Ok(record) => records.push(record),
            Err(e) => {
                skipped += 1;
                let e = crate::error::json_message(&e);
                log::warn!("{}:{number}: not a tuning record ({e}); skipped", path.display());
            }
        }
    }
    Ok((records, skipped))
}

/// Consumes the rest of the current line, up to and with its newline,
/// without holding it.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(());
            }
            None => {
                let n = buffer.len();
                reader.consume(n);
            }
        }
    }
}
