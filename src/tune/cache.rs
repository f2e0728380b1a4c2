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
//! with a warning. Reading takes no lock, so a cache in a folder
//! the reader may not write is read as any other: writers replace the file
//! whole ([`crate::atomic`]: a temporary file renamed over it, through a
//! symbolic link to its target), so a reader sees one complete version.
//!
//! Writes keep the entries of other machines and replace the entry of the
//! same workload. A writer holds an exclusive advisory lock (`flock`) on
//! `FILE.lock` beside the file while it reads, merges and writes it
//! ([`TuningCache::update`]), so two `convjit tune` runs on one cache both
//! keep their entries: the second reads what the first wrote. The lock is
//! on a file of its own because the cache itself is replaced, not rewritten;
//! the lock file stays (empty), and the lock ends with its holder, even a
//! killed one. A file that could not be read is kept, never overwritten:
//! before the new cache replaces it, it gets a second name, the first free
//! of `FILE.bak`, `FILE.bak.1`, `FILE.bak.2`, …

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::schedule::Schedule;
use crate::source::ScheduleSource;
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
    /// without its name: layers of the same shape share a schedule. For a
    /// fused depthwise-separable block, its two specs so:
    /// `{"depthwise": …, "pointwise": …}`.
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

    /// The fused block `dw` then `pw` on `threads` threads on this machine
    /// with this convjit.
    pub fn host_block(dw: &ValidSpec, pw: &ValidSpec, threads: usize) -> Workload {
        let [dw, pw] = [dw, pw].map(|s| Workload::host(s, threads).spec);
        let spec = serde_json::json!({"depthwise": dw, "pointwise": pw});
        Workload { spec, threads, ..Workload::host_id() }
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
    /// or another format or layout version): saving keeps it under a backup
    /// name first.
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
                let e = crate::error::json_message(&e);
                log::warn!(
                    "tuning cache {} is not a convjit tuning cache ({e}); ignoring it (saving a \
                     tuning result keeps it as {} or the first free {}.N)",
                    path.display(),
                    backup(path, 0).display(),
                    backup(path, 0).display()
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

    /// Writes the cache to `path`, atomically, holding the cache's lock:
    /// the file then holds exactly this cache's entries (to add an entry
    /// to what the file holds now, use [`TuningCache::update`]). A file
    /// this version could not read when it was loaded is first kept under
    /// a backup name (with a warning), never overwritten.
    pub fn save(&self, path: &Path) -> Result<()> {
        let _lock = Lock::take(path)?;
        self.save_locked(path)
    }

    /// Loads `path`, adds `entry` and writes it back, all under the cache's
    /// lock, so that concurrent updates all keep their entries: what
    /// `convjit tune` does after each layer, so an interrupted run keeps
    /// what it found.
    pub fn update(path: &Path, entry: Entry) -> Result<()> {
        let _lock = Lock::take(path)?;
        // Read under the lock: another writer may have saved since.
        let mut cache = TuningCache::load(path);
        cache.insert(entry);
        cache.save_locked(path)
    }

    /// [`TuningCache::save`], the lock held.
    fn save_locked(&self, path: &Path) -> Result<()> {
        if self.unreadable && self.path.as_deref() == Some(path) {
            let target = crate::atomic::final_target(path)?;
            if target.is_file() {
                let aside = keep_aside(&target)?;
                log::warn!(
                    "tuning cache {}: the unreadable file is kept as {}",
                    path.display(),
                    aside.display()
                );
            }
        }
        let mut entries = self.others.clone();
        entries.extend(self.entries.iter().map(|e| serde_json::to_value(e).expect("serialises")));
        let file = File { format: FORMAT.to_string(), version: VERSION, entries };
        let text = serde_json::to_string_pretty(&file).expect("a cache always serialises");
        crate::atomic::write(path, |out| writeln!(out, "{text}"))
    }
}

/// The compiler asks a tuning cache for a layer's schedule through
/// [`ScheduleSource`], and knows nothing of its file.
impl ScheduleSource for TuningCache {
    fn schedule(&self, spec: &ValidSpec, threads: usize) -> Option<Schedule> {
        self.lookup(spec, threads)
    }

    fn describe(&self) -> String {
        self.path.as_ref().map_or_else(|| "a tuning cache".to_string(), |p| p.display().to_string())
    }
}

impl Compiler {
    /// This compiler, taking the schedule of every layer it compiles
    /// without one from the tuning cache at `path` (`convjit tune`'s), and
    /// from the heuristic for layers the cache does not hold. The file is
    /// read now; a missing, corrupt or foreign entry is ignored with a
    /// warning ([`TuningCache::load`]).
    pub fn with_tuning_cache(self, path: impl AsRef<Path>) -> Compiler {
        self.with_source(Arc::new(TuningCache::load(path.as_ref())))
    }
}

/// The most backups of unreadable caches kept beside one cache.
const MAX_BACKUPS: usize = 1000;

/// The `n`-th backup name of `target`: `FILE.bak`, then `FILE.bak.1`, ….
fn backup(target: &Path, n: usize) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".bak");
    if n > 0 {
        name.push(format!(".{n}"));
    }
    PathBuf::from(name)
}

