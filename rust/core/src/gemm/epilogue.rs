//! The epilogue: what happens to each finished dot product as it is stored into C.
//!
//! ```text
//!   C[i, j] = relu?( alpha · Σ_p A[i, p] B[p, j]  +  beta · C[i, j]  +  bias[i, j] )
//!   C[i, j] = 0 where mask[i, j] > 0 is false, if a mask is given
//! ```
//!
//! One value, [`Epilogue`], holds all of it. It is built once per GEMM by the builder,
//! transposed with the problem, narrowed to each block of k (beta and the bias apply to the
//! first, the ReLU and the mask to the finished sum of the last) and moved to each tile's
//! origin for the kernels' store. A new epilogue input is a field here and nowhere else.

use crate::element::Element;

/// An optional read-only operand with C's shape: element `(i, j)` at `ptr + i*rs + j*cs`, a
/// null `ptr` for none. A bias is one with a zero stride along the axis it is constant on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CShaped<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

impl<T> CShaped<T> {
    pub const NONE: CShaped<T> = CShaped { ptr: core::ptr::null(), rs: 0, cs: 0 };

    #[inline(always)]
    pub fn is_some(&self) -> bool {
        !self.ptr.is_null()
    }

    fn transposed(self) -> Self {
        CShaped { rs: self.cs, cs: self.rs, ..self }
    }

    /// The element at `(i, j)` (wrapping: only dereferenced where it is in range).
    #[inline(always)]
    pub fn at(&self, i: isize, j: isize) -> *const T {
        self.ptr.wrapping_offset(i * self.rs + j * self.cs)
    }

    /// [`CShaped::at`] where the rows are contiguous (`cs == 1`, checked by the caller).
    #[inline(always)]
    pub fn at_in_row(&self, i: isize, j: isize) -> *const T {
        self.ptr.wrapping_offset(i * self.rs + j)
    }

    /// The same operand seen from `(i, j)` on; none stays none.
    #[inline(always)]
    fn from(self, i: isize, j: isize) -> Self {
        if self.is_some() {
            CShaped { ptr: self.at(i, j), ..self }
        } else {
            self
        }
    }

    /// Whether a row's consecutive elements are adjacent, so a row can be loaded as vectors
    /// (true for none).
    #[inline(always)]
    pub fn rows_contiguous(&self) -> bool {
        !self.is_some() || self.cs == 1
    }
}

/// Everything applied to a dot product between the k loop and C (see the module's formula).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epilogue<T> {
    pub alpha: T,
    /// Zero means C is not read at all (a C full of NaN is overwritten).
    pub beta: T,
    pub bias: CShaped<T>,
    pub relu: bool,
    /// Keep the result only where `mask > 0` (the backward of a ReLU whose output it is).
    pub mask: CShaped<T>,
}

impl<T: Element> Epilogue<T> {
    /// `C = A B`: nothing but the store.
    pub const PLAIN: Epilogue<T> = Epilogue { alpha: T::ONE, beta: T::ZERO, bias: CShaped::NONE, relu: false, mask: CShaped::NONE };

    /// The epilogue of the transposed problem Cᵀ = Bᵀ Aᵀ.
    pub fn transposed(self) -> Self {
        Epilogue { bias: self.bias.transposed(), mask: self.mask.transposed(), ..self }
    }

    /// What applies to one block of k: later blocks add onto what the first stored (beta 1,
    /// no bias again); the ReLU and the mask apply to the finished sum only.
    pub fn for_k_block(self, first: bool, last: bool) -> Self {
        Epilogue {
            beta: if first { self.beta } else { T::ONE },
            bias: if first { self.bias } else { CShaped::NONE },
            relu: self.relu && last,
            mask: if last { self.mask } else { CShaped::NONE },
            ..self
        }
    }

    /// The epilogue seen from the tile whose origin is `(i, j)`.
    pub fn from(self, i: usize, j: usize) -> Self {
        let (i, j) = (i as isize, j as isize);
        Epilogue { bias: self.bias.from(i, j), mask: self.mask.from(i, j), ..self }
    }

    /// Whether every operand's rows are contiguous, so rows of a tile go a vector at a time.
    #[inline(always)]
    pub fn rows_contiguous(&self) -> bool {
        self.bias.rows_contiguous() && self.mask.rows_contiguous()
    }

    /// The scalar epilogue: `x` finished and stored at `c`, whose bias and mask elements are
    /// at `bias` and `mask` (read only if present). `fma` is the kernel's fused multiply-add
    /// (or its unfused twin where the kernel does not fuse), so an element gets the same bits
    /// whether it is stored a vector at a time or alone. The vector store (kernel/mod.rs)
    /// performs the same operations in the same order.
    ///
    /// # Safety
    /// `c` is valid for reads (if beta is not 0) and writes; `bias` and `mask` are readable if
    /// the operands are present.
    #[inline(always)]
    pub unsafe fn store_scalar(&self, x: T, c: *mut T, bias: *const T, mask: *const T, fma: impl Fn(T, T, T) -> T) {
        let mut x = x;
        if self.alpha != T::ONE {
            x = self.alpha * x;
        }
        if self.beta != T::ZERO {
            x = fma(self.beta, *c, x);
        }
        if self.bias.is_some() {
            x = x + *bias;
        }
        // Mirrors `max(0, x)` lane for lane: NaN and -0.0 pass through unchanged.
        if self.relu && T::ZERO > x {
            x = T::ZERO;
        }
        if self.mask.is_some() && !(*mask).is_positive() {
            x = T::ZERO;
        }
        *c = x;
    }

    /// [`Epilogue::store_scalar`] for element `(i, j)` (relative to this epilogue's origin)
    /// of C, which is at `c`.
    ///
    /// # Safety
    /// As for [`Epilogue::store_scalar`], at that element.
    #[inline(always)]
    pub unsafe fn store_at(&self, x: T, c: *mut T, i: usize, j: usize, fma: impl Fn(T, T, T) -> T) {
        let (i, j) = (i as isize, j as isize);
        self.store_scalar(x, c, self.bias.at(i, j), self.mask.at(i, j), fma)
    }
}
