//! Shapes of one sample, carried in the type.
//!
//! The batch dimension is not part of the shape: it is a runtime count on the tensor, so the
//! last partial batch of an epoch needs no special type. Every dimension here is a literal
//! const-generic argument written by `network!`, which did the shape arithmetic itself
//! (stable Rust cannot compute `H + 2 * P - K` in a type).

use std::fmt::Debug;

/// The shape of one sample: its dimensions and element count, known at compile time.
pub trait Shape: Copy + Default + Debug + Send + Sync + 'static {
    /// The dimensions, outermost first (PyTorch order, e.g. `[C, H, W]`).
    const DIMS: &'static [usize];
    /// The number of elements of one sample: the product of `DIMS`.
    const NUMEL: usize;
}

/// A vector of `N` features.
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq)]
pub struct Rank1<const N: usize>;

/// A matrix `[A, B]`; sequences are `[T, D]`.
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq)]
pub struct Rank2<const A: usize, const B: usize>;

/// A volume `[C, H, W]` (channels first, as in PyTorch).
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq)]
pub struct Rank3<const A: usize, const B: usize, const C: usize>;

impl<const N: usize> Shape for Rank1<N> {
    const DIMS: &'static [usize] = &[N];
    const NUMEL: usize = N;
}

impl<const A: usize, const B: usize> Shape for Rank2<A, B> {
    const DIMS: &'static [usize] = &[A, B];
    const NUMEL: usize = A * B;
}

impl<const A: usize, const B: usize, const C: usize> Shape for Rank3<A, B, C> {
    const DIMS: &'static [usize] = &[A, B, C];
    const NUMEL: usize = A * B * C;
}

/// Formats dimensions the way the summary table and error messages show them: `[64, 224, 224]`.
pub fn format_dims(dims: &[usize]) -> String {
    let inner: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_counts_multiply_the_dimensions() {
        assert_eq!(Rank1::<10>::NUMEL, 10);
        assert_eq!(Rank2::<64, 128>::NUMEL, 8192);
        assert_eq!(Rank3::<512, 7, 7>::NUMEL, 25_088);
        assert_eq!(Rank3::<3, 224, 224>::DIMS, &[3, 224, 224]);
        assert_eq!(format_dims(Rank3::<512, 7, 7>::DIMS), "[512, 7, 7]");
    }
}
