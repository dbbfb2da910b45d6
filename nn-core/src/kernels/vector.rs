//! Vector primitives written so that the compiler vectorises them: several independent
//! accumulators, because a plain `iter().sum()` cannot be reassociated without fast-math and
//! runs 4-6x slower.

use crate::Float;

const LANES: usize = 16;

/// `dst = src` (same lengths).
///
/// Why not `copy_from_slice`: that is glibc's `memcpy`, which copies 4 to 64 KiB with
/// `rep movsb`, and on this project's machine (an AMD EPYC virtual machine) that runs 20 to 40
/// times slower than plain vector moves: 32 KiB took 17 µs instead of 0.8 µs. Fixed-size
/// chunks compile to vector loads and stores, never to a `memcpy` call; so does the tail (see
/// `tail`), where a plain loop would be turned into one.
#[inline]
pub fn copy<E: Copy>(dst: &mut [E], src: &[E]) {
    assert_eq!(dst.len(), src.len(), "copy: lengths differ");
    const CHUNK: usize = 16;
    let mut to = dst.chunks_exact_mut(CHUNK);
    let mut from = src.chunks_exact(CHUNK);
    for (to, from) in (&mut to).zip(&mut from) {
        let chunk: &[E; CHUNK] = from.try_into().expect("whole chunks");
        to.copy_from_slice(chunk);
    }
    tail(to.into_remainder(), |at, dst: &mut [E]| {
        dst.copy_from_slice(&from.remainder()[at..at + dst.len()])
    });
}

/// Grows a scratch `buffer` to at least `len` values and returns its first `len` (only the
/// first passes with a cache allocate).
pub fn reserve<E: Float>(buffer: &mut Vec<E>, len: usize) -> &mut [E] {
    if buffer.len() < len {
        buffer.resize(len, E::ZERO);
    }
    &mut buffer[..len]
}

/// `dst = 0`, in vector stores, never a `memset` call (the rows an image convolution
/// zero-fills are a few values long, and a call per row cost more than the stores).
#[inline]
pub fn zero<E: Float>(dst: &mut [E]) {
    const CHUNK: usize = 16;
    let mut to = dst.chunks_exact_mut(CHUNK);
    for to in &mut to {
        to.copy_from_slice(&[E::ZERO; CHUNK]);
    }
    tail(to.into_remainder(), |_, dst: &mut [E]| dst.fill(E::ZERO));
}

/// Applies `write(at, piece)` to pieces covering `dst` (fewer than 16 values) whose lengths
/// are constants: two overlapping pieces of 8, 4 or 2, or one value. With constant
/// lengths the compiler emits plain moves instead of a library call.
#[inline(always)]
fn tail<E>(dst: &mut [E], mut write: impl FnMut(usize, &mut [E])) {
    let n = dst.len();
    if n >= 8 {
        write(0, &mut dst[..8]);
        write(n - 8, &mut dst[n - 8..][..8]);
    } else if n >= 4 {
        write(0, &mut dst[..4]);
        write(n - 4, &mut dst[n - 4..][..4]);
    } else if n >= 2 {
        write(0, &mut dst[..2]);
        write(n - 2, &mut dst[n - 2..][..2]);
    } else if n == 1 {
        // (Not a loop over the values: the compiler would make that a library call.)
        write(0, &mut dst[..1]);
    }
}

/// Whether `a` and `b` have the same length and equal values (a NaN equals nothing), 16
/// values at a time with one branch per chunk: a slice's `==` stops at every value, and
/// comparing VGG16's 14.7 M convolution weights that way cost a third of transforming them.
pub fn equal<E: Float>(a: &[E], b: &[E]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let chunks_equal = (&mut ca).zip(&mut cb).all(|(x, y)| {
        let mut differ = false;
        for l in 0..LANES {
            differ |= x[l] != y[l];
        }
        !differ
    });
    chunks_equal && ca.remainder() == cb.remainder()
}

