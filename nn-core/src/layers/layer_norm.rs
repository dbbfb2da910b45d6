//! Layer normalisation over the last dimension of a sample.

use std::marker::PhantomData;

use crate::init::Rng;
use crate::kernels::vector::{dot, sum};
use crate::layers::linear::add_row_sums;
use crate::layers::sequence::check_batch;
use crate::module::Module;
use crate::{Float, Shape, Tensor};

/// PyTorch's `nn.LayerNorm(D, eps)` over samples of shape `S`, normalising over the last
/// dimension `D = S::DIMS.last()`: each row of `D` values (a time step of a `[T, D]` sequence,
/// or the whole of a `[D]` sample) is normalised with its own statistics (biased variance),
/// in training and inference alike:
///
/// ```text
/// μ = (1/D) Σ x,   σ² = (1/D) Σ (x − μ)²,   x̂ = (x − μ) / √(σ² + eps),   y = γ ⊙ x̂ + β
/// ```
///
/// `eps = EPS_E12 · 1e-12`: PyTorch's default `1e-5` is `EPS_E12 = 10_000_000`, BERT's
/// `1e-12` is `EPS_E12 = 1`.
///
/// Backward, per row, with `g = dy ⊙ γ` and means over the row's `D` values:
/// `dγ += Σ_rows dy ⊙ x̂`, `dβ += Σ_rows dy`,
/// `dx = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / √(σ² + eps)`.
/// The cache keeps `μ` and `1 / √(σ² + eps)` of every row; `x̂` is recomputed from `x`.
///
/// Parameters as in PyTorch: `weight` (γ, init 1) and `bias` (β, init 0), both `[D]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm<S: Shape, const EPS_E12: u64, E: Float = f32> {
    /// γ, `[D]`.
    pub weight: Vec<E>,
    /// β, `[D]`.
    pub bias: Vec<E>,
    shape: PhantomData<S>,
}

/// The statistics of every row of the last training forward, for `max_batch` samples.
#[derive(Clone, Debug)]
pub struct LayerNormCache<E> {
    mean: Vec<E>,
    inv_std: Vec<E>,
    max_batch: usize,
}

impl<S: Shape, const EPS_E12: u64, E: Float> LayerNorm<S, EPS_E12, E> {
    /// The normalised dimension: the last of `S`.
    pub const D: usize = match S::DIMS.last() {
        Some(d) => *d,
        None => 1,
    };
    /// The rows of one sample, each normalised on its own.
    pub const ROWS: usize = match S::NUMEL.checked_div(Self::D) {
        Some(rows) => rows,
        None => 0,
    };
    /// Added to the variance before the square root: `EPS_E12 · 1e-12`, computed as
    /// `EPS_E12 / 1e12` so that it is the double nearest to the decimal value (`1e-5` exactly
    /// as PyTorch's Python float).
    pub const EPS: f64 = EPS_E12 as f64 / 1e12;
    const SHAPE: [usize; 1] = [Self::D];

    /// PyTorch's initial state: γ = 1, β = 0.
    pub fn new() -> Self {
        Self {
            weight: vec![E::ONE; Self::D],
            bias: vec![E::ZERO; Self::D],
            shape: PhantomData,
        }
    }

    /// Normalises every row of `x` into `y`; with `stats`, stores each row's `μ` and
    /// `1/√(σ² + eps)` there.
    fn normalise(&self, x: &[E], y: &mut [E], mut stats: Option<(&mut [E], &mut [E])>) {
        let d = Self::D;
        if d == 0 {
            return;
        }
        let count = E::from_f64(d as f64);
        let eps = E::from_f64(Self::EPS);
        for (r, (xr, yr)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
            let mean = sum(xr) / count;
            for (y, x) in yr.iter_mut().zip(xr) {
                *y = *x - mean;
            }
            let var = dot(yr, yr) / count;
            let inv_std = E::ONE / (var + eps).sqrt();
            for ((y, w), b) in yr.iter_mut().zip(&self.weight).zip(&self.bias) {
                *y = *y * inv_std * *w + *b;
            }
            if let Some((means, inv_stds)) = stats.as_mut() {
                means[r] = mean;
                inv_stds[r] = inv_std;
            }
        }
    }
}

impl<S: Shape, const EPS_E12: u64, E: Float> Default for LayerNorm<S, EPS_E12, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Shape, const EPS_E12: u64, E: Float> Module<E> for LayerNorm<S, EPS_E12, E> {
    type Input = S;
    type Output = S;
    type Cache = LayerNormCache<E>;
    type Grads = Self;

