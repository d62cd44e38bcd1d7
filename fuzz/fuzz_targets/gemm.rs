//! The core GEMM from arbitrary bytes: shapes, strided views of every kind (row and column
//! major, gaps, reversed, broadcast, and views that reach outside their slice, which must be
//! refused before anything is read), alpha and beta, the epilogue (bias on either axis, ReLU,
//! ReLU mask, row and column sums), the kernel and the thread count; against a naive
//! reference. Values are small integers, so the results must match exactly; C lives in a
//! buffer whose other elements hold a sentinel that must survive.
#![no_main]

use std::panic::{catch_unwind, AssertUnwindSafe};

use libfuzzer_sys::fuzz_target;
use matgrad_core::gemm::{BiasAxis, Gemm, Isa, MatMut, MatRef, VecRef};
use matgrad_core::threads;

const SENTINEL: f64 = 1.0e300;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }
    fn size(&mut self) -> usize {
        match self.byte() {
            b @ 0..=199 => (b % 20) as usize,
            b => 20 + (b as usize - 200) * 2, // up to 130: past the register and cache blocks
        }
    }
}

/// A strided layout for a rows × cols matrix: (base, rs, cs, buffer length).
struct Layout {
    base: usize,
    rs: isize,
    cs: isize,
    len: usize,
    in_bounds: bool,
}

fn layout(bytes: &mut Bytes, rows: usize, cols: usize, read_only: bool) -> Layout {
    let pad = bytes.below(3) as isize;
    let step = 1 + bytes.below(2) as isize;
    let (r, c) = (rows as isize, cols as isize);
    let (rs, cs) = match bytes.below(if read_only { 7 } else { 5 }) {
        0 => (c + pad, 1),
        1 => (1, r + pad),
        2 => (-(c + pad), -1),
        3 => (c * step + pad, step),
        4 => (-1, r * step + pad),
        5 => (0, 1),
        _ => (1, 0),
    };
    let far = |n: isize, s: isize| if n > 0 { (n - 1) * s } else { 0 };
    let lo = far(r, rs).min(0) + far(c, cs).min(0);
    let hi = far(r, rs).max(0) + far(c, cs).max(0);
    let shift = bytes.below(3) as isize;
    let base = (shift - lo) as usize;
    let needed = (base as isize + hi + 1) as usize;
    let mut len = needed + bytes.below(3);
    // Now and then a slice one or two elements too short: the view must be refused.
    if bytes.below(16) == 0 {
        len = needed.saturating_sub(1 + bytes.below(2));
    }
    let in_bounds = rows == 0 || cols == 0 || (base as isize + hi) < len as isize;
    Layout { base, rs, cs, len, in_bounds }
}

fn value(bytes: &mut Bytes) -> f64 {
    bytes.below(7) as f64 - 3.0
}

