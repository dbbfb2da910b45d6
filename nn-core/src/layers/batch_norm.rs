//! Batch normalisation over the channels of `[C, H, W]` samples.

use crate::init::Rng;
use crate::module::{Buffer, BufferMut, BufferValues, BufferValuesMut, Module};
use crate::{join_name, Float, Rank3, Tensor};

/// PyTorch's `nn.BatchNorm2d(C)` (eps `1e-5`, momentum `0.1`, affine, tracking running
/// statistics) over samples `[C, H, W]`.
///
/// Training (`forward_train`) normalises each channel with the statistics of the batch, over
/// the `m = N·H·W` values of that channel (biased variance):
///
/// ```text
/// μ_c = (1/m) Σ x,   σ²_c = (1/m) Σ (x − μ_c)²,   x̂ = (x − μ_c) / √(σ²_c + eps)
/// y = γ_c · x̂ + β_c
/// running_mean ← (1 − momentum) · running_mean + momentum · μ_c
/// running_var  ← (1 − momentum) · running_var  + momentum · σ²_c · m / (m − 1)   (unbiased)
/// num_batches_tracked ← num_batches_tracked + 1
/// ```
///
/// Inference (`forward`) uses the running statistics instead:
/// `y = γ_c · (x − running_mean_c) / √(running_var_c + eps) + β_c`.
///
/// Backward (training mode), with sums over the channel's `m` values:
/// `dγ_c += Σ dy · x̂`, `dβ_c += Σ dy`,
/// `dx = γ_c / √(σ²_c + eps) · (dy − (1/m) Σ dy − x̂ · (1/m) Σ dy · x̂)`.
/// The cache keeps `μ_c` and `1 / √(σ²_c + eps)`; `x̂` is recomputed from `x`.
///
/// Parameters as in PyTorch: `weight` (γ, init 1) and `bias` (β, init 0), both `[C]`. Buffers
/// (saved with the weights, exactly PyTorch's state_dict): `running_mean` `[C]` (init 0),
/// `running_var` `[C]` (init 1), `num_batches_tracked` (int64, shape `[]`).
///
/// Like PyTorch, a training forward needs more than one value per channel (`N·H·W > 1`).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm2d<const C: usize, const H: usize, const W: usize, E: Float = f32> {
    /// γ, `[C]`.
    pub weight: Vec<E>,
    /// β, `[C]`.
    pub bias: Vec<E>,
    /// `[C]`.
    pub running_mean: Vec<E>,
    /// `[C]`, unbiased.
    pub running_var: Vec<E>,
    /// Training forwards so far.
    pub num_batches_tracked: i64,
}

/// The gradients of a batch norm's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm2dGrads<E> {
    /// `dL/dγ`, `[C]`.
    pub weight: Vec<E>,
    /// `dL/dβ`, `[C]`.
    pub bias: Vec<E>,
}

/// The batch statistics of the last training forward, per channel.
#[derive(Clone, Debug)]
pub struct BatchNormCache<E> {
    mean: Vec<E>,
    inv_std: Vec<E>,
}

/// `Σ f(a_i, b_i)` with independent accumulators, so that the loop vectorises.
#[inline(always)]
fn sum_of<E: Float>(a: &[E], b: &[E], f: impl Fn(E, E) -> E) -> E {
    const LANES: usize = 8;
    let mut acc = [E::ZERO; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l]);
        }
    }
    let mut tail = E::ZERO;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += f(*x, *y);
    }
    acc.iter().copied().sum::<E>() + tail
}

impl<const C: usize, const H: usize, const W: usize, E: Float> BatchNorm2d<C, H, W, E> {
    /// Added to the variance before the square root.
    pub const EPS: f64 = 1e-5;
    /// The weight of the new batch in the running statistics.
    pub const MOMENTUM: f64 = 0.1;
    const SHAPE: [usize; 1] = [C];
    const PLANE: usize = H * W;

    /// PyTorch's initial state: γ = 1, β = 0, running mean 0, running variance 1, no batches.
    pub fn new() -> Self {
        Self {
            weight: vec![E::ONE; C],
            bias: vec![E::ZERO; C],
            running_mean: vec![E::ZERO; C],
            running_var: vec![E::ONE; C],
            num_batches_tracked: 0,
        }
    }

