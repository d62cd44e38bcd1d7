// C = A B (+ bias along columns) (+ C when accumulating), f32, batched, on strided operands.
//
// Element (i, j) of batch z of an operand X sits at x_off + z*x_bs + i*x_rs + j*x_cs, so a
// transposed operand is the same buffer with its two strides swapped, and a broadcast batch
// has x_bs = 0: the backward products G Bᵀ and Aᵀ G read their operands in place.
//
// Tiling: one workgroup computes a TM × TN = 64 × 64 tile of C with 16 × 16 invocations, each
// accumulating a 4 × 4 register block (four vec4 rows). K advances in slices of BK = 16: the
// workgroup stages A (64 × 16) and B (16 × 64) in workgroup memory (2 × 4 KiB, well inside
// the 16 KiB default), then every invocation reads vec4s of both from there. Loads outside
// the matrices stage zeros and stores outside C are skipped, so any m, n, k (1, 0, primes)
// works with the same code.

struct Params {
    m: u32, n: u32, k: u32, flags: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_bs: u32,
    b_off: u32, b_rs: u32, b_cs: u32, b_bs: u32,
    c_off: u32, c_rs: u32, c_cs: u32, c_bs: u32,
    bias_off: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

const FLAG_BIAS: u32 = 1u;
const FLAG_ACCUMULATE: u32 = 2u;

const TM: u32 = 64u;
const TN: u32 = 64u;
const BK: u32 = 16u;
const THREADS: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

// k-major: slice row kk holds TM (or TN) values, 16 vec4s; invocation (x, y) reads vec4 y of
// A's row and vec4 x of B's row.
var<workgroup> a_tile: array<vec4<f32>, 256>; // [BK][TM / 4]
var<workgroup> b_tile: array<vec4<f32>, 256>; // [BK][TN / 4]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let tid = lid.y * 16u + lid.x;
    let a_base = p.a_off + wid.z * p.a_bs;
    let b_base = p.b_off + wid.z * p.b_bs;
    // Neighbouring invocations load neighbouring addresses: along k when A's rows are
    // contiguous (a_cs = 1), along i otherwise (a transposed A); likewise for B.
    let a_k_fastest = p.a_cs == 1u;
    let b_j_fastest = p.b_cs == 1u;

    var acc: array<vec4<f32>, 4>;
    for (var r = 0u; r < 4u; r++) {
        acc[r] = vec4<f32>(0.0);
    }

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var s = 0u; s < 4u; s++) {
            let idx = tid + s * THREADS;
            var ii: u32;
            var kk: u32;
            if (a_k_fastest) {
                kk = idx % BK;
                ii = idx / BK;
            } else {
                ii = idx % TM;
                kk = idx / TM;
            }
            let i = row0 + ii;
            let ka = k0 + kk;
            var va = 0.0;
            if (i < p.m && ka < p.k) {
                va = a[a_base + i * p.a_rs + ka * p.a_cs];
            }
            a_tile[kk * (TM / 4u) + ii / 4u][ii % 4u] = va;

            var jj: u32;
            var kb: u32;
            if (b_j_fastest) {
                jj = idx % TN;
                kb = idx / TN;
            } else {
                kb = idx % BK;
                jj = idx / BK;
            }
            let j = col0 + jj;
            let kg = k0 + kb;
            var vb = 0.0;
            if (j < p.n && kg < p.k) {
                vb = b[b_base + kg * p.b_rs + j * p.b_cs];
            }
            b_tile[kb * (TN / 4u) + jj / 4u][jj % 4u] = vb;
        }
        workgroupBarrier();

        for (var kk = 0u; kk < BK; kk++) {
            let av = a_tile[kk * (TM / 4u) + lid.y];
            let bv = b_tile[kk * (TN / 4u) + lid.x];
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
        workgroupBarrier();
    }

    let c_base = p.c_off + wid.z * p.c_bs;
    for (var r = 0u; r < 4u; r++) {
        let i = row0 + lid.y * 4u + r;
        if (i >= p.m) {
            break;
        }
        for (var q = 0u; q < 4u; q++) {
            let j = col0 + lid.x * 4u + q;
            if (j >= p.n) {
                break;
            }
            var v = acc[r][q];
            if ((p.flags & FLAG_BIAS) != 0u) {
                v += bias[p.bias_off + j];
            }
            let at = c_base + i * p.c_rs + j * p.c_cs;
            if ((p.flags & FLAG_ACCUMULATE) != 0u) {
                v += c[at];
            }
            c[at] = v;
        }
    }
}