/// libfuzzer-sys's panic hook aborts at once, even for a panic that is caught; views reaching
/// outside their slice are refused by panicking, which this target catches and expects. So a
/// hook of its own: silent for that refusal, the default (then libFuzzer's abort) otherwise.
fn expect_refusals() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let refusal = info.payload().downcast_ref::<&str>().is_some_and(|m| m.contains("reaches outside its slice"));
            if !refusal {
                default(info);
                std::process::abort();
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    expect_refusals();
    let mut bytes = Bytes(data);
    let (m, k, n) = (bytes.size(), bytes.size(), bytes.size());
    let isas = Isa::supported();
    let isa = isas[bytes.below(isas.len())];
    let count = 1 + bytes.below(3);
    if threads::num_threads() != count {
        threads::set_num_threads(count).unwrap(); // (a new team: only when it changes)
    }

    let la = layout(&mut bytes, m, k, true);
    let lb = layout(&mut bytes, k, n, true);
    let lc = layout(&mut bytes, m, n, false);
    let fill = |len: usize, bytes: &mut Bytes| (0..len).map(|_| value(bytes)).collect::<Vec<f64>>();
    let a = fill(la.len, &mut bytes);
    let b = fill(lb.len, &mut bytes);
    // Views that reach outside their slice are refused (a panic) before anything is read.
    for (l, data, rows, cols) in [(&la, &a, m, k), (&lb, &b, k, n)] {
        let made = catch_unwind(AssertUnwindSafe(|| {
            MatRef::from_slice(data, l.base, rows, cols, l.rs, l.cs);
        }));
        assert_eq!(made.is_ok(), l.in_bounds, "from_slice of {rows}x{cols} base {} rs {} cs {} in {}", l.base, l.rs, l.cs, l.len);
    }
    if !(la.in_bounds && lb.in_bounds && lc.in_bounds) {
        return;
    }
    let mut c = vec![SENTINEL; lc.len];
    let at = |l: &Layout, i: usize, j: usize| (l.base as isize + i as isize * l.rs + j as isize * l.cs) as usize;
    for i in 0..m {
        for j in 0..n {
            c[at(&lc, i, j)] = value(&mut bytes);
        }
    }
    let alpha = [1.0, 2.0, -1.0, 0.5][bytes.below(4)];
    let beta = [0.0, 0.0, 1.0, -2.0][bytes.below(4)];
    let bias_axis = [None, Some(BiasAxis::Columns), Some(BiasAxis::Rows)][bytes.below(3)];
    let bias = fill(if bias_axis == Some(BiasAxis::Rows) { m } else { n }, &mut bytes);
    let relu = bytes.below(4) == 0;
    let mask = (bytes.below(5) == 0).then(|| fill(m * n, &mut bytes));
    let (want_row_sums, want_col_sums) = (bytes.below(4) == 0, bytes.below(4) == 0);

    // The reference, in the epilogue's order: relu(alpha·AB + beta·C + bias), then the mask.
    let mut want = c.clone();
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|p| a[at(&la, i, p)] * b[at(&lb, p, j)]).sum();
            let mut v = alpha * dot + if beta != 0.0 { beta * c[at(&lc, i, j)] } else { 0.0 };
            v += match bias_axis {
                Some(BiasAxis::Columns) => bias[j],
                Some(BiasAxis::Rows) => bias[i],
                None => 0.0,
            };
            if relu {
                v = v.max(0.0);
            }
            if let Some(mask) = &mask {
                if !(mask[i * n + j] > 0.0) {
                    v = 0.0;
                }
            }
            want[at(&lc, i, j)] = v;
        }
    }
    let mut row_sums = vec![f64::NAN; m];
    let mut col_sums = vec![f64::NAN; n];
    {
        let am = MatRef::from_slice(&a, la.base, m, k, la.rs, la.cs);
        let bm = MatRef::from_slice(&b, lb.base, k, n, lb.rs, lb.cs);
        let cm = MatMut::from_slice(&mut c, lc.base, m, n, lc.rs, lc.cs);
        let mut g = Gemm::new(am, bm, cm).unwrap().isa(isa).alpha(alpha).beta(beta).relu(relu);
        if let Some(axis) = bias_axis {
            g = g.bias(VecRef::from_slice(&bias), axis).unwrap();
        }
        if let Some(mask) = &mask {
            g = g.relu_grad_mask(MatRef::from_slice(mask, 0, m, n, n as isize, 1)).unwrap();
        }
        if want_row_sums {
            g = g.a_row_sums(&mut row_sums).unwrap();
        }
        if want_col_sums {
            g = g.b_col_sums(&mut col_sums).unwrap();
        }
        g.run();
    }
    for (idx, (got, want)) in c.iter().zip(&want).enumerate() {
        assert!(got.to_bits() == want.to_bits() || (*got == 0.0 && *want == 0.0), "C buffer[{idx}]: {got} != {want} ({m}x{k}x{n}, {isa:?})");
    }
    if want_row_sums {
        for i in 0..m {
            assert_eq!(row_sums[i], (0..k).map(|p| a[at(&la, i, p)]).sum::<f64>(), "row sum {i}");
        }
    }
    if want_col_sums {
        for j in 0..n {
            assert_eq!(col_sums[j], (0..k).map(|p| b[at(&lb, p, j)]).sum::<f64>(), "column sum {j}");
        }
    }
});
