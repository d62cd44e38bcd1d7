//! Quick GFLOP/s probe of the core GEMM (no Python): `cargo run --release --example gemm_bench -- 1024 f32`.
#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}
extern "C" {
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

/// CPU time of this process (all threads): unaffected by other processes taking the cores.
fn cpu_seconds() -> f64 {
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: a valid out-pointer; CLOCK_PROCESS_CPUTIME_ID = 2 on Linux.
    unsafe { clock_gettime(2, &mut t) };
    t.sec as f64 + t.nsec as f64 * 1e-9
}

use matgrad_core::gemm::{Gemm, HasKernels, MatMut, MatRef};

fn bench<T: HasKernels>(n: usize, reps: usize) -> f64 {
    let a: Vec<T> = (0..n * n).map(|i| T::from_f64(((i * 7 % 13) as f64) / 13.0 - 0.5)).collect();
    let b: Vec<T> = (0..n * n).map(|i| T::from_f64(((i * 5 % 11) as f64) / 11.0 - 0.5)).collect();
    let mut c = vec![T::ZERO; n * n];
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = std::time::Instant::now();
        Gemm::new(
            MatRef::from_slice(&a, 0, n, n, n as isize, 1),
            MatRef::from_slice(&b, 0, n, n, n as isize, 1),
            MatMut::from_slice(&mut c, 0, n, n, n as isize, 1),
        )
        .unwrap()
        .run();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|x, y| x.partial_cmp(y).unwrap());
    2.0 * (n * n * n) as f64 / times[0] / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(1024);
    let dtype = args.get(2).map(String::as_str).unwrap_or("f32");
    if let Some(t) = args.get(3) {
        matgrad_core::threads::set_num_threads(t.parse().unwrap()).unwrap();
    }
    let reps = if n <= 32 { 20000 } else if n <= 512 { 50 } else { 10 };
    let gf = if dtype == "f64" { bench::<f64>(n, reps) } else { bench::<f32>(n, reps) };
    let us = 2.0 * (n * n * n) as f64 / gf / 1e3;
    println!("n={n} {dtype}: {us:.3} us/call, {gf:.1} GFLOP/s per CPU-second, best (threads={})", matgrad_core::threads::num_threads());
}
