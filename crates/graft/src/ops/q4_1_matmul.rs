//! `y = x Wᵀ` for a GGUF Q4_1 weight on the CPU, without dequantizing the weight.
//!
//! candle multiplies Q4_1 blocks with its generic scalar code (its SIMD kernels cover Q4_0, Q8_0
//! and the K-quants), which made quantized generation slower than the dense path. This kernel
//! does what llama.cpp does: each activation row is quantized to 8-bit blocks of 32 (Q8_1: a
//! scale and the scaled sum of its values), and each weight block's dot product is taken on
//! bytes — AVX-512 VNNI (`vpdpbusd`) or AVX2 (`vpmaddubsw`), chosen once at run time, with a
//! scalar form for other CPUs. Output rows are split across the thread pool. Inputs of eight
//! rows or more go to [`super::q4_1_tile`] where the CPU has 512-bit AVX-512 VNNI.
//!
//! Quantizing the activations changes the result slightly (as in llama.cpp): the error of each
//! output is at most half an activation step per block times the block's absolute weights, which
//! the tests assert against the dense product of the dequantized weight.

use super::cpu::{rows_per_task, simd_level, with_slice, SimdLevel as Level};
use super::q4_1_tile as tile;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Result, Tensor};
use half::f16;
use rayon::prelude::*;

/// Values per quantization block (Q4_1 and Q8_1 alike).
pub(super) const BLOCK: usize = 32;
/// Bytes of one Q4_1 block: `d` and `m` as f16, then 16 bytes of 4-bit values (element `j` in
/// the low nibble of byte `j`, element `j + 16` in its high nibble).
pub(super) const Q4_1_BYTES: usize = 20;
/// Activation rows handled together against one strip of weight rows (they stay in L1).
pub(super) const ROW_TILE: usize = 32;

/// One activation block quantized to 8 bits: `x ≈ d · qs`, and `s = d · Σ qs` (the term the
/// weights' offset `m` multiplies).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct ActBlock {
    pub(super) qs: [i8; BLOCK],
    pub(super) d: f32,
    pub(super) s: f32,
}

/// The name of the kernel this CPU runs (`avx512-vnni`, `avx2` or `scalar`), for benchmark
/// reports.
pub fn q4_1_kernel_name() -> &'static str {
    match simd_level() {
        Level::Scalar => "scalar",
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => "avx2",
        #[cfg(target_arch = "x86_64")]
        Level::Avx512Vnni => "avx512-vnni",
    }
}

/// The many-row kernel this CPU runs for inputs of eight rows or more (`avx512-vnni`: the
/// 512-bit tile kernel; `none`: the row kernel throughout), for benchmark reports.
pub fn q4_1_rows_kernel_name() -> &'static str {
    if tile::available() {
        "avx512-vnni"
    } else {
        "none"
    }
}

/// Whether [`q4_1_matmul`] runs many-row inputs of this weight through its 512-bit tile kernel
/// (a Q4_1 weight on a CPU with AVX-512 VNNI): then it beats a dequantized dense product at every
/// input length, and inference keeps the weight quantized however long the input.
pub fn q4_1_many_rows(w: &QTensor) -> bool {
    w.dtype() == GgmlDType::Q4_1 && matches!(w.device(), candle_core::Device::Cpu) && tile::available()
}

/// `x [.., k] · Wᵀ` for a Q4_1 `W [n, k]`, as f32 `[.., n]`. `None` when the kernel does not
/// apply (another block type, a weight or input off the CPU): the caller uses candle's product.
pub fn q4_1_matmul(x: &Tensor, w: &QTensor) -> Result<Option<Tensor>> {
    if w.dtype() != GgmlDType::Q4_1 || !x.device().is_cpu() || !matches!(w.device(), candle_core::Device::Cpu) {
        return Ok(None);
    }
    let (n, k) = w.shape().dims2()?;
    let dims = x.dims().to_vec();
    if dims.last() != Some(&k) {
        candle_core::bail!("q4_1_matmul: input has {:?} features, the weight expects {k}", dims.last());
    }
    let m = x.elem_count() / k.max(1);
    let x = x.to_dtype(DType::F32)?;
    let acts = with_slice::<f32, _>(&x, |v| quantize_rows(v, k))?;
    let data = w.data()?;
    if data.len() != n * (k / BLOCK) * Q4_1_BYTES {
        candle_core::bail!("q4_1_matmul: {} bytes of blocks for a [{n}, {k}] weight", data.len());
    }
    let mut out_dims = dims;
    *out_dims.last_mut().expect("checked above") = n;
    let y = if tile::applies(m) {
        Tensor::from_vec(tile::matmul(&data, &tile::PairedActs::new(&acts, k), n, k, m), (m, n), x.device())?
    } else {
        let y = Tensor::from_vec(matmul_t(&data, &acts, n, k, m, simd_level()), (n, m), x.device())?;
        if m == 1 {
            y
        } else {
            y.t()?.contiguous()?
        }
    };
    Ok(Some(y.reshape(out_dims)?))
}

