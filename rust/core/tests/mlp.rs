//! The two-layer network's step (`matgrad_core::mlp`) against a naive f64 computation of the
//! same chain rule.

use matgrad_core::gemm::{HasKernels, MatMut, MatRef, Precision, VecRef};
use matgrad_core::mlp::{Mlp2, Mlp2Grads};

/// A small deterministic generator of values in [-1, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    fn fill(&mut self, len: usize, scale: f64) -> Vec<f64> {
        (0..len).map(|_| self.next() * scale).collect()
    }
}

/// Row-major `a (m × k) · b (k × n)` and, elementwise, `|a| · |b|` (the scale of its rounding).
fn product(a: &[f64], b: &[f64], m: usize, k: usize, n: usize, a_t: bool) -> (Vec<f64>, Vec<f64>) {
    let (mut c, mut mag) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for p in 0..k {
            let x = if a_t { a[p * m + i] } else { a[i * k + p] };
            for j in 0..n {
                c[i * n + j] += x * b[p * n + j];
                mag[i * n + j] += (x * b[p * n + j]).abs();
            }
        }
    }
    (c, mag)
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols * rows).map(|t| a[(t % rows) * cols + t / rows]).collect()
}

struct Reference {
    loss: f64,
    /// Each gradient with the elementwise scale of the rounding in its last product.
    w1: (Vec<f64>, Vec<f64>),
    b1: Vec<f64>,
    w2: (Vec<f64>, Vec<f64>),
    b2: Vec<f64>,
}

#[allow(clippy::too_many_arguments)]
fn reference(
    x: &[f64],
    w1: &[f64],
    b1: &[f64],
    w2: &[f64],
    b2: &[f64],
    labels: &[usize],
    (n, d, h, c): (usize, usize, usize, usize),
) -> Reference {
    let (mut z1, _) = product(x, w1, n, d, h, false);
    for (t, z) in z1.iter_mut().enumerate() {
        *z = (*z + b1[t % h]).max(0.0);
    }
    let h1 = z1;
    let (mut z2, _) = product(&h1, w2, n, h, c, false);
    for (t, z) in z2.iter_mut().enumerate() {
        *z += b2[t % c];
    }
    let mut loss = 0.0;
    let mut dz2 = vec![0.0; n * c];
    for i in 0..n {
        let row = &z2[i * c..(i + 1) * c];
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|z| (z - max).exp()).sum();
        loss += sum.ln() - (row[labels[i]] - max);
        for j in 0..c {
            dz2[i * c + j] = ((row[j] - max).exp() / sum - if j == labels[i] { 1.0 } else { 0.0 }) / n as f64;
        }
    }
    let w2_t = transpose(w2, h, c);
    let (mut dz1, _) = product(&dz2, &w2_t, n, c, h, false);
    for (g, &a) in dz1.iter_mut().zip(&h1) {
        if a <= 0.0 {
            *g = 0.0;
        }
    }
    let col_sums = |g: &[f64], cols: usize| (0..cols).map(|j| (0..n).map(|i| g[i * cols + j]).sum()).collect();
    Reference {
        loss: loss / n as f64,
        w1: product(x, &dz1, d, n, h, true),
        b1: col_sums(&dz1, h),
        w2: product(&h1, &dz2, h, n, c, true),
        b2: col_sums(&dz2, c),
    }
}

/// The step on row-major data: `x` (rows × d), `w1` (d × h), `b1` (h), `w2` (w2_rows × c),
/// `b2` (c), and gradients of the shapes (d, h, c) ask for.
#[allow(clippy::too_many_arguments)]
fn run_step<T: HasKernels>(
    [x, w1, b1, w2, b2]: [&[T]; 5],
    [gw1, gb1, gw2, gb2]: [&mut [T]; 4],
    (rows, d, h, c): (usize, usize, usize, usize),
    w2_rows: usize,
    labels: &[usize],
    accumulate_weights: bool,
) -> Result<f64, String> {
    let net = Mlp2 {
        w1: MatRef::from_slice(w1, 0, d, h, h as isize, 1),
        b1: VecRef::from_slice(b1),
        w2: MatRef::from_slice(w2, 0, w2_rows, c, c as isize, 1),
        b2: VecRef::from_slice(b2),
    };
    let grads = Mlp2Grads {
        w1: MatMut::from_slice(gw1, 0, d, h, h as isize, 1),
        b1: gb1,
        w2: MatMut::from_slice(gw2, 0, h, c, c as isize, 1),
        b2: gb2,
        accumulate_weights,
    };
    net.loss_and_grads(MatRef::from_slice(x, 0, rows, d, d as isize, 1), labels, grads, Precision::Highest).map_err(|e| e.0)
}

