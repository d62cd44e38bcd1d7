//! The raw form of a configured GEMM: pointers, strides and the epilogue, every check done.
//! [`Problem::run`] follows its [`plan`](super::plan).

use super::dispatch::{HasKernels, Isa};
use super::epilogue::Epilogue;
use super::kernel::TileStore;
use super::pack::Block;
use super::plan::{plan, Path, Plan};
use super::precision::Precision;
use super::{few_rows, outer, small, sums, thin, tiny, vector, Gemm};
use crate::element::ElementKind;
use crate::threads::{self, Team};

#[derive(Clone, Copy)]
pub(super) struct Problem<T> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Block<T>,
    pub b: Block<T>,
    pub c: *mut T,
    pub c_rs: isize,
    pub c_cs: isize,
    pub ep: Epilogue<T>,
    pub a_row_sums: Option<*mut T>,
    pub b_col_sums: Option<*mut T>,
    pub parallel: bool,
    /// Float32 products' precision (Highest for float64).
    pub precision: Precision,
    /// Whether this is the transposed problem Cᵀ = Bᵀ Aᵀ (A here is the caller's B).
    pub swapped: bool,
}

// SAFETY: a Problem is read by the threads of one GEMM, which write disjoint tiles of C and
// disjoint parts of the sums (see loops.rs and small.rs).
unsafe impl<T: Sync> Sync for Problem<T> {}

/// A raw pointer that may cross to the team's threads; each use says why the access is disjoint.
#[derive(Clone, Copy)]
pub(super) struct SendPtr<T>(pub *mut T);
// SAFETY: only used for buffers whose parts are handed to distinct threads (see each use).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// A method, not `.0`, so closures capture the whole (Send) wrapper.
    pub fn get(self) -> *mut T {
        self.0
    }
}

impl<'a, T: HasKernels> From<Gemm<'a, T>> for Problem<T> {
    fn from(g: Gemm<'a, T>) -> Self {
        Problem {
            m: g.c.rows,
            n: g.c.cols,
            k: g.a.cols,
            a: g.a.block(),
            b: g.b.block(),
            c: g.c.ptr,
            c_rs: g.c.rs,
            c_cs: g.c.cs,
            ep: g.ep,
            a_row_sums: g.a_row_sums.map(|s| s.as_mut_ptr()),
            b_col_sums: g.b_col_sums.map(|s| s.as_mut_ptr()),
            parallel: g.parallel,
            precision: if T::KIND == ElementKind::F32 { g.precision } else { Precision::Highest },
            swapped: false,
        }
    }
}

impl<T: HasKernels> Problem<T> {
    /// The same product as Cᵀ = Bᵀ Aᵀ (the kernels store whole vectors along C's rows, so a
    /// column-major C is computed as its row-major transpose).
    pub fn transposed(self) -> Self {
        Problem {
            m: self.n,
            n: self.m,
            a: Block { ptr: self.b.ptr, rs: self.b.cs, cs: self.b.rs },
            b: Block { ptr: self.a.ptr, rs: self.a.cs, cs: self.a.rs },
            c_rs: self.c_cs,
            c_cs: self.c_rs,
            ep: self.ep.transposed(),
            a_row_sums: self.b_col_sums,
            b_col_sums: self.a_row_sums,
            swapped: !self.swapped,
            ..self
        }
    }

    /// Rows `r0..r1` of C as a problem of their own: A's rows and the epilogue's operands
    /// from `r0` on. Only the part starting at row 0 keeps B's column sums (they are summed
    /// once, by whichever part computes them).
    pub fn rows(&self, r0: usize, r1: usize) -> Self {
        debug_assert!(r0 <= r1 && r1 <= self.m);
        Problem {
            m: r1 - r0,
            a: Block { ptr: self.a.ptr.wrapping_offset(r0 as isize * self.a.rs), ..self.a },
            c: self.c.wrapping_offset(r0 as isize * self.c_rs),
            ep: self.ep.from(r0, 0),
            a_row_sums: self.a_row_sums.map(|s| s.wrapping_add(r0)),
            b_col_sums: self.b_col_sums.filter(|_| r0 == 0),
            ..*self
        }
    }

