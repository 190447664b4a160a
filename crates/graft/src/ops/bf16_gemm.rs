//! `C = A · B` for f32 matrices with bf16 products and f32 sums, on CPUs with AVX-512 BF16.
//!
//! `vdpbf16ps` multiplies pairs of bf16 values and adds both products into one f32 lane: twice
//! the products of an f32 FMA per instruction (measured on a Zen 4 core: 325 against 182
//! GFLOP/s). The operands are rounded to bf16 (round to nearest even) while they are packed
//! into the kernel's layout, and the sums stay in f32, as PyTorch's bf16 autocast does for a
//! CPU matmul. `B` is packed once and shared; the rows of `C` are split over the thread pool,
//! each task packing its own rows of `A`.
//!
//! Layouts: a packed `B` panel holds, for every pair of reduction indices `(2p, 2p + 1)` and
//! each of its [`NR`] columns, the two bf16 values in one 32-bit word (low half first), so one
//! 512-bit load feeds 16 columns; a packed `A` panel holds the same pairs for its [`MR`] rows,
//! each broadcast to every lane. An odd reduction length is padded with a zero.

use super::cpu::rows_per_task;
use rayon::prelude::*;

/// Rows of the register tile.
const MR: usize = 12;
/// Columns of the register tile (two 16-lane registers).
const NR: usize = 32;
/// Reduction indices per block: one packed `B` panel (`KC × NR` bf16, 16 KB) stays in L1.
const KC: usize = 256;
/// Columns of `C` per pass over a task's rows, at most: a task's part of one pass (about 130
/// rows of at most 512 values, 270 KB) stays in L2 across the reduction blocks; wider products
/// split into even passes over the same packed `A`. Measured on SmolLM2's products
/// (`graft bench matmul`, 1,024 rows, Zen 4): 1,536 columns per pass ran the 1,536-wide
/// products at 450 GFLOP/s, 768 or 512 at 610 to 780.
const NC: usize = 512;
/// Rows of `C` per parallel task, at least.
const MIN_ROWS_PER_TASK: usize = 4 * MR;

/// A read-only f32 matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl MatRef<'_> {
    /// Whether every element lies inside `data` (the packing reads with masked vector loads,
    /// which slice indexing does not check).
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// The value at `(i, j)` as bf16 bits, 0 outside the matrix (the padding of the packed
    /// panels).
    fn bf16_at(&self, i: usize, j: usize) -> u32 {
        if i < self.rows && j < self.cols {
            half::bf16::from_f32(self.at(i, j)).to_bits() as u32
        } else {
            0
        }
    }
}

/// Whether this CPU runs the bf16 kernel (AVX-512 F and BF16), detected once.
pub(crate) fn available() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `A [m, k] · B [k, n]`, plus `init` (row-major `[m, n]`) when given, as a row-major `[m, n]`
/// f32 buffer; `None` when this CPU lacks the instructions (see [`available`]). Adding `init`
/// here spares the caller a separate pass over the output (a LoRA projection adds its low-rank
/// update this way).
pub(crate) fn gemm_bf16(a: MatRef<'_>, b: MatRef<'_>, init: Option<&[f32]>) -> Option<Vec<f32>> {
    assert_eq!(a.cols, b.rows, "gemm_bf16: inner dimensions differ");
    assert!(a.fits() && b.fits(), "gemm_bf16: a view reaches past its values");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if let Some(init) = init {
        assert_eq!(init.len(), m * n, "gemm_bf16: the added matrix is not [m, n]");
    }
    if !available() {
        return None;
    }
    let mut c = vec![0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        if let Some(init) = init {
            c.copy_from_slice(init);
        }
        return Some(c);
    }
    let packed_b = pack_b(&b);
    let rows = rows_per_task(m, MIN_ROWS_PER_TASK).next_multiple_of(MR);
    c.par_chunks_mut(rows * n).enumerate().for_each(|(task, c_rows)| {
        let first = task * rows;
        let count = c_rows.len() / n;
        if let Some(init) = init {
            c_rows.copy_from_slice(&init[first * n..(first + count) * n]);
        }
        // The task's rows of `A`, every reduction block, packed once for all passes.
        let a_block_words = count.next_multiple_of(MR) * KC / 2;
        let mut packed_a = vec![0u32; k.div_ceil(KC) * a_block_words];
        for (block, k0) in (0..k).step_by(KC).enumerate() {
            let words = &mut packed_a[block * a_block_words..(block + 1) * a_block_words];
            pack_a(&a, first, count, k0, KC.min(k - k0), words);
        }
        let pass = n.div_ceil(n.div_ceil(NC)).next_multiple_of(NR);
        for j0 in (0..n).step_by(pass) {
            let nc = pass.min(n - j0);
            for (block, k0) in (0..k).step_by(KC).enumerate() {
                let pairs = KC.min(k - k0).div_ceil(2);
                let a_block = &packed_a[block * a_block_words..];
                let b_block = &packed_b[block * n.next_multiple_of(NR) * KC / 2 + j0 * pairs..];
                // SAFETY: `available` checked AVX-512 F and BF16 on this CPU; `c_rows` holds
                // `count` rows of `n`, of which columns `j0..j0 + nc` are written.
                unsafe { block_product(a_block, b_block, pairs, count, nc, c_rows[j0..].as_mut_ptr(), n) };
            }
        }
    });
    Some(c)
}

