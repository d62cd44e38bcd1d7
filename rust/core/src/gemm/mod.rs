//! The blocked GEMM: `C = relu?(alpha * A B + beta * C + bias)` on strided matrices.
//!
//! The BLIS structure, five loops around a register-blocked micro-kernel:
//!
//! ```text
//! LOOP 5  ic: rows of C in blocks of MC             A block (MC × KC) -> L3, shared
//! LOOP 4  pc: the k dimension in blocks of KC       pack A block into MR-tall panels
//! LOOP 3  jc: columns of C in blocks of NC          pack B block into NR-wide panels -> L2
//!                                                   (each thread packs its own B block)
//! LOOP 2  ir: MR-tall panels of the A block         A micro-panel (MR × KC) -> L1
//!         (threads split C's rows, each running all five loops on its own, or for a C
//!         wider than the A block is tall, LOOP 3's columns: loops.rs)
//! LOOP 1  jr: NR-wide panels of the B block         micro-kernel: MR × NR tile of C
//! ```
//!
//! The kernels hold vectors along C's rows (NR wide) and broadcast A (MR tall), so the
//! narrow A micro-panel is the one kept in L1 and the wide B block sits in L2: the mirror of
//! BLIS's column-major arrangement.
//!
//! K is never split between threads, and tiles always start at multiples of MR and NR, so every
//! element of C is computed by the same sequence of operations whatever the thread count.

#[cfg(target_arch = "x86_64")]
mod amx;
mod batch;
mod blocking;
mod dispatch;
mod epilogue;
mod few_rows;
mod kernel;
mod loops;
mod outer;
mod pack;
mod plan;
mod precision;
mod problem;
mod small;
mod sums;
mod thin;
mod tiny;
mod vector;
mod view;

#[cfg(target_arch = "x86_64")]
pub use amx::{in_use as amx_in_use, set_enabled as set_amx_enabled, supported as amx_supported};
pub use batch::{gemm_batched, gemm_batched_beta, Batch};
pub use blocking::{Blocking, CacheSizes};
pub use dispatch::{HasKernels, Isa};
pub use precision::{bf16_bits, bf16_value, round_bf16, Precision};
pub use view::{MatMut, MatRef, VecRef};

use epilogue::{CShaped, Epilogue};
use problem::Problem;

/// Which dimension of C a bias vector runs along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasAxis {
    /// `bias[j]` added to column j (the linear layer's Y = X W + b).
    Columns,
    /// `bias[i]` added to row i.
    Rows,
}

/// Shapes that do not fit together; the message names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl core::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

/// One GEMM, configured by its builder methods and then [`Gemm::run`].
///
/// ```
/// use matgrad_core::gemm::{Gemm, MatMut, MatRef};
/// let a = [1.0f64, 2.0, 3.0, 4.0]; // 2 × 2, row-major
/// let b = [5.0f64, 6.0, 7.0, 8.0];
/// let mut c = [f64::NAN; 4];
/// Gemm::new(MatRef::from_slice(&a, 0, 2, 2, 2, 1), MatRef::from_slice(&b, 0, 2, 2, 2, 1),
///           MatMut::from_slice(&mut c, 0, 2, 2, 2, 1)).unwrap().run();
/// assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
/// ```
pub struct Gemm<'a, T: HasKernels> {
    a: MatRef<'a, T>,
    b: MatRef<'a, T>,
    c: MatMut<'a, T>,
    /// Its operands (bias, mask) borrowed for 'a by the builder methods that set them.
    ep: Epilogue<T>,
    a_row_sums: Option<&'a mut [T]>,
    b_col_sums: Option<&'a mut [T]>,
    isa: Option<Isa>,
    parallel: bool,
    precision: Precision,
}

impl<'a, T: HasKernels> Gemm<'a, T> {
    /// `C = A B` (alpha = 1, beta = 0: C is only written).
    pub fn new(a: MatRef<'a, T>, b: MatRef<'a, T>, c: MatMut<'a, T>) -> Result<Self, ShapeError> {
        if a.cols != b.rows || a.rows != c.rows || b.cols != c.cols {
            return Err(ShapeError(format!(
                "cannot multiply ({}, {}) by ({}, {}) into ({}, {})",
                a.rows, a.cols, b.rows, b.cols, c.rows, c.cols
            )));
        }
        Ok(Gemm {
            a,
            b,
            c,
            ep: Epilogue::PLAIN,
            a_row_sums: None,
            b_col_sums: None,
            isa: None,
            parallel: true,
            precision: Precision::Highest,
        })
    }

