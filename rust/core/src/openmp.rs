//! The GNU OpenMP runtime (libgomp) of the program that embeds matgrad, when it has one.
//!
//! torch computes on libgomp's threads, and after each of its operators they spin for a few
//! milliseconds waiting for the next one. A GEMM of matgrad's between two torch operators
//! then shares a core with that spin, on its own pool's worker, and runs at one thread's
//! speed (docs/measurements.md, "Threads"). Run on the same runtime, matgrad's parallel steps
//! go to the very threads that spin, as torch's own do. Nothing is loaded here: only a
//! libgomp already in the process is used, through its stable C entry point
//! `GOMP_parallel`, which every compiler's `#pragma omp parallel` calls.

/// `void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)`.
type GompParallel = unsafe extern "C" fn(extern "C" fn(*mut core::ffi::c_void), *mut core::ffi::c_void, u32, u32);

/// A libgomp loaded in this process.
#[derive(Clone, Debug)]
pub struct OpenMp {
    parallel: GompParallel,
    /// The path it was loaded from.
    pub library: String,
}

impl OpenMp {
    /// The first libgomp loaded in this process whose path contains `hint` (any libgomp
    /// without one); an error saying what was found otherwise.
    pub fn loaded(hint: Option<&str>) -> Result<OpenMp, String> {
        let candidates = loaded_libgomps();
        let wanted = |path: &&String| hint.is_none_or(|h| path.contains(h));
        let Some(library) = candidates.iter().find(wanted).cloned() else {
            let found = if candidates.is_empty() { "none is loaded".to_string() } else { format!("loaded: {}", candidates.join(", ")) };
            let which = hint.map(|h| format!(" from a path containing '{h}'")).unwrap_or_default();
            return Err(format!("no GNU OpenMP runtime (libgomp){which} in this process ({found})"));
        };
        let parallel = find_parallel(&library).ok_or_else(|| format!("{library} has no GOMP_parallel"))?;
        watch_forks();
        Ok(OpenMp { parallel, library })
    }

    /// Runs `body` on `threads` threads of the runtime's team of the calling thread, the
    /// caller among them, and returns when every one has returned from it. The runtime may
    /// give fewer threads (one, inside a parallel region of its own).
    pub fn parallel(&self, threads: usize, body: &(dyn Fn() + Sync)) {
        if forked() {
            // libgomp's threads are not in a forked child, and its next region would wait for
            // them forever: the caller runs the body alone.
            return body();
        }
        extern "C" fn call(data: *mut core::ffi::c_void) {
            // SAFETY: `data` is the `&&dyn Fn` passed below, alive until GOMP_parallel returns.
            let body = unsafe { &*(data as *const &(dyn Fn() + Sync)) };
            // A panic must not unwind into C: `body` is a TaskSet's loop, which catches its
            // tasks' panics, and an unwind out of an `extern "C"` fn aborts regardless.
            body();
        }
        let data = &body as *const &(dyn Fn() + Sync) as *mut core::ffi::c_void;
        let threads = u32::try_from(threads.max(1)).unwrap_or(u32::MAX);
        // SAFETY: `parallel` is libgomp's GOMP_parallel (found by name in a loaded libgomp,
        // whose ABI is fixed); it calls `call(data)` on each thread of the team and returns
        // after the region's closing barrier, so `body` outlives every call; `body` is Sync.
        unsafe { (self.parallel)(call, data, threads, 0) }
    }
}

/// Set in the child of a fork (after an [`OpenMp`] was found).
static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn forked() -> bool {
    FORKED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Registers, once, a handler that marks a forked child.
#[cfg(target_os = "linux")]
fn watch_forks() {
    extern "C" fn in_child() {
        FORKED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    static WATCHING: std::sync::Once = std::sync::Once::new();
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe as a fork
    // child handler must be.
    WATCHING.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(in_child));
    });
}

#[cfg(not(target_os = "linux"))]
fn watch_forks() {}