/// Every `KC` block of `B`, each as its `NR`-column panels of pairs; a block's panels take
/// `n.next_multiple_of(NR) · KC / 2` words whatever its length.
fn pack_b(b: &MatRef<'_>) -> Vec<u32> {
    let (k, n) = (b.rows, b.cols);
    let block_words = n.next_multiple_of(NR) * KC / 2;
    let mut out = vec![0u32; k.div_ceil(KC) * block_words];
    // Columns of `B` are the lanes: its transpose puts them on rows, as `pack` wants.
    let bt = MatRef { data: b.data, rows: n, cols: k, row_stride: b.col_stride, col_stride: b.row_stride };
    out.par_chunks_mut(block_words).enumerate().for_each(|(block, words)| {
        let k0 = block * KC;
        let kc = KC.min(k - k0);
        let panel_words = kc.div_ceil(2) * NR;
        words[..n.div_ceil(NR) * panel_words].par_chunks_mut(panel_words).enumerate().for_each(|(panel, words)| {
            // SAFETY: packing runs only where `available` found AVX-512 F and BF16.
            unsafe { pack(&bt, panel * NR, NR.min(n - panel * NR), k0, kc, NR, words) }
        });
    });
    out
}

/// Rows `first..first + count` of `A`, columns `k0..k0 + kc`, as `MR`-row panels of pairs.
fn pack_a(a: &MatRef<'_>, first: usize, count: usize, k0: usize, kc: usize, out: &mut [u32]) {
    let panel_words = kc.div_ceil(2) * MR;
    for (panel, words) in out.chunks_mut(panel_words).take(count.div_ceil(MR)).enumerate() {
        let lanes = MR.min(count - panel * MR);
        // SAFETY: packing runs only where `available` found AVX-512 F and BF16.
        unsafe { pack(a, first + panel * MR, lanes, k0, kc, MR, words) }
    }
}