    pub fn alpha(mut self, alpha: T) -> Self {
        self.ep.alpha = alpha;
        self
    }

    /// Scale of the old C; zero (the default) means C is never read.
    pub fn beta(mut self, beta: T) -> Self {
        self.ep.beta = beta;
        self
    }

    /// Adds `bias` along `axis` in the micro-kernel's store, not in a second pass over C.
    pub fn bias(mut self, bias: VecRef<'a, T>, axis: BiasAxis) -> Result<Self, ShapeError> {
        let want = match axis {
            BiasAxis::Columns => self.c.cols,
            BiasAxis::Rows => self.c.rows,
        };
        if bias.len != want {
            return Err(ShapeError(format!(
                "bias of length {} does not fit a ({}, {}) result along its {:?}",
                bias.len, self.c.rows, self.c.cols, axis
            )));
        }
        self.ep.bias = match axis {
            BiasAxis::Columns => CShaped { ptr: bias.ptr, rs: 0, cs: bias.stride },
            BiasAxis::Rows => CShaped { ptr: bias.ptr, rs: bias.stride, cs: 0 },
        };
        Ok(self)
    }

    /// Applies `max(0, x)` to the result as it is stored.
    pub fn relu(mut self, relu: bool) -> Self {
        self.ep.relu = relu;
        self
    }

    /// Keeps the result only where `mask > 0`, 0 elsewhere, as it is stored: the backward of
    /// a ReLU whose output `mask` is (∂L/∂Z = ∂L/∂H ⊙ relu′(Z), relu′(Z) = H > 0), without a
    /// pass of its own. `mask` has C's shape.
    pub fn relu_grad_mask(mut self, mask: MatRef<'a, T>) -> Result<Self, ShapeError> {
        if mask.rows != self.c.rows || mask.cols != self.c.cols {
            return Err(ShapeError(format!(
                "mask of shape ({}, {}) does not fit a ({}, {}) result",
                mask.rows, mask.cols, self.c.rows, self.c.cols
            )));
        }
        self.ep.mask = CShaped { ptr: mask.ptr, rs: mask.rs, cs: mask.cs };
        Ok(self)
    }

    /// Also computes `sums[i] = Σ_p A[i, p]` while packing A (overwrites `sums`).
    pub fn a_row_sums(mut self, sums: &'a mut [T]) -> Result<Self, ShapeError> {
        if sums.len() != self.a.rows {
            return Err(ShapeError(format!("row sums of length {} for {} rows", sums.len(), self.a.rows)));
        }
        self.a_row_sums = Some(sums);
        Ok(self)
    }

    /// Also computes `sums[j] = Σ_p B[p, j]` while packing B (overwrites `sums`).
    pub fn b_col_sums(mut self, sums: &'a mut [T]) -> Result<Self, ShapeError> {
        if sums.len() != self.b.cols {
            return Err(ShapeError(format!("column sums of length {} for {} columns", sums.len(), self.b.cols)));
        }
        self.b_col_sums = Some(sums);
        Ok(self)
    }

    /// Uses this kernel instead of [`Isa::active`] (must be supported).
    pub fn isa(mut self, isa: Isa) -> Self {
        assert!(isa.is_supported(), "kernel {} is not supported by this CPU", isa.name());
        self.isa = Some(isa);
        self
    }

    /// How float32 operands are multiplied ([`Precision`]); float64 ones always in float64.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Whether the library's threads may be used (default true; small problems stay serial).
    pub fn parallel(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }

    pub fn run(self) {
        let (problem, isa) = self.into_problem();
        // SAFETY: the views were validated by their constructors and Gemm::new's shape check.
        unsafe { problem.run(isa) }
    }

    /// The raw problem and the ISA it runs on.
    fn into_problem(self) -> (Problem<T>, Isa) {
        let isa = self.isa.unwrap_or_else(Isa::active);
        let problem = Problem::from(self);
        // The kernels store whole vectors along C's rows; a column-major C is the transposed
        // problem Cᵀ = Bᵀ Aᵀ with a row-major Cᵀ.
        if problem.c_cs != 1 && problem.c_rs == 1 {
            return (problem.transposed(), isa);
        }
        (problem, isa)
    }
}
