//! Layer normalisation over the last dimension of a sample.

use std::marker::PhantomData;

use crate::init::Rng;
use crate::kernels::parallel::{join, PARALLEL_VALUES};
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

/// The statistics of every row of the last training forward, for `max_batch` samples, and
/// the second core's part of `dγ` and `dβ` in a backward split over both cores.
#[derive(Clone, Debug)]
pub struct LayerNormCache<E> {
    mean: Vec<E>,
    inv_std: Vec<E>,
    max_batch: usize,
    second_core_grads: Vec<E>,
}

/// Accumulators per row sum: the sums vectorise only when split over independent lanes.
const LANES: usize = 8;

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
    /// `1/√(σ² + eps)` there. Many rows are split between the cores.
    fn normalise(&self, x: &[E], y: &mut [E], stats: Option<(&mut [E], &mut [E])>) {
        let d = Self::D;
        if d == 0 {
            return;
        }
        let rows = x.len() / d;
        if rows < 2 || rows * d < PARALLEL_VALUES {
            return self.normalise_rows(x, y, stats);
        }
        let half = rows / 2;
        let (x0, x1) = x.split_at(half * d);
        let (y0, y1) = y.split_at_mut(half * d);
        let (stats0, stats1) = match stats {
            Some((means, inv_stds)) => {
                let (m0, m1) = means.split_at_mut(half);
                let (s0, s1) = inv_stds.split_at_mut(half);
                (Some((m0, s0)), Some((m1, s1)))
            }
            None => (None, None),
        };
        join(
            || self.normalise_rows(x0, y0, stats0),
            || self.normalise_rows(x1, y1, stats1),
        );
    }

    /// `normalise` on this core.
    fn normalise_rows(&self, x: &[E], y: &mut [E], mut stats: Option<(&mut [E], &mut [E])>) {
        let d = Self::D;
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

impl<S: Shape, const EPS_E12: u64, E: Float> LayerNorm<S, EPS_E12, E> {
    /// The backward of the rows `x` with gradients `dy` and statistics `(μ, 1/√(σ² + eps))`:
    /// adds to `dw` (dγ) and `db` (dβ), and writes `dx` when given.
    fn backward_rows(
        &self,
        x: &[E],
        dy: &[E],
        mut dx: Option<&mut [E]>,
        (means, inv_stds): (&[E], &[E]),
        dw: &mut [E],
        db: &mut [E],
    ) {
        let d = Self::D;
        add_row_sums(dy, db);
        let count = E::from_f64(d as f64);
        for (r, (xr, dyr)) in x.chunks_exact(d).zip(dy.chunks_exact(d)).enumerate() {
            let (mean, inv_std) = (means[r], inv_stds[r]);
            for ((gw, x), dy) in dw.iter_mut().zip(xr).zip(dyr) {
                *gw += *dy * (*x - mean) * inv_std;
            }
            let Some(dx) = dx.as_deref_mut() else {
                continue;
            };
            let (sum_g, sum_g_xhat) = self.row_sums(xr, dyr, mean, inv_std);
            let (mean_g, mean_g_xhat) = (sum_g / count, sum_g_xhat / count);
            let dxr = &mut dx[r * d..(r + 1) * d];
            for (((dx, x), dy), w) in dxr.iter_mut().zip(xr).zip(dyr).zip(&self.weight) {
                let xhat = (*x - mean) * inv_std;
                *dx = (*dy * *w - mean_g - xhat * mean_g_xhat) * inv_std;
            }
        }
    }

    /// `Σ g` and `Σ g ⊙ x̂` over a row, `g = dy ⊙ γ`, in `LANES` independent sums.
    fn row_sums(&self, x: &[E], dy: &[E], mean: E, inv_std: E) -> (E, E) {
        let (mut g_lanes, mut g_xhat_lanes) = ([E::ZERO; LANES], [E::ZERO; LANES]);
        let (mut g_tail, mut g_xhat_tail) = (E::ZERO, E::ZERO);
        let mut chunks = x
            .chunks_exact(LANES)
            .zip(dy.chunks_exact(LANES))
            .zip(self.weight.chunks_exact(LANES));
        for ((x, dy), w) in &mut chunks {
            for l in 0..LANES {
                let g = dy[l] * w[l];
                g_lanes[l] += g;
                g_xhat_lanes[l] += g * (x[l] - mean) * inv_std;
            }
        }
        let done = x.len() / LANES * LANES;
        for ((x, dy), w) in x[done..].iter().zip(&dy[done..]).zip(&self.weight[done..]) {
            let g = *dy * *w;
            g_tail += g;
            g_xhat_tail += g * (*x - mean) * inv_std;
        }
        (sum(&g_lanes) + g_tail, sum(&g_xhat_lanes) + g_xhat_tail)
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
            second_core_grads: vec![E::ZERO; 2 * Self::D],
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
        if d == 0 {
            return;
        }
        let rows = batch * Self::ROWS;
        let (x, dy) = (x.as_slice(), dy.as_slice());
        let stats = (&cache.mean[..rows], &cache.inv_std[..rows]);
        let dx = dx.map(|dx| {
            dx.set_batch(batch);
            dx.as_mut_slice()
        });
        if rows < 2 || rows * d < PARALLEL_VALUES {
            let (dw, db) = (&mut grads.weight[..], &mut grads.bias[..]);
            return self.backward_rows(x, dy, dx, stats, dw, db);
        }
        let half = rows / 2;
        let (x0, x1) = x.split_at(half * d);
        let (dy0, dy1) = dy.split_at(half * d);
        let (dx0, dx1) = match dx {
            Some(dx) => {
                let (front, back) = dx.split_at_mut(half * d);
                (Some(front), Some(back))
            }
            None => (None, None),
        };
        let (stats0, stats1) = (
            (&stats.0[..half], &stats.1[..half]),
            (&stats.0[half..], &stats.1[half..]),
        );
        let second = &mut cache.second_core_grads;
        second.fill(E::ZERO);
        let (second_dw, second_db) = second.split_at_mut(d);
        let (dw, db) = (&mut grads.weight[..], &mut grads.bias[..]);
        join(
            || self.backward_rows(x0, dy0, dx0, stats0, dw, db),
            || self.backward_rows(x1, dy1, dx1, stats1, second_dw, second_db),
        );
        for (total, part) in grads.weight.iter_mut().zip(&*second_dw) {
            *total += *part;
        }
        for (total, part) in grads.bias.iter_mut().zip(&*second_db) {
            *total += *part;
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
    fn splitting_the_rows_between_the_cores_changes_nothing() {
        // Forward and backward of 5 samples of 64 rows of 130 (above `PARALLEL_VALUES`,
        // halves of 160 rows, rows longer than whole lanes) against each sample alone (below
        // it), with random γ and β.
        type Layer = LayerNorm<Rank2<64, 130>, DEFAULT, f64>;
        let mut layer = Layer::new();
        let mut rng = crate::init::rng(8);
        crate::init::uniform(&mut rng, &mut layer.weight, 1.0);
        crate::init::uniform(&mut rng, &mut layer.bias, 1.0);
        let x = crate::gradcheck::random_tensor(&mut crate::init::rng(9), 5);
        let dy = crate::gradcheck::random_tensor(&mut crate::init::rng(10), 5);
        const { assert!(5 * 64 * 130 >= PARALLEL_VALUES && 64 * 130 < PARALLEL_VALUES) };
        let mut cache = layer.new_cache(5);
        let whole = run(&mut layer, &mut cache, &x, &dy);
        let (mut y, mut dx) = (Vec::new(), Vec::new());
        let (mut dw, mut db) = (vec![0.0; 130], vec![0.0; 130]);
        for (xs, dys) in x.samples().zip(dy.samples()) {
            let xs = Tensor::from_vec(xs.to_vec()).unwrap();
            let dys = Tensor::from_vec(dys.to_vec()).unwrap();
            let mut cache = layer.new_cache(1);
            let alone = run(&mut layer, &mut cache, &xs, &dys);
            y.extend_from_slice(&alone.output);
            dx.extend_from_slice(&alone.input_grad);
            dw.iter_mut()
                .zip(&alone.grads[0].1)
                .for_each(|(t, g)| *t += g);
            db.iter_mut()
                .zip(&alone.grads[1].1)
                .for_each(|(t, g)| *t += g);
        }
        let close = |a: &[f64], b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-12)
        };
        assert!(close(&whole.output, &y), "y");
        assert!(close(&whole.input_grad, &dx), "dx");
        assert!(close(&whole.grads[0].1, &dw), "dγ");
        assert!(close(&whole.grads[1].1, &db), "dβ");
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