/// One panel: rows `first..first + lanes` of `v` are the lanes (padded with zeros to `width`),
/// its columns `k0..k0 + kc` the reduction; `out[p · width + lane]` holds the pair `2p, 2p + 1`.
/// Rounding is to nearest even (the CPU's `vcvtneps2bf16`, which takes subnormals to zero, for
/// the two layouts with a contiguous axis; `half`'s conversion for other strides).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack(v: &MatRef<'_>, first: usize, lanes: usize, k0: usize, kc: usize, width: usize, out: &mut [u32]) {
    use std::arch::x86_64::*;
    let pairs = kc.div_ceil(2);
    let out = &mut out[..pairs * width];
    if lanes < width {
        out.fill(0);
    }
    if v.col_stride == 1 {
        // Each lane's reduction values are contiguous: convert them as a run, then spread.
        let mut run = [0u32; KC / 2];
        for lane in 0..lanes {
            let start = (first + lane) * v.row_stride + k0;
            to_bf16_pairs(&v.data[start..start + kc], &mut run[..pairs]);
            for (p, &word) in run[..pairs].iter().enumerate() {
                out[p * width + lane] = word;
            }
        }
    } else if v.row_stride == 1 {
        // The lanes are contiguous: two columns at a time, 16 lanes per instruction.
        for p in 0..pairs {
            let (lo_col, hi_col) = (k0 + 2 * p, k0 + 2 * p + 1);
            for l0 in (0..lanes).step_by(16) {
                let mask: __mmask16 = if lanes - l0 >= 16 { 0xffff } else { (1u16 << (lanes - l0)) - 1 };
                let column = |col: usize| {
                    let at = first + l0 + col * v.col_stride;
                    debug_assert!(at + (lanes - l0).min(16) <= v.data.len());
                    // SAFETY: the masked lanes lie inside the matrix (rows < v.rows).
                    let x = unsafe { _mm512_maskz_loadu_ps(mask, v.data.as_ptr().add(at)) };
                    let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(x));
                    _mm512_cvtepu16_epi32(h)
                };
                let lo = column(lo_col);
                let words =
                    if hi_col < k0 + kc { _mm512_or_si512(lo, _mm512_slli_epi32(column(hi_col), 16)) } else { lo };
                _mm512_mask_storeu_epi32(out.as_mut_ptr().add(p * width + l0).cast(), mask, words);
            }
        }
    } else {
        for p in 0..pairs {
            for lane in 0..lanes {
                let (i, j) = (first + lane, k0 + 2 * p);
                let lo = v.bf16_at(i, j);
                let hi = if j + 1 < k0 + kc { v.bf16_at(i, j + 1) } else { 0 };
                out[p * width + lane] = lo | hi << 16;
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack(_: &MatRef<'_>, _: usize, _: usize, _: usize, _: usize, _: usize, _: &mut [u32]) {
    unreachable!("the bf16 kernel runs only where `available` found it")
}

/// `src` rounded to bf16, two values per word (the first in the low half; an odd tail is
/// padded with 0).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn to_bf16_pairs(src: &[f32], dst: &mut [u32]) {
    use std::arch::x86_64::*;
    debug_assert_eq!(dst.len(), src.len().div_ceil(2));
    for (chunk, words) in src.chunks(32).zip(dst.chunks_mut(16)) {
        let (lo_n, hi_n) = (chunk.len().min(16), chunk.len().saturating_sub(16));
        let mask = |n: usize| -> __mmask16 {
            if n >= 16 {
                0xffff
            } else {
                (1u16 << n) - 1
            }
        };
        // SAFETY: the masks cover only the chunk's own elements.
        let lo = _mm512_maskz_loadu_ps(mask(lo_n), chunk.as_ptr());
        let hi = if hi_n > 0 { _mm512_maskz_loadu_ps(mask(hi_n), chunk.as_ptr().add(16)) } else { _mm512_setzero_ps() };
        let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_mask_storeu_epi32(words.as_mut_ptr().cast(), mask(words.len()), packed);
    }
}

/// Adds the product of one packed block of `A` (`count` rows) and of `B` (`n` columns from the
/// block's first panel, `pairs` pairs) into `count × n` values at `c`, rows `ldc` apart.
///
/// # Safety
/// `c` must address `count` rows of `n` writable values `ldc` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn block_product(a: &[u32], b: &[u32], pairs: usize, count: usize, n: usize, c: *mut f32, ldc: usize) {
    for panel in 0..n.div_ceil(NR) {
        let b_panel = &b[panel * pairs * NR..(panel + 1) * pairs * NR];
        let cols = NR.min(n - panel * NR);
        for strip in 0..count.div_ceil(MR) {
            let a_panel = &a[strip * pairs * MR..(strip + 1) * pairs * MR];
            let rows = MR.min(count - strip * MR);
            tile_product(a_panel, b_panel, pairs, c.add(strip * MR * ldc + panel * NR), ldc, rows, cols);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block_product(_: &[u32], _: &[u32], _: usize, _: usize, _: usize, _: *mut f32, _: usize) {
    unreachable!("the bf16 kernel runs only where `available` found it")
}

/// Adds the `MR × NR` product of one packed `A` panel and one packed `B` panel into the first
/// `rows × cols` of the tile at `c` (row stride `ldc`).
///
/// # Safety
/// `c` must address `rows` rows of `cols` writable values `ldc` apart; the panels must hold
/// `pairs` groups of `MR` and `NR` words.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_product(a: &[u32], b: &[u32], pairs: usize, c: *mut f32, ldc: usize, rows: usize, cols: usize) {
    use std::arch::x86_64::*;
    debug_assert!(a.len() >= pairs * MR && b.len() >= pairs * NR);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut ap, mut bp) = (a.as_ptr(), b.as_ptr());
    for _ in 0..pairs {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.cast()));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(16).cast()));
        for (r, row) in acc.iter_mut().enumerate() {
            let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(r) as i32));
            row[0] = _mm512_dpbf16_ps(row[0], x, b0);
            row[1] = _mm512_dpbf16_ps(row[1], x, b1);
        }
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    let mask = |n: usize| -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            (1u16 << n) - 1
        }
    };
    let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
    for (r, row) in acc.iter().enumerate().take(rows) {
        let out = c.add(r * ldc);
        _mm512_mask_storeu_ps(out, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, out), row[0]));
        if m1 != 0 {
            let out = out.add(16);
            _mm512_mask_storeu_ps(out, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, out), row[1]));
        }
    }
}

