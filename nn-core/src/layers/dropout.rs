//! Dropout.

use std::marker::PhantomData;

use rand::RngCore;

use crate::init::{rng, Rng};
use crate::module::{Module, Param, ParamMut};
use crate::{Float, Shape, Tensor};

/// The seed of every dropout cache's generator (see `Dropout`).
pub const DROPOUT_SEED: u64 = 0xd20b_0a7e_5eed_0001;

/// PyTorch's `nn.Dropout(p)` over samples of shape `S`, with `p = P_PER_MILLION / 1e6`
/// (const generics cannot be floats: `nn.Dropout(0.5)` is `Dropout<S, 500_000>`).
///
/// Inverted dropout, as in PyTorch. A training forward zeroes each element independently with
/// probability `p` and scales the survivors by `1 / (1 − p)`, so the expected output is the
/// input; inference (`forward`) is the identity:
///
/// ```text
/// train:     y = x ⊙ m,   m_k = 0 with probability p, else 1 / (1 − p)
/// inference: y = x
/// ```
///
/// Backward: `dx = dy ⊙ m`, with the mask `m` of the last training forward, kept in the cache.
/// `p = 0` is the identity; `p = 1` gives zeros (no division by zero).
///
/// The mask is drawn from a generator that lives in the cache and is seeded with the fixed
/// `DROPOUT_SEED` by `new_cache`. So a fresh cache always draws the same sequence of masks:
/// runs are reproducible, and the gradient checks (which make a fresh cache for every
/// evaluation) see the same mask each time. A generated network reseeds each of its dropout
/// layers from its position (`Module::reseed`), so two dropout layers never share masks.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct Dropout<S: Shape, const P_PER_MILLION: u32> {
    shape: PhantomData<S>,
}

/// The mask of the last training forward (sized for the largest batch) and the generator that
/// draws the masks.
#[derive(Clone, Debug)]
pub struct DropoutCache<E> {
    mask: Vec<E>,
    rng: Rng,
}

impl<E> DropoutCache<E> {
    /// Restarts the mask generator from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = rng(seed);
    }
}

impl<S: Shape, const P_PER_MILLION: u32> Dropout<S, P_PER_MILLION> {
    /// The drop probability `p`.
    pub const P: f64 = {
        assert!(
            P_PER_MILLION <= 1_000_000,
            "Dropout: p = P_PER_MILLION / 1e6 must be at most 1"
        );
        P_PER_MILLION as f64 / 1e6
    };
    /// An element is dropped when a uniform `u32` falls below this (`p · 2³²`, exact to 2⁻³²).
    const THRESHOLD: u64 = ((P_PER_MILLION as u64) << 32) / 1_000_000;
}

impl<S: Shape, const P_PER_MILLION: u32, E: Float> Module<E> for Dropout<S, P_PER_MILLION> {
    type Input = S;
    type Output = S;
    type Cache = DropoutCache<E>;
    type Grads = ();

    const PARAMS: usize = 0;

    fn init(_rng: &mut Rng) -> Self {
        let _ = Self::P;
        Self::default()
    }

    fn new_cache(&self, max_batch: usize) -> DropoutCache<E> {
        let _ = Self::P;
        DropoutCache {
            mask: vec![E::ZERO; max_batch * S::NUMEL],
            rng: rng(DROPOUT_SEED),
        }
    }

    fn reseed(&self, cache: &mut DropoutCache<E>, seed: u64) {
        cache.reseed(seed);
    }

    fn new_grads(&self) {}

    fn zero_grads(_grads: &mut ()) {}

    fn forward(&self, x: &Tensor<S, E>, y: &mut Tensor<S, E>, _cache: &mut DropoutCache<E>) {
        y.copy_from(x);
    }