/// A Q4_1 weight as a dense f32 tensor, its rows split across the thread pool (candle's
/// dequantization runs on one thread: a QLoRA step dequantizes every projection twice, and a
/// long inference forward once). `None` for other block types or devices.
pub fn q4_1_dequantize(w: &QTensor) -> Result<Option<Tensor>> {
    if w.dtype() != GgmlDType::Q4_1 || !matches!(w.device(), candle_core::Device::Cpu) {
        return Ok(None);
    }
    let (n, k) = w.shape().dims2()?;
    let data = w.data()?;
    let mut out = vec![0f32; n * k];
    out.par_chunks_mut(k.max(1)).zip(data.par_chunks(k / BLOCK * Q4_1_BYTES)).for_each(|(row, bytes)| {
        for (vals, wb) in row.chunks_exact_mut(BLOCK).zip(bytes.chunks_exact(Q4_1_BYTES)) {
            let d = f16::from_le_bytes([wb[0], wb[1]]).to_f32();
            let m = f16::from_le_bytes([wb[2], wb[3]]).to_f32();
            let (lo, hi) = vals.split_at_mut(BLOCK / 2);
            for ((l, h), q) in lo.iter_mut().zip(hi).zip(&wb[4..]) {
                *l = (q & 0x0F) as f32 * d + m;
                *h = (q >> 4) as f32 * d + m;
            }
        }
    });
    Ok(Some(Tensor::from_vec(out, (n, k), &candle_core::Device::Cpu)?))
}

/// Quantizes each `k`-long row of `x` into `k / 32` blocks (llama.cpp's `quantize_row_q8_1`,
/// with the scales kept in f32).
fn quantize_rows(x: &[f32], k: usize) -> Vec<ActBlock> {
    debug_assert_eq!(x.len() % k, 0);
    let level = simd_level();
    x.chunks_exact(BLOCK)
        .map(|v| {
            let v = v.try_into().expect("chunks of BLOCK");
            match level {
                Level::Scalar => quantize_block(v),
                // SAFETY: `simd_level()` detected AVX2 (and more) before choosing these levels.
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 | Level::Avx512Vnni => unsafe { x86::quantize_block(v) },
            }
        })
        .collect()
}

/// One block to 8 bits, rounding half away from zero (`f32::round`, as llama.cpp's reference
/// `quantize_row_q8_1`): the reference form of the vector quantizers.
fn quantize_block(v: &[f32; BLOCK]) -> ActBlock {
    let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; BLOCK];
    for (q, x) in qs.iter_mut().zip(v) {
        *q = (x * id).round() as i8;
    }
    let sum: i32 = qs.iter().map(|&q| q as i32).sum();
    ActBlock { qs, d, s: d * sum as f32 }
}

/// `Wᵀ`-major products: element `j · m + i` is row `j` of the weight against activation row `i`.
fn matmul_t(w: &[u8], acts: &[ActBlock], n: usize, k: usize, m: usize, level: Level) -> Vec<f32> {
    let nb = k / BLOCK;
    let row_bytes = nb * Q4_1_BYTES;
    let mut yt = vec![0f32; n * m];
    if n == 0 || m == 0 {
        return yt;
    }
    let rows_per_task = rows_per_task(n, 8);
    yt.par_chunks_mut(rows_per_task * m).enumerate().for_each(|(task, out)| {
        let first = task * rows_per_task;
        for i0 in (0..m).step_by(ROW_TILE) {
            let i1 = (i0 + ROW_TILE).min(m);
            for (r, out_row) in out.chunks_mut(m).enumerate() {
                let j = first + r;
                let wrow = &w[j * row_bytes..(j + 1) * row_bytes];
                let row = |i: usize| &acts[i * nb..(i + 1) * nb];
                let mut i = i0;
                while i + 4 <= i1 {
                    out_row[i..i + 4].copy_from_slice(&dot4(wrow, [row(i), row(i + 1), row(i + 2), row(i + 3)], level));
                    i += 4;
                }
                for (o, i) in out_row[i..i1].iter_mut().zip(i..) {
                    *o = dot(wrow, row(i), level);
                }
            }
        }
    });
    yt
}

