//! A two-layer ReLU network with softmax cross-entropy: one training step's loss and
//! gradients, four GEMMs and a softmax with nothing in between.
//!
//! ```text
//! Z1 = X W1 + b1,  H1 = relu(Z1),  Z2 = H1 W2 + b2,  P = softmax(Z2)
//! L  = mean_i −log P[i, y_i]
//! ∂L/∂Z2 = (P − Y) / N          ∂L/∂W2 = H1ᵀ ∂L/∂Z2     ∂L/∂b2 = column sums of ∂L/∂Z2
//! ∂L/∂Z1 = ∂L/∂Z2 W2ᵀ ⊙ (H1 > 0)  ∂L/∂W1 = Xᵀ ∂L/∂Z1     ∂L/∂b1 = column sums of ∂L/∂Z1
//! ```
//!
//! Every step is a [`linear`] forward or backward with its fused epilogue (bias and ReLU as
//! H1 is stored, the ReLU mask as ∂L/∂Z1 is stored, the bias gradients summed while packing).
//! The whole step is one call so that nothing runs between the GEMMs: beside a Python caller,
//! each big GEMM left the caches cold for the interpreter, and the softmax's few NumPy calls
//! ran several times slower there (docs/measurements.md, "The MLP step in one call").
//!
//! A weight-decay term is the caller's: preload 2λW into the weight gradients and ask for
//! [`Mlp2Grads::accumulate_weights`], and add λΣW² to the loss.

use crate::buffers::with_scratch;
use crate::gemm::{HasKernels, MatMut, MatRef, Precision, ShapeError, VecRef};
use crate::linear::{self, LinearGrads, WeightLayout};

/// The parameters: W1 (D, H), b1 (H,), W2 (H, C), b2 (C,).
#[derive(Clone, Copy)]
pub struct Mlp2<'a, T> {
    pub w1: MatRef<'a, T>,
    pub b1: VecRef<'a, T>,
    pub w2: MatRef<'a, T>,
    pub b2: VecRef<'a, T>,
}

/// Where the gradients go, each with its parameter's shape (biases contiguous).
pub struct Mlp2Grads<'a, T> {
    pub w1: MatMut<'a, T>,
    pub b1: &'a mut [T],
    pub w2: MatMut<'a, T>,
    pub b2: &'a mut [T],
    /// Add the weight gradients to what `w1` and `w2` hold instead of overwriting them.
    pub accumulate_weights: bool,
}

impl<T: HasKernels> Mlp2<'_, T> {
    /// The mean softmax cross-entropy of the scores of `x` (N, D) against `labels` (N class
    /// indices in `0..C`), and its gradients written into `grads`.
    pub fn loss_and_grads(
        &self,
        x: MatRef<'_, T>,
        labels: &[usize],
        grads: Mlp2Grads<'_, T>,
        precision: Precision,
    ) -> Result<f64, ShapeError> {
        let (n, d, h, c) = (x.rows(), x.cols(), self.w1.cols(), self.w2.cols());
        let fits = self.w1.rows() == d
            && self.w2.rows() == h
            && self.b1.len() == h
            && self.b2.len() == c
            && (grads.w1.rows(), grads.w1.cols()) == (d, h)
            && (grads.w2.rows(), grads.w2.cols()) == (h, c)
            && grads.b1.len() == h
            && grads.b2.len() == c;
        if !fits {
            return Err(ShapeError(format!(
                "mlp2: X ({n}, {d}), W1 ({}, {}), b1 ({}), W2 ({}, {}), b2 ({}) and their gradients do not fit together",
                self.w1.rows(),
                self.w1.cols(),
                self.b1.len(),
                self.w2.rows(),
                self.w2.cols(),
                self.b2.len()
            )));
        }
        if labels.len() != n {
            return Err(ShapeError(format!("mlp2: {} labels for {n} rows of X", labels.len())));
        }
        if let Some(&bad) = labels.iter().find(|&&y| y >= c) {
            return Err(ShapeError(format!("mlp2: label {bad} is not a class index below C={c}")));
        }
        if n == 0 {
            return Err(ShapeError("mlp2: the mean loss of an empty batch is undefined".into()));
        }
        let layout = WeightLayout::InOut;
        // H1 and ∂L/∂Z1 (N, H) and the scores, which become ∂L/∂Z2 (N, C), in one buffer.
        with_scratch::<T, _>(2 * n * h + n * c, |scratch| {
            let (h1, rest) = scratch.split_at_mut(n * h);
            let (dz1, scores) = rest.split_at_mut(n * h);
            let (hs, cs) = (h as isize, c as isize);
            linear::forward(x, self.w1, layout, Some(self.b1), true, MatMut::from_slice(h1, 0, n, h, hs, 1), precision)?;
            let h1 = MatRef::from_slice(h1, 0, n, h, hs, 1);
            linear::forward(h1, self.w2, layout, Some(self.b2), false, MatMut::from_slice(scores, 0, n, c, cs, 1), precision)?;
            let loss = softmax_cross_entropy(scores, c, labels);
            let dz2 = MatRef::from_slice(scores, 0, n, c, cs, 1);
            let second = LinearGrads {
                x: Some(MatMut::from_slice(dz1, 0, n, h, hs, 1)),
                x_relu_mask: Some(h1),
                weight: Some(grads.w2),
                bias: Some(grads.b2),
                accumulate_weight: grads.accumulate_weights,
                precision,
            };
            linear::backward(dz2, h1, self.w2, layout, second)?;
            let first = LinearGrads {
                x: None,
                x_relu_mask: None,
                weight: Some(grads.w1),
                bias: Some(grads.b1),
                accumulate_weight: grads.accumulate_weights,
                precision,
            };
            linear::backward(MatRef::from_slice(dz1, 0, n, h, hs, 1), x, self.w1, layout, first)?;
            Ok(loss)
        })
    }
}

/// Mean cross-entropy of the rows of `scores` (row-major, `c` columns) against `labels`;
/// `scores` becomes ∂L/∂scores = (softmax − one_hot) / N in place.
///
/// Each row is shifted by its maximum first, so no exp overflows and the sum is at least 1;
/// −log P[i, y] = log Σ_j exp(z_ij − max) − (z_iy − max). The loss is added up in f64.
fn softmax_cross_entropy<T: HasKernels>(scores: &mut [T], c: usize, labels: &[usize]) -> f64 {
    let n = labels.len();
    let inv_n = 1.0 / n as f64;
    let mut total = 0.0f64;
    for (row, &y) in scores.chunks_exact_mut(c).zip(labels) {
        let mut max = f64::NEG_INFINITY;
        for &z in row.iter() {
            let z = z.to_f64();
            if z.is_nan() {
                // A NaN score makes the loss NaN, as in NumPy and torch.
                max = f64::NAN;
                break;
            }
            max = max.max(z);
        }
        let label_shifted = row[y].to_f64() - max;
        let mut sum = 0.0f64;
        for z in row.iter_mut() {
            let e = (z.to_f64() - max).exp();
            sum += e;
            *z = T::from_f64(e);
        }
        total += sum.ln() - label_shifted;
        let scale = inv_n / sum;
        for z in row.iter_mut() {
            *z = T::from_f64(z.to_f64() * scale);
        }
        row[y] = T::from_f64(row[y].to_f64() - inv_n);
    }
    total * inv_n
}
