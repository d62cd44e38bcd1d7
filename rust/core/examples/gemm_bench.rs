//! Quick GFLOP/s probe of the core GEMM, no Python in the way (median and best of several runs):
//!
//! ```text
//! cargo run --release --example gemm_bench -- SIZE [f32|f64] [THREADS] [LAYOUT]
//!   SIZE    n (square) or MxNxK, e.g. 64x256x784 for C (64 × 256) = A (64 × 784) B (784 × 256)
//!   LAYOUT  nn (default), nt (B a transposed view), tn (A a transposed view) or tt
//! ```
//!
//! `MATGRAD_KERNEL=avx512|avx2|neon|generic` measures that kernel instead of the fastest;
//! `MATGRAD_PRECISION=high|medium`, float32 at that precision (on AMX where the CPU has it).
use std::time::Instant;

use matgrad_core::gemm::{Gemm, HasKernels, Isa, MatMut, MatRef, Precision};

/// `MATGRAD_PRECISION=high|medium` measures float32 at that precision.
fn precision() -> Precision {
    std::env::var("MATGRAD_PRECISION").ok().and_then(|p| Precision::from_name(&p)).unwrap_or_default()
}

struct Shape {
    m: usize,
    n: usize,
    k: usize,
    a_transposed: bool,
    b_transposed: bool,
}

/// A row-major `rows × cols` view of `data`, or the transposed view of a row-major
/// `cols × rows` matrix.
fn view<T>(data: &[T], rows: usize, cols: usize, transposed: bool) -> MatRef<'_, T> {
    if transposed {
        MatRef::from_slice(data, 0, cols, rows, rows as isize, 1).t()
    } else {
        MatRef::from_slice(data, 0, rows, cols, cols as isize, 1)
    }
}

/// GFLOP/s of the median and of the best run.
fn bench<T: HasKernels>(s: &Shape, reps: usize) -> (f64, f64) {
    let (m, n, k) = (s.m, s.n, s.k);
    let a: Vec<T> = (0..m * k).map(|i| T::from_f64(((i * 7 % 13) as f64) / 13.0 - 0.5)).collect();
    let b: Vec<T> = (0..k * n).map(|i| T::from_f64(((i * 5 % 11) as f64) / 11.0 - 0.5)).collect();
    let mut c = vec![T::ZERO; m * n];
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        Gemm::new(view(&a, m, k, s.a_transposed), view(&b, k, n, s.b_transposed), MatMut::from_slice(&mut c, 0, m, n, n as isize, 1))
            .unwrap()
            .precision(precision())
            .run();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let gflops = |t: f64| 2.0 * (m * n * k) as f64 / t / 1e9;
    (gflops(times[reps / 2]), gflops(times[0]))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size = args.get(1).map(String::as_str).unwrap_or("1024");
    let dims: Vec<usize> = size.split('x').map(|d| d.parse().expect("SIZE is n or MxNxK")).collect();
    let (m, n, k) = match dims[..] {
        [n] => (n, n, n),
        [m, n, k] => (m, n, k),
        _ => panic!("SIZE is n or MxNxK"),
    };
    let dtype = args.get(2).map(String::as_str).unwrap_or("f32");
    if let Some(t) = args.get(3) {
        matgrad_core::threads::set_num_threads(t.parse().expect("threads")).unwrap();
    }
    if let Ok(name) = std::env::var("MATGRAD_KERNEL") {
        Isa::from_name(&name).expect("MATGRAD_KERNEL names a kernel").force().unwrap();
    }
    let layout = args.get(4).map(String::as_str).unwrap_or("nn");
    assert!(matches!(layout, "nn" | "nt" | "tn" | "tt"), "LAYOUT is nn, nt, tn or tt");
    let shape = Shape { m, n, k, a_transposed: layout.starts_with('t'), b_transposed: layout.ends_with('t') };
    let work = m * n * k;
    let reps = (2_000_000_000 / work.max(1)).clamp(10, 2000);
    let (median, best) = if dtype == "f64" { bench::<f64>(&shape, reps) } else { bench::<f32>(&shape, reps) };
    println!(
        "{size} {dtype} {layout}: {median:.1} GFLOP/s median, {best:.1} best of {reps} (threads={}, kernel={})",
        matgrad_core::threads::num_threads(),
        Isa::active().name()
    );
}
