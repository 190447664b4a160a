//! Many activation rows against a Q4_1 weight with 512-bit AVX-512 VNNI: prefill and batched
//! inference forwards.
//!
//! The row kernel of [`super::q4_1_matmul`] spends most of each 32-value block on bookkeeping
//! (widening the integer sums, a broadcast of the block's scale product, a scalar offset) and
//! unpacks each weight block again for every four activation rows. Here two blocks share one
//! 512-bit register: the activations are laid out once per call with the two blocks' 4-byte
//! groups interleaved, so a pair's scales are the repeating pattern `[d0, d1]` that one 64-bit
//! broadcast load reads; each weight pair is unpacked once for eight activation rows; and the
//! outputs are written straight into the row-major result (no transpose afterwards). The
//! quantized activations are the row kernel's, so both compute the same sums up to f32
//! rounding.

use super::cpu::rows_per_task;
#[cfg(target_arch = "x86_64")]
use super::cpu::{simd_level, SimdLevel};
use super::q4_1_matmul::{ActBlock, BLOCK, Q4_1_BYTES, ROW_TILE};
use rayon::prelude::*;

/// Activation rows handled per pass over a weight row.
const ROWS: usize = 8;
/// Whether this CPU runs the kernel: the VNNI level of [`simd_level`] (AVX2, FMA, F16C, AVX-512
/// VNNI and VL) with 512-bit AVX-512 F.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd_level() == SimdLevel::Avx512Vnni && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether an `m`-row product should take this kernel: enough rows to share the unpacking.
pub(super) fn applies(m: usize) -> bool {
    m >= ROWS && available()
}

/// Quantized activation rows in the kernel's layout: blocks in pairs (an odd last block is
/// paired with a zero block).
pub(super) struct PairedActs {
    /// Per row and pair, 64 bytes: 4-byte group `2t` is bytes `4t..4t + 4` of the first block,
    /// group `2t + 1` the same bytes of the second.
    qs: Vec<i8>,
    /// Per row and pair: `[d0, d1, s0 / 8, s1 / 8]` (each block's offset term is spread over the
    /// eight lanes that hold the block).
    scales: Vec<[f32; 4]>,
    pairs: usize,
}

impl PairedActs {
    /// Re-lays `m` rows of `k / 32` quantized blocks each.
    pub(super) fn new(acts: &[ActBlock], k: usize) -> Self {
        let nb = k / BLOCK;
        let m = acts.len().checked_div(nb).unwrap_or(0);
        let pairs = nb.div_ceil(2);
        let zero = ActBlock { qs: [0; BLOCK], d: 0.0, s: 0.0 };
        let mut qs = vec![0i8; m * pairs * 2 * BLOCK];
        let mut scales = vec![[0f32; 4]; m * pairs];
        for i in 0..m {
            let row = &acts[i * nb..(i + 1) * nb];
            for p in 0..pairs {
                let (b0, b1) = (&row[2 * p], row.get(2 * p + 1).unwrap_or(&zero));
                let out = &mut qs[(i * pairs + p) * 2 * BLOCK..][..2 * BLOCK];
                for (t, group) in out.chunks_exact_mut(8).enumerate() {
                    group[..4].copy_from_slice(&b0.qs[4 * t..4 * t + 4]);
                    group[4..].copy_from_slice(&b1.qs[4 * t..4 * t + 4]);
                }
                scales[i * pairs + p] = [b0.d, b1.d, b0.s / 8.0, b1.s / 8.0];
            }
        }
        Self { qs, scales, pairs }
    }
}

/// The output pointer shared by tasks that write disjoint columns.
struct SharedOut(*mut f32);
// SAFETY: every task writes only the columns of its own weight rows.
unsafe impl Sync for SharedOut {}
impl SharedOut {
    /// Writes `v` at `index` (the caller keeps writes of different tasks apart).
    unsafe fn write(&self, index: usize, v: f32) {
        *self.0.add(index) = v;
    }
}

