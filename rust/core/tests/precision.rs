//! Float32 products at precision "high" and "medium" (bfloat16 operands), on AMX where this
//! CPU has it and on the FMA kernels (the fallback, also forced on an AMX machine), against
//! float64 references with bounds from the arithmetic:
//!
//! - medium: the product of the bfloat16-rounded operands, summed in float32:
//!   |C − Σ bf16(a) bf16(b)| ≤ 2 (k + 2) ε₃₂ Σ |bf16(a)| |bf16(b)|;
//! - high: hi + lo keeps 16 bits of each operand and the dropped lo·lo term is 2⁻¹⁶ smaller:
//!   |C − Σ a b| ≤ (2⁻¹⁴ + 2 (k + 2) ε₃₂) Σ |a| |b|.

use matgrad_core::gemm::{round_bf16, BiasAxis, Gemm, Isa, MatMut, MatRef, Precision, VecRef};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) as f32
    }
}

/// Runs C = relu?(alpha A B + beta C + bias) at `precision` and checks it; A (m, k) row-major
/// or column-major, B (k, n) row-major or column-major, C row-major or column-major.
fn check(m: usize, n: usize, k: usize, layouts: (bool, bool, bool), precision: Precision, epilogue: bool, seed: u64) {
    let mut rng = Lcg(seed);
    let a: Vec<f32> = (0..m * k).map(|_| rng.next()).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.next()).collect();
    let c0: Vec<f32> = (0..m * n).map(|_| rng.next()).collect();
    let bias: Vec<f32> = (0..n).map(|_| rng.next()).collect();
    let (a_rm, b_rm, c_rm) = layouts;
    let at = |i: usize, p: usize| if a_rm { i * k + p } else { p * m + i };
    let bt = |p: usize, j: usize| if b_rm { p * n + j } else { j * k + p };
    let ct = |i: usize, j: usize| if c_rm { i * n + j } else { j * m + i };
    let view = |rm: bool, rows: usize, cols: usize| if rm { (cols as isize, 1) } else { (1, rows as isize) };
    let ((ars, acs), (brs, bcs), (crs, ccs)) = (view(a_rm, m, k), view(b_rm, k, n), view(c_rm, m, n));
    let mut c = vec![f32::NAN; m * n];
    let (alpha, beta) = if epilogue { (-0.5f32, 0.25f32) } else { (1.0, 0.0) };
    if epilogue {
        for i in 0..m {
            for j in 0..n {
                c[ct(i, j)] = c0[i * n + j];
            }
        }
    }
    {
        let mut g = Gemm::new(
            MatRef::from_slice(&a, 0, m, k, ars, acs),
            MatRef::from_slice(&b, 0, k, n, brs, bcs),
            MatMut::from_slice(&mut c, 0, m, n, crs, ccs),
        )
        .unwrap()
        .precision(precision);
        if epilogue {
            g = g.alpha(alpha).beta(beta).relu(true).bias(VecRef::from_slice(&bias), BiasAxis::Columns).unwrap();
        }
        g.run();
    }
    let eps = f32::EPSILON as f64;
    for i in 0..m {
        for j in 0..n {
            let (mut want, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let (x, y) = (a[at(i, p)], b[bt(p, j)]);
                let (x, y) = if precision == Precision::Medium { (round_bf16(x), round_bf16(y)) } else { (x, y) };
                want += x as f64 * y as f64;
                mag += (x as f64 * y as f64).abs();
            }
            let mut tol = 2.0 * (k as f64 + 2.0) * eps * mag;
            if precision == Precision::High {
                tol += 2f64.powi(-14) * mag;
            }
            if epilogue {
                want = alpha as f64 * want + beta as f64 * c0[i * n + j] as f64 + bias[j] as f64;
                tol = tol * alpha.abs() as f64 + 4.0 * eps * (c0[i * n + j].abs() + bias[j].abs()) as f64;
                want = want.max(0.0);
            }
            let got = c[ct(i, j)] as f64;
            assert!(
                (got - want).abs() <= tol + f64::MIN_POSITIVE,
                "{precision:?} {m}x{n}x{k} {layouts:?}: C[{i},{j}] = {got}, want {want} (tol {tol:e})"
            );
        }
    }
}

fn shapes() -> Vec<(usize, usize, usize)> {
    vec![(1, 1, 1), (5, 7, 3), (31, 33, 32), (32, 32, 33), (33, 17, 64), (64, 96, 100), (100, 40, 600), (70, 130, 1100)]
}

fn every_precision_path(amx: bool) {
    #[cfg(target_arch = "x86_64")]
    matgrad_core::gemm::set_amx_enabled(amx);
    let _ = amx;
    for (t, &(m, n, k)) in shapes().iter().enumerate() {
        for precision in [Precision::Medium, Precision::High] {
            for (s, layouts) in
                [(true, true, true), (true, false, true), (false, true, false), (false, false, true)].into_iter().enumerate()
            {
                check(m, n, k, layouts, precision, (t + s) % 2 == 0, (t * 10 + s) as u64);
            }
        }
    }
}

/// Both paths in one test: the AMX switch is process-wide, and tests run on threads.
#[test]
fn precision_on_amx_and_on_the_fma_kernels() {
    #[cfg(target_arch = "x86_64")]
    {
        if matgrad_core::gemm::amx_supported() && Isa::Avx512.is_supported() {
            every_precision_path(true);
        } else {
            eprintln!("precision: the AMX half skipped, this CPU (or OS) has no AMX bfloat16 tiles");
        }
    }
    // The fallback, what every machine without AMX runs; forced here on an AMX machine too.
    every_precision_path(false);
    #[cfg(target_arch = "x86_64")]
    matgrad_core::gemm::set_amx_enabled(true);
    let _ = Isa::Generic;
}

#[test]
fn highest_is_unchanged_and_float64_ignores_precision() {
    let a: Vec<f64> = (0..30).map(|i| i as f64 * 0.37 - 3.0).collect();
    let run = |p: Precision| {
        let mut c = vec![0f64; 25];
        Gemm::new(MatRef::from_slice(&a, 0, 5, 6, 6, 1), MatRef::from_slice(&a, 0, 6, 5, 5, 1), MatMut::from_slice(&mut c, 0, 5, 5, 5, 1))
            .unwrap()
            .precision(p)
            .run();
        c
    };
    assert_eq!(run(Precision::Medium), run(Precision::Highest));
}