/// Gives the unreadable file `target` the first free backup name and
/// returns it. A hard link, so that the file stays at `target` until the
/// new cache replaces it (readers never find it missing) and an existing
/// backup is never replaced; a rename where the file system has no hard
/// links.
fn keep_aside(target: &Path) -> Result<PathBuf> {
    let io = |path: &Path, source| Error::Io { path: path.to_path_buf(), source };
    for n in 0..MAX_BACKUPS {
        let aside = backup(target, n);
        match std::fs::hard_link(target, &aside) {
            Ok(()) => return Ok(aside),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => match std::fs::symlink_metadata(&aside) {
                Ok(_) => {}
                Err(missing) if missing.kind() == std::io::ErrorKind::NotFound => {
                    // No hard links here: the lock keeps other convjit
                    // writers from taking the name meanwhile.
                    std::fs::rename(target, &aside).map_err(|_| io(target, e))?;
                    return Ok(aside);
                }
                Err(other) => return Err(io(&aside, other)),
            },
        }
    }
    Err(Error::Output {
        path: target.to_path_buf(),
        reason: format!(
            "unreadable and not overwritten, but {MAX_BACKUPS} backups of it exist already \
             ({} to {}): remove them",
            backup(target, 0).display(),
            backup(target, MAX_BACKUPS - 1).display()
        ),
    })
}

/// The exclusive lock writers of one cache hold, on `FILE.lock` beside its
/// final target (so two paths to one cache share it); released when
/// dropped, or when its process ends.
struct Lock {
    /// The open lock file, which holds the lock; none for a device.
    _file: Option<std::fs::File>,
}

impl Lock {
    /// Waits for the lock of the cache at `path`, making its folder first.
    /// A cache that is a device (`/dev/null`) is written in place and not
    /// locked: no lock file is made beside a device.
    fn take(path: &Path) -> Result<Lock> {
        let target = crate::atomic::final_target(path)?;
        if target.exists() && !target.is_file() {
            return Ok(Lock { _file: None });
        }
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        }
        let mut name = target.into_os_string();
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        let io = |source| Error::Io { path: lock_path.clone(), source };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(Lock { _file: Some(file) })
    }
}

impl Workload {
    /// The machine and compiler part of a workload (its spec left empty).
    fn host_id() -> Workload {
        static HOST: OnceLock<(String, String)> = OnceLock::new();
        let (cpu, isa) = HOST.get_or_init(|| (crate::machine::cpu_model(), crate::machine::isa()));
        Workload {
            spec: serde_json::Value::Null,
            threads: 0,
            cpu: cpu.clone(),
            isa: isa.clone(),
            convjit: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}