/// The reference the kernel is tested against: every product of bf16-rounded operands, summed
/// in f64.
#[cfg(test)]
fn reference(a: &MatRef<'_>, b: &MatRef<'_>) -> Vec<f64> {
    let r = |v: f32| half::bf16::from_f32(v).to_f64();
    let mut c = vec![0f64; a.rows * b.cols];
    for i in 0..a.rows {
        for j in 0..b.cols {
            c[i * b.cols + j] = (0..a.cols).map(|p| r(a.at(i, p)) * r(b.at(p, j))).sum();
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::super::cpu::seeded_values as random;
    use super::*;

    /// Checks `gemm_bf16` against [`reference`] with `B` stored row-major or transposed, within
    /// f32 rounding of the sums.
    fn check(m: usize, k: usize, n: usize) {
        let av = random(m * k, (m * 31 + k) as u64);
        let bv = random(k * n, (n * 17 + k) as u64);
        let a = MatRef { data: &av, rows: m, cols: k, row_stride: k, col_stride: 1 };
        let sparse: Vec<f32> = av.iter().flat_map(|&v| [v, f32::NAN]).collect();
        for a in [
            a,
            MatRef { data: &av, rows: m, cols: k, row_stride: 1, col_stride: m },
            MatRef { data: &sparse, rows: m, cols: k, row_stride: 2 * k, col_stride: 2 },
        ] {
            check_with(a, &bv, k, n);
        }
    }

    fn check_with(a: MatRef<'_>, bv: &[f32], k: usize, n: usize) {
        let m = a.rows;
        for b in [
            MatRef { data: bv, rows: k, cols: n, row_stride: n, col_stride: 1 },
            MatRef { data: bv, rows: k, cols: n, row_stride: 1, col_stride: k },
        ] {
            let want = reference(&a, &b);
            let got = gemm_bf16(a, b, None).expect("checked available()");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let bound = 1e-6 * k as f64 + 1e-5 * w.abs();
                assert!((*g as f64 - w).abs() <= bound, "{m}×{k}×{n} at {i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn products_of_rounded_operands_on_odd_shapes_and_tails() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BF16 (the callers use f32 here)");
            return;
        }
        for (m, k, n) in
            [(1, 1, 1), (12, 2, 32), (13, 3, 33), (50, 257, 70), (97, 576, 65), (200, 513, 31), (30, 40, 1100)]
        {
            check(m, k, n);
        }
    }

    #[test]
    #[should_panic(expected = "reaches past its values")]
    fn a_view_past_its_values_is_refused() {
        let v = [1.0f32; 6];
        let a = MatRef { data: &v, rows: 2, cols: 3, row_stride: 3, col_stride: 1 };
        let b = MatRef { data: &v, rows: 3, cols: 3, row_stride: 3, col_stride: 1 };
        gemm_bf16(a, b, None);
    }

    #[test]
    fn rounding_is_to_nearest_even_and_keeps_signs() {
        if !available() {
            return;
        }
        // 1 + 2⁻⁸ lies halfway between two bf16 values and rounds to even (1.0); 1 + 3·2⁻⁸ rounds
        // up to 1 + 2⁻⁶.
        let av = [1.0 + 1.0 / 256.0, -(1.0 + 3.0 / 256.0)];
        let bv = [1.0f32, 1.0];
        let a = MatRef { data: &av, rows: 1, cols: 2, row_stride: 2, col_stride: 1 };
        let b = MatRef { data: &bv, rows: 2, cols: 1, row_stride: 1, col_stride: 1 };
        assert_eq!(gemm_bf16(a, b, None).unwrap(), vec![1.0 - (1.0 + 1.0 / 64.0)]);
        // An added matrix is added to the product.
        assert_eq!(gemm_bf16(a, b, Some(&[0.5])).unwrap(), vec![0.5 + 1.0 - (1.0 + 1.0 / 64.0)]);
    }
}
