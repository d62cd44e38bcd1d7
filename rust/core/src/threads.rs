//! The library's own threads: a rayon pool, so matgrad never competes for (or reconfigures)
//! the global pool of the program that embeds it; or, when asked ([`set_pool`]), the threads
//! of the program's GNU OpenMP runtime (torch's: openmp.rs says why).
//!
//! A GEMM's parallel steps are fork-joins of a handful of equal tasks (one per thread). The
//! calling thread takes part, so a team of `n` threads is the caller plus a rayon pool of
//! `n - 1` workers, and tasks are claimed from a counter rather than handed out: when a
//! worker is slow to wake (tens of microseconds on a busy virtual machine, the whole budget
//! of a small GEMM) the caller runs its tasks too instead of sleeping until it arrives.
//!
//! A GEMM has several fork-joins (packing, then computing, for each block of k) and programs
//! call GEMMs back to back, so a worker that has finished its tasks keeps watching for the
//! next ones for [`LINGER`] before it goes back to rayon, where it sleeps: the next step
//! then starts at once instead of paying a wake-up (docs/measurements.md, "Threads").

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

#[cfg(not(loom))]
use rayon::{ThreadPool, ThreadPoolBuilder};

use sync::{spin, Arc, AtomicUsize, Mutex, Ordering};

pub use crate::openmp::OpenMp;

/// What the team's hand-off is built of: std's atomics and rayon's threads, or loom's when the
/// protocol is model-checked (`RUSTFLAGS="--cfg loom"`: the tests in `loom_model` below, which
/// explore every interleaving of the caller and its workers).
mod sync {
    #[cfg(loom)]
    pub(super) use loom::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    };
    #[cfg(not(loom))]
    pub(super) use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    };
    use std::time::Instant;

    /// One turn of a spin-wait: a pause on the CPU, or with `give_way` a yield of it to any
    /// other thread that wants it (under loom, a yield that lets the other threads move).
    #[inline(always)]
    pub(super) fn spin(give_way: bool) {
        #[cfg(not(loom))]
        if give_way {
            std::thread::yield_now();
        } else {
            core::hint::spin_loop();
        }
        #[cfg(loom)]
        {
            let _ = give_way;
            loom::thread::yield_now();
        }
    }

    /// Whether a worker that has watched for `spins` turns since `since` has lingered long
    /// enough (under loom: a few turns, so that every model ends).
    #[inline(always)]
    pub(super) fn lingered(since: Instant, spins: u32) -> bool {
        #[cfg(not(loom))]
        return spins.is_multiple_of(64) && since.elapsed() > super::LINGER;
        #[cfg(loom)]
        return {
            let _ = since;
            spins >= 2
        };
    }
}

/// How long a worker keeps watching for new tasks after its last ones.
pub const LINGER: Duration = Duration::from_micros(100);

/// Turns a lingering worker spins on the CPU (~10 µs: the fork-joins of one GEMM follow one
/// another closer than that) before it yields at each turn: a thread of another pool (torch's
/// OpenMP workers) that wants this CPU then gets it, instead of the two taking turns by the
/// scheduler's slices (docs/measurements.md, "Threads").
const SPIN_TURNS: u32 = 256;

/// The threads a GEMM may use: the caller and `threads - 1` pool workers.
pub struct Team {
    threads: usize,
    helpers: Option<Helpers>,
}

/// Who helps the caller: matgrad's own workers, or the OpenMP runtime's team (kept on a
/// team of one thread too, which then runs serially, so that the team says its pool).
enum Helpers {
    Own(Workers),
    #[cfg_attr(loom, allow(dead_code))]
    OpenMp(OpenMp),
}

/// The threads teams are made of: matgrad's own pool, or a loaded OpenMP runtime's.
#[derive(Clone, Debug, Default)]
pub enum Pool {
    #[default]
    Own,
    OpenMp(OpenMp),
}

struct Workers {
    #[cfg(not(loom))]
    pool: ThreadPool,
    board: Arc<Board>,
}

impl Workers {
    fn spawn(&self, work: impl FnOnce() + Send + 'static) {
        #[cfg(not(loom))]
        self.pool.spawn(work);
        #[cfg(loom)]
        drop(loom::thread::spawn(work));
    }
}