/// One weight row (Q4_1 bytes) against one quantized activation row.
fn dot(w: &[u8], a: &[ActBlock], level: Level) -> f32 {
    match level {
        Level::Scalar => dot_scalar(w, a),
        // SAFETY: `simd_level()` chose these only after detecting every feature they enable.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::dot_avx2(w, a) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512Vnni => unsafe { x86::dot_vnni(w, a) },
    }
}

/// One weight row against four activation rows (prefill and batched forward).
fn dot4(w: &[u8], a: [&[ActBlock]; 4], level: Level) -> [f32; 4] {
    match level {
        Level::Scalar => a.map(|a| dot_scalar(w, a)),
        // SAFETY: as in `dot`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::dot4_avx2(w, a) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512Vnni => unsafe { x86::dot4_vnni(w, a) },
    }
}

/// The reference form every SIMD level is tested against.
fn dot_scalar(w: &[u8], a: &[ActBlock]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w.chunks_exact(Q4_1_BYTES).zip(a) {
        let d = f16::from_le_bytes([wb[0], wb[1]]).to_f32();
        let m = f16::from_le_bytes([wb[2], wb[3]]).to_f32();
        let mut si = 0i32;
        for j in 0..BLOCK / 2 {
            let q = wb[4 + j];
            si += (q & 0x0F) as i32 * ab.qs[j] as i32 + (q >> 4) as i32 * ab.qs[j + BLOCK / 2] as i32;
        }
        sum += d * ab.d * si as f32 + m * ab.s;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ActBlock, Q4_1_BYTES};
    use std::arch::x86_64::*;

    /// A Q4_1 block unpacked: its 32 values as bytes (elements 0..15 in the low lane), `d`, `m`.
    #[inline(always)]
    unsafe fn unpack(wb: &[u8]) -> (__m256i, f32, f32) {
        let p = wb.as_ptr();
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const i32)));
        let q = _mm_loadu_si128(p.add(4) as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        (_mm256_set_m128i(hi, lo), _mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)))
    }

    /// [`super::quantize_block`] on AVX2, value for value: ties (`|x · id|` at a half) go away
    /// from zero, as `f32::round` sends them.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_block(v: &[f32; 32]) -> ActBlock {
        let sign = _mm256_set1_ps(-0.0);
        let x: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(v.as_ptr().add(8 * i)));
        let abs = x.map(|x| _mm256_andnot_ps(sign, x));
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let (half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
        let q = x.map(|x| {
            let t = _mm256_mul_ps(x, id);
            let a = _mm256_andnot_ps(sign, t);
            let r = _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            let tie = _mm256_cmp_ps(_mm256_sub_ps(a, r), half, _CMP_EQ_OQ);
            let r = _mm256_add_ps(r, _mm256_and_ps(tie, one));
            _mm256_cvtps_epi32(_mm256_or_ps(r, _mm256_and_ps(sign, t)))
        });
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let sum = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01)));
        // i32 → i16 → i8 packing works within 128-bit lanes; the permute restores the order.
        let bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let mut qs = [0i8; 32];
        _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, bytes);
        ActBlock { qs, d, s: d * sum as f32 }
    }

    /// The sum of the eight lanes of `v`.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
    }

    /// Generates the dot products of one weight row whose integer block products come from
    /// `$product(weights, acts)` (32 unsigned 4-bit weights and 32 signed 8-bit activations →
    /// eight i32 sums): `$one` against one activation row, blocks in pairs into two register
    /// accumulators (one FMA chain would wait on its own latency every block), and `$four`
    /// against four rows, each block unpacked once for all four.
    macro_rules! dot_kernels {
        ($(#[$attr:meta])* $one:ident, $four:ident, $product:ident) => {
            $(#[$attr])*
            pub(super) unsafe fn $one(w: &[u8], a: &[ActBlock]) -> f32 {
                #[inline(always)]
                unsafe fn block(wb: &[u8], ab: &ActBlock, acc: __m256, offset: f32) -> (__m256, f32) {
                    let (wq, d, m) = unpack(wb);
                    let xq = _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
                    let sums = _mm256_cvtepi32_ps($product(wq, xq));
                    (_mm256_fmadd_ps(_mm256_set1_ps(d * ab.d), sums, acc), m.mul_add(ab.s, offset))
                }
                let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let (mut off0, mut off1) = (0f32, 0f32);
                let pairs = w.chunks_exact(2 * Q4_1_BYTES).zip(a.chunks_exact(2));
                for (wp, ap) in pairs {
                    (acc0, off0) = block(&wp[..Q4_1_BYTES], &ap[0], acc0, off0);
                    (acc1, off1) = block(&wp[Q4_1_BYTES..], &ap[1], acc1, off1);
                }
                if a.len() % 2 == 1 {
                    let last = a.len() - 1;
                    (acc0, off0) = block(&w[last * Q4_1_BYTES..], &a[last], acc0, off0);
                }
                hsum(_mm256_add_ps(acc0, acc1)) + off0 + off1
            }

            $(#[$attr])*
            pub(super) unsafe fn $four(w: &[u8], a: [&[ActBlock]; 4]) -> [f32; 4] {
                let (mut acc0, mut acc1, mut acc2, mut acc3) =
                    (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
                let mut off = [0f32; 4];
                for (b, wb) in w.chunks_exact(Q4_1_BYTES).enumerate() {
                    let (wq, d, m) = unpack(wb);
                    let (b0, b1, b2, b3) = (&a[0][b], &a[1][b], &a[2][b], &a[3][b]);
                    let load = |ab: &ActBlock| _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
                    let sums = |ab: &ActBlock| _mm256_cvtepi32_ps($product(wq, load(ab)));
                    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * b0.d), sums(b0), acc0);
                    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * b1.d), sums(b1), acc1);
                    acc2 = _mm256_fmadd_ps(_mm256_set1_ps(d * b2.d), sums(b2), acc2);
                    acc3 = _mm256_fmadd_ps(_mm256_set1_ps(d * b3.d), sums(b3), acc3);
                    off = [m.mul_add(b0.s, off[0]), m.mul_add(b1.s, off[1]), m.mul_add(b2.s, off[2]), m.mul_add(b3.s, off[3])];
                }
                [hsum(acc0) + off[0], hsum(acc1) + off[1], hsum(acc2) + off[2], hsum(acc3) + off[3]]
            }
        };
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn product_avx2(wq: __m256i, xq: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(wq, xq), _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn product_vnni(wq: __m256i, xq: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), wq, xq)
    }

    dot_kernels!(
        /// AVX2: `vpmaddubsw` then `vpmaddwd` (4-bit × 8-bit products cannot saturate i16).
        #[target_feature(enable = "avx2,fma,f16c")]
        dot_avx2,
        dot4_avx2,
        product_avx2
    );
    dot_kernels!(
        /// AVX-512 VNNI on 256-bit registers: one `vpdpbusd` per block.
        #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
        dot_vnni,
        dot4_vnni,
        product_vnni
    );
}