/// `x Wᵀ` as row-major `[m, n]` for Q4_1 weight bytes `w` of `[n, k]`. Only call when
/// [`available`] says so.
pub(super) fn matmul(w: &[u8], acts: &PairedActs, n: usize, k: usize, m: usize) -> Vec<f32> {
    assert!(available(), "the Q4_1 tile kernel needs AVX-512 VNNI");
    let row_bytes = (k / BLOCK) * Q4_1_BYTES;
    assert_eq!(w.len(), n * row_bytes, "Q4_1 tile kernel: weight bytes");
    assert_eq!(acts.qs.len(), m * acts.pairs * 2 * BLOCK, "Q4_1 tile kernel: activation rows");
    let mut y = vec![0f32; m * n];
    if n == 0 || m == 0 || k == 0 {
        return y;
    }
    let out = SharedOut(y.as_mut_ptr());
    let per_task = rows_per_task(n, 8);
    (0..n.div_ceil(per_task)).into_par_iter().for_each(|task| {
        let out = &out;
        let (j0, j1) = (task * per_task, ((task + 1) * per_task).min(n));
        for i0 in (0..m).step_by(ROW_TILE) {
            let i1 = (i0 + ROW_TILE).min(m);
            for j in j0..j1 {
                let wrow = &w[j * row_bytes..(j + 1) * row_bytes];
                let mut i = i0;
                // SAFETY: `available()` checked every feature the kernel enables; row `i + r`
                // exists below `i1 <= m`, and column `j` belongs to this task alone.
                unsafe {
                    while i + ROWS <= i1 {
                        let v = x86::rows::<ROWS>(wrow, acts, i);
                        v.iter().enumerate().for_each(|(r, &v)| out.write((i + r) * n + j, v));
                        i += ROWS;
                    }
                    if i + 4 <= i1 {
                        let v = x86::rows::<4>(wrow, acts, i);
                        v.iter().enumerate().for_each(|(r, &v)| out.write((i + r) * n + j, v));
                        i += 4;
                    }
                    for i in i..i1 {
                        out.write(i * n + j, x86::rows::<1>(wrow, acts, i)[0]);
                    }
                }
            }
        }
    });
    y
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{PairedActs, BLOCK, Q4_1_BYTES};
    use std::arch::x86_64::*;

    /// One weight row against activation rows `first..first + R`.
    ///
    /// # Safety
    /// The CPU has every feature enabled here; `w` holds whole Q4_1 blocks of the activations'
    /// length and rows `first..first + R` exist.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni")]
    pub(super) unsafe fn rows<const R: usize>(w: &[u8], acts: &PairedActs, first: usize) -> [f32; R] {
        let nb = w.len() / Q4_1_BYTES;
        let pairs = acts.pairs;
        // Unpacked weights hold [lo0, lo1, hi0, hi1] in 128-bit lanes (lo: values 0..15 of a
        // block, hi: 16..31); this order interleaves the two blocks' 4-byte groups.
        let interleave = _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
        let scale_lanes = _mm512_setr_epi32(0, 2, 0, 2, 0, 2, 0, 2, 0, 2, 0, 2, 0, 2, 0, 2);
        let offset_lanes = _mm512_setr_epi32(1, 3, 1, 3, 1, 3, 1, 3, 1, 3, 1, 3, 1, 3, 1, 3);
        let nibble = _mm256_set1_epi8(0x0F);
        let mut last = [0u8; 2 * Q4_1_BYTES];
        let mut acc = [_mm512_setzero_ps(); R];
        for p in 0..pairs {
            let pair: &[u8] = if 2 * p + 2 <= nb {
                &w[2 * p * Q4_1_BYTES..(2 * p + 2) * Q4_1_BYTES]
            } else {
                // An odd last block, paired with a zero block (d = m = 0).
                last[..Q4_1_BYTES].copy_from_slice(&w[2 * p * Q4_1_BYTES..]);
                &last
            };
            let ptr = pair.as_ptr();
            let q = _mm256_loadu2_m128i(ptr.add(Q4_1_BYTES + 4) as *const __m128i, ptr.add(4) as *const __m128i);
            let lo = _mm256_and_si256(q, nibble);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble);
            let wq = _mm512_permutexvar_epi32(interleave, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
            let dm = _mm_cvtph_ps(_mm_set_epi32(
                0,
                0,
                std::ptr::read_unaligned(ptr.add(Q4_1_BYTES) as *const i32),
                std::ptr::read_unaligned(ptr as *const i32),
            ));
            let dm = _mm512_castps128_ps512(dm); // [d0, m0, d1, m1]
            let (wd, wm) = (_mm512_permutexvar_ps(scale_lanes, dm), _mm512_permutexvar_ps(offset_lanes, dm));
            for (r, acc) in acc.iter_mut().enumerate() {
                let at = (first + r) * pairs + p;
                let x = _mm512_loadu_si512(acts.qs.as_ptr().add(at * 2 * BLOCK) as *const __m512i);
                let s = acts.scales.as_ptr().add(at) as *const f64;
                let xd = _mm512_castpd_ps(_mm512_set1_pd(std::ptr::read_unaligned(s)));
                let xo = _mm512_castpd_ps(_mm512_set1_pd(std::ptr::read_unaligned(s.add(1))));
                let sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, x));
                *acc = _mm512_fmadd_ps(wm, xo, _mm512_fmadd_ps(sums, _mm512_mul_ps(wd, xd), *acc));
            }
        }
        acc.map(|a| _mm512_reduce_add_ps(a))
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::PairedActs;

    /// Never called: [`super::available`] is false off x86-64.
    pub(super) unsafe fn rows<const R: usize>(_: &[u8], _: &PairedActs, _: usize) -> [f32; R] {
        unreachable!("the Q4_1 tile kernel is x86-64 only")
    }
}
