//! Where a layer's schedule comes from: the one place that decides it.
//!
//! A caller asks for the schedule of a layer with a [`Request`], and
//! [`resolve`] answers with the schedule and its [`Origin`], by these rules
//! in order:
//!
//! 1. A schedule given whole ([`Given`]: a schedule file, or a caller's
//!    value) is run as written, except for one field: when the request
//!    names a thread count, it replaces the schedule's `threads`. Nothing
//!    else is re-derived for that count (the split and the copy stay the
//!    file's), and the result must still be legal: a schedule that copies
//!    whole groups with `split = rows` refuses a second thread.
//! 2. Else the compiler's [`ScheduleSource`] (a tuning cache, which holds
//!    schedules chosen ahead of the run) is asked for the layer on the
//!    request's threads, 1 when it names none.
//! 3. Else the heuristic for that many threads,
//!    [`schedule::choose_threaded`], which takes fewer threads on a layer
//!    with too little work to share.
//!
//! [`Compiler::resolve`](crate::Compiler::resolve) applies the rules with
//! the compiler's source; [`Compiler::schedule_for`](crate::Compiler::schedule_for)
//! (and so [`Engine::prepare_with`](crate::Engine::prepare_with)) takes
//! rules 2 and 3 through [`lookup`]. So `convjit run --threads N` and
//! `Engine::prepare_threaded(…, N)` run the same schedule.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::schedule::{self, Schedule};
use crate::spec::ValidSpec;
use crate::target::Isa;

/// A store of schedules chosen ahead of the run, which the compiler asks
/// before the heuristic. The compiler knows nothing else of it (the tuning
/// cache's file format stays in [`crate::tune`]).
pub trait ScheduleSource: Send + Sync {
    /// The schedule this source holds for `spec` on `threads` threads, if
    /// it holds one that is legal for `spec`.
    fn schedule(&self, spec: &ValidSpec, threads: usize) -> Option<Schedule>;

    /// The source as an [`Origin`] names it: a tuning cache's file.
    fn describe(&self) -> String;
}

/// A schedule given whole for a layer, checked legal for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given {
    schedule: Schedule,
    /// How its [`Origin`] names it.
    name: String,
}

impl Given {
    /// `schedule`, named `name` in its origin, after checking that it can
    /// compute `spec`.
    pub fn new(schedule: Schedule, spec: &ValidSpec, name: impl Into<String>) -> Result<Given> {
        schedule.legal(spec)?;
        Ok(Given { schedule, name: name.into() })
    }

    /// Reads a schedule file (JSON, within [`crate::files::SCHEDULE`]'s
    /// bounds) and checks it against `spec`; the errors name the file. Its
    /// origin names it by its path until [`Given::named`] renames it.
    pub fn load(path: &Path, spec: &ValidSpec) -> Result<Given> {
        let text = crate::files::read_text(path, crate::files::SCHEDULE)
            .map_err(|e| Error::ScheduleFileUnreadable(Box::new(e)))?;
        let in_file = |e| Error::ScheduleFile { path: path.to_path_buf(), source: Box::new(e) };
        let schedule = Schedule::from_json(&text).map_err(in_file)?;
        Given::new(schedule, spec, path.display().to_string()).map_err(in_file)
    }

    /// This schedule, named `name` in its origin (the CLI names a file's
    /// by its flag, `--schedule`).
    pub fn named(self, name: impl Into<String>) -> Given {
        Given { name: name.into(), ..self }
    }

    /// The schedule as given.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

/// What a caller asks a layer's schedule for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// A schedule given whole, which wins over the source and the heuristic.
    pub given: Option<Given>,
    /// The threads the run may use: with a given schedule, they replace its
    /// own; without one, 1 when none are named.
    pub threads: Option<usize>,
}

/// Where a resolved schedule came from; `Display` prints it as `convjit
/// run --stats` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A given schedule, by its name.
    Given(String),
    /// The schedule source's, by its description.
    Source(String),
    /// The heuristic's; `missed` describes the source that held none for
    /// the layer, when there was one.
    Heuristic {
        /// The source asked first.
        missed: Option<String>,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Given(name) => write!(f, "from {name}"),
            Origin::Source(source) => write!(f, "tuned, from {source}"),
            Origin::Heuristic { missed: None } => f.write_str("heuristic"),
            Origin::Heuristic { missed: Some(source) } => {
                write!(f, "heuristic: {source} holds no schedule for this layer")
            }
        }
    }
}

/// A schedule and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The schedule to compile and run.
    pub schedule: Schedule,
    /// Where it came from.
    pub origin: Origin,
}

/// The schedule `request` asks for `spec`, by the rules of the module's
/// documentation, `source` asked before the heuristic. Fails when the
/// request's threads are outside 1 to [`schedule::MAX_THREADS`]
/// ([`Error::InvalidThreads`]) or make the given schedule illegal
/// ([`Error::InvalidSchedule`]); the given schedule itself was checked
/// when it was made.
pub fn resolve(
    spec: &ValidSpec,
    request: &Request,
    isa: Isa,
    source: Option<&dyn ScheduleSource>,
) -> Result<Resolved> {
    if let Some(given) = &request.given {
        let mut schedule = given.schedule;
        if let Some(threads) = request.threads {
            schedule.run.threads = threads;
        }
        schedule.legal(spec)?;
        return Ok(Resolved { schedule, origin: Origin::Given(given.name.clone()) });
    }
    let threads = request.threads.unwrap_or(1);
    if !(1..=schedule::MAX_THREADS).contains(&threads) {
        return Err(Error::InvalidThreads(threads));
    }
    Ok(lookup(spec, threads, isa, source))
}

/// Rules 2 and 3 for `spec` on `threads` threads with vector ISAs up to
/// `isa`: `source`'s schedule (when its ISA is within `isa`), else the
/// heuristic's (which clamps `threads` to 1 to [`schedule::MAX_THREADS`]).
pub fn lookup(
    spec: &ValidSpec,
    threads: usize,
    isa: Isa,
    source: Option<&dyn ScheduleSource>,
) -> Resolved {
    let held = source.and_then(|s| {
        s.schedule(spec, threads).filter(|schedule| schedule.isa <= isa).map(|sc| (s, sc))
    });
    match held {
        Some((source, schedule)) => {
            Resolved { schedule, origin: Origin::Source(source.describe()) }
        }
        None => Resolved {
            schedule: schedule::choose_for(spec, threads, isa),
            origin: Origin::Heuristic { missed: source.map(ScheduleSource::describe) },
        },
    }
}
