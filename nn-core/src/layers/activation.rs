//! Pointwise activations: `y = f(x)` element by element, `dx = dy ⊙ f'(x)`.
//!
//! Each function states its value and derivative; one generic module applies any of them to
//! any shape, so the three layers share one forward and one backward.

use std::marker::PhantomData;

use crate::init::Rng;
use crate::module::{Module, Param, ParamMut};
use crate::{Float, Shape, Tensor};

/// A scalar function and its derivative. The derivative may use the input `x`, the output
/// `y = f(x)`, or both, whichever is cheaper.
pub trait Pointwise: Copy + Default + std::fmt::Debug + Send + Sync + 'static {
    /// The layer's name in `network!` and in the summary.
    const NAME: &'static str;
    fn value<E: Float>(x: E) -> E;
    fn derivative<E: Float>(x: E, y: E) -> E;
}

/// Sigmoid: `f(x) = 1 / (1 + e^-x)`, `f'(x) = f(x) (1 - f(x))`.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct SigmoidFn;

impl Pointwise for SigmoidFn {
    const NAME: &'static str = "sigmoid";
    #[inline(always)]
    fn value<E: Float>(x: E) -> E {
        // Two branches so that e^t never overflows: for x < 0 use e^x / (1 + e^x).
        if x >= E::ZERO {
            E::ONE / (E::ONE + (-x).exp())
        } else {
            let t = x.exp();
            t / (E::ONE + t)
        }
    }
    #[inline(always)]
    fn derivative<E: Float>(_x: E, y: E) -> E {
        y * (E::ONE - y)
    }
}

/// Rectified linear unit: `f(x) = max(x, 0)`, `f'(x) = 1` for `x >= 0`, else 0.
///
/// (At exactly `x = 0` PyTorch uses 0; the two agree everywhere else.)
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct ReluFn;

impl Pointwise for ReluFn {
    const NAME: &'static str = "relu";
    #[inline(always)]
    fn value<E: Float>(x: E) -> E {
        if x > E::ZERO {
            x
        } else {
            E::ZERO
        }
    }
    #[inline(always)]
    fn derivative<E: Float>(x: E, _y: E) -> E {
        if x >= E::ZERO {
            E::ONE
        } else {
            E::ZERO
        }
    }
}

/// Hyperbolic tangent: `f(x) = tanh x`, `f'(x) = 1 - f(x)^2`.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct TanhFn;

impl Pointwise for TanhFn {
    const NAME: &'static str = "tanh";
    #[inline(always)]
    fn value<E: Float>(x: E) -> E {
        x.tanh()
    }
    #[inline(always)]
    fn derivative<E: Float>(_x: E, y: E) -> E {
        E::ONE - y * y
    }
}

/// A pointwise activation `F` over samples of shape `S`. It has no parameters.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct Activation<F: Pointwise, S: Shape> {
    function: PhantomData<(F, S)>,
}

pub type Sigmoid<S> = Activation<SigmoidFn, S>;
pub type Relu<S> = Activation<ReluFn, S>;
pub type Tanh<S> = Activation<TanhFn, S>;

impl<F: Pointwise, S: Shape> Activation<F, S> {
    /// `y = f(x)`, element by element.
    pub fn apply<E: Float>(x: &[E], y: &mut [E]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y = F::value(*x);
        }
    }

    /// `dx = dy ⊙ f'(x)`, element by element.
    pub fn apply_backward<E: Float>(x: &[E], y: &[E], dy: &[E], dx: &mut [E]) {
        for (((dx, dy), x), y) in dx.iter_mut().zip(dy).zip(x).zip(y) {
            *dx = *dy * F::derivative(*x, *y);
        }
    }
}

impl<F: Pointwise, S: Shape, E: Float> Module<E> for Activation<F, S> {
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
        Self::apply(x.as_slice(), y.as_mut_slice());
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
        if let Some(dx) = dx {
            dx.set_batch(x.batch());
            Self::apply_backward(x.as_slice(), y.as_slice(), dy.as_slice(), dx.as_mut_slice());
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
    use crate::{Rank1, Rank3};

    #[test]
    fn values_match_their_definitions() {
        assert_eq!(SigmoidFn::value(0.0f64), 0.5);
        assert!((SigmoidFn::value(2.0f64) - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-15);
        assert_eq!(
            SigmoidFn::value(-1000.0f64),
            0.0,
            "no overflow for large negative inputs"
        );
        assert_eq!(SigmoidFn::value(1000.0f32), 1.0);
        assert_eq!(ReluFn::value(-3.0f32), 0.0);
        assert_eq!(ReluFn::value(3.0f32), 3.0);
        assert_eq!(
            ReluFn::derivative(0.0f32, 0.0),
            1.0,
            "f'(0) = 1, as specified"
        );
        assert!((TanhFn::value(0.5f64) - 0.5f64.tanh()).abs() < 1e-15);
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<Sigmoid<Rank1<7>>>(4, 1);
        check_module::<Tanh<Rank3<2, 3, 4>>>(3, 2);
        check_module::<Relu<Rank1<9>>>(5, 3);
    }
}
