//! The linear layer, forward and backward, built on the GEMM with its fused epilogue (bias,
//! relu) and fused reduction (the bias gradient summed while grad_y is packed).
//!
//! Shapes: X is (batch, in), Y and grad_Y are (batch, out). The weight is either
//! - [`WeightLayout::InOut`]: W (in, out), Y = X W + b (as the derivations write it), or
//! - [`WeightLayout::OutIn`]: W (out, in), Y = X Wᵀ + b (torch's layout, y = W x + b).
//!
//! Backward, with G = ∂L/∂Y:  ∂L/∂X = G Wᵀ (InOut) or G W (OutIn);  ∂L/∂W = Xᵀ G (InOut) or
//! Gᵀ X (OutIn);  ∂L/∂b = column sums of G. Every product is one GEMM on transposed views:
//! nothing is copied or transposed in memory.

use crate::gemm::{BiasAxis, Gemm, HasKernels, MatMut, MatRef, Precision, ShapeError, VecRef};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// W is (in, out).
    InOut,
    /// W is (out, in), as in torch.nn.Linear.
    OutIn,
}

impl WeightLayout {
    /// The weight seen as (in, out), a view either way.
    fn in_out<'a, T>(self, w: MatRef<'a, T>) -> MatRef<'a, T> {
        match self {
            WeightLayout::InOut => w,
            WeightLayout::OutIn => w.t(),
        }
    }
}

/// `Y = relu?(X W + b)` with the bias added (and relu applied) as the GEMM stores Y.
pub fn forward<T: HasKernels>(
    x: MatRef<'_, T>,
    w: MatRef<'_, T>,
    layout: WeightLayout,
    bias: Option<VecRef<'_, T>>,
    relu: bool,
    y: MatMut<'_, T>,
    precision: Precision,
) -> Result<(), ShapeError> {
    let w = layout.in_out(w);
    if x.cols() != w.rows() || y.rows() != x.rows() || y.cols() != w.cols() {
        return Err(ShapeError(format!(
            "linear: x of shape ({}, {}) does not fit a weight of in={} and out={} into y ({}, {})",
            x.rows(),
            x.cols(),
            w.rows(),
            w.cols(),
            y.rows(),
            y.cols()
        )));
    }
    let mut gemm = Gemm::new(x, w, y)?.relu(relu).precision(precision);
    if let Some(bias) = bias {
        gemm = gemm.bias(bias, BiasAxis::Columns)?;
    }
    gemm.run();
    Ok(())
}

/// Where the gradients go; `None` for those not wanted.
pub struct LinearGrads<'a, T> {
    /// (batch, in)
    pub x: Option<MatMut<'a, T>>,
    /// (batch, in), or None. When x is the output of a ReLU, give it here and ∂L/∂X comes out
    /// as the ReLU's input gradient, ∂L/∂X ⊙ (x > 0), applied as its GEMM stores each tile.
    pub x_relu_mask: Option<MatRef<'a, T>>,
    /// The weight's own shape and layout.
    pub weight: Option<MatMut<'a, T>>,
    /// (out,), contiguous.
    pub bias: Option<&'a mut [T]>,
    /// Add ∂L/∂W to what `weight` holds (beta = 1 in its GEMM) instead of overwriting it, as
    /// gradient accumulation does; a weight-decay term preloaded there then costs no extra pass.
    pub accumulate_weight: bool,
    /// How float32 products are computed ([`Precision`]).
    pub precision: Precision,
}

/// The gradients of the linear layer given `grad_y` = ∂L/∂Y.
pub fn backward<T: HasKernels>(
    grad_y: MatRef<'_, T>,
    x: MatRef<'_, T>,
    w: MatRef<'_, T>,
    layout: WeightLayout,
    grads: LinearGrads<'_, T>,
) -> Result<(), ShapeError> {
    let w_io = layout.in_out(w);
    let (batch, n_in, n_out) = (x.rows(), w_io.rows(), w_io.cols());
    if x.cols() != n_in || grad_y.rows() != batch || grad_y.cols() != n_out {
        return Err(ShapeError(format!(
            "linear_backward: grad_y ({}, {}) and x ({}, {}) do not fit a weight of in={n_in} and out={n_out}",
            grad_y.rows(),
            grad_y.cols(),
            x.rows(),
            x.cols()
        )));
    }
    if let Some(gb) = &grads.bias {
        if gb.len() != n_out {
            return Err(ShapeError(format!("linear_backward: grad_bias of length {} for out={n_out}", gb.len())));
        }
    }
    if let Some(gx) = grads.x {
        // ∂L/∂X = G Wᵀ, with W seen as (in, out).
        let gemm = Gemm::new(grad_y, w_io.t(), gx)?.precision(grads.precision);
        match grads.x_relu_mask {
            Some(mask) => gemm.relu_grad_mask(mask)?.run(),
            None => gemm.run(),
        }
    }
    match (grads.weight, grads.bias) {
        (Some(gw), bias) => {
            // ∂L/∂W = Xᵀ G (in, out); for the (out, in) layout its transpose Gᵀ X, computed as
            // the same product stored through the transposed view of grad_W.
            let gw_io = match layout {
                WeightLayout::InOut => gw,
                WeightLayout::OutIn => gw.t(),
            };
            let beta = if grads.accumulate_weight { T::ONE } else { T::ZERO };
            let gemm = Gemm::new(x.t(), grad_y, gw_io)?.beta(beta).precision(grads.precision);
            // G is the B operand here: its column sums (∂L/∂b) come out of packing it.
            match bias {
                Some(gb) => gemm.b_col_sums(gb)?.run(),
                None => gemm.run(),
            }
        }
        (None, Some(gb)) => column_sums(grad_y, gb),
        (None, None) => {}
    }
    Ok(())
}

/// `sums[j] = Σ_i m[i, j]`, rows added in order.
pub fn column_sums<T: HasKernels>(m: MatRef<'_, T>, sums: &mut [T]) {
    assert_eq!(sums.len(), m.cols(), "column_sums: one sum per column");
    sums.fill(T::ZERO);
    for i in 0..m.rows() {
        for (j, s) in sums.iter_mut().enumerate() {
            *s = *s + m.get(i, j);
        }
    }
}