/// Where [`Team::run`] posts its tasks for the workers that are lingering.
struct Board {
    /// Counts the task sets posted; a lingering worker watches it change.
    posted: AtomicUsize,
    latest: Mutex<Option<Arc<TaskSet>>>,
    /// Workers lingering, ready to take posted tasks without being woken.
    lingering: AtomicUsize,
}

impl Board {
    /// A worker's loop: claim tasks of the latest set, linger, and leave once nothing new has
    /// been posted for [`LINGER`]. `seen` is the count of sets posted when it was called.
    fn serve(&self, mut seen: usize) {
        loop {
            let set = self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(set) = set {
                set.work();
            }
            // Linger. Leaving is announced before the last look, and Team::run posts before
            // counting who lingers, so a set posted meanwhile is either seen here or counted
            // as unserved there (and gets a worker of its own).
            self.lingering.fetch_add(1, Ordering::SeqCst);
            let since = Instant::now();
            let mut spins = 0u32;
            loop {
                let posted = self.posted.load(Ordering::SeqCst);
                if posted != seen {
                    seen = posted;
                    self.lingering.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                spins = spins.wrapping_add(1);
                if sync::lingered(since, spins) {
                    self.lingering.fetch_sub(1, Ordering::SeqCst);
                    let posted = self.posted.load(Ordering::SeqCst);
                    if posted == seen {
                        return;
                    }
                    seen = posted;
                    break;
                }
                spin(spins >= SPIN_TURNS);
            }
        }
    }
}

impl Team {
    /// One thread: every task runs on the caller.
    pub const SERIAL: Team = Team { threads: 1, helpers: None };

    /// A team of its own: the caller and `threads - 1` new workers.
    pub fn new(threads: usize) -> Result<Team, String> {
        Team::on(threads, &Pool::Own)
    }

    /// A team of `threads` threads from `pool`: the caller and `threads - 1` new workers of
    /// its own, or the caller's team of the OpenMP runtime.
    pub fn on(threads: usize, pool: &Pool) -> Result<Team, String> {
        if threads == 0 {
            return Err("the number of threads must be at least 1".into());
        }
        if let Pool::OpenMp(omp) = pool {
            return Ok(Team { threads, helpers: Some(Helpers::OpenMp(omp.clone())) });
        }
        let helpers = match threads {
            1 => None,
            #[allow(unused_variables)]
            n => Some(Helpers::Own(Workers {
                #[cfg(not(loom))]
                pool: ThreadPoolBuilder::new()
                    .num_threads(n - 1)
                    .thread_name(|i| format!("matgrad-{}", i + 1))
                    .build()
                    .map_err(|e| format!("could not start {n} threads: {e}"))?,
                board: Arc::new(Board { posted: AtomicUsize::new(0), latest: Mutex::new(None), lingering: AtomicUsize::new(0) }),
            })),
        };
        Ok(Team { threads, helpers })
    }

    /// Where the team's helpers come from.
    pub fn pool(&self) -> Pool {
        match &self.helpers {
            Some(Helpers::OpenMp(omp)) => Pool::OpenMp(omp.clone()),
            _ => Pool::Own,
        }
    }

