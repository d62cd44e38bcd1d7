//! The five loops of the packed path (see the diagram in gemm/mod.rs), and how the threads
//! share them ([`Problem::run_packed`] chooses): either
//! the rows are split, each thread running all five loops on its own rows as a product of its
//! own (packing its A panels and its B blocks into its own caches, no barrier between), or the
//! A block is packed once by all threads together, each its share of the panels, and LOOP 3's
//! columns are split (with few columns, the rows too), each thread packing its own B block and
//! reading every panel of A.

use super::blocking::{even_block, Blocking};
use super::dispatch::HasKernels;
use super::kernel::MicroKernel;
use super::pack::{pack_a, pack_b, Block};
use super::precision::Rounding;
use super::problem::{Problem, SendPtr};
use crate::buffers::with_scratch;
use crate::threads::Team;

impl<T: HasKernels> Problem<T> {
    /// The packed path on `team`: C's rows split between the threads, each computing its own
    /// as a product of its own, where C is tall enough (at least [`ROW_SPLIT_MIN_PANELS`]
    /// panels per thread, and an A block at least as tall as C is wide); else the loops below
    /// with the columns split.
    ///
    /// Split rows: each thread reads only the A panels it packed, from its own cache, not
    /// lines another core has just written (Zen 4: 1024³ +7 %, 256 × 256 × 784 +31 %, 784 × 256
    /// × 64 +60 %), and waits for no other thread until the end (Xeon, against a barrier after
    /// each A block's packing: n = 384–1024 +1–5 %, n = 256 f64 −3 %); each packs B for
    /// all the columns, T times the B packing, which a wide C (256 × 1024 × 1024: −7 %) feels.
    /// The panels, hence the tiles, start where they would on one thread: the same bits.
    pub(super) unsafe fn run_packed(&self, kern: &MicroKernel<T>, blk: Blocking, team: &Team) {
        let threads = team.threads();
        let m_panels = self.m.div_ceil(kern.mr);
        let block_rows = even_block(self.m, blk.mc, kern.mr).min(self.m);
        if threads > 1 && m_panels >= ROW_SPLIT_MIN_PANELS * threads && block_rows >= self.n {
            let mr = kern.mr;
            // SAFETY: each task writes its own rows of C and of A's row sums; only the first
            // computes B's column sums.
            team.run(threads, |t| {
                let (p0, p1) = (m_panels * t / threads, m_panels * (t + 1) / threads);
                let part = self.rows(p0 * mr, (p1 * mr).min(self.m));
                part.run_blocks(kern, blk, &Team::SERIAL);
            });
        } else {
            self.run_blocks(kern, blk, team)
        }
    }

    /// LOOP 5 and LOOP 4: the A block, packed once and shared by all threads.
    unsafe fn run_blocks(&self, kern: &MicroKernel<T>, blk: Blocking, team: &Team) {
        let (m, n, k) = (self.m, self.n, self.k);
        let (isa, mr) = (kern.isa, kern.mr);
        if let Some(sums) = self.a_row_sums {
            core::ptr::write_bytes(sums, 0, m);
        }
        if let Some(sums) = self.b_col_sums {
            core::ptr::write_bytes(sums, 0, n);
        }
        // Equal blocks rather than full ones and a sliver: k = 2048 at KC = 680 would
        // otherwise end in a pass over all of C for 8 k steps. KC depends on k alone, so the
        // order of each sum still does not depend on the thread count.
        let blk = Blocking { mc: even_block(m, blk.mc, mr), kc: even_block(k, blk.kc, 8), ..blk };
        let mc_max = blk.mc.min(m.next_multiple_of(mr));
        let kc_max = blk.kc.min(k);
        with_scratch::<T, _>(mc_max * kc_max, |a_packed| {
            let a_packed = SendPtr(a_packed.as_mut_ptr());
            // The products summed: one, or three for precision "high" (precision.rs), each
            // like a further run of k blocks (the sums come from the first).
            let terms = self.precision.terms();
            for (term, &(round_a, round_b)) in terms.iter().enumerate() {
                let (first_term, last_term) = (term == 0, term + 1 == terms.len());
                // LOOP 5: rows of C in blocks of MC.
                for ic in (0..m).step_by(blk.mc) {
                    let mc = blk.mc.min(m - ic);
                    // LOOP 4: k in blocks of KC.
                    for pc in (0..k).step_by(blk.kc) {
                        let kc = blk.kc.min(k - pc);
                        let a_block = Block { ptr: self.a.at(ic, pc), ..self.a };
                        let row_sums = self.a_row_sums.filter(|_| first_term).map(|s| SendPtr(s.add(ic)));
                        let panels = mc.div_ceil(mr);
                        // SAFETY: each task packs (and rounds) its own panels and sums its own rows.
                        team.run_ranges(panels, 1, |range| {
                            pack_a(isa, mr, mc, kc, a_block, a_packed.get(), row_sums.map(SendPtr::get), range.clone());
                            round_a.apply_all(a_packed.get().add(range.start * mr * kc), range.len() * mr * kc);
                        });
                        let first = first_term && pc == 0;
                        let last = last_term && pc + kc == k;
                        let k_part = KPart { pc, kc, first, last, sum_cols: ic == 0 && first_term, round_b };
                        self.run_macro(kern, blk, team, ic, mc, k_part, a_packed.get());
                    }
                }
            }
        });
    }

