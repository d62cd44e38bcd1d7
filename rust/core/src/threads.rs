//! The library's own rayon pool, so matgrad never competes for (or reconfigures) the global
//! pool of the program that embeds it.

use std::sync::{Arc, OnceLock, RwLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

fn slot() -> &'static RwLock<Option<Arc<ThreadPool>>> {
    static POOL: OnceLock<RwLock<Option<Arc<ThreadPool>>>> = OnceLock::new();
    POOL.get_or_init(|| RwLock::new(None))
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn build(n: usize) -> Result<Arc<ThreadPool>, String> {
    ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("matgrad-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| format!("could not start {n} threads: {e}"))
}

/// The pool GEMMs run on (started with one thread per available core on first use).
pub fn pool() -> Arc<ThreadPool> {
    if let Some(pool) = slot().read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return pool.clone();
    }
    let mut guard = slot().write().unwrap_or_else(|e| e.into_inner());
    guard.get_or_insert_with(|| build(default_threads()).expect("starting the thread pool")).clone()
}

/// Replaces the pool with one of `n` threads. Calls already running finish on the old pool.
pub fn set_num_threads(n: usize) -> Result<(), String> {
    if n == 0 {
        return Err("the number of threads must be at least 1".into());
    }
    let pool = build(n)?;
    *slot().write().unwrap_or_else(|e| e.into_inner()) = Some(pool);
    Ok(())
}

pub fn num_threads() -> usize {
    pool().current_num_threads()
}
