//! The tuning cache: the best schedule found for each workload, in one JSON
//! file that [`crate::Compiler::with_tuning_cache`] and `convjit run/bench
//! --tuned` consult.
//!
//! ```json
//! { "format": "convjit-tuning-cache", "version": 1,
//!   "entries": [ { "workload": {...}, "schedule": {...},
//!                  "macs_per_cycle": 8.1, "heuristic_macs_per_cycle": 7.2,
//!                  "candidates": 412, "tuned_at": 1795896000 } ] }
//! ```
//!
//! Reading never fails: a missing file is an empty cache; an unreadable or
//! corrupt file, one that is not a regular file or is larger than
//! [`crate::files::TUNING_CACHE`] allows (64 MiB, refused unread), and any
//! entry that does not parse, was tuned on another CPU or by another
//! convjit version, or holds a schedule the layer cannot use, is ignored
//! with a warning. Writes replace the file atomically (a
//! temporary file renamed over it), keep the entries of other machines, and
//! replace the entry of the same workload; a file that could not be read is
//! moved to `FILE.bak` first. Two processes writing at once
//! both leave a valid file; the last rename wins.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schedule::Schedule;
use crate::spec::ValidSpec;

/// The `format` tag of a cache file.
const FORMAT: &str = "convjit-tuning-cache";
/// The version of the file layout.
const VERSION: u32 = 1;

/// What a tuned schedule was measured for: the layer's shape (its spec
/// without the name), the threads it may use, and the machine and compiler
/// that measured it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// The spec as JSON, in canonical form (explicit pairs, four paddings),
    /// without its name: layers of the same shape share a schedule.
    pub spec: serde_json::Value,
    /// The most threads a run may use.
    pub threads: usize,
    /// The CPU model, as the OS reports it.
    pub cpu: String,
    /// The architecture and the vector extensions the host has.
    pub isa: String,
    /// The convjit version that measured it.
    pub convjit: String,
}

impl Workload {
    /// `spec` on `threads` threads on this machine with this convjit.
    pub fn host(spec: &ValidSpec, threads: usize) -> Workload {
        let mut canonical = spec.to_conv_spec();
        canonical.name = None;
        Workload {
            spec: serde_json::to_value(&canonical).expect("a spec always serialises"),
            threads,
            ..Workload::host_id()
        }
    }

    /// Whether this workload was measured on another CPU or by another
    /// convjit: its schedules say nothing about this one.
    fn foreign_to(&self, host: &Workload) -> bool {
        self.cpu != host.cpu || self.isa != host.isa || self.convjit != host.convjit
    }
}

/// The best schedule of one workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// What was tuned.
    pub workload: Workload,
    /// The best schedule found.
    pub schedule: Schedule,
    /// Its MACs (`macs_valid`) per TSC tick, as the tuner measured it.
    pub macs_per_cycle: f64,
    /// The heuristic's, measured alongside.
    pub heuristic_macs_per_cycle: f64,
    /// Candidates the tuner evaluated.
    pub candidates: usize,
    /// When, in seconds since the Unix epoch.
    pub tuned_at: u64,
}

#[derive(Serialize, Deserialize)]
struct File {
    format: String,
    version: u32,
    entries: Vec<serde_json::Value>,
}

/// A tuning cache file, loaded.
#[derive(Clone, Debug, Default)]
pub struct TuningCache {
    path: Option<PathBuf>,
    /// Entries of this machine and version that parsed.
    entries: Vec<Entry>,
    /// Entries kept as they are: other machines', other versions', and
    /// ones this version cannot read, so a shared file loses nothing.
    others: Vec<serde_json::Value>,
    /// The file exists but is not a cache this version can read (corrupt,
    /// or another format or layout version): saving moves it aside first.
    unreadable: bool,
}