/// Paths of the libgomp copies loaded in this process (torch ships its own, as do other
/// wheels, under names like `libgomp-a34b3233.so.1`).
#[cfg(target_os = "linux")]
fn loaded_libgomps() -> Vec<String> {
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: libc::size_t, data: *mut libc::c_void) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info (its name a C string or null) and our `data`.
        let (info, paths) = unsafe { (&*info, &mut *(data as *mut Vec<String>)) };
        if !info.dlpi_name.is_null() {
            // SAFETY: non-null dlpi_name is a NUL-terminated string owned by the loader.
            let path = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned();
            let file = path.rsplit('/').next().unwrap_or("");
            if file.starts_with("libgomp") {
                paths.push(path);
            }
        }
        0
    }
    let mut paths: Vec<String> = Vec::new();
    // SAFETY: `each` only reads what the loader hands it and writes `paths`, alive throughout.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut paths as *mut Vec<String> as *mut libc::c_void) };
    paths
}

#[cfg(not(target_os = "linux"))]
fn loaded_libgomps() -> Vec<String> {
    Vec::new()
}

/// GOMP_parallel of the already-loaded `library`, without loading anything.
#[cfg(target_os = "linux")]
fn find_parallel(library: &str) -> Option<GompParallel> {
    let path = std::ffi::CString::new(library).ok()?;
    // SAFETY: RTLD_NOLOAD only returns a handle to a library that is already loaded (it is:
    // the loader just listed it), so nothing new is loaded or initialised. The handle is kept
    // (never dlclose'd): the function pointer must stay valid.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
    if handle.is_null() {
        return None;
    }
    // SAFETY: a valid handle and a NUL-terminated name.
    let symbol = unsafe { libc::dlsym(handle, c"GOMP_parallel".as_ptr()) };
    // SAFETY: GOMP_parallel has had this signature in every libgomp since GCC 4.9.
    (!symbol.is_null()).then(|| unsafe { core::mem::transmute::<*mut libc::c_void, GompParallel>(symbol) })
}

#[cfg(not(target_os = "linux"))]
fn find_parallel(_library: &str) -> Option<GompParallel> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_runtime_is_an_error_naming_what_was_looked_for() {
        // The core's tests link no OpenMP; a hint no path contains never matches anyway.
        let err = OpenMp::loaded(Some("/no/such/dir/")).unwrap_err();
        assert!(err.contains("libgomp") && err.contains("/no/such/dir/"), "{err}");
    }

    /// The system's libgomp (gcc's runtime, present wherever gcc is), loaded as torch would.
    #[cfg(target_os = "linux")]
    fn system_libgomp() -> Option<OpenMp> {
        // SAFETY: loading a shared library by name; libgomp's initialisers only read the
        // environment.
        let handle = unsafe { libc::dlopen(c"libgomp.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            eprintln!("no libgomp.so.1 on this machine: the OpenMP team is tested from Python (torch's)");
            return None;
        }
        Some(OpenMp::loaded(None).expect("a libgomp just loaded is found"))
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_team_on_openmp_runs_every_task_once_on_several_threads() {
        use crate::threads::{Pool, Team};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        let Some(omp) = system_libgomp() else { return };
        assert!(omp.library.contains("libgomp"), "{}", omp.library);
        // The region really has the threads asked for: each one enters the body.
        let entered = AtomicUsize::new(0);
        omp.parallel(3, &|| {
            entered.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(entered.load(Ordering::SeqCst), 3);
        let pool = Pool::OpenMp(omp);
        for threads in 1..=3 {
            let team = Team::on(threads, &pool).unwrap();
            for count in [0, 1, 2, 5, 64] {
                let runs: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
                let ids = Mutex::new(std::collections::HashSet::new());
                let several = threads > 1 && count >= 5;
                let start = std::time::Instant::now();
                team.run(count, |t| {
                    runs[t].fetch_add(1, Ordering::Relaxed);
                    ids.lock().unwrap().insert(std::thread::current().id());
                    // A task waits (up to seconds) for a second thread to show up: on a loaded
                    // host the others may start a few milliseconds late, and a fixed short
                    // task let one thread run them all (a flaky CI failure).
                    while several && ids.lock().unwrap().len() < 2 && start.elapsed() < std::time::Duration::from_secs(10) {
                        std::thread::sleep(std::time::Duration::from_micros(100));
                    }
                });
                assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1), "{threads} threads, {count} tasks");
                if several {
                    assert!(ids.lock().unwrap().len() > 1, "{threads} threads, {count} tasks ran on one thread");
                }
            }
        }
        let team = Team::on(2, &pool).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| team.run(2, |t| assert!(t != 1, "task 1 fails"))));
        assert!(caught.is_err(), "a task's panic reaches the caller");
        team.run(2, |_| {});
    }
}