/// Runs the step in `T` on data drawn from `seed` and checks it against [`reference`]:
/// every gradient within `(d + h + c)` roundings of its products' magnitudes (the chain's
/// three GEMMs and the softmax each add to the error of the last product's operands).
fn check<T: HasKernels>(dims: (usize, usize, usize, usize), seed: u64) {
    let (n, d, h, c) = dims;
    let mut rng = Lcg(seed);
    let round = |v: Vec<f64>| -> Vec<T> { v.into_iter().map(T::from_f64).collect() };
    let (x, w1, b1) = (round(rng.fill(n * d, 1.0)), round(rng.fill(d * h, 0.5)), round(rng.fill(h, 0.1)));
    let (w2, b2) = (round(rng.fill(h * c, 0.5)), round(rng.fill(c, 0.1)));
    let labels: Vec<usize> = (0..n).map(|i| (i * 7 + seed as usize) % c).collect();
    let wide = |v: &[T]| v.iter().map(|z| z.to_f64()).collect::<Vec<_>>();
    let want = reference(&wide(&x), &wide(&w1), &wide(&b1), &wide(&w2), &wide(&b2), &labels, dims);

    let (mut gw1, mut gb1, mut gw2, mut gb2) = (vec![T::ZERO; d * h], vec![T::ZERO; h], vec![T::ZERO; h * c], vec![T::ZERO; c]);
    let loss = run_step([&x, &w1, &b1, &w2, &b2], [&mut gw1, &mut gb1, &mut gw2, &mut gb2], dims, h, &labels, false).unwrap();

    let eps = T::EPSILON.to_f64();
    let steps = (d + h + c) as f64;
    assert!((loss - want.loss).abs() <= steps * eps * (1.0 + want.loss.abs()), "{dims:?}: loss {loss} vs {}", want.loss);
    let close = |name: &str, got: &[T], want: &[f64], scale: &dyn Fn(usize) -> f64| {
        for (t, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (g.to_f64() - w).abs();
            assert!(err <= steps * eps * scale(t), "{dims:?} {name}[{t}]: {} vs {w} (bound {})", g.to_f64(), steps * eps * scale(t));
        }
    };
    close("dW1", &gw1, &want.w1.0, &|t| want.w1.1[t]);
    close("dW2", &gw2, &want.w2.0, &|t| want.w2.1[t]);
    // A bias gradient's scale: the column's absolute sum (at most 1/N per entry, times N rows).
    close("db1", &gb1, &want.b1, &|_| 1.0);
    close("db2", &gb2, &want.b2, &|_| 1.0);
}

#[test]
fn the_step_matches_the_chain_rule() {
    // Small (the in-place kernel), skinny (C = 10) and blocked products, several k blocks.
    for dims in [(3, 5, 7, 2), (17, 31, 40, 10), (64, 100, 130, 10), (256, 784, 96, 10)] {
        check::<f64>(dims, 1);
        check::<f32>(dims, 2);
    }
}

#[test]
fn accumulated_weight_gradients_add_to_what_is_there() {
    let (n, d, h, c) = (9, 12, 20, 4);
    let mut rng = Lcg(3);
    let (x, w1, b1, w2, b2) = (rng.fill(n * d, 1.0), rng.fill(d * h, 0.5), rng.fill(h, 0.1), rng.fill(h * c, 0.5), rng.fill(c, 0.1));
    let labels: Vec<usize> = (0..n).map(|i| i % c).collect();
    let run = |gw1: &mut Vec<f64>, gw2: &mut Vec<f64>, accumulate: bool| {
        let (mut gb1, mut gb2) = (vec![0.0; h], vec![0.0; c]);
        run_step([&x, &w1, &b1, &w2, &b2], [gw1, &mut gb1, gw2, &mut gb2], (n, d, h, c), h, &labels, accumulate).unwrap()
    };
    let (mut plain1, mut plain2) = (vec![f64::NAN; d * h], vec![f64::NAN; h * c]);
    run(&mut plain1, &mut plain2, false);
    let (pre1, pre2) = (rng.fill(d * h, 1.0), rng.fill(h * c, 1.0));
    let (mut acc1, mut acc2) = (pre1.clone(), pre2.clone());
    run(&mut acc1, &mut acc2, true);
    for (got, (pre, plain)) in acc1.iter().chain(&acc2).zip(pre1.iter().chain(&pre2).zip(plain1.iter().chain(&plain2))) {
        assert_eq!(*got, pre + plain, "accumulating adds the same gradient with one rounding");
    }
}

#[test]
fn bad_labels_and_shapes_are_errors() {
    let (n, d, h, c) = (4, 3, 5, 2);
    let (x, w1, b1, w2, b2) = (vec![0.5f32; n * d], vec![0.1f32; d * h], vec![0.0f32; h], vec![0.1f32; h * c], vec![0.0f32; c]);
    let (mut gw1, mut gb1, mut gw2, mut gb2) = (vec![0f32; d * h], vec![0f32; h], vec![0f32; h * c], vec![0f32; c]);
    let mut run = |w2_rows: usize, rows: usize, labels: &[usize]| {
        run_step([&x, &w1, &b1, &w2, &b2], [&mut gw1, &mut gb1, &mut gw2, &mut gb2], (rows, d, h, c), w2_rows, labels, false)
    };
    assert!(run(h, n, &[0, 1, 0, 1]).is_ok());
    assert!(run(h, n, &[0, 1, 2, 1]).unwrap_err().contains("label 2"));
    assert!(run(h, n, &[0, 1, 0]).unwrap_err().contains("3 labels for 4 rows"));
    assert!(run(h - 1, n, &[0, 1, 0, 1]).unwrap_err().contains("W2 (4, 2)"));
    assert!(run(h, 0, &[]).unwrap_err().contains("empty batch"));
}