impl TuningCache {
    /// The default cache file: `convjit/tuning.json` in the user's cache
    /// directory (`$XDG_CACHE_HOME` or `~/.cache` on Linux).
    pub fn default_path() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("convjit").join("tuning.json"))
    }

    /// Loads `path`. Never fails: what cannot be used is ignored with a
    /// warning (see the module's documentation).
    pub fn load(path: &Path) -> TuningCache {
        let mut cache = TuningCache { path: Some(path.to_path_buf()), ..TuningCache::default() };
        let text = match crate::files::read_text(path, crate::files::TUNING_CACHE) {
            Ok(text) => text,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return cache;
            }
            Err(e) => {
                log::warn!("tuning cache: {e}; using none");
                cache.unreadable = true;
                return cache;
            }
        };
        let file: File = match serde_json::from_str(&text) {
            Ok(file) => file,
            Err(e) => {
                log::warn!(
                    "tuning cache {} is not a convjit tuning cache ({e}); ignoring it (saving a \
                     tuning result moves it to {})",
                    path.display(),
                    backup(path).display()
                );
                cache.unreadable = true;
                return cache;
            }
        };
        if file.format != FORMAT || file.version != VERSION {
            log::warn!(
                "tuning cache {}: format {:?} version {}, expected {FORMAT:?} version {VERSION}; \
                 ignoring it",
                path.display(),
                file.format,
                file.version
            );
            cache.unreadable = true;
            return cache;
        }
        let host = Workload::host_id();
        let (mut foreign, mut corrupt) = (0, 0);
        for value in file.entries {
            match serde_json::from_value::<Entry>(value.clone()) {
                Ok(entry) if !entry.workload.foreign_to(&host) => cache.entries.push(entry),
                Ok(_) => {
                    foreign += 1;
                    cache.others.push(value);
                }
                Err(_) => {
                    corrupt += 1;
                    cache.others.push(value);
                }
            }
        }
        if foreign > 0 {
            log::warn!(
                "tuning cache {}: ignoring {foreign} entries tuned on another CPU or by another \
                 convjit version",
                path.display()
            );
        }
        if corrupt > 0 {
            log::warn!(
                "tuning cache {}: ignoring {corrupt} entries that do not parse",
                path.display()
            );
        }
        cache
    }

    /// The file this cache was loaded from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The entries usable on this machine.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The tuned schedule for `spec` on `threads` threads, if the cache
    /// holds one this layer can use.
    pub fn lookup(&self, spec: &ValidSpec, threads: usize) -> Option<Schedule> {
        let workload = Workload::host(spec, threads);
        let entry = self.entries.iter().find(|e| e.workload == workload)?;
        match entry.schedule.legal(spec) {
            Ok(()) => Some(entry.schedule),
            Err(e) => {
                log::warn!("tuning cache: ignoring the entry for {spec}: {e}");
                None
            }
        }
    }

    /// Adds `entry`, replacing the one of the same workload.
    pub fn insert(&mut self, entry: Entry) {
        self.entries.retain(|e| e.workload != entry.workload);
        self.entries.push(entry);
    }

    /// Writes the cache to `path`, atomically. A file this version could
    /// not read when it was loaded is first moved to `path.bak` (with a
    /// warning), never overwritten.
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.unreadable && self.path.as_deref() == Some(path) && path.is_file() {
            let aside = backup(path);
            std::fs::rename(path, &aside)
                .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
            log::warn!(
                "tuning cache {}: the unreadable file is now {}",
                path.display(),
                aside.display()
            );
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        }
        let mut entries = self.others.clone();
        entries.extend(self.entries.iter().map(|e| serde_json::to_value(e).expect("serialises")));
        let file = File { format: FORMAT.to_string(), version: VERSION, entries };
        let text = serde_json::to_string_pretty(&file).expect("a cache always serialises");
        crate::atomic::write(path, |out| writeln!(out, "{text}"))
    }

    /// Loads `path`, adds `entry` and writes it back: what `convjit tune`
    /// does after each layer, so an interrupted run keeps what it found.
    pub fn update(path: &Path, entry: Entry) -> Result<()> {
        let mut cache = TuningCache::load(path);
        cache.insert(entry);
        cache.save(path)
    }
}

/// Where an unreadable cache file is moved before a new one is written.
fn backup(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".bak");
    PathBuf::from(name)
}

impl Workload {
    /// The machine and compiler part of a workload (its spec left empty).
    fn host_id() -> Workload {
        static HOST: OnceLock<(String, String)> = OnceLock::new();
        let (cpu, isa) =
            HOST.get_or_init(|| (crate::bench::machine::cpu_model(), crate::bench::machine::isa()));
        Workload {
            spec: serde_json::Value::Null,
            threads: 0,
            cpu: cpu.clone(),
            isa: isa.clone(),
            convjit: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}
