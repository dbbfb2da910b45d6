//! Mini-batches: copying the samples a batch names into a tensor that is reused.

use crate::{Float, Shape, Tensor};

/// A labelled data set whose samples a network can take as input.
pub trait Dataset {
    /// The number of values of one sample as a network sees it.
    const FEATURES: usize;

    /// The number of samples.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The class of sample `index`.
    fn label(&self, index: usize) -> usize;

    /// Writes sample `index` into `out` (`FEATURES` values), scaled as the network expects.
    fn write_features<E: Float>(&self, index: usize, out: &mut [E]);

    /// Fills `x` with the samples `indices` names, in that order, and `labels` with their
    /// classes. `x` takes `indices.len()` as its batch; within the largest batch `x` and
    /// `labels` have held, this does not allocate:
    ///
    /// ```text
    /// let mut x = Tensor::<Rank1<64>>::zeros(BATCH);
    /// let mut labels = Vec::with_capacity(BATCH);
    /// for batch in train.chunks(BATCH) {
    ///     data.fill_batch(batch, &mut x, &mut labels);
    ///     // forward, loss, backward, step
    /// }
    /// ```
    ///
    /// A shape `S` whose element count is not `FEATURES` does not compile:
    ///
    /// ```compile_fail
    /// use nn_core::data::{Dataset, Digits};
    /// use nn_core::{Rank1, Tensor};
    ///
    /// let mut x = Tensor::<Rank1<63>>::zeros(1); // a digit has 64 pixels
    /// Digits::default().fill_batch(&[], &mut x, &mut Vec::new());
    /// ```
    ///
    /// # Panics
    /// If an index is out of range.
    fn fill_batch<S: Shape, E: Float>(
        &self,
        indices: &[usize],
        x: &mut Tensor<S, E>,
        labels: &mut Vec<usize>,
    ) {
        const {
            assert!(
                S::NUMEL == Self::FEATURES,
                "the tensor's sample shape must hold exactly the data set's features"
            );
        }
        x.set_batch(indices.len());
        labels.clear();
        for (row, &index) in indices.iter().enumerate() {
            self.write_features(index, x.sample_mut(row));
            labels.push(self.label(index));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Rank1, Rank2};

    /// Sample `i` is `[i, i + 0.5, i + 0.25]`, class `i % 2`.
    struct Ramp(usize);

    impl Dataset for Ramp {
        const FEATURES: usize = 3;

        fn len(&self) -> usize {
            self.0
        }

        fn label(&self, index: usize) -> usize {
            assert!(index < self.0);
            index % 2
        }

        fn write_features<E: Float>(&self, index: usize, out: &mut [E]) {
            let i = index as f64;
            out.copy_from_slice(&[i, i + 0.5, i + 0.25].map(E::from_f64));
        }
    }

    #[test]
    fn batches_follow_the_indices_and_reuse_their_buffers() {
        let data = Ramp(10);
        let mut x = Tensor::<Rank1<3>, f64>::zeros(4);
        let mut labels = Vec::with_capacity(4);
        let (x_ptr, labels_ptr) = (x.as_slice().as_ptr(), labels.as_ptr());

        data.fill_batch(&[7, 2, 5, 0], &mut x, &mut labels);
        assert_eq!(x.batch(), 4);
        assert_eq!(x.sample(0), [7.0, 7.5, 7.25]);
        assert_eq!(x.sample(3), [0.0, 0.5, 0.25]);
        assert_eq!(labels, [1, 0, 1, 0]);

        // The last, partial batch of an epoch, then a full one again.
        data.fill_batch(&[9, 1], &mut x, &mut labels);
        assert_eq!(x.batch(), 2);
        assert_eq!(x.as_slice(), [9.0, 9.5, 9.25, 1.0, 1.5, 1.25]);
        assert_eq!(labels, [1, 1]);
        data.fill_batch(&[3, 4, 6, 8], &mut x, &mut labels);
        assert_eq!(labels, [1, 0, 0, 0]);
        assert_eq!(x.as_slice().as_ptr(), x_ptr, "x was reallocated");
        assert_eq!(labels.as_ptr(), labels_ptr, "labels were reallocated");
        assert!(!data.is_empty());
    }

    #[test]
    fn any_shape_with_the_right_element_count_takes_a_batch() {
        struct Six;
        impl Dataset for Six {
            const FEATURES: usize = 6;
            fn len(&self) -> usize {
                1
            }
            fn label(&self, _index: usize) -> usize {
                0
            }
            fn write_features<E: Float>(&self, _index: usize, out: &mut [E]) {
                for (i, v) in out.iter_mut().enumerate() {
                    *v = E::from_f64(i as f64);
                }
            }
        }
        let mut x = Tensor::<Rank2<2, 3>, f32>::zeros(0);
        let mut labels = Vec::new();
        Six.fill_batch(&[0, 0], &mut x, &mut labels);
        assert_eq!(x.batch(), 2);
        assert_eq!(x.sample(1), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(labels, [0, 0]);
    }
}
