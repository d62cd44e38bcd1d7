//! Quick GFLOP/s probe of the core GEMM, no Python in the way:
//! `cargo run --release --example gemm_bench -- 1024 f32 [threads]` (best of several runs).
use std::time::Instant;

use matgrad_core::gemm::{Gemm, HasKernels, MatMut, MatRef};

fn bench<T: HasKernels>(n: usize, reps: usize) -> f64 {
    let a: Vec<T> = (0..n * n).map(|i| T::from_f64(((i * 7 % 13) as f64) / 13.0 - 0.5)).collect();
    let b: Vec<T> = (0..n * n).map(|i| T::from_f64(((i * 5 % 11) as f64) / 11.0 - 0.5)).collect();
    let mut c = vec![T::ZERO; n * n];
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        Gemm::new(
            MatRef::from_slice(&a, 0, n, n, n as isize, 1),
            MatRef::from_slice(&b, 0, n, n, n as isize, 1),
            MatMut::from_slice(&mut c, 0, n, n, n as isize, 1),
        )
        .unwrap()
        .run();
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse().expect("size")).unwrap_or(1024);
    let dtype = args.get(2).map(String::as_str).unwrap_or("f32");
    if let Some(t) = args.get(3) {
        matgrad_core::threads::set_num_threads(t.parse().expect("threads")).unwrap();
    }
    let reps = if n <= 64 { 2000 } else if n <= 512 { 50 } else { 10 };
    let gflops = if dtype == "f64" { bench::<f64>(n, reps) } else { bench::<f32>(n, reps) };
    println!("n={n} {dtype}: {gflops:.1} GFLOP/s (best of {reps}, threads={})", matgrad_core::threads::num_threads());
}
