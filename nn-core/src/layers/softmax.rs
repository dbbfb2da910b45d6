//! Softmax over the last dimension.

use std::marker::PhantomData;

use crate::init::Rng;
use crate::module::{Module, Param, ParamMut};
use crate::{Float, Shape, Tensor};

/// `y_i = e^(x_i - max x) / Σ_j e^(x_j - max x)` over the last dimension of `S` (the whole
/// vector for `[N]`, each row for a sequence `[T, V]`).
///
/// Backward: `dx_i = y_i (dy_i - Σ_j dy_j y_j)`.
///
/// To train a classifier, feed logits to `loss::softmax_cross_entropy`, which fuses the two and
/// is numerically stable; this layer is for outputs that are probabilities.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct Softmax<S: Shape> {
    shape: PhantomData<S>,
}

/// The length of the rows softmax normalises over.
fn row_len<S: Shape>() -> usize {
    S::DIMS.last().copied().unwrap_or(1)
}

/// Softmax of one row, in place from `x` into `y`.
pub fn softmax_row<E: Float>(x: &[E], y: &mut [E]) {
    let max = x.iter().copied().fold(x[0], E::max);
    let mut total = E::ZERO;
    for (y, x) in y.iter_mut().zip(x) {
        *y = (*x - max).exp();
        total += *y;
    }
    let inverse = E::ONE / total;
    for y in y.iter_mut() {
        *y *= inverse;
    }
}

impl<S: Shape, E: Float> Module<E> for Softmax<S> {
    type Input = S;
    type Output = S;
    type Cache = ();
    type Grads = ();

    const PARAMS: usize = 0;

    fn init(_rng: &mut Rng) -> Self {
        Self::default()
    }

    fn new_cache(&self, _max_batch: usize) {}

    fn new_grads(&self) {}

    fn zero_grads(_grads: &mut ()) {}

    fn forward(&self, x: &Tensor<S, E>, y: &mut Tensor<S, E>, _cache: &mut ()) {
        y.set_batch(x.batch());
        let n = row_len::<S>();
        for (x, y) in x
            .as_slice()
            .chunks_exact(n)
            .zip(y.as_mut_slice().chunks_exact_mut(n))
        {
            softmax_row(x, y);
        }
    }

    fn forward_train(&mut self, x: &Tensor<S, E>, y: &mut Tensor<S, E>, cache: &mut ()) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<S, E>,
        y: &Tensor<S, E>,
        dy: &Tensor<S, E>,
        dx: Option<&mut Tensor<S, E>>,
        _cache: &mut (),
        _grads: &mut (),
    ) {
        let Some(dx) = dx else { return };
        dx.set_batch(x.batch());
        let n = row_len::<S>();
        let rows = y
            .as_slice()
            .chunks_exact(n)
            .zip(dy.as_slice().chunks_exact(n));
        for ((y, dy), dx) in rows.zip(dx.as_mut_slice().chunks_exact_mut(n)) {
            let inner: E = y.iter().zip(dy).map(|(a, b)| *a * *b).sum();
            for ((dx, y), dy) in dx.iter_mut().zip(y).zip(dy) {
                *dx = *y * (*dy - inner);
            }
        }
    }

    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(Param<'_, E>)) {}

    fn visit_params_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(ParamMut<'_, E>)) {}

    fn visit_params_and_grads(&mut self, _grads: &(), _f: &mut dyn FnMut(&mut [E], &[E])) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_module;
    use crate::{Rank1, Rank2};

    #[test]
    fn rows_sum_to_one_and_large_logits_do_not_overflow() {
        let x = Tensor::<Rank2<2, 3>, f32>::from_vec(vec![1000.0, 1001.0, 1002.0, -5.0, 0.0, 5.0])
            .unwrap();
        let mut y = Tensor::zeros(1);
        Softmax::<Rank2<2, 3>>::default().forward(&x, &mut y, &mut ());
        for row in y.as_slice().chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row.iter().all(|v| v.is_finite()));
        }
        assert!((y.as_slice()[2] - 0.665_240_94).abs() < 1e-6);
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<Softmax<Rank1<6>>>(3, 4);
        check_module::<Softmax<Rank2<3, 5>>>(2, 5);
    }
}