    /// LOOP 3 (split into tasks across threads), then LOOP 2 and LOOP 1 inside each task.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_macro(&self, kern: &MicroKernel<T>, blk: Blocking, team: &Team, ic: usize, mc: usize, kp: KPart, a_packed: *mut T) {
        let (mr, nr) = (kern.mr, kern.nr);
        let threads = team.threads();
        let n_panels = self.n.div_ceil(nr);
        let m_panels = mc.div_ceil(mr);
        // The columns are split into chunks of whole NR panels (and the rows too if there are
        // fewer columns than threads).
        let n_chunks = threads.min(n_panels);
        let m_chunks = if n_chunks < threads { threads.div_ceil(n_chunks).min(m_panels) } else { 1 };
        let a_packed = SendPtr(a_packed);
        let task = |t: usize| {
            let (ni, mi) = (t / m_chunks, t % m_chunks);
            let q0 = n_panels * ni / n_chunks;
            let q1 = n_panels * (ni + 1) / n_chunks;
            let p0 = m_panels * mi / m_chunks;
            let p1 = m_panels * (mi + 1) / m_chunks;
            // Columns may only be summed by one task of each column range.
            let kp = KPart { sum_cols: kp.sum_cols && mi == 0, ..kp };
            self.run_task(kern, blk, ic, mc, kp, a_packed.get(), p0..p1, q0 * nr..(q1 * nr).min(self.n));
        };
        // SAFETY: tasks write disjoint tiles of C and disjoint column sums; A is only read.
        team.run(m_chunks * n_chunks, task);
    }

    /// One thread's share: LOOP 3 over its columns in blocks of NC (B block packed into this
    /// thread's L2), LOOP 2 over A micro-panels (each stays in L1), LOOP 1 over B micro-panels.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_task(
        &self,
        kern: &MicroKernel<T>,
        blk: Blocking,
        ic: usize,
        mc: usize,
        kp: KPart,
        a_packed: *const T,
        a_panels: core::ops::Range<usize>,
        cols: core::ops::Range<usize>,
    ) {
        let (isa, mr, nr) = (kern.isa, kern.mr, kern.nr);
        let kc = kp.kc;
        let nc_step = even_block(cols.len(), blk.nc, nr);
        let nc_max = nc_step.min(cols.len().next_multiple_of(nr));
        with_scratch::<T, _>(nc_max * kc, |b_packed| {
            let b_packed = b_packed.as_mut_ptr();
            // LOOP 3: columns in blocks of NC.
            for jc in cols.clone().step_by(nc_step) {
                let nc = nc_step.min(cols.end - jc);
                let b_block = Block { ptr: self.b.at(kp.pc, jc), ..self.b };
                let col_sums = if kp.sum_cols { self.b_col_sums.map(|s| s.add(jc)) } else { None };
                pack_b(isa, nr, nc, kc, b_block, b_packed, col_sums, 0..nc.div_ceil(nr));
                kp.round_b.apply_all(b_packed, nc.div_ceil(nr) * nr * kc);
                // LOOP 2: A micro-panels.
                for q in a_panels.clone() {
                    let i = q * mr;
                    let rows = mr.min(mc - i);
                    let a_panel = a_packed.add(q * mr * kc);
                    // LOOP 1: B micro-panels, one tile of C each.
                    for (r, j) in (0..nc).step_by(nr).enumerate() {
                        let st = self.store(ic + i, jc + j, rows, nr.min(nc - j), kp.first, kp.last);
                        (kern.run)(kc, a_panel, b_packed.add(r * nr * kc), &st);
                    }
                }
            }
        });
    }
}

/// C needs at least this many MR panels per thread to have its rows split among the threads.
const ROW_SPLIT_MIN_PANELS: usize = 4;

/// One block of the k dimension, and what happens in it.
#[derive(Clone, Copy)]
struct KPart {
    pc: usize,
    kc: usize,
    /// The first block stores with the caller's beta and the bias.
    first: bool,
    /// The last block applies relu.
    last: bool,
    /// Whether this pass over B also sums its columns (only the first row block does).
    sum_cols: bool,
    /// What packing does to B's elements in this pass (precision.rs).
    round_b: Rounding,
}