/// `sum_i a[i] * b[i]`.
#[inline(always)]
pub fn dot<E: Float>(a: &[E], b: &[E]) -> E {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [E::ZERO; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = E::ZERO;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += *x * *y;
    }
    // Pairwise reduction of the accumulators keeps the result independent of LANES' order.
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0] + tail
}

/// `y[i] += alpha * x[i]`.
#[inline(always)]
pub fn axpy<E: Float>(alpha: E, x: &[E], y: &mut [E]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * *x;
    }
}

/// The largest of `x` (NaNs are skipped, as by `f32::max`, unless all are NaN); `E::ZERO`
/// for an empty slice. Independent lanes, like `sum`, where a fold carries one chain of
/// dependent comparisons. Maxima combine in any order to the same value, so the result is
/// exactly the fold's.
#[inline(always)]
pub fn max<E: Float>(x: &[E]) -> E {
    let Some(&first) = x.first() else {
        return E::ZERO;
    };
    let mut acc = [first; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    let tail = chunks.remainder().iter().fold(first, |m, v| m.max(*v));
    acc.iter().fold(tail, |m, v| m.max(*v))
}

/// `sum_i x[i]`, with the same independent accumulators as `dot`.
#[inline(always)]
pub fn sum<E: Float>(x: &[E]) -> E {
    sum_of(x, |v| v)
}

/// `sum_i f(x[i])`, added in the same order as [`sum`] (so `sum_of(x, f)` equals `sum` of the
/// values `f(x[i])` written out).
#[inline(always)]
pub fn sum_of<E: Float>(x: &[E], f: impl Fn(E) -> E) -> E {
    let mut acc = [E::ZERO; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
    }
    let tail: E = chunks.remainder().iter().map(|v| f(*v)).sum();
    acc.iter().copied().sum::<E>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_sees_a_difference_anywhere() {
        let a: Vec<f32> = (0..37).map(|i| i as f32).collect();
        assert!(equal(&a, &a.clone()));
        assert!(!equal(&a, &a[..36]), "length");
        for at in [0, 15, 16, 31, 32, 36] {
            let mut b = a.clone();
            b[at] += 1.0;
            assert!(!equal(&a, &b), "chunk or tail, at {at}");
            b[at] = f32::NAN;
            assert!(!equal(&b, &b.clone()), "NaN equals nothing, at {at}");
        }
        assert!(equal::<f64>(&[], &[]));
    }

    #[test]
    fn copy_copies_every_length() {
        for n in [
            0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 20, 24, 33, 1000, 4099,
        ] {
            let src: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let mut dst = vec![-1.0f32; n];
            copy(&mut dst, &src);
            assert_eq!(dst, src, "length {n}");
        }
    }

    #[test]
    fn zero_clears_every_length() {
        for n in [0, 1, 3, 4, 7, 8, 15, 16, 17, 33, 1000] {
            let mut dst = vec![-1.0f64; n + 1];
            zero(&mut dst[..n]);
            assert!(dst[..n].iter().all(|v| *v == 0.0), "length {n}");
            assert_eq!(dst[n], -1.0, "length {n}: past the end");
        }
    }

    #[test]
    #[should_panic(expected = "copy: lengths differ")]
    fn copy_rejects_different_lengths() {
        copy(&mut [0.0f64; 3], &[1.0; 4]);
    }

    #[test]
    fn dot_and_sum_match_the_naive_loop_for_every_length() {
        for n in 0..70 {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-12, "n = {n}");
            let naive_sum: f64 = a.iter().sum();
            assert!((sum(&a) - naive_sum).abs() < 1e-12, "n = {n}");
        }
    }

    #[test]
    fn axpy_adds_a_scaled_vector() {
        let mut y = vec![1.0f32, 2.0, 3.0];
        axpy(2.0, &[1.0, 1.0, -1.0], &mut y);
        assert_eq!(y, vec![3.0, 4.0, 1.0]);
    }
}