    const PARAMS: usize = 2 * Self::D;

    fn init(_rng: &mut Rng) -> Self {
        Self::new()
    }

    fn new_cache(&self, max_batch: usize) -> LayerNormCache<E> {
        LayerNormCache {
            mean: vec![E::ZERO; max_batch * Self::ROWS],
            inv_std: vec![E::ZERO; max_batch * Self::ROWS],
            max_batch,
        }
    }

    fn new_grads(&self) -> Self {
        Self {
            weight: vec![E::ZERO; Self::D],
            bias: vec![E::ZERO; Self::D],
            shape: PhantomData,
        }
    }

    fn zero_grads(grads: &mut Self) {
        grads.weight.fill(E::ZERO);
        grads.bias.fill(E::ZERO);
    }

    fn forward(&self, x: &Tensor<S, E>, y: &mut Tensor<S, E>, _cache: &mut LayerNormCache<E>) {
        y.set_batch(x.batch());
        self.normalise(x.as_slice(), y.as_mut_slice(), None);
    }

    fn forward_train(
        &mut self,
        x: &Tensor<S, E>,
        y: &mut Tensor<S, E>,
        cache: &mut LayerNormCache<E>,
    ) {
        let batch = x.batch();
        check_batch("LayerNorm", batch, cache.max_batch);
        y.set_batch(batch);
        let rows = batch * Self::ROWS;
        self.normalise(
            x.as_slice(),
            y.as_mut_slice(),
            Some((&mut cache.mean[..rows], &mut cache.inv_std[..rows])),
        );
    }

    fn backward(
        &self,
        x: &Tensor<S, E>,
        _y: &Tensor<S, E>,
        dy: &Tensor<S, E>,
        dx: Option<&mut Tensor<S, E>>,
        cache: &mut LayerNormCache<E>,
        grads: &mut Self,
    ) {
        let d = Self::D;
        let batch = x.batch();
        check_batch("LayerNorm", batch, cache.max_batch);
        add_row_sums(dy.as_slice(), &mut grads.bias);
        if d == 0 {
            return;
        }
        let count = E::from_f64(d as f64);
        let mut dx = dx.map(|dx| {
            dx.set_batch(batch);
            dx.as_mut_slice()
        });
        for (r, (xr, dyr)) in x
            .as_slice()
            .chunks_exact(d)
            .zip(dy.as_slice().chunks_exact(d))
            .enumerate()
        {
            let (mean, inv_std) = (cache.mean[r], cache.inv_std[r]);
            // dγ += dy ⊙ x̂, and the two means of dx.
            let mut sum_g = E::ZERO;
            let mut sum_g_xhat = E::ZERO;
            for (((gw, x), dy), w) in grads.weight.iter_mut().zip(xr).zip(dyr).zip(&self.weight) {
                let xhat = (*x - mean) * inv_std;
                *gw += *dy * xhat;
                let g = *dy * *w;
                sum_g += g;
                sum_g_xhat += g * xhat;
            }
            if let Some(dx) = dx.as_deref_mut() {
                let (mean_g, mean_g_xhat) = (sum_g / count, sum_g_xhat / count);
                let dxr = &mut dx[r * d..(r + 1) * d];
                for (((dx, x), dy), w) in dxr.iter_mut().zip(xr).zip(dyr).zip(&self.weight) {
                    let xhat = (*x - mean) * inv_std;
                    *dx = (*dy * *w - mean_g - xhat * mean_g_xhat) * inv_std;
                }
            }
        }
    }

