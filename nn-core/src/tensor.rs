//! Heap tensors tagged with their per-sample shape, with a runtime batch count.

use std::marker::PhantomData;

use crate::error::ShapeError;
use crate::{Float, Shape};

/// A batch of samples of shape `S`, stored row-major in one flat heap buffer
/// (`[batch, ..S::DIMS]`). Large activations never pass through the stack, and
/// reshaping is free.
///
/// The buffer is sized for the largest batch it has held: setting a smaller batch (the last
/// partial batch of an epoch) and back again does not allocate.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<S: Shape, E: Float = f32> {
    data: Vec<E>,
    batch: usize,
    shape: PhantomData<S>,
}

impl<S: Shape, E: Float> Tensor<S, E> {
    /// A zero tensor holding `batch` samples.
    pub fn zeros(batch: usize) -> Self {
        Self {
            data: vec![E::ZERO; batch * S::NUMEL],
            batch,
            shape: PhantomData,
        }
    }

    /// Wraps `data` (`batch * S::NUMEL` values, row-major); the batch is inferred.
    pub fn from_vec(data: Vec<E>) -> Result<Self, ShapeError> {
        if S::NUMEL == 0 || !data.len().is_multiple_of(S::NUMEL) {
            return Err(ShapeError::NotAWholeBatch {
                len: data.len(),
                dims: S::DIMS,
                numel: S::NUMEL,
            });
        }
        let batch = data.len() / S::NUMEL;
        Ok(Self {
            data,
            batch,
            shape: PhantomData,
        })
    }

    /// Builds a tensor from `batch` samples given as slices.
    pub fn from_samples<'a>(
        samples: impl IntoIterator<Item = &'a [E]>,
    ) -> Result<Self, ShapeError> {
        let mut data = Vec::new();
        for (index, sample) in samples.into_iter().enumerate() {
            if sample.len() != S::NUMEL {
                return Err(ShapeError::WrongSampleLength {
                    index,
                    len: sample.len(),
                    dims: S::DIMS,
                    numel: S::NUMEL,
                });
            }
            data.extend_from_slice(sample);
        }
        Self::from_vec(data)
    }

    /// The number of samples.
    #[inline]
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Sets the number of samples. Values of samples that were already present are kept; new
    /// ones are zero. Within the largest batch this tensor has held, this does not allocate.
    #[inline]
    pub fn set_batch(&mut self, batch: usize) {
        if batch != self.batch {
            self.data.resize(batch * S::NUMEL, E::ZERO);
            self.batch = batch;
        }
    }

    /// All values, row-major: `batch * S::NUMEL` of them.
    #[inline]
    pub fn as_slice(&self) -> &[E] {
        &self.data
    }

    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [E] {
        &mut self.data
    }

    /// The values of sample `i`.
    #[inline]
    pub fn sample(&self, i: usize) -> &[E] {
        &self.data[i * S::NUMEL..(i + 1) * S::NUMEL]
    }

    #[inline]
    pub fn sample_mut(&mut self, i: usize) -> &mut [E] {
        &mut self.data[i * S::NUMEL..(i + 1) * S::NUMEL]
    }

    /// Iterates over the samples.
    pub fn samples(&self) -> std::slice::ChunksExact<'_, E> {
        self.data.chunks_exact(S::NUMEL.max(1))
    }

    /// Sets every value to zero.
    pub fn fill_zero(&mut self) {
        self.data.fill(E::ZERO);
    }

    /// Copies `other` into `self`, taking its batch count.
    pub fn copy_from(&mut self, other: &Tensor<S, E>) {
        self.set_batch(other.batch);
        crate::kernels::vector::copy(&mut self.data, &other.data);
    }

    /// The same values viewed as another shape with the same element count (free).
    pub fn reshape<T: Shape>(self) -> Tensor<T, E> {
        const {
            assert!(S::NUMEL == T::NUMEL, "reshape must keep the element count");
        }
        Tensor {
            data: self.data,
            batch: self.batch,
            shape: PhantomData,
        }
    }

    /// Consumes the tensor, returning its values.
    pub fn into_vec(self) -> Vec<E> {
        self.data
    }

    /// Index of the largest value of each sample (the predicted class of a classifier).
    pub fn argmax(&self) -> Vec<usize> {
        self.samples()
            .map(|s| {
                let mut best = 0;
                for (i, v) in s.iter().enumerate() {
                    if *v > s[best] {
                        best = i;
                    }
                }
                best
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Rank1, Rank2};

    #[test]
    fn from_vec_infers_the_batch_and_rejects_partial_samples() {
        let t = Tensor::<Rank2<2, 3>, f32>::from_vec(vec![0.0; 12]).unwrap();
        assert_eq!(t.batch(), 2);
        let err = Tensor::<Rank2<2, 3>, f32>::from_vec(vec![0.0; 7]).unwrap_err();
        assert!(err.to_string().contains("7 values"), "{err}");
    }

    #[test]
    fn shrinking_and_regrowing_the_batch_keeps_the_buffer() {
        let mut t = Tensor::<Rank1<4>, f64>::zeros(8);
        let ptr = t.as_slice().as_ptr();
        t.set_batch(3);
        assert_eq!(t.as_slice().len(), 12);
        t.set_batch(8);
        assert_eq!(t.as_slice().as_ptr(), ptr);
    }

    #[test]
    fn argmax_picks_the_largest_value_per_sample() {
        let t = Tensor::<Rank1<3>, f32>::from_vec(vec![0.1, 0.7, 0.2, 3.0, -1.0, 2.0]).unwrap();
        assert_eq!(t.argmax(), vec![1, 0]);
    }
}
