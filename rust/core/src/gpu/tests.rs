//! GEMM and column sums on the device against a naive loop. Skipped (with a message) when the
//! machine has no adapter; CI installs lavapipe so that they run.

use super::*;

fn ctx() -> Option<&'static Context> {
    match context() {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn read(ctx: &Context, buf: &Buffer) -> Vec<f32> {
    let mut out = vec![f32::NAN; buf.len()];
    ctx.download(buf, &mut out).unwrap();
    out
}

#[test]
fn gemm_matches_naive_for_edge_shapes_transposes_bias_and_accumulate() {
    let Some(ctx) = ctx() else { return };
    for &(m, n, k) in &[(1, 1, 1), (3, 5, 1), (17, 63, 65), (65, 1, 129), (64, 64, 16), (1, 130, 7)] {
        for (ta, tb, with_bias, accumulate) in [(false, false, false, false), (true, true, true, true), (true, false, true, false)] {
            let (av, bv, cv, biasv) = (values(m * k, 1), values(k * n, 2), values(m * n, 3), values(n, 4));
            let (a, b, c, bias) =
                (ctx.upload(&av).unwrap(), ctx.upload(&bv).unwrap(), ctx.upload(&cv).unwrap(), ctx.upload(&biasv).unwrap());
            // A stored (m, k) or, transposed, (k, m); likewise B.
            let a_op = if ta { Operand::row_major(&a, m).t() } else { Operand::row_major(&a, k) };
            let b_op = if tb { Operand::row_major(&b, k).t() } else { Operand::row_major(&b, n) };
            let op = GemmOp {
                a: a_op,
                b: b_op,
                c: Operand::row_major(&c, n),
                m,
                n,
                k,
                batch: 1,
                bias: with_bias.then_some((&bias, 0)),
                accumulate,
            };
            ctx.gemm(&op).unwrap();
            let got = read(ctx, &c);
            for i in 0..m {
                for j in 0..n {
                    let mut want = if accumulate { cv[i * n + j] as f64 } else { 0.0 };
                    if with_bias {
                        want += biasv[j] as f64;
                    }
                    for p in 0..k {
                        let x = if ta { av[p * m + i] } else { av[i * k + p] };
                        let y = if tb { bv[j * k + p] } else { bv[p * n + j] };
                        want += x as f64 * y as f64;
                    }
                    let tol = 4.0 * (k as f64 + 2.0) * f32::EPSILON as f64;
                    assert!(
                        (got[i * n + j] as f64 - want).abs() <= tol,
                        "({m}, {n}, {k}) ta={ta} tb={tb} at ({i}, {j}): {} vs {want}",
                        got[i * n + j]
                    );
                }
            }
        }
    }
}

#[test]
fn batched_gemm_broadcasts_and_column_sums_add_rows() {
    let Some(ctx) = ctx() else { return };
    let (batch, m, n, k) = (3, 5, 7, 9);
    let (av, bv) = (values(batch * m * k, 5), values(k * n, 6));
    let (a, b, c) = (ctx.upload(&av).unwrap(), ctx.upload(&bv).unwrap(), ctx.zeros(batch * m * n).unwrap());
    let op = GemmOp {
        a: Operand { batch_stride: m * k, ..Operand::row_major(&a, k) },
        b: Operand::row_major(&b, n), // batch stride 0: one B for every batch
        c: Operand { batch_stride: m * n, ..Operand::row_major(&c, n) },
        m,
        n,
        k,
        batch,
        bias: None,
        accumulate: false,
    };
    ctx.gemm(&op).unwrap();
    let got = read(ctx, &c);
    for z in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| av[z * m * k + i * k + p] * bv[p * n + j]).sum();
                assert!((got[z * m * n + i * n + j] - want).abs() < 1e-5);
            }
        }
    }
    let sums = ctx.zeros(n).unwrap();
    ctx.column_sums(Operand::row_major(&c, n), batch * m, n, &sums, 0).unwrap();
    let got_sums = read(ctx, &sums);
    for j in 0..n {
        let want: f32 = (0..batch * m).map(|r| got[r * n + j]).sum();
        assert!((got_sums[j] - want).abs() < 1e-4);
    }
}

#[test]
fn operands_reaching_outside_their_buffers_are_refused() {
    let Some(ctx) = ctx() else { return };
    let a = ctx.zeros(6).unwrap();
    let c = ctx.zeros(4).unwrap();
    let op = GemmOp {
        a: Operand::row_major(&a, 3),
        b: Operand::row_major(&a, 2),
        c: Operand::row_major(&c, 2),
        m: 2,
        n: 2,
        k: 4, // A would need 8 elements
        batch: 1,
        bias: None,
        accumulate: false,
    };
    assert!(matches!(ctx.gemm(&op), Err(GpuError::Invalid(_))));
    let op = GemmOp { c: Operand::row_major(&a, 2), k: 3, ..op };
    assert!(matches!(ctx.gemm(&op), Err(GpuError::Invalid(_))), "output aliasing an input");
}