    crate::parameters!(
        weight: "weight" => Self::SHAPE,
        bias: "bias" => Self::SHAPE,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_module;
    use crate::layers::sequence::testing::{assert_close, run, Fixture};
    use crate::{Rank1, Rank2, Rank3};

    /// PyTorch's default eps, 1e-5.
    const DEFAULT: u64 = 10_000_000;

    #[test]
    fn eps_is_the_decimal_value() {
        assert_eq!(LayerNorm::<Rank1<4>, DEFAULT, f64>::EPS, 1e-5);
        assert_eq!(LayerNorm::<Rank1<4>, 1, f64>::EPS, 1e-12);
        assert_eq!(LayerNorm::<Rank2<3, 7>, 1, f64>::D, 7);
        assert_eq!(LayerNorm::<Rank2<3, 7>, 1, f64>::ROWS, 3);
        assert_eq!(
            <LayerNorm<Rank3<2, 3, 5>, 1, f32> as Module<f32>>::PARAMS,
            10
        );
    }

    #[test]
    fn forward_normalises_each_row_then_scales_and_shifts() {
        // Rows [1, 2, 3] (μ 2, σ² 2/3) and [4, 4, 4] (σ² 0: all zeros before the shift).
        let mut layer = LayerNorm::<Rank2<2, 3>, 1, f64>::new();
        layer.weight = vec![1.0, 2.0, -1.0];
        layer.bias = vec![0.5, 0.0, 1.0];
        let x = Tensor::<Rank2<2, 3>, f64>::from_vec(vec![1.0, 2.0, 3.0, 4.0, 4.0, 4.0]).unwrap();
        let mut y = Tensor::zeros(0);
        let mut cache = layer.new_cache(1);
        layer.forward_train(&x, &mut y, &mut cache);
        let s = (2.0f64 / 3.0 + 1e-12).sqrt();
        let expected = [-1.0 / s + 0.5, 0.0, -1.0 / s + 1.0, 0.5, 0.0, 1.0];
        assert_close("layer norm", y.as_slice(), &expected);
        assert_close("mean", &cache.mean, &[2.0, 4.0]);
        assert_close("1/σ", &cache.inv_std, &[1.0 / s, 1.0 / 1e-6]);
        let mut inference = Tensor::zeros(0);
        layer.forward(&x, &mut inference, &mut layer.new_cache(0));
        assert_eq!(inference, y, "the same statistics in inference");
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<LayerNorm<Rank1<6>, DEFAULT, f64>>(3, 1);
        check_module::<LayerNorm<Rank2<4, 5>, DEFAULT, f64>>(2, 2);
        check_module::<LayerNorm<Rank3<2, 3, 4>, 1, f64>>(2, 3);
        check_module::<LayerNorm<Rank2<3, 128>, DEFAULT, f64>>(2, 4);
    }

    #[test]
    fn gradients_match_finite_differences_with_random_affine_parameters() {
        let mut rng = crate::init::rng(5);
        let mut layer = LayerNorm::<Rank2<3, 6>, DEFAULT, f64>::new();
        crate::init::uniform(&mut rng, &mut layer.weight, 2.0);
        crate::init::uniform(&mut rng, &mut layer.bias, 2.0);
        let x = crate::gradcheck::random_tensor(&mut rng, 4);
        crate::gradcheck::check_module_at(&layer, &x, 5);
    }

    #[test]
    fn a_smaller_batch_reuses_the_cache_and_backward_skips_dx_on_request() {
        let mut layer = LayerNorm::<Rank2<2, 4>, DEFAULT, f64>::new();
        let x = crate::gradcheck::random_tensor(&mut crate::init::rng(6), 2);
        let dy = crate::gradcheck::random_tensor(&mut crate::init::rng(7), 2);
        let mut cache = layer.new_cache(5);
        let with_dx = run(&mut layer, &mut cache, &x, &dy);
        let mut y = Tensor::zeros(0);
        layer.forward_train(&x, &mut y, &mut cache);
        let mut grads = layer.new_grads();
        layer.backward(&x, &y, &dy, None, &mut cache, &mut grads);
        assert_eq!(grads.weight, with_dx.grads[0].1);
        assert_eq!(grads.bias, with_dx.grads[1].1);
    }

    #[test]
    fn matches_pytorch() {
        // nn.LayerNorm(6) (eps 1e-5) on [2, 4, 6], and nn.LayerNorm(6, eps=1e-12).
        let fixture = Fixture::open("../transformer/layer_norm.safetensors");
        let x = fixture.tensor::<Rank2<4, 6>>("input");
        let r = fixture.tensor::<Rank2<4, 6>>("r");
        let mut layer = LayerNorm::<Rank2<4, 6>, DEFAULT, f64>::new();
        fixture.load(&mut layer);
        let mut cache = layer.new_cache(2);
        run(&mut layer, &mut cache, &x, &r).assert_matches(&fixture, "");
        let mut bert = LayerNorm::<Rank2<4, 6>, 1, f64>::new();
        fixture.load(&mut bert);
        let mut cache = bert.new_cache(2);
        run(&mut bert, &mut cache, &x, &r).assert_matches(&fixture, "eps_1e-12.");
    }
}
