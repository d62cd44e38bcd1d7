use matgrad_core::gemm::{Gemm, MatMut, MatRef};
use std::time::Instant;
fn main() {
    for n in [32usize] {
        let a: Vec<f64> = (0..n * n).map(|i| (i % 7) as f64 * 0.1).collect();
        let b = a.clone();
        let mut c = vec![0f64; n * n];
        let reps = 1000;
        let t = Instant::now();
        for _ in 0..reps {
            Gemm::new(MatRef::from_slice(&a, 0, n, n, n as isize, 1), MatRef::from_slice(&b, 0, n, n, n as isize, 1), MatMut::from_slice(&mut c, 0, n, n, n as isize, 1)).unwrap().run();
        }
        println!("n={n}: {:.3} us", t.elapsed().as_secs_f64() / reps as f64 * 1e6);
    }
}
