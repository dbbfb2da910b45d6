//! Pointwise activations: `y = f(x)` element by element, `dx = dy ⊙ f'(x)`.
//!
//! Each function states its value and derivative; one generic module applies any of them to
//! any shape, so the layers share one forward and one backward.

use std::marker::PhantomData;

use crate::init::Rng;
use crate::kernels::parallel::{join, PARALLEL_VALUES};
use crate::kernels::special::{
    exp_vectorisable, normal_cdf, normal_cdf_f32, normal_pdf, normal_pdf_f32,
};
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
        // One branch-free formula, so loops vectorise: for very negative x, e^-x overflows to
        // infinity and the value is exactly 0; for very positive x, e^-x is 0 and the value 1.
        E::ONE / (E::ONE + (-x).exp())
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

/// Gaussian error linear unit, exact (PyTorch's `nn.GELU()` / `F.gelu`):
/// `f(x) = x Φ(x) = ½ x (1 + erf(x/√2))`, `f'(x) = Φ(x) + x φ(x)`,
/// with `Φ` and `φ` the standard normal distribution and density.
///
/// In f64, `Φ = ½ erfc(-x/√2)` by Cody's rational approximations
/// ([`crate::kernels::special`]), accurate to the last digits and in relative terms in both
/// tails. In f32, approximations good to single precision in f32 arithmetic
/// ([`normal_cdf_f32`], [`normal_pdf_f32`]), which have no branch and no library call, so the
/// layer's loops vectorise, eight values at a time; the f32 derivative takes `Φ(x) = y / x`
/// from the output, so that it needs only the exponential of `φ`.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct GeluFn;

impl Pointwise for GeluFn {
    const NAME: &'static str = "gelu";
    #[inline(always)]
    fn value<E: Float>(x: E) -> E {
        let x = x.to_f64();
        if E::BYTES == 4 {
            let x = x as f32;
            return E::from_f64(f64::from(x * normal_cdf_f32(x)));
        }
        E::from_f64(x * normal_cdf(x))
    }
    #[inline(always)]
    fn derivative<E: Float>(x: E, y: E) -> E {
        let x = x.to_f64();
        if E::BYTES == 4 {
            let (x, y) = (x as f32, y.to_f64() as f32);
            // Φ(x) = y / x (to f32 precision; Φ is 1/2 within 1e-31 where |x| < 1e-30, and
            // y = x Φ(x) is no longer a normal f32 there), so only φ needs an exponential.
            let cdf = if x.abs() >= 1e-30 { y / x } else { 0.5 };
            return E::from_f64(f64::from(cdf + x * normal_pdf_f32(x)));
        }
        E::from_f64(normal_cdf(x) + x * normal_pdf(x))
    }
}

/// GELU with PyTorch's tanh approximation (`nn.GELU(approximate='tanh')`):
/// `f(x) = ½ x (1 + tanh u)`, `u = √(2/π) (x + 0.044715 x³)`, and its exact derivative
/// `f'(x) = ½ (1 + tanh u) + ½ x (1 - tanh² u) √(2/π) (1 + 3 · 0.044715 x²)`.
///
/// Computed as `1 + tanh u = 2 σ(2u)` (`σ` the logistic function), which needs one
/// exponential: `f(x) = x σ(2u)`, `f'(x) = σ(2u) + 2 x σ(2u) σ(-2u) u'(x)`. The arithmetic
/// is f64; in f32 the exponential is [`exp_vectorisable`], so the loops vectorise.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct GeluTanhFn;

impl GeluTanhFn {
    /// √(2/π).
    const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
    const CUBIC: f64 = 0.044_715;

