//! Special functions that Rust's standard library lacks: the error function and its
//! complement, and the standard normal distribution built on them (GELU needs `Φ`).
//!
//! `erf` and `erfc` follow W. J. Cody, "Rational Chebyshev approximations for the error
//! function", Math. Comp. 23 (1969), 631-638, with the coefficients of his SPECFUN routine
//! CALERF (near-minimax, at least 18 significant digits in theory): three intervals,
//!
//! ```text
//! |x| ≤ 0.46875        erf(x)  = x · A(x²) / B(x²)
//! 0.46875 < |x| ≤ 4    erfc(x) = e^(-x²) · C(x) / D(x)
//! |x| > 4              erfc(x) = e^(-x²) / x · (1/√π - z P(z) / Q(z)),  z = 1/x²
//! ```
//!
//! and `erf = 1 - erfc`, `erf(-x) = -erf(x)`, `erfc(-x) = 2 - erfc(x)`. `e^(-x²)` is computed
//! as `e^(-s²) · e^(-(x-s)(x+s))` with `s` = `x` rounded down to a multiple of 1/16, so that
//! the rounding of `x²` does not cost relative accuracy in the tail. Measured against
//! high-precision values the relative error is a few units in the last place (about 1e-16).

use super::fast_math::{exp as fast_exp, multiply_add};

/// 1/√π.
const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;
const THRESHOLD: f64 = 0.46875;
/// Below this, `x²` is dropped from the first interval's rational function (erf(x) = 2x/√π
/// to double precision), which also keeps `x²` from underflowing.
const SMALL: f64 = 1.11e-16;
/// Above this, `erfc(x)` underflows to zero.
const BIG: f64 = 26.543;

// The coefficients as Cody printed them (more digits than an f64 holds).
#[allow(clippy::excessive_precision)]
const A: [f64; 5] = [
    3.161_123_743_870_565_6,
    1.138_641_541_510_501_56e2,
    3.774_852_376_853_020_21e2,
    3.209_377_589_138_469_47e3,
    1.857_777_061_846_031_53e-1,
];
#[allow(clippy::excessive_precision)]
const B: [f64; 4] = [
    2.360_129_095_234_412_09e1,
    2.440_246_379_344_441_73e2,
    1.282_616_526_077_372_28e3,
    2.844_236_833_439_170_62e3,
];
#[allow(clippy::excessive_precision)]
const C: [f64; 9] = [
    5.641_884_969_886_700_89e-1,
    8.883_149_794_388_375_94,
    6.611_919_063_714_162_95e1,
    2.986_351_381_974_001_31e2,
    8.819_522_212_417_690_9e2,
    1.712_047_612_634_070_58e3,
    2.051_078_377_826_071_47e3,
    1.230_339_354_797_997_25e3,
    2.153_115_354_744_038_46e-8,
];
#[allow(clippy::excessive_precision)]
const D: [f64; 8] = [
    1.574_492_611_070_983_47e1,
    1.176_939_508_913_124_99e2,
    5.371_811_018_620_098_58e2,
    1.621_389_574_566_690_19e3,
    3.290_799_235_733_459_63e3,
    4.362_619_090_143_247_16e3,
    3.439_367_674_143_721_64e3,
    1.230_339_354_803_749_42e3,
];
#[allow(clippy::excessive_precision)]
const P: [f64; 6] = [
    3.053_266_349_612_323_44e-1,
    3.603_448_999_498_044_39e-1,
    1.257_817_261_112_292_46e-1,
    1.608_378_514_874_227_66e-2,
    6.587_491_615_298_378_03e-4,
    1.631_538_713_730_209_78e-2,
];
#[allow(clippy::excessive_precision)]
const Q: [f64; 5] = [
    2.568_520_192_289_822_42,
    1.872_952_849_923_460_47,
    5.279_051_029_514_284_12e-1,
    6.051_834_131_244_131_91e-2,
    2.335_204_976_268_691_85e-3,
];

/// `erf(x)` for `|x| ≤ 0.46875`.
#[inline]
fn erf_small(x: f64) -> f64 {
    let y = x.abs();
    let z = if y > SMALL { y * y } else { 0.0 };
    let mut num = A[4] * z;
    let mut den = z;
    for i in 0..3 {
        num = (num + A[i]) * z;
        den = (den + B[i]) * z;
    }
    x * (num + A[3]) / (den + B[3])
}