    /// The planes (`[H, W]` slices) of channel `c` in a batch, one per sample.
    fn channel(values: &[E], c: usize) -> impl Iterator<Item = &[E]> {
        values
            .chunks_exact(C * Self::PLANE)
            .map(move |sample| &sample[c * Self::PLANE..(c + 1) * Self::PLANE])
    }

    /// `y = x · scale_c + shift_c` on every channel.
    fn affine(
        x: &Tensor<Rank3<C, H, W>, E>,
        y: &mut Tensor<Rank3<C, H, W>, E>,
        scale_shift: impl Fn(usize) -> (E, E),
    ) {
        y.set_batch(x.batch());
        if Self::PLANE == 0 {
            return;
        }
        for (xs, ys) in x
            .as_slice()
            .chunks_exact(C * Self::PLANE)
            .zip(y.as_mut_slice().chunks_exact_mut(C * Self::PLANE))
        {
            for (c, (xp, yp)) in xs
                .chunks_exact(Self::PLANE)
                .zip(ys.chunks_exact_mut(Self::PLANE))
                .enumerate()
            {
                let (scale, shift) = scale_shift(c);
                for (y, x) in yp.iter_mut().zip(xp) {
                    *y = *x * scale + shift;
                }
            }
        }
    }
}

impl<const C: usize, const H: usize, const W: usize, E: Float> Default for BatchNorm2d<C, H, W, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const C: usize, const H: usize, const W: usize, E: Float> Module<E>
    for BatchNorm2d<C, H, W, E>
{
    type Input = Rank3<C, H, W>;
    type Output = Rank3<C, H, W>;
    type Cache = BatchNormCache<E>;
    type Grads = BatchNorm2dGrads<E>;

    const PARAMS: usize = 2 * C;

    fn init(_rng: &mut Rng) -> Self {
        Self::new()
    }

    fn new_cache(&self, _max_batch: usize) -> BatchNormCache<E> {
        BatchNormCache {
            mean: vec![E::ZERO; C],
            inv_std: vec![E::ZERO; C],
        }
    }

    fn new_grads(&self) -> BatchNorm2dGrads<E> {
        BatchNorm2dGrads {
            weight: vec![E::ZERO; C],
            bias: vec![E::ZERO; C],
        }
    }

    fn zero_grads(grads: &mut BatchNorm2dGrads<E>) {
        grads.weight.fill(E::ZERO);
        grads.bias.fill(E::ZERO);
    }

    fn forward(
        &self,
        x: &Tensor<Rank3<C, H, W>, E>,
        y: &mut Tensor<Rank3<C, H, W>, E>,
        _cache: &mut BatchNormCache<E>,
    ) {
        let eps = E::from_f64(Self::EPS);
        Self::affine(x, y, |c| {
            let scale = self.weight[c] / (self.running_var[c] + eps).sqrt();
            (scale, self.bias[c] - self.running_mean[c] * scale)
        });
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank3<C, H, W>, E>,
        y: &mut Tensor<Rank3<C, H, W>, E>,
        cache: &mut BatchNormCache<E>,
    ) {
        let m = x.batch() * Self::PLANE;
        assert!(
            m > 1,
            "BatchNorm2d: expected more than 1 value per channel when training (batch {}, {H} x {W})",
            x.batch()
        );
        let count = E::from_f64(m as f64);
        let eps = E::from_f64(Self::EPS);
        let momentum = E::from_f64(Self::MOMENTUM);
        let unbias = E::from_f64(m as f64 / (m - 1) as f64);
        for c in 0..C {
            let total: E = Self::channel(x.as_slice(), c)
                .map(crate::kernels::vector::sum)
                .sum();
            let mean = total / count;
            let squares: E = Self::channel(x.as_slice(), c)
                .map(|p| sum_of(p, p, |a, _| (a - mean) * (a - mean)))
                .sum();
            let var = squares / count;
            cache.mean[c] = mean;
            cache.inv_std[c] = E::ONE / (var + eps).sqrt();
            self.running_mean[c] = (E::ONE - momentum) * self.running_mean[c] + momentum * mean;
            self.running_var[c] =
                (E::ONE - momentum) * self.running_var[c] + momentum * var * unbias;
        }
        self.num_batches_tracked += 1;
        let (weight, bias) = (&self.weight, &self.bias);
        Self::affine(x, y, |c| {
            let scale = weight[c] * cache.inv_std[c];
            (scale, bias[c] - cache.mean[c] * scale)
        });
    }

    fn backward(
        &self,
        x: &Tensor<Rank3<C, H, W>, E>,
        _y: &Tensor<Rank3<C, H, W>, E>,
        dy: &Tensor<Rank3<C, H, W>, E>,
        dx: Option<&mut Tensor<Rank3<C, H, W>, E>>,
        cache: &mut BatchNormCache<E>,
        grads: &mut BatchNorm2dGrads<E>,
    ) {
        let batch = x.batch();
        let count = E::from_f64((batch * Self::PLANE) as f64);
        let mut dx = dx;
        if let Some(dx) = dx.as_deref_mut() {
            dx.set_batch(batch);
        }
        for c in 0..C {
            let (mean, inv_std) = (cache.mean[c], cache.inv_std[c]);
            let mut sum_dy = E::ZERO;
            let mut sum_dy_centered = E::ZERO;
            for (xp, dyp) in Self::channel(x.as_slice(), c).zip(Self::channel(dy.as_slice(), c)) {
                sum_dy += crate::kernels::vector::sum(dyp);
                sum_dy_centered += sum_of(dyp, xp, |d, x| d * (x - mean));
            }
            let sum_dy_xhat = sum_dy_centered * inv_std;
            grads.bias[c] += sum_dy;
            grads.weight[c] += sum_dy_xhat;
            let Some(dx) = dx.as_deref_mut() else {
                continue;
            };
            let scale = self.weight[c] * inv_std;
            let mean_dy = sum_dy / count;
            let mean_dy_xhat = sum_dy_xhat / count;
            for s in 0..batch {
                let at = (s * C + c) * Self::PLANE;
                let xp = &x.as_slice()[at..at + Self::PLANE];
                let dyp = &dy.as_slice()[at..at + Self::PLANE];
                let dxp = &mut dx.as_mut_slice()[at..at + Self::PLANE];
                for ((dx, dy), x) in dxp.iter_mut().zip(dyp).zip(xp) {
                    let xhat = (*x - mean) * inv_std;
                    *dx = scale * (*dy - mean_dy - xhat * mean_dy_xhat);
                }
            }
        }
    }

    crate::parameters!(weight: "weight" => Self::SHAPE, bias: "bias" => Self::SHAPE);

    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(Buffer<'_, E>)) {
        f(Buffer {
            name: &join_name(prefix, "running_mean"),
            shape: &Self::SHAPE,
            values: BufferValues::Float(&self.running_mean),
        });
        f(Buffer {
            name: &join_name(prefix, "running_var"),
            shape: &Self::SHAPE,
            values: BufferValues::Float(&self.running_var),
        });
        f(Buffer {
            name: &join_name(prefix, "num_batches_tracked"),
            shape: &[],
            values: BufferValues::Int64(std::slice::from_ref(&self.num_batches_tracked)),
        });
    }

    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(BufferMut<'_, E>)) {
        f(BufferMut {
            name: &join_name(prefix, "running_mean"),
            shape: &Self::SHAPE,
            values: BufferValuesMut::Float(&mut self.running_mean),
        });
        f(BufferMut {
            name: &join_name(prefix, "running_var"),
            shape: &Self::SHAPE,
            values: BufferValuesMut::Float(&mut self.running_var),
        });
        f(BufferMut {
            name: &join_name(prefix, "num_batches_tracked"),
            shape: &[],
            values: BufferValuesMut::Int64(std::slice::from_mut(&mut self.num_batches_tracked)),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_module, check_module_at, random_tensor};
    use crate::init::{rng, uniform};
    use crate::layers::conv::fixture::{assert_close, cast, Fixture};

    /// Two samples, two channels of 1 x 3: channel 0 holds 1..6 spread over both samples.
    fn small_batch() -> Tensor<Rank3<2, 1, 3>, f64> {
        Tensor::from_vec(vec![
            1.0, 2.0, 3.0, 10.0, 10.0, 16.0, 4.0, 5.0, 6.0, 10.0, 12.0, 16.0,
        ])
        .unwrap()
    }

    #[test]
    fn training_normalises_with_batch_statistics_and_updates_running_ones() {
        let mut layer = BatchNorm2d::<2, 1, 3, f64>::new();
        layer.weight = vec![2.0, 1.0];
        layer.bias = vec![0.5, -1.0];
        let x = small_batch();
        let mut y = Tensor::zeros(2);
        let mut cache = layer.new_cache(2);
        layer.forward_train(&x, &mut y, &mut cache);

        // Channel 0: values 1..=6, mean 3.5, biased variance 35/12, unbiased 3.5.
        // Channel 1: values 10, 10, 16, 10, 12, 16: mean 74/6, Σ(x − μ)² = 944 − 74²/6.
        let mean1 = 74.0 / 6.0;
        let ss1 = [10.0, 10.0, 16.0, 10.0, 12.0, 16.0]
            .iter()
            .map(|v: &f64| (v - mean1) * (v - mean1))
            .sum::<f64>();
        let (var0, var1) = (35.0 / 12.0, ss1 / 6.0);
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        close(layer.running_mean[0], 0.9 * 0.0 + 0.1 * 3.5);
        close(layer.running_mean[1], 0.1 * mean1);
        close(layer.running_var[0], 0.9 * 1.0 + 0.1 * 3.5);
        close(layer.running_var[1], 0.9 + 0.1 * ss1 / 5.0);
        assert_eq!(layer.num_batches_tracked, 1);

        let x0 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let expected0: Vec<f64> = x0
            .iter()
            .map(|v| 2.0 * (v - 3.5) / (var0 + 1e-5).sqrt() + 0.5)
            .collect();
        close(y.as_slice()[0], expected0[0]);
        close(y.as_slice()[2], expected0[2]);
        close(y.as_slice()[6], expected0[3]);
        close(y.as_slice()[8], expected0[5]);
        close(y.as_slice()[5], (16.0 - mean1) / (var1 + 1e-5).sqrt() - 1.0);

        layer.forward_train(&x, &mut y, &mut cache);
        assert_eq!(layer.num_batches_tracked, 2);
        close(layer.running_mean[0], 0.9 * 0.35 + 0.35);
    }

    #[test]
    fn inference_uses_the_running_statistics() {
        let mut layer = BatchNorm2d::<2, 1, 3, f64>::new();
        layer.weight = vec![2.0, 1.0];
        layer.bias = vec![0.5, -1.0];
        layer.running_mean = vec![1.0, -2.0];
        layer.running_var = vec![4.0, 0.25];
        let x = small_batch();
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut layer.new_cache(2));
        let expected: Vec<f64> = x
            .as_slice()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let c = (i / 3) % 2;
                layer.weight[c] * (v - layer.running_mean[c]) / (layer.running_var[c] + 1e-5).sqrt()
                    + layer.bias[c]
            })
            .collect();
        assert_close("eval output", y.as_slice(), &expected, 1e-14);
        assert_eq!(layer.num_batches_tracked, 0, "inference changes no state");
    }

    #[test]
    fn state_is_named_and_typed_like_pytorchs_state_dict() {
        let layer = BatchNorm2d::<3, 2, 2>::new();
        let mut params = Vec::new();
        layer.visit_params("features.1", &mut |p| {
            params.push((p.name.to_string(), p.shape.to_vec()))
        });
        assert_eq!(
            params,
            vec![
                ("features.1.weight".to_string(), vec![3]),
                ("features.1.bias".to_string(), vec![3]),
            ]
        );
        let mut buffers = Vec::new();
        layer.visit_buffers("features.1", &mut |b| {
            let kind = match b.values {
                BufferValues::Float(v) => format!("float {v:?}"),
                BufferValues::Int64(v) => format!("int64 {v:?}"),
            };
            buffers.push((b.name.to_string(), b.shape.to_vec(), kind));
        });
        assert_eq!(
            buffers,
            vec![
                (
                    "features.1.running_mean".to_string(),
                    vec![3],
                    "float [0.0, 0.0, 0.0]".to_string()
                ),
                (
                    "features.1.running_var".to_string(),
                    vec![3],
                    "float [1.0, 1.0, 1.0]".to_string()
                ),
                (
                    "features.1.num_batches_tracked".to_string(),
                    vec![],
                    "int64 [0]".to_string()
                ),
            ]
        );
        let mut layer = layer;
        layer.visit_buffers_mut("", &mut |b| {
            if let BufferValuesMut::Int64(v) = b.values {
                v[0] = 42;
            }
        });
        assert_eq!(layer.num_batches_tracked, 42);
        assert_eq!(<BatchNorm2d<3, 2, 2> as Module<f32>>::PARAMS, 6);
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<BatchNorm2d<3, 2, 3, f64>>(4, 61);
        // Random γ and β, and a batch of one with a spatial extent.
        let mut generator = rng(62);
        let mut layer = BatchNorm2d::<2, 3, 3, f64>::new();
        uniform(&mut generator, &mut layer.weight, 2.0);
        uniform(&mut generator, &mut layer.bias, 2.0);
        for batch in [1, 3] {
            let x = random_tensor(&mut generator, batch);
            check_module_at(&layer, &x, 63);
        }
    }

    #[test]
    #[should_panic(expected = "more than 1 value per channel")]
    fn training_on_a_single_value_per_channel_is_refused() {
        let mut layer = BatchNorm2d::<2, 1, 1, f64>::new();
        let x = Tensor::from_vec(vec![1.0, 2.0]).unwrap();
        let mut y = Tensor::zeros(1);
        let mut cache = layer.new_cache(1);
        layer.forward_train(&x, &mut y, &mut cache);
    }

    fn pytorch_step<E: Float>(tol: f64) {
        let f = Fixture::open("batch_norm.safetensors");
        let mut layer = BatchNorm2d::<3, 4, 5, E> {
            weight: cast(&f.values("weight", &[3])),
            bias: cast(&f.values("bias", &[3])),
            running_mean: cast(&f.values("running_mean_before", &[3])),
            running_var: cast(&f.values("running_var_before", &[3])),
            num_batches_tracked: f.i64("num_batches_tracked_before"),
        };
        let shape = [6, 3, 4, 5];
        let x = Tensor::from_vec(cast(&f.values("input", &shape))).unwrap();
        let mut y = Tensor::zeros(6);
        let mut cache = layer.new_cache(6);
        layer.forward_train(&x, &mut y, &mut cache);
        assert_close(
            "train output",
            y.as_slice(),
            &f.values("output", &shape),
            tol,
        );
        let expected = f.values("running_mean", &[3]);
        assert_close("running_mean", &layer.running_mean, &expected, tol);
        let expected = f.values("running_var", &[3]);
        assert_close("running_var", &layer.running_var, &expected, tol);
        assert_eq!(layer.num_batches_tracked, f.i64("num_batches_tracked"));

        let dy = Tensor::from_vec(cast(&f.values("grad_output", &shape))).unwrap();
        let mut grads = layer.new_grads();
        let mut dx = Tensor::zeros(6);
        layer.backward(&x, &y, &dy, Some(&mut dx), &mut cache, &mut grads);
        assert_close(
            "grad.weight",
            &grads.weight,
            &f.values("grad.weight", &[3]),
            tol,
        );
        assert_close("grad.bias", &grads.bias, &f.values("grad.bias", &[3]), tol);
        assert_close(
            "grad.input",
            dx.as_slice(),
            &f.values("grad.input", &shape),
            tol,
        );

        let eval_shape = [2, 3, 4, 5];
        let x = Tensor::from_vec(cast(&f.values("eval_input", &eval_shape))).unwrap();
        layer.forward(&x, &mut y, &mut cache);
        let expected = f.values("eval_output", &eval_shape);
        assert_close("eval output", y.as_slice(), &expected, tol);
    }

    #[test]
    fn matches_pytorch_in_f64_and_f32() {
        pytorch_step::<f64>(1e-12);
        pytorch_step::<f32>(2e-5);
    }
}
