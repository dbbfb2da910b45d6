//! Flattening a sample into a vector.

use std::marker::PhantomData;

use crate::init::Rng;
use crate::kernels::vector::copy;
use crate::module::{Module, Param, ParamMut};
use crate::{Float, Rank1, Shape, Tensor};

/// PyTorch's `nn.Flatten()`: each sample of shape `S` (e.g. `[C, H, W]`) becomes the vector of
/// its `N = S::NUMEL` values in row-major order (`y[(c·H + h)·W + w] = x[c, h, w]`), so the
/// weights of a following linear layer have PyTorch's layout.
///
/// The values are copied (the caller owns separate input and output buffers); the backward
/// pass copies `dy` back into `dx`. `N` must equal `S::NUMEL` (checked at compile time).
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct Flatten<S: Shape, const N: usize> {
    shape: PhantomData<S>,
}

impl<S: Shape, const N: usize> Flatten<S, N> {
    const CHECK: () = assert!(
        S::NUMEL == N,
        "Flatten: N must be the input's element count"
    );
}

impl<S: Shape, const N: usize, E: Float> Module<E> for Flatten<S, N> {
    type Input = S;
    type Output = Rank1<N>;
    type Cache = ();
    type Grads = ();

    const PARAMS: usize = 0;

    fn init(_rng: &mut Rng) -> Self {
        let () = Self::CHECK;
        Self::default()
    }

    fn new_cache(&self, _max_batch: usize) {}

    fn new_grads(&self) {}

    fn zero_grads(_grads: &mut ()) {}

    fn forward(&self, x: &Tensor<S, E>, y: &mut Tensor<Rank1<N>, E>, _cache: &mut ()) {
        let () = Self::CHECK;
        y.set_batch(x.batch());
        copy(y.as_mut_slice(), x.as_slice());
    }

    fn forward_train(&mut self, x: &Tensor<S, E>, y: &mut Tensor<Rank1<N>, E>, cache: &mut ()) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<S, E>,
        _y: &Tensor<Rank1<N>, E>,
        dy: &Tensor<Rank1<N>, E>,
        dx: Option<&mut Tensor<S, E>>,
        _cache: &mut (),
        _grads: &mut (),
    ) {
        if let Some(dx) = dx {
            dx.set_batch(x.batch());
            copy(dx.as_mut_slice(), dy.as_slice());
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
    use crate::Rank3;

    #[test]
    fn flattening_keeps_row_major_order() {
        let layer = Flatten::<Rank3<2, 2, 3>, 12>::default();
        let values: Vec<f64> = (0..24).map(f64::from).collect();
        let x = Tensor::from_vec(values.clone()).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut ());
        assert_eq!(y.batch(), 2);
        assert_eq!(y.as_slice(), &values[..]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<Flatten<Rank3<3, 2, 2>, 12>>(3, 41);
    }
}