/// `e^(-y²)` without the rounding error of `y²` (see the module doc).
#[inline]
fn exp_minus_square(y: f64) -> f64 {
    let s = (y * 16.0).trunc() / 16.0;
    let rest = (y - s) * (y + s);
    (-s * s).exp() * (-rest).exp()
}

/// `erfc(y)` for `y > 0.46875`.
#[inline]
fn erfc_large(y: f64) -> f64 {
    if y <= 4.0 {
        let mut num = C[8] * y;
        let mut den = y;
        for i in 0..7 {
            num = (num + C[i]) * y;
            den = (den + D[i]) * y;
        }
        exp_minus_square(y) * (num + C[7]) / (den + D[7])
    } else if y >= BIG {
        0.0
    } else {
        let z = 1.0 / (y * y);
        let mut num = P[5] * z;
        let mut den = z;
        for i in 0..4 {
            num = (num + P[i]) * z;
            den = (den + Q[i]) * z;
        }
        let r = z * (num + P[4]) / (den + Q[4]);
        exp_minus_square(y) * (FRAC_1_SQRT_PI - r) / y
    }
}

/// The error function, `erf(x) = 2/√π ∫₀ˣ e^(-t²) dt`.
pub fn erf(x: f64) -> f64 {
    let y = x.abs();
    if y <= THRESHOLD {
        erf_small(x)
    } else if y.is_nan() {
        x
    } else {
        let e = (0.5 - erfc_large(y)) + 0.5;
        if x < 0.0 {
            -e
        } else {
            e
        }
    }
}

/// The complementary error function, `erfc(x) = 1 - erf(x)`, accurate in relative terms for
/// large `x` (where `1 - erf(x)` would lose every digit).
pub fn erfc(x: f64) -> f64 {
    let y = x.abs();
    if y <= THRESHOLD {
        1.0 - erf_small(x)
    } else if y.is_nan() {
        x
    } else {
        let e = erfc_large(y);
        if x < 0.0 {
            2.0 - e
        } else {
            e
        }
    }
}

/// The standard normal distribution function `Φ(x) = ½ erfc(-x/√2)`, accurate in relative
/// terms in both tails.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// The standard normal density `φ(x) = e^(-x²/2) / √(2π)`.
pub fn normal_pdf(x: f64) -> f64 {
    FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
}

/// 1/√(2π).
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// `φ(x)` in f32 arithmetic, branch-free (for the f32 GELU's derivative).
#[inline(always)]
pub fn normal_pdf_f32(x: f32) -> f32 {
    FRAC_1_SQRT_2PI as f32 * fast_exp(-0.5 * x * x)
}

/// `e^x` to about 1e-11 relative, for `x` clamped to `[-700, 700]`, without a library call or
/// a branch, so that a loop over it vectorises (the library's `exp` is an opaque call).
///
/// `x = k ln2 + r` with `k` rounded to nearest by adding and subtracting 1.5 · 2^52 and
/// `|r| <= ln2/2` (ln2 split in two parts, Cody and Waite's reduction); `e^r` by its Taylor
/// polynomial of degree 10 (remainder below 1e-11); `2^k` built from its bits.
#[inline(always)]
pub fn exp_vectorisable(x: f64) -> f64 {
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52
    const LN2_HI: f64 = 0.693_147_180_369_123_8;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let x = x.clamp(-700.0, 700.0);
    let shifted = x * std::f64::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0 / 3_628_800.0;
    for factorial in [
        362_880.0, 40_320.0, 5_040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0,
    ] {
        p = multiply_add(p, r, 1.0 / factorial);
    }
    // The low bits of `shifted` hold k (two's complement); 2^k has the biased exponent k + 1023.
    let k_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    p * f64::from_bits(k_bits.wrapping_add(1023) << 52)
}