    fn forward_train(
        &mut self,
        x: &Tensor<S, E>,
        y: &mut Tensor<S, E>,
        cache: &mut DropoutCache<E>,
    ) {
        y.set_batch(x.batch());
        let n = x.as_slice().len();
        if cache.mask.len() < n {
            // Only when called with a larger batch than the cache was made for.
            cache.mask.resize(n, E::ZERO);
        }
        let mask = &mut cache.mask[..n];
        if P_PER_MILLION == 0 {
            mask.fill(E::ONE);
            crate::kernels::vector::copy(y.as_mut_slice(), x.as_slice());
        } else if P_PER_MILLION >= 1_000_000 {
            mask.fill(E::ZERO);
            y.fill_zero();
        } else {
            let scale = E::from_f64(1.0 / (1.0 - Self::P));
            for ((m, y), x) in mask.iter_mut().zip(y.as_mut_slice()).zip(x.as_slice()) {
                let keep = u64::from(cache.rng.next_u32()) >= Self::THRESHOLD;
                *m = if keep { scale } else { E::ZERO };
                *y = *x * *m;
            }
        }
    }

    fn backward(
        &self,
        x: &Tensor<S, E>,
        _y: &Tensor<S, E>,
        dy: &Tensor<S, E>,
        dx: Option<&mut Tensor<S, E>>,
        cache: &mut DropoutCache<E>,
        _grads: &mut (),
    ) {
        if let Some(dx) = dx {
            dx.set_batch(x.batch());
            for ((dx, dy), m) in dx
                .as_mut_slice()
                .iter_mut()
                .zip(dy.as_slice())
                .zip(&cache.mask)
            {
                *dx = *dy * *m;
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
    use crate::{Rank1, Rank3};

    fn train<const P: u32>(x: &[f64], cache: &mut DropoutCache<f64>) -> Vec<f64> {
        let mut layer = Dropout::<Rank1<1000>, P>::default();
        let x = Tensor::from_vec(x.to_vec()).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward_train(&x, &mut y, cache);
        y.into_vec()
    }

    #[test]
    fn half_of_the_elements_survive_scaled_by_two() {
        let layer = Dropout::<Rank1<1000>, 500_000>::default();
        let mut cache = Module::<f64>::new_cache(&layer, 2);
        let y = train::<500_000>(&[1.5; 2000], &mut cache);
        let kept = y.iter().filter(|v| **v != 0.0).count();
        assert!(y.iter().all(|v| *v == 0.0 || *v == 3.0));
        assert!((900..1100).contains(&kept), "kept {kept} of 2000");
        // The next forward draws a new mask; a fresh cache repeats the first one.
        let again = train::<500_000>(&[1.5; 2000], &mut cache);
        assert_ne!(y, again);
        let fresh = train::<500_000>(&[1.5; 2000], &mut Module::<f64>::new_cache(&layer, 2));
        assert_eq!(y, fresh);
        // A reseeded cache draws another sequence.
        let mut reseeded = Module::<f64>::new_cache(&layer, 2);
        reseeded.reseed(7);
        assert_ne!(y, train::<500_000>(&[1.5; 2000], &mut reseeded));
    }

    #[test]
    fn p_zero_is_the_identity_and_p_one_gives_zeros() {
        let x: Vec<f64> = (0..1000).map(f64::from).collect();
        let mut cache = Module::<f64>::new_cache(&Dropout::<Rank1<1000>, 0>::default(), 1);
        assert_eq!(train::<0>(&x, &mut cache), x);
        let mut cache = Module::<f64>::new_cache(&Dropout::<Rank1<1000>, 1_000_000>::default(), 1);
        assert!(train::<1_000_000>(&x, &mut cache).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn inference_is_the_identity() {
        let layer = Dropout::<Rank1<4>, 900_000>::default();
        let x = Tensor::from_vec(vec![1.0, -2.0, 3.0, 4.0]).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut Module::<f64>::new_cache(&layer, 1));
        assert_eq!(y, x);
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<Dropout<Rank3<2, 3, 4>, 500_000>>(3, 51);
        check_module::<Dropout<Rank1<9>, 0>>(2, 52);
        check_module::<Dropout<Rank1<9>, 1_000_000>>(2, 53);
    }
}