#[cfg(test)]
mod tests {
    use super::super::cpu::seeded_values as values;
    use super::*;
    use candle_core::Device;

    fn levels() -> Vec<Level> {
        let mut out = vec![Level::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if simd_level() != Level::Scalar {
                out.push(Level::Avx2);
            }
            if simd_level() == Level::Avx512Vnni {
                out.push(Level::Avx512Vnni);
            }
        }
        out
    }

    #[test]
    fn every_level_matches_the_scalar_form_on_odd_shapes() {
        // n not a multiple of any task size, m across the row tile, one-block rows.
        for &(n, k, m) in &[(1, 32, 1), (37, 64, 3), (129, 96, 33), (8, 576, 1)] {
            let w =
                QTensor::quantize(&Tensor::from_vec(values(n * k, 1), (n, k), &Device::Cpu).unwrap(), GgmlDType::Q4_1)
                    .unwrap();
            let mut x = values(m * k, 2);
            x[0] = 0.0; // a block with a zero (stays finite)
            let acts = quantize_rows(&x, k);
            let data = w.data().unwrap();
            let want = matmul_t(&data, &acts, n, k, m, Level::Scalar);
            for level in levels() {
                let got = matmul_t(&data, &acts, n, k, m, level);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{level:?} {n}x{k}x{m}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn the_vector_quantizer_matches_the_reference_value_for_value() {
        // Random blocks, a zero block, and a block whose scale is exactly 1 with values at
        // halves (ties go away from zero, as `f32::round` sends them).
        let mut blocks: Vec<[f32; BLOCK]> =
            (0..64).map(|s| values(BLOCK, 10 + s).try_into().expect("one block")).collect();
        blocks.push([0.0; BLOCK]);
        blocks.push(std::array::from_fn(|i| if i == 0 { 127.0 } else { (i as f32 - 16.0) + 0.5 }));
        for level in levels().into_iter().filter(|&l| l != Level::Scalar) {
            for v in &blocks {
                let want = quantize_block(v);
                // SAFETY: `levels()` lists only what this CPU runs.
                #[cfg(target_arch = "x86_64")]
                let got = unsafe { x86::quantize_block(v) };
                assert_eq!(
                    (got.qs, got.d.to_bits(), got.s.to_bits()),
                    (want.qs, want.d.to_bits(), want.s.to_bits()),
                    "{level:?}"
                );
            }
        }
        let tied = quantize_block(&blocks[blocks.len() - 1]);
        assert_eq!(&tied.qs[1..4], &[-15, -14, -13], "-14.5 → -15, -13.5 → -14, -12.5 → -13");
    }

    #[test]
    fn the_tile_kernel_matches_the_scalar_form_on_odd_shapes() {
        if !tile::available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI with 512-bit registers");
            return;
        }
        // Odd block counts (a last block paired with zeros), rows in passes of 8, 4 and 1, more
        // rows than the row tile, weight rows not a multiple of the task size.
        for &(n, k, m) in &[(37, 96, 13), (5, 32, 8), (129, 576, 33), (64, 160, 47), (3, 1536, 12)] {
            let w =
                QTensor::quantize(&Tensor::from_vec(values(n * k, 6), (n, k), &Device::Cpu).unwrap(), GgmlDType::Q4_1)
                    .unwrap();
            let acts = quantize_rows(&values(m * k, 7), k);
            let data = w.data().unwrap();
            let want = matmul_t(&data, &acts, n, k, m, Level::Scalar);
            let got = tile::matmul(&data, &tile::PairedActs::new(&acts, k), n, k, m);
            for i in 0..m {
                for j in 0..n {
                    let (g, w) = (got[i * n + j], want[j * m + i]);
                    assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{n}x{k}x{m} at ({i}, {j}): {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn the_product_is_within_the_activation_rounding_of_the_dense_product() {
        // 5 rows take the row kernel; 11 take the tile kernel where the CPU has it.
        for m in [5, 11] {
            let (n, k) = (45, 160);
            let w =
                QTensor::quantize(&Tensor::from_vec(values(n * k, 3), (n, k), &Device::Cpu).unwrap(), GgmlDType::Q4_1)
                    .unwrap();
            let x = Tensor::from_vec(values(m * k, 4), (1, m, k), &Device::Cpu).unwrap();
            let got = q4_1_matmul(&x, &w).unwrap().expect("a CPU Q4_1 weight");
            assert_eq!(got.dims(), &[1, m, n]);
            let dense = w.dequantize(&Device::Cpu).unwrap();
            let want = x.broadcast_matmul(&dense.t().unwrap()).unwrap();
            let (got, want) = (
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let wd = dense.to_vec2::<f32>().unwrap();
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut worst = 0f32;
            for i in 0..m {
                let acts = quantize_rows(&xs[i * k..(i + 1) * k], k);
                for j in 0..n {
                    // Each activation is off by at most half its block's step d.
                    let bound: f32 = (0..k).map(|c| wd[j][c].abs() * acts[c / BLOCK].d / 2.0).sum::<f32>() + 1e-5;
                    let err = (got[i * n + j] - want[i * n + j]).abs();
                    assert!(err <= bound, "row {i}, out {j}: error {err} > bound {bound}");
                    worst = worst.max(err);
                }
            }
            assert!(worst > 0.0, "activations were not quantized at all");
        }
    }

    #[test]
    fn dequantization_matches_candle_bit_for_bit() {
        let (n, k) = (37, 96);
        let w = QTensor::quantize(&Tensor::from_vec(values(n * k, 5), (n, k), &Device::Cpu).unwrap(), GgmlDType::Q4_1)
            .unwrap();
        let got = q4_1_dequantize(&w).unwrap().expect("a CPU Q4_1 weight").flatten_all().unwrap();
        let want = w.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
        let (got, want) = (got.to_vec1::<f32>().unwrap(), want.to_vec1::<f32>().unwrap());
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn other_block_types_are_left_to_candle() {
        let w = QTensor::quantize(&Tensor::zeros((4, 32), DType::F32, &Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap();
        let x = Tensor::zeros((1, 32), DType::F32, &Device::Cpu).unwrap();
        assert!(q4_1_matmul(&x, &w).unwrap().is_none());
        assert!(q4_1_dequantize(&w).unwrap().is_none());
    }
}
