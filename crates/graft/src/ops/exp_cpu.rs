//! `Σ exp(z − shift)` over f32 rows with AVX2 and FMA, for the cross-entropy rows of the LM-head
//! losses: tens of thousands of exponentials per token, which libm computes one at a time.
//!
//! The exponential is the classic range reduction `x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, a degree-6
//! minimax polynomial for `eᴿ` (Cephes' `expf` coefficients) and `2ⁿ` built in the exponent
//! bits: within 2 ulp of the correctly rounded value on the whole range (tested). Inputs below
//! the smallest normal result give 0, above the largest finite one +∞, and NaN stays NaN, so a
//! NaN loss is still caught. Sums are kept in f64, as in the scalar form.

use super::cpu::{simd_level, SimdLevel};

/// Whether this CPU runs the vector form: any AVX2 level of [`simd_level`] (AVX2, FMA, F16C).
pub(super) fn available() -> bool {
    simd_level() != SimdLevel::Scalar
}

/// `Σ exp(z − shift)` in f64, each `exp(z − shift)` also written into `out` when given; `None`
/// when this CPU has no vector form (the caller takes the scalar one).
pub(super) fn exp_sum_f32(z: &[f32], shift: f32, out: Option<&mut [f32]>) -> Option<f64> {
    if !available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available()` detected AVX2 and FMA.
        Some(unsafe { x86::exp_sum(z, shift, out) })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (z, shift, out);
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Eight exponentials (see the module doc).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp8(x: __m256) -> __m256 {
        const HI: f32 = 88.722_83; // ln(f32::MAX)
        const LO: f32 = -87.336_55; // ln(f32::MIN_POSITIVE)
        let xc = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(HI)), _mm256_set1_ps(LO));
        let n = _mm256_round_ps(
            _mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        // ln 2 in two parts, so `n · ln 2` is exact enough for the reduction.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        // 2ⁿ for n in [-126, 128] as 2^(n - n / 2) · 2^(n / 2), both factors normal.
        let n_i = _mm256_cvtps_epi32(n);
        let n1 = _mm256_srai_epi32(n_i, 1);
        let pow2 = |e: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23));
        let y = _mm256_mul_ps(_mm256_mul_ps(p, pow2(n1)), pow2(_mm256_sub_epi32(n_i, n1)));
        let y = _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(LO), _CMP_LT_OQ), y);
        let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), _mm256_cmp_ps(x, _mm256_set1_ps(HI), _CMP_GT_OQ));
        _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q))
    }

    /// See [`super::exp_sum_f32`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_sum(z: &[f32], shift: f32, mut out: Option<&mut [f32]>) -> f64 {
        let s = _mm256_set1_ps(shift);
        let (mut acc0, mut acc1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let full = z.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(z.as_ptr().add(i)), s));
            if let Some(out) = out.as_deref_mut() {
                _mm256_storeu_ps(out[i..i + 8].as_mut_ptr(), e);
            }
            acc0 = _mm256_add_pd(acc0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            acc1 = _mm256_add_pd(acc1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
        }
        let mut lanes = [0f64; 4];
        _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(acc0, acc1));
        let mut sum: f64 = lanes.iter().sum();
        if full < z.len() {
            let mut tail = [f32::NEG_INFINITY; 8];
            tail[..z.len() - full].copy_from_slice(&z[full..]);
            let mut e = [0f32; 8];
            _mm256_storeu_ps(e.as_mut_ptr(), exp8(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr()), s)));
            let e = &e[..z.len() - full];
            if let Some(out) = out {
                out[full..].copy_from_slice(e);
            }
            sum += e.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units in the last place between `got` and the correctly rounded `exp(x)`.
    fn ulps(got: f32, x: f32) -> f64 {
        let want = f64::from(x).exp();
        let r = want as f32;
        let ulp = f64::from(f32::from_bits(r.to_bits() + 1) - r).max(f64::from(f32::from_bits(1)));
        (f64::from(got) - want).abs() / ulp
    }

    #[test]
    fn the_vector_exponential_is_within_two_ulp_and_keeps_the_special_values() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX2 and FMA");
            return;
        }
        // Every 997th f32 bit pattern between -104 and 89, plus the edges.
        let mut xs: Vec<f32> = (0..u32::MAX / 997)
            .map(|i| f32::from_bits(i * 997))
            .flat_map(|v| [v, -v])
            .filter(|v| (-104.0..=89.0).contains(v))
            .collect();
        xs.extend([0.0, -0.0, 88.72, 88.7228, -87.33, -87.34, -103.0, 1e-30, -1e-30]);
        let mut out = vec![0f32; xs.len()];
        let sum = exp_sum_f32(&xs, 0.0, Some(&mut out)).expect("available");
        let mut worst = 0f64;
        for (&x, &y) in xs.iter().zip(&out) {
            let want = f64::from(x).exp();
            if want < f64::from(f32::MIN_POSITIVE) {
                assert!(y == 0.0 || ulps(y, x) <= 2.0, "exp({x}) = {y}, want {want}");
            } else if want > f64::from(f32::MAX) {
                assert_eq!(y, f32::INFINITY, "exp({x})");
            } else {
                worst = worst.max(ulps(y, x));
            }
        }
        eprintln!("worst error {worst:.3} ulp over {} values", xs.len());
        assert!(worst <= 2.0, "worst error {worst} ulp");
        let want: f64 = out.iter().map(|&v| f64::from(v)).sum();
        assert!(sum == want || ((sum - want) / want).abs() < 1e-12, "{sum} vs {want}");
        let special = [f32::NAN, f32::NEG_INFINITY, f32::INFINITY, 1000.0, -1000.0];
        let mut out = [0f32; 5];
        exp_sum_f32(&special, 0.0, Some(&mut out));
        assert!(out[0].is_nan());
        assert_eq!(&out[1..], &[0.0, f32::INFINITY, f32::INFINITY, 0.0]);
    }

    #[test]
    fn sums_match_the_scalar_form_on_rows_with_tails() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX2 and FMA");
            return;
        }
        for len in [1, 7, 8, 9, 31, 4096 + 5] {
            let z = super::super::cpu::seeded_values(len, len as u64).iter().map(|v| v * 20.0).collect::<Vec<_>>();
            let shift = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut out = vec![0f32; len];
            let got = exp_sum_f32(&z, shift, Some(&mut out)).expect("available");
            let want: f64 = z.iter().map(|&v| f64::from((v - shift).exp())).sum();
            assert!(((got - want) / want).abs() < 1e-6, "{len}: {got} vs {want}");
            assert_eq!(exp_sum_f32(&z, shift, None), Some(got), "the sum without outputs");
            for (o, &v) in out.iter().zip(&z) {
                assert!((o - (v - shift).exp()).abs() <= 3e-7 * (v - shift).exp().max(1e-30), "{o} vs {v}");
            }
        }
    }
}