    /// `σ(2u(x))`, `1 - σ(2u(x)) = σ(-2u(x))` and `u'(x)`. Both sigmoids come from one
    /// exponential `e^(-|2u|)` (which never overflows), so neither loses digits to
    /// cancellation.
    #[inline(always)]
    fn gate<E: Float>(x: f64) -> (f64, f64, f64) {
        let (k, c) = (Self::SQRT_2_OVER_PI, Self::CUBIC);
        let x2 = x * x;
        let two_u = 2.0 * k * (x + c * x2 * x);
        let du = k * (1.0 + 3.0 * c * x2);
        let t = if E::BYTES == 4 {
            exp_vectorisable(-two_u.abs())
        } else {
            (-two_u.abs()).exp()
        };
        let (big, small) = (1.0 / (1.0 + t), t / (1.0 + t));
        if two_u >= 0.0 {
            (big, small, du)
        } else {
            (small, big, du)
        }
    }
}

impl Pointwise for GeluTanhFn {
    const NAME: &'static str = "gelu_tanh";
    #[inline(always)]
    fn value<E: Float>(x: E) -> E {
        let x = x.to_f64();
        E::from_f64(x * Self::gate::<E>(x).0)
    }
    #[inline(always)]
    fn derivative<E: Float>(x: E, _y: E) -> E {
        let x = x.to_f64();
        let (s, one_minus_s, du) = Self::gate::<E>(x);
        E::from_f64(s + 2.0 * x * s * one_minus_s * du)
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
pub type Gelu<S> = Activation<GeluFn, S>;
pub type GeluTanh<S> = Activation<GeluTanhFn, S>;

impl<F: Pointwise, S: Shape> Activation<F, S> {
    /// `y = f(x)`, element by element.
    pub fn apply<E: Float>(x: &[E], y: &mut [E]) {
        if y.len() >= PARALLEL_VALUES {
            let half = y.len() / 2;
            let (x0, x1) = x.split_at(half);
            let (y0, y1) = y.split_at_mut(half);
            return join(|| Self::apply_serial(x0, y0), || Self::apply_serial(x1, y1));
        }
        Self::apply_serial(x, y)
    }

    fn apply_serial<E: Float>(x: &[E], y: &mut [E]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y = F::value(*x);
        }
    }

    /// `dx = dy ⊙ f'(x)`, element by element.
    pub fn apply_backward<E: Float>(x: &[E], y: &[E], dy: &[E], dx: &mut [E]) {
        if dx.len() >= PARALLEL_VALUES {
            let half = dx.len() / 2;
            let (x0, x1) = x.split_at(half);
            let (y0, y1) = y.split_at(half);
            let (dy0, dy1) = dy.split_at(half);
            let (dx0, dx1) = dx.split_at_mut(half);
            return join(
                || Self::backward_serial(x0, y0, dy0, dx0),
                || Self::backward_serial(x1, y1, dy1, dx1),
            );
        }
        Self::backward_serial(x, y, dy, dx)
    }

    fn backward_serial<E: Float>(x: &[E], y: &[E], dy: &[E], dx: &mut [E]) {
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
    use crate::{Rank1, Rank2, Rank3};

    #[test]
    fn long_inputs_split_over_the_cores_give_every_value_its_own_result() {
        let n = 3 * PARALLEL_VALUES + 7;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 1e-3).collect();
        let dy: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.0).collect();
        let mut y = vec![0.0; n];
        let mut dx = vec![0.0; n];
        Gelu::<Rank1<1>>::apply(&x, &mut y);
        Gelu::<Rank1<1>>::apply_backward(&x, &y, &dy, &mut dx);
        for i in 0..n {
            assert_eq!(y[i], GeluFn::value(x[i]), "value {i}");
            assert_eq!(
                dx[i],
                dy[i] * GeluFn::derivative(x[i], y[i]),
                "gradient {i}"
            );
        }
    }

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
        check_module::<Gelu<Rank1<9>>>(5, 4);
        check_module::<GeluTanh<Rank2<3, 4>>>(3, 5);
    }

    #[test]
    fn gelu_has_its_known_values() {
        // Relative 2e-14: rounding x/√2 is amplified by erfc's condition number, about x².
        let close = |a: f64, e: f64| (a - e).abs() <= 2e-14 * e.abs();
        assert_eq!(GeluFn::value(0.0f64), 0.0);
        assert_eq!(GeluFn::derivative(0.0f64, 0.0), 0.5);
        // x Φ(x), from mpmath at 40 digits. (PyTorch's 0.5 x (1 + erf(x/√2)) gives
        // -0.00404969409489031 at -3: the sum 1 + erf loses digits in the lower tail.)
        assert!(close(GeluFn::value(1.0f64), 0.841_344_746_068_542_9));
        assert!(close(GeluFn::value(-1.0f64), -0.158_655_253_931_457_05));
        assert!(close(GeluFn::value(3.0f64), 2.995_950_305_905_11));
        assert!(close(GeluFn::value(-3.0f64), -0.004_049_694_094_890_283_5));
        assert!(close(GeluFn::value(-10.0f64), -7.619_853_024_160_526e-23));
        assert_eq!(GeluFn::value(-40.0f64), 0.0);
        assert_eq!(GeluFn::value(40.0f64), 40.0);
        assert!(close(GeluTanhFn::value(1.0f64), 0.841_191_990_608_276_7));
        assert!(close(
            GeluTanhFn::value(-3.0f64),
            -0.003_637_392_081_773_019
        ));
        assert_eq!(GeluTanhFn::value(0.0f64), 0.0);
        assert_eq!(GeluTanhFn::derivative(0.0f64, 0.0), 0.5);
        assert_eq!(GeluTanhFn::value(-1000.0f64), 0.0, "no overflow");
        assert_eq!(GeluTanhFn::value(1000.0f32), 1000.0);
        assert_eq!((GeluFn::NAME, GeluTanhFn::NAME), ("gelu", "gelu_tanh"));
    }

    #[test]
    fn gelu_matches_pytorch() {
        use crate::layers::sequence::testing::Fixture;
        let fixture = Fixture::open("../transformer/gelu.safetensors");
        let x = fixture.values("x");
        let values = |f: fn(f64) -> f64| x.iter().map(|x| f(*x)).collect::<Vec<_>>();
        fixture.assert_matches("gelu", &values(GeluFn::value));
        fixture.assert_matches("gelu_tanh", &values(GeluTanhFn::value));
        // Through the layer's backward with dy = 1: dx = f'(x).
        fn derivatives<F: Pointwise>(x: &[f64]) -> Vec<f64> {
            let x = Tensor::<Rank1<1>, f64>::from_vec(x.to_vec()).unwrap();
            let layer = Activation::<F, Rank1<1>>::default();
            let mut y = Tensor::zeros(0);
            layer.forward(&x, &mut y, &mut ());
            let ones = Tensor::from_vec(vec![1.0; x.batch()]).unwrap();
            let mut dx = Tensor::zeros(0);
            layer.backward(&x, &y, &ones, Some(&mut dx), &mut (), &mut ());
            dx.into_vec()
        }
        fixture.assert_matches("gelu.derivative", &derivatives::<GeluFn>(&x));
        fixture.assert_matches("gelu_tanh.derivative", &derivatives::<GeluTanhFn>(&x));
    }

    #[test]
    fn gelu_in_f32_agrees_with_f64() {
        for i in -400..=400 {
            let x = i as f64 * 0.025;
            let x32 = x as f32;
            for (a, e) in [
                (GeluFn::value(x32), GeluFn::value(x)),
                (
                    GeluFn::derivative(x32, GeluFn::value(x32)),
                    GeluFn::derivative(x, 0.0),
                ),
                (GeluTanhFn::value(x32), GeluTanhFn::value(x)),
                (
                    GeluTanhFn::derivative(x32, GeluTanhFn::value(x32)),
                    GeluTanhFn::derivative(x, 0.0),
                ),
            ] {
                assert!(
                    (f64::from(a) - e).abs() <= 4e-7 * e.abs().max(1.0),
                    "x = {x}: f32 {a} vs f64 {e}"
                );
            }
        }
    }
}