    /// The number of threads, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `task(0) .. task(count - 1)` and returns when all have finished. The caller and
    /// up to `threads - 1` workers claim tasks from a shared counter, so the caller does them
    /// all itself if the workers are slow to wake, instead of waiting for them. A panic in a
    /// task is re-raised on the caller once every claimed task has finished.
    pub fn run<F: Fn(usize) + Sync>(&self, count: usize, task: F) {
        let Some(helpers) = self.helpers.as_ref().filter(|_| count > 1 && self.threads > 1) else {
            return (0..count).for_each(task);
        };
        let task: *const (dyn Fn(usize) + Sync + '_) = &task;
        // SAFETY: only the lifetime is erased. The closure is dereferenced only by whoever
        // claims a task index below `count`, and this function does not return (so the
        // closure lives) until every such task has finished; see TaskSet::work.
        let task: *const (dyn Fn(usize) + Sync + 'static) = unsafe { core::mem::transmute(task) };
        let set = Arc::new(TaskSet { next: AtomicUsize::new(0), done: AtomicUsize::new(0), count, task, panic: Mutex::new(None) });
        let workers = match helpers {
            Helpers::Own(workers) => workers,
            Helpers::OpenMp(omp) => {
                // Every thread of the region claims tasks; the region ends when all have
                // returned, so every claimed task has finished.
                omp.parallel(self.threads.min(count), &|| set.work());
                return set.reraise();
            }
        };
        let board = &workers.board;
        *board.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(set.clone());
        let posted = board.posted.fetch_add(1, Ordering::SeqCst) + 1;
        // Lingering workers take the set by themselves; wake pool workers for the rest.
        let helpers = (count - 1).min(self.threads - 1);
        let lingering = board.lingering.load(Ordering::SeqCst);
        for _ in lingering.min(helpers)..helpers {
            let board = board.clone();
            workers.spawn(move || board.serve(posted));
        }
        set.work();
        let mut spins = 0u32;
        while set.done.load(Ordering::Acquire) < count {
            // The last tasks are running on the workers: wait briefly, then let others run.
            spins = spins.saturating_add(1);
            spin(spins > 1 << 14);
        }
        set.reraise()
    }

    /// Splits `0..len` into at most [`Team::threads`] contiguous ranges of at least `min_len`
    /// and runs `part` on each (see [`Team::run`]).
    pub fn run_ranges<F: Fn(core::ops::Range<usize>) + Sync>(&self, len: usize, min_len: usize, part: F) {
        let parts = self.threads.min(len / min_len.max(1)).max(1);
        self.run(parts, |p| part(len * p / parts..len * (p + 1) / parts));
    }
}

/// One [`Team::run`]: tasks `0..count`, claimed in order by whichever thread comes first.
struct TaskSet {
    next: AtomicUsize,
    done: AtomicUsize,
    count: usize,
    task: *const (dyn Fn(usize) + Sync),
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `task` points to a Sync closure, and is only called under the rule in TaskSet::work.
unsafe impl Send for TaskSet {}
unsafe impl Sync for TaskSet {}

impl TaskSet {
    /// Re-raises on the caller the panic of a task, if one panicked.
    fn reraise(&self) {
        let panicked = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }

    /// Claims and runs tasks until none are left (a worker that starts late finds none).
    fn work(&self) {
        loop {
            let t = self.next.fetch_add(1, Ordering::Relaxed);
            if t >= self.count {
                return;
            }
            // SAFETY: task t is claimed and not yet done, so `done < count` and Team::run is
            // still waiting: the closure is alive.
            let task = unsafe { &*self.task };
            if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| task(t))) {
                *self.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(payload);
            }
            // Release: the task's writes are visible to the caller that sees the count.
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

fn slot() -> &'static RwLock<Option<std::sync::Arc<Team>>> {
    static TEAM: OnceLock<RwLock<Option<std::sync::Arc<Team>>>> = OnceLock::new();
    TEAM.get_or_init(|| RwLock::new(None))
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The team GEMMs run on (one thread per available core, started on first use).
pub fn team() -> std::sync::Arc<Team> {
    if let Some(team) = slot().read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return team.clone();
    }
    let mut guard = slot().write().unwrap_or_else(|e| e.into_inner());
    guard.get_or_insert_with(|| std::sync::Arc::new(Team::new(default_threads()).expect("starting the thread pool"))).clone()
}

/// Replaces the team with one of `n` threads of the current pool. Calls already running
/// finish on the old one.
pub fn set_num_threads(n: usize) -> Result<(), String> {
    let mut guard = slot().write().unwrap_or_else(|e| e.into_inner());
    let pool = guard.as_ref().map_or(Pool::Own, |t| t.pool());
    *guard = Some(std::sync::Arc::new(Team::on(n, &pool)?));
    Ok(())
}

/// Makes teams of `pool`'s threads from now on, keeping the number of threads.
pub fn set_pool(pool: Pool) -> Result<(), String> {
    let mut guard = slot().write().unwrap_or_else(|e| e.into_inner());
    let threads = guard.as_ref().map_or_else(default_threads, |t| t.threads());
    *guard = Some(std::sync::Arc::new(Team::on(threads, &pool)?));
    Ok(())
}

/// The pool teams are made of.
pub fn pool() -> Pool {
    team().pool()
}

pub fn num_threads() -> usize {
    team().threads()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_on_any_team() {
        for threads in 1..=4 {
            let team = Team::new(threads).unwrap();
            for count in [0, 1, 2, 3, 7] {
                let runs: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
                team.run(count, |t| {
                    runs[t].fetch_add(1, Ordering::Relaxed);
                });
                assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1), "{threads} threads, {count} tasks");
            }
            for (len, min_len) in [(0, 1), (1, 1), (10, 1), (10, 4), (100, 3)] {
                let seen: Vec<AtomicUsize> = (0..len).map(|_| AtomicUsize::new(0)).collect();
                team.run_ranges(len, min_len, |r| {
                    assert!(r.len() >= min_len.min(len), "range {r:?} shorter than {min_len}");
                    r.for_each(|i| {
                        seen[i].fetch_add(1, Ordering::Relaxed);
                    })
                });
                assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
            }
        }
        assert!(Team::new(0).is_err());
    }

    #[test]
    fn lingering_workers_serve_back_to_back_and_concurrent_callers() {
        let team = Team::new(3).unwrap();
        // Back to back, as a GEMM's steps are: each run finds the workers still lingering.
        for count in (0..200).map(|i| 2 + i % 5) {
            let runs: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
            team.run(count, |t| {
                runs[t].fetch_add(1, Ordering::Relaxed);
            });
            assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
        }
        // Several callers at once post over each other's sets: each still gets all its tasks
        // done exactly once (by itself, if no worker took them).
        std::thread::scope(|s| {
            for caller in 0..4 {
                let team = &team;
                s.spawn(move || {
                    for i in 0..300 {
                        let count = 2 + (i + caller) % 4;
                        let runs: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
                        team.run(count, |t| {
                            runs[t].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1), "caller {caller}, run {i}");
                    }
                });
            }
        });
        // And after the workers have stopped lingering, runs wake them again.
        std::thread::sleep(LINGER * 20);
        let runs: Vec<AtomicUsize> = (0..2).map(|_| AtomicUsize::new(0)).collect();
        team.run(2, |t| {
            runs[t].fetch_add(1, Ordering::Relaxed);
        });
        assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let team = Team::new(2).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| team.run(2, |t| assert!(t != 1, "task 1 fails"))));
        assert!(caught.is_err());
        team.run(2, |_| {}); // and the team still works
    }
}