/// `Φ(x)` in f32 arithmetic, branch-free (for the f32 GELU): each tail `Q(|x|) = ½ erfc(|x|/√2)`
/// is `½ t e^(-z² + P(t))`, `z = |x|/√2`, `t = 1/(1 + z/2)`, with the Chebyshev-fitted
/// polynomial `P` of degree 9 of Numerical Recipes' `erfcc` (relative error below 1.2e-7), and
/// `Φ(x) = 1 - Q(x)` for `x >= 0`, `Q(-x)` below. `z²` is split into its rounded value and the
/// rounding error (one fused multiply-add) so that the exponent loses no more than its own
/// rounding. Eight values per vector instead of the four of an f64 version: W7's GELU took a
/// sixth of its forward pass in f64.
#[inline(always)]
pub fn normal_cdf_f32(x: f32) -> f32 {
    const P: [f32; 10] = [
        -1.265_512_2,
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_204,
        1.488_515_9,
        -0.822_152_2,
        0.170_872_77,
    ];
    // Beyond 14, Q underflows in f32.
    let z = x.abs().min(14.0) * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = P[9];
    for c in P[..9].iter().rev() {
        p = multiply_add(p, t, *c);
    }
    let square = z * z;
    let square_error = multiply_add(z, z, -square);
    let tail = 0.5 * t * fast_exp((p - square) - square_error);
    if x >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(x, erf(x), erfc(x))` from Python's `mpmath` at 50 digits, rounded to double.
    #[rustfmt::skip]
    const TABLE: &[(f64, f64, f64)] = &[
        (  1e-300, 1.1283791670955126e-300, 1.0),
        (   1e-20, 1.1283791670955125e-20, 1.0),
        (   1e-08, 1.1283791670955126e-08, 0.9999999887162083),
        (   0.001, 0.0011283787909692365, 0.9988716212090307),
        (     0.1, 0.1124629160182849, 0.887537083981715),
        (     0.3, 0.3286267594591274, 0.6713732405408726),
        ( 0.46875, 0.49261347321793797, 0.507386526782062),
        ( 0.46876, 0.4926225311068465, 0.5073774688931535),
        (     0.5, 0.5204998778130465, 0.4795001221869535),
        (    0.75, 0.7111556336535151, 0.28884436634648486),
        (     1.0, 0.8427007929497149, 0.15729920705028513),
        (     1.5, 0.9661051464753108, 0.033894853524689274),
        (     2.0, 0.9953222650189527, 0.004677734981047266),
        (     2.5, 0.999593047982555, 0.0004069520174449589),
        (     3.0, 0.9999779095030014, 2.209049699858544e-05),
        (     3.7, 0.9999998328489421, 1.6715105790914599e-07),
        (     4.0, 0.9999999845827421, 1.541725790028002e-08),
        (  4.0001, 0.9999999845954353, 1.5404564743590145e-08),
        (     4.5, 0.9999999998033839, 1.9661604415428876e-10),
        (     5.5, 0.9999999999999927, 7.357847917974398e-15),
        (     6.0, 1.0, 2.1519736712498913e-17),
        (     8.0, 1.0, 1.1224297172982926e-29),
        (    12.0, 1.0, 1.3562611692059042e-64),
        (    20.0, 1.0, 5.395865611607901e-176),
        (    26.0, 1.0, 5.663192408856143e-296),
        (    -0.2, -0.22270258921047847, 1.2227025892104784),
        (-0.46875, -0.49261347321793797, 1.492613473217938),
        (    -0.6, -0.6038560908479259, 1.6038560908479258),
        (   -1.25, -0.9229001282564583, 1.9229001282564582),
        (   -2.75, -0.9998993780778803, 1.9998993780778804),
        (    -3.9, -0.9999999652077514, 1.9999999652077514),
        (    -4.2, -0.9999999971445058, 1.9999999971445057),
        (    -7.0, -1.0, 2.0),
    ];

    fn relative(a: f64, e: f64) -> f64 {
        if e == 0.0 {
            a.abs()
        } else {
            ((a - e) / e).abs()
        }
    }

    #[test]
    fn erf_has_its_known_values() {
        assert_eq!(erf(0.0), 0.0);
        for (x, e) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
        ] {
            assert!(relative(erf(x), e) < 2e-16, "erf({x}) = {} vs {e}", erf(x));
            assert_eq!(erf(-x), -erf(x), "erf is odd");
        }
        assert_eq!(erf(30.0), 1.0);
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert!(erf(f64::NAN).is_nan());
        assert_eq!(erfc(30.0), 0.0);
        assert_eq!(erfc(-30.0), 2.0);
        assert!(erfc(f64::NAN).is_nan());
    }

    #[test]
    fn erf_and_erfc_match_high_precision_values_on_every_interval() {
        let (mut worst_erf, mut worst_erfc) = (0.0f64, 0.0f64);
        for &(x, e, c) in TABLE {
            worst_erf = worst_erf.max(relative(erf(x), e));
            worst_erfc = worst_erfc.max(relative(erfc(x), c));
        }
        assert!(worst_erf < 5e-16, "erf: relative error {worst_erf:e}");
        assert!(worst_erfc < 5e-15, "erfc: relative error {worst_erfc:e}");
    }

    #[test]
    fn the_vectorisable_exponential_matches_the_library() {
        let mut worst = 0.0f64;
        for i in -70_000..70_000 {
            let x = i as f64 * 0.01 + 0.003;
            worst = worst.max(relative(exp_vectorisable(x), x.exp()));
        }
        assert!(worst < 1e-11, "relative error {worst:e}");
        assert_eq!(exp_vectorisable(0.0), 1.0);
        assert!(relative(exp_vectorisable(1.0), 1f64.exp()) < 1e-13);
        assert!(
            relative(exp_vectorisable(-1000.0), (-700f64).exp()) < 1e-11,
            "clamped"
        );
    }

    #[test]
    fn the_single_precision_normal_distribution_is_within_a_few_f32_ulp() {
        let (mut worst_near, mut worst_tail, mut worst_abs) = (0.0f64, 0.0f64, 0.0f64);
        for i in -14_000..=14_000 {
            let x = (i as f64 * 0.001 + 0.0001) as f32;
            let (a, e) = (f64::from(normal_cdf_f32(x)), normal_cdf(f64::from(x)));
            worst_abs = worst_abs.max((a - e).abs());
            // The lower tail in relative terms (the upper one is 1 minus the same value), as
            // far as f32 keeps it normal. The exponent's rounding grows with x², so the
            // relative error does too: 4e-7 down to -1, 2e-6 at -4, 2e-5 at -12.
            if x < 0.0 && e > 1e-37 {
                worst_tail = worst_tail.max(relative(a, e));
                if x > -1.0 {
                    worst_near = worst_near.max(relative(a, e));
                }
            }
        }
        assert!(
            worst_near < 5e-7,
            "tail above -1: relative error {worst_near:e}"
        );
        assert!(worst_tail < 2.5e-5, "tail: relative error {worst_tail:e}");
        assert!(worst_abs < 2.5e-7, "absolute error {worst_abs:e}");
        assert_eq!(normal_cdf_f32(50.0), 1.0);
        assert_eq!(normal_cdf_f32(-50.0), 0.0);
        assert!(
            normal_cdf_f32(f32::NAN) >= 0.0,
            "NaN gives a number; x Φ(x) stays NaN"
        );
        let (mut worst_pdf, mut x) = (0.0f64, -13.0f32);
        while x < 13.0 {
            let e = normal_pdf(f64::from(x));
            worst_pdf = worst_pdf.max(relative(f64::from(normal_pdf_f32(x)), e));
            x += 0.00917;
        }
        // Like the tail, the error grows with x² (4e-6 at 13).
        assert!(worst_pdf < 5e-6, "density: relative error {worst_pdf:e}");
    }

    #[test]
    fn the_normal_distribution_is_accurate_in_both_tails() {
        assert_eq!(normal_cdf(0.0), 0.5);
        // Φ(-10) = 7.619853024160527e-24 (mpmath): no cancellation in the lower tail.
        assert!(relative(normal_cdf(-10.0), 7.619_853_024_160_527e-24) < 1e-14);
        assert!(relative(normal_cdf(1.0), 0.841_344_746_068_542_9) < 2e-16);
        assert!(relative(normal_pdf(1.0), 0.241_970_724_519_143_37) < 2e-16);
    }
}
