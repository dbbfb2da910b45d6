//! `exp` and `tanh` for f32 written without branches or library calls, so that loops over
//! activations vectorise (libm's scalar `expf`/`tanhf` dominated the recurrent and sigmoid
//! layers). Both keep NaN as NaN, so a diverging run is still detected.
//!
//! `exp`: Cody-Waite range reduction `x = n ln 2 + r`, `|r| <= ln 2 / 2`, then a degree-6
//! polynomial for `e^r` (the Cephes `expf` coefficients) and `2^n` through the exponent bits.
//! Relative error below 3e-7 down to -87, and 0 below (where the result would be subnormal).
//! `tanh`: the Cephes odd polynomial for `|x| < 0.625`, `1 - 2 / (e^{2|x|} + 1)` above;
//! absolute error below 3e-7.

use crate::Float;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a part exact in a few bits and the rest (Cody-Waite).
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;
/// Beyond this, e^x overflows to infinity in f32.
const MAX_ARGUMENT: f32 = 88.722_84;
/// Below this, e^x is no longer a normal f32; it is flushed to zero. (Subnormal results used
/// to come out as e^-87 instead, up to 1.6e-38 too large.)
const MIN_ARGUMENT: f32 = -87.0;

/// e^x.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let clamped = x.clamp(MIN_ARGUMENT, MAX_ARGUMENT);
    let n = (clamped * LOG2_E + 0.5).floor();
    let r = clamped - n * LN2_HIGH - n * LN2_LOW;
    let mut p = 1.987_569_1e-4f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        5e-1,
    ] {
        p = multiply_add(p, r, c);
    }
    let e_r = multiply_add(p, r * r, r) + 1.0;
    // 2^n through the exponent field; n is in [-126, 128] after the clamp, and 2^128 is split
    // as 2 * 2^127 so that the exponent stays representable.
    let half = (n * 0.5).floor();
    let scale_a = power_of_two(half);
    let scale_b = power_of_two(n - half);
    let value = e_r * scale_a * scale_b;
    let value = if x > MAX_ARGUMENT {
        f32::INFINITY
    } else {
        value
    };
    let value = if x < MIN_ARGUMENT { 0.0 } else { value };
    if x.is_nan() {
        x
    } else {
        value
    }
}

/// `a · b + c`, fused into one instruction when the build targets a CPU with FMA (as this
/// workspace's does; see .cargo/config.toml), else two: Rust never fuses `a * b + c` by
/// itself, and `mul_add` without the instruction is a slow library routine. Polynomials are
/// chains of these; fused, they take half the instructions.
#[inline(always)]
pub(crate) fn multiply_add<E: Float>(a: E, b: E, c: E) -> E {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `2^k` for a whole `k` in `[-126, 127]`, without a float-to-integer conversion: Rust's `as i32`
/// saturates and maps NaN to 0, which compiles to scalar compares and blocks vectorisation.
/// Adding `2^23 + 127` puts `k + 127` (in `[1, 254]`) in the low mantissa bits of an exact
/// float; shifting them left by 23 makes them the exponent field, and the rest falls off.
#[inline(always)]
fn power_of_two(k: f32) -> f32 {
    f32::from_bits((k + (8_388_608.0 + 127.0)).to_bits() << 23)
}

/// tanh x.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = a * a;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
            - 3.333_328e-1)
            * z
            * a
            + a;
    // tanh rounds to 1 in f32 beyond 10; clamping keeps e^{2a} finite.
    let large = 1.0 - 2.0 / (exp(2.0 * a.min(10.0)) + 1.0);
    let magnitude = if a < 0.625 { small } else { large };
    let signed = magnitude.copysign(x);
    if x.is_nan() {
        x
    } else {
        signed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_the_f64_value() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - exact).abs() / exact);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(200.0), f32::INFINITY);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(-90.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn tanh_is_within_3e7_of_the_f64_value() {
        let mut worst = 0.0f64;
        let mut x = -12.0f32;
        while x < 12.0 {
            worst = worst.max(((tanh(x) as f64) - (x as f64).tanh()).abs());
            x += 0.00731;
        }
        assert!(worst < 3e-7, "worst absolute error {worst}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert!(tanh(f32::NAN).is_nan());
    }
}