    /// The same problem on the caller's A, B and C `oa`, `ob`, `oc` elements further on (the
    /// next matrices of a batch).
    pub fn shifted(&self, oa: isize, ob: isize, oc: isize) -> Self {
        let (oa, ob) = if self.swapped { (ob, oa) } else { (oa, ob) };
        Problem {
            a: Block { ptr: self.a.ptr.wrapping_offset(oa), ..self.a },
            b: Block { ptr: self.b.ptr.wrapping_offset(ob), ..self.b },
            c: self.c.wrapping_offset(oc),
            ..*self
        }
    }

    /// How the tile at `(i, j)` of `rows × cols` is stored by a pass over one block of k.
    pub fn store(&self, i: usize, j: usize, rows: usize, cols: usize, first_k: bool, last_k: bool) -> TileStore<T> {
        TileStore {
            // SAFETY (offset): i < m and j < n, so the tile origin lies inside C.
            c: unsafe { self.c.offset(i as isize * self.c_rs + j as isize * self.c_cs) },
            rs: self.c_rs,
            cs: self.c_cs,
            rows,
            cols,
            ep: self.ep.for_k_block(first_k, last_k).from(i, j),
        }
    }

    /// # Safety
    /// The views behind the problem are valid (their constructors' promises and Gemm::new's
    /// shape check); `isa` is supported by this CPU.
    pub unsafe fn run(&self, isa: Isa) {
        let plan = plan(self, isa);
        let (serial, shared);
        let team = if plan.parallel {
            shared = threads::team();
            &*shared
        } else {
            serial = Team::SERIAL;
            &serial
        };
        self.run_planned(&plan, isa, team)
    }

    /// [`Problem::run`] with a plan made for a problem of the same shapes and strides.
    ///
    /// # Safety
    /// As for [`Problem::run`]; `plan` is `plan(p, isa)` for a `p` like this one.
    pub unsafe fn run_planned(&self, plan: &Plan<T>, isa: Isa, team: &Team) {
        match plan.path {
            Path::Empty => self.run_empty(),
            // The plan takes this path for f32 only; the cast only renames T.
            #[cfg(target_arch = "x86_64")]
            Path::Amx => super::amx::run(&*(self as *const Problem<T>).cast::<Problem<f32>>(), team),
            #[cfg(not(target_arch = "x86_64"))]
            Path::Amx => unreachable!("AMX is x86-64 only"),
            Path::Vector => vector::gemv(self, isa, team),
            Path::Outer => outer::outer(self, isa, team),
            Path::Thin => thin::thin(self, isa, team),
            Path::FewRows => few_rows::few_rows(self, isa, team),
            Path::Tall => tiny::tall(self, isa, team),
            Path::Direct => small::gemm_direct(self, isa),
            Path::InPlace(run) => small::gemm_in_place(self, &plan.kernel, run, plan.blocking.kc, team),
            Path::InPlaceCopyingB(run) => small::gemm_in_place_copying_b(self, &plan.kernel, run, plan.blocking.kc, team),
            Path::Packed => self.run_packed(&plan.kernel, plan.blocking, team),
        }
    }

    /// k = 0 (C = beta C + bias, through the epilogue), or an empty C (only the sums).
    unsafe fn run_empty(&self) {
        sums::add_up(self);
        let ep = self.ep.for_k_block(true, true);
        for i in 0..self.m {
            for j in 0..self.n {
                let c = self.c.offset(i as isize * self.c_rs + j as isize * self.c_cs);
                ep.store_at(T::ZERO, c, i, j, T::mul_add);
            }
        }
    }
}