/// The hand-off protocol model-checked: every interleaving (within loom's preemption bound)
/// of a caller and its workers, lingering ones included. Run with
/// `RUSTFLAGS="--cfg loom" cargo test --release -p matgrad-core --lib loom_model`.
#[cfg(all(test, loom))]
mod loom_model {
    use loom::sync::atomic::AtomicBool;

    use super::*;

    /// Each task runs exactly once per run, and none runs after its run has returned (the
    /// closure it borrows would be gone), over `rounds` runs back to back on one team.
    fn check(threads: usize, counts: &[usize]) {
        loom::model({
            let counts = counts.to_vec();
            move || {
                let team = Team::new(threads).unwrap();
                for &count in &counts {
                    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..count).map(|_| AtomicUsize::new(0)).collect());
                    let returned = Arc::new(AtomicBool::new(false));
                    team.run(count, |t| {
                        assert!(!returned.load(Ordering::SeqCst), "task {t} ran after its run returned");
                        runs[t].fetch_add(1, Ordering::SeqCst);
                    });
                    returned.store(true, Ordering::SeqCst);
                    for (t, r) in runs.iter().enumerate() {
                        assert_eq!(r.load(Ordering::SeqCst), 1, "task {t} of {count}");
                    }
                }
            }
        });
    }

    #[test]
    fn two_threads_two_runs_back_to_back() {
        check(2, &[2, 2]);
    }

    #[test]
    fn three_threads_one_run() {
        check(3, &[3]);
    }
}
