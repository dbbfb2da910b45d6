//! 2-d pooling: max, average and adaptive average. None has parameters; each works on every
//! channel plane of every sample independently.

use crate::init::Rng;
use crate::kernels::parallel::join;
use crate::module::{Module, Param, ParamMut};
use crate::{Float, Rank3, Tensor};

/// `true` for NaN (which compares unequal to itself).
#[inline(always)]
fn is_nan<E: Float>(v: E) -> bool {
    v.partial_cmp(&v).is_none()
}

/// The planes (`[H, W]` slices) of `x` zipped with those of `y`.
fn planes<'a, E>(
    x: &'a [E],
    x_plane: usize,
    y: &'a mut [E],
    y_plane: usize,
) -> impl Iterator<Item = (&'a [E], &'a mut [E])> {
    x.chunks_exact(x_plane.max(1))
        .zip(y.chunks_exact_mut(y_plane.max(1)))
}

/// Above this many outputs, a training forward pools half of the planes on each core.
const PARALLEL_OUTPUTS: usize = 1 << 14;

/// PyTorch's `nn.MaxPool2d(K, stride=S)` over `[C, H, W]`: no padding, no dilation, output size
/// floored, `OH = (H − K) / S + 1`, `OW = (W − K) / S + 1`.
///
/// ```text
/// y[c, i, j] = max_(u, v < K) x[c, S·i + u, S·j + v]
/// ```
///
/// Backward routes `dy[c, i, j]` to the position of that maximum (and adds, where windows
/// overlap); on ties it is the first maximum in scan order (row by row), and a NaN counts as
/// the maximum, as in PyTorch. A training forward keeps the position of each maximum (its
/// index in the `[H, W]` plane, as `u32`) in the cache.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct MaxPool2d<
    const C: usize,
    const K: usize,
    const S: usize,
    const H: usize,
    const W: usize,
    const OH: usize,
    const OW: usize,
>;

/// The position of every maximum of the last training forward, sized for the largest batch.
#[derive(Clone, Debug)]
pub struct MaxPoolCache {
    argmax: Vec<u32>,
}

/// Checks a pooling window's geometry at compile time (no padding, floor).
const fn check_window(k: usize, s: usize, h: usize, w: usize, oh: usize, ow: usize) {
    assert!(
        k >= 1 && s >= 1,
        "pooling: kernel and stride must be at least 1"
    );
    assert!(
        h >= k && w >= k,
        "pooling: the input is smaller than the window"
    );
    assert!(
        oh == (h - k) / s + 1 && ow == (w - k) / s + 1,
        "pooling: OH/OW disagree with (H - K) / S + 1"
    );
}

impl<
        const C: usize,
        const K: usize,
        const S: usize,
        const H: usize,
        const W: usize,
        const OH: usize,
        const OW: usize,
    > MaxPool2d<C, K, S, H, W, OH, OW>
{
    const CHECK: () = {
        check_window(K, S, H, W, OH, OW);
        assert!(
            H * W <= u32::MAX as usize,
            "MaxPool2d: a plane must be indexable by u32"
        );
    };

    /// Pools whole planes, `[n, H, W]` into `[n, OH, OW]`, noting where each maximum was.
    fn pool<E: Float>(x: &[E], y: &mut [E], argmax: &mut [u32]) {
        let argmax = argmax.chunks_exact_mut((OH * OW).max(1));
        for ((xp, yp), ip) in planes(x, H * W, y, OH * OW).zip(argmax) {
            for (i, (row, index_row)) in yp
                .chunks_exact_mut(OW)
                .zip(ip.chunks_exact_mut(OW))
                .enumerate()
            {
                for (j, (out, index)) in row.iter_mut().zip(index_row).enumerate() {
                    let (value, at) = Self::window_max(xp, i, j);
                    *out = value;
                    *index = at as u32;
                }
            }
        }
    }

    /// The maximum of window `(i, j)` of `plane` and its index in the plane.
    #[inline(always)]
    fn window_max<E: Float>(plane: &[E], i: usize, j: usize) -> (E, usize) {
        let first = S * i * W + S * j;
        let mut best = plane[first];
        let mut best_index = first;
        for u in 0..K {
            let start = (S * i + u) * W + S * j;
            for (v, &value) in plane[start..start + K].iter().enumerate() {
                if value > best || (is_nan(value) && !is_nan(best)) {
                    best = value;
                    best_index = start + v;
                }
            }
        }
        (best, best_index)
    }
}

impl<
        const C: usize,
        const K: usize,
        const S: usize,
        const H: usize,
        const W: usize,
        const OH: usize,
        const OW: usize,
        E: Float,
    > Module<E> for MaxPool2d<C, K, S, H, W, OH, OW>
{
    type Input = Rank3<C, H, W>;
    type Output = Rank3<C, OH, OW>;
    type Cache = MaxPoolCache;
    type Grads = ();

    const PARAMS: usize = 0;

    fn init(_rng: &mut Rng) -> Self {
        let () = Self::CHECK;
        Self
    }

    fn new_cache(&self, max_batch: usize) -> MaxPoolCache {
        let () = Self::CHECK;
        MaxPoolCache {
            argmax: vec![0; max_batch * C * OH * OW],
        }
    }

    fn new_grads(&self) {}

    fn zero_grads(_grads: &mut ()) {}

    fn forward(
        &self,
        x: &Tensor<Rank3<C, H, W>, E>,
        y: &mut Tensor<Rank3<C, OH, OW>, E>,
        _cache: &mut MaxPoolCache,
    ) {
        let () = Self::CHECK;
        y.set_batch(x.batch());
        for (xp, yp) in planes(x.as_slice(), H * W, y.as_mut_slice(), OH * OW) {
            for (i, row) in yp.chunks_exact_mut(OW).enumerate() {
                for (j, out) in row.iter_mut().enumerate() {
                    *out = Self::window_max(xp, i, j).0;
                }
            }
        }
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank3<C, H, W>, E>,
        y: &mut Tensor<Rank3<C, OH, OW>, E>,
        cache: &mut MaxPoolCache,
    ) {
        let () = Self::CHECK;
        y.set_batch(x.batch());
        let needed = x.batch() * C * OH * OW;
        if cache.argmax.len() < needed {
            // Only when called with a larger batch than the cache was made for.
            cache.argmax.resize(needed, 0);
        }
        let (x, y, argmax) = (x.as_slice(), y.as_mut_slice(), &mut cache.argmax[..needed]);
        let plane_count = x.len() / (H * W).max(1);
        if needed >= PARALLEL_OUTPUTS && plane_count >= 2 {
            // Planes are independent: half of them on each core.
            let half = plane_count / 2;
            let (x0, x1) = x.split_at(half * H * W);
            let (y0, y1) = y.split_at_mut(half * OH * OW);
            let (i0, i1) = argmax.split_at_mut(half * OH * OW);
            join(|| Self::pool(x0, y0, i0), || Self::pool(x1, y1, i1));
        } else {
            Self::pool(x, y, argmax);
        }
    }

    fn backward(
        &self,
        x: &Tensor<Rank3<C, H, W>, E>,
        _y: &Tensor<Rank3<C, OH, OW>, E>,
        dy: &Tensor<Rank3<C, OH, OW>, E>,
        dx: Option<&mut Tensor<Rank3<C, H, W>, E>>,
        cache: &mut MaxPoolCache,
        _grads: &mut (),
    ) {
        let Some(dx) = dx else { return };
        dx.set_batch(x.batch());
        dx.fill_zero();
        let argmax = cache.argmax.chunks_exact((OH * OW).max(1));
        for ((dyp, dxp), ip) in planes(dy.as_slice(), OH * OW, dx.as_mut_slice(), H * W).zip(argmax)
        {
            for (d, at) in dyp.iter().zip(ip) {
                dxp[*at as usize] += *d;
            }
        }
    }

    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(Param<'_, E>)) {}

    fn visit_params_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(ParamMut<'_, E>)) {}

    fn visit_params_and_grads(&mut self, _grads: &(), _f: &mut dyn FnMut(&mut [E], &[E])) {}
}

/// PyTorch's `nn.AvgPool2d(K, stride=S)` over `[C, H, W]`: no padding, output size floored,
/// `OH = (H − K) / S + 1`, `OW = (W − K) / S + 1`.
///
/// ```text
/// y[c, i, j] = (1 / K²) Σ_(u, v < K) x[c, S·i + u, S·j + v]
/// ```
///
/// Backward: each `dy[c, i, j] / K²` is added to every position of its window.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct AvgPool2d<
    const C: usize,
    const K: usize,
    const S: usize,
    const H: usize,
    const W: usize,
    const OH: usize,
    const OW: usize,
>;

impl<
        const C: usize,
        const K: usize,
        const S: usize,
        const H: usize,
        const W: usize,
        const OH: usize,
        const OW: usize,
        E: Float,
    > Module<E> for AvgPool2d<C, K, S, H, W, OH, OW>
{
    type Input = Rank3<C, H, W>;
    type Output = Rank3<C, OH, OW>;
    type Cache = ();
    type Grads = ();

    const PARAMS: usize = 0;

    fn init(_rng: &mut Rng) -> Self {
        const { check_window(K, S, H, W, OH, OW) };
        Self
    }

    fn new_cache(&self, _max_batch: usize) {}

    fn new_grads(&self) {}

    fn zero_grads(_grads: &mut ()) {}

    fn forward(
        &self,
        x: &Tensor<Rank3<C, H, W>, E>,
        y: &mut Tensor<Rank3<C, OH, OW>, E>,
        _cache: &mut (),
    ) {
        const { check_window(K, S, H, W, OH, OW) };
        y.set_batch(x.batch());
        let scale = E::ONE / E::from_f64((K * K) as f64);
        for (xp, yp) in planes(x.as_slice(), H * W, y.as_mut_slice(), OH * OW) {
            for (i, row) in yp.chunks_exact_mut(OW).enumerate() {
                for (j, out) in row.iter_mut().enumerate() {
                    let mut total = E::ZERO;
                    for u in 0..K {
                        let start = (S * i + u) * W + S * j;
                        for value in &xp[start..start + K] {
                            total += *value;
                        }
                    }
                    *out = total * scale;
                }
            }
        }
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank3<C, H, W>, E>,
        y: &mut Tensor<Rank3<C, OH, OW>, E>,
        cache: &mut (),
    ) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<Rank3<C, H, W>, E>,
        _y: &Tensor<Rank3<C, OH, OW>, E>,
        dy: &Tensor<Rank3<C, OH, OW>, E>,
        dx: Option<&mut Tensor<Rank3<C, H, W>, E>>,
        _cache: &mut (),
        _grads: &mut (),
    ) {
        let Some(dx) = dx else { return };
        dx.set_batch(x.batch());
        dx.fill_zero();
        let scale = E::ONE / E::from_f64((K * K) as f64);
        for (dyp, dxp) in planes(dy.as_slice(), OH * OW, dx.as_mut_slice(), H * W) {
            for (i, row) in dyp.chunks_exact(OW).enumerate() {
                for (j, d) in row.iter().enumerate() {
                    let share = *d * scale;
                    for u in 0..K {
                        let start = (S * i + u) * W + S * j;
                        for g in &mut dxp[start..start + K] {
                            *g += share;
                        }
                    }
                }
            }
        }
    }

    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(Param<'_, E>)) {}

    fn visit_params_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(ParamMut<'_, E>)) {}

    fn visit_params_and_grads(&mut self, _grads: &(), _f: &mut dyn FnMut(&mut [E], &[E])) {}
}

/// PyTorch's `nn.AdaptiveAvgPool2d((OH, OW))` over `[C, H, W]`: output cell `(i, j)` averages
/// the rows `floor(i·H / OH) .. ceil((i + 1)·H / OH)` and the columns
/// `floor(j·W / OW) .. ceil((j + 1)·W / OW)` (bins may overlap, e.g. 7 → 3 gives the rows
/// `[0, 3)`, `[2, 5)`, `[4, 7)`).
///
/// Backward: each `dy[c, i, j]` divided by its bin's area is added to every position of the bin.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct AdaptiveAvgPool2d<
    const C: usize,
    const H: usize,
    const W: usize,
    const OH: usize,
    const OW: usize,
>;

/// The bin `start..end` of output index `i` when `len` inputs are pooled into `out` outputs.
#[inline(always)]
fn adaptive_bin(i: usize, len: usize, out: usize) -> (usize, usize) {
    (i * len / out, ((i + 1) * len).div_ceil(out))
}

impl<const C: usize, const H: usize, const W: usize, const OH: usize, const OW: usize>
    AdaptiveAvgPool2d<C, H, W, OH, OW>
{
    const CHECK: () = assert!(
        H >= 1 && W >= 1 && OH >= 1 && OW >= 1,
        "AdaptiveAvgPool2d: every size must be at least 1"
    );
}

impl<
        const C: usize,
        const H: usize,
        const W: usize,
        const OH: usize,
        const OW: usize,
        E: Float,
    > Module<E> for AdaptiveAvgPool2d<C, H, W, OH, OW>
{
    type Input = Rank3<C, H, W>;
    type Output = Rank3<C, OH, OW>;
    type Cache = ();
    type Grads = ();

    const PARAMS: usize = 0;

    fn init(_rng: &mut Rng) -> Self {
        let () = Self::CHECK;
        Self
    }

    fn new_cache(&self, _max_batch: usize) {}

    fn new_grads(&self) {}

    fn zero_grads(_grads: &mut ()) {}

    fn forward(
        &self,
        x: &Tensor<Rank3<C, H, W>, E>,
        y: &mut Tensor<Rank3<C, OH, OW>, E>,
        _cache: &mut (),
    ) {
        let () = Self::CHECK;
        y.set_batch(x.batch());
        for (xp, yp) in planes(x.as_slice(), H * W, y.as_mut_slice(), OH * OW) {
            for (i, row) in yp.chunks_exact_mut(OW).enumerate() {
                let (h0, h1) = adaptive_bin(i, H, OH);
                for (j, out) in row.iter_mut().enumerate() {
                    let (w0, w1) = adaptive_bin(j, W, OW);
                    let mut total = E::ZERO;
                    for h in h0..h1 {
                        for value in &xp[h * W + w0..h * W + w1] {
                            total += *value;
                        }
                    }
                    *out = total / E::from_f64(((h1 - h0) * (w1 - w0)) as f64);
                }
            }
        }
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank3<C, H, W>, E>,
        y: &mut Tensor<Rank3<C, OH, OW>, E>,
        cache: &mut (),
    ) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<Rank3<C, H, W>, E>,
        _y: &Tensor<Rank3<C, OH, OW>, E>,
        dy: &Tensor<Rank3<C, OH, OW>, E>,
        dx: Option<&mut Tensor<Rank3<C, H, W>, E>>,
        _cache: &mut (),
        _grads: &mut (),
    ) {
        let Some(dx) = dx else { return };
        dx.set_batch(x.batch());
        dx.fill_zero();
        for (dyp, dxp) in planes(dy.as_slice(), OH * OW, dx.as_mut_slice(), H * W) {
            for (i, row) in dyp.chunks_exact(OW).enumerate() {
                let (h0, h1) = adaptive_bin(i, H, OH);
                for (j, d) in row.iter().enumerate() {
                    let (w0, w1) = adaptive_bin(j, W, OW);
                    let share = *d / E::from_f64(((h1 - h0) * (w1 - w0)) as f64);
                    for h in h0..h1 {
                        for g in &mut dxp[h * W + w0..h * W + w1] {
                            *g += share;
                        }
                    }
                }
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
    use crate::gradcheck::{check_module, check_module_at};
    use crate::layers::conv::fixture::{assert_close, cast, Fixture};

    fn run<M: Module<f64>>(layer: &M, x: Vec<f64>) -> Vec<f64> {
        let x = Tensor::from_vec(x).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut layer.new_cache(x.batch()));
        y.into_vec()
    }

    #[test]
    fn max_pool_takes_window_maxima_and_floors() {
        // 1 channel, 3 x 5, window 2, stride 2: OH = 1, OW = 2; the last row and column are
        // never read.
        #[rustfmt::skip]
        let x = vec![
            1.0, 5.0, 2.0, 0.0, 9.0,
            3.0, 4.0, 7.0, 1.0, 9.0,
            9.0, 9.0, 9.0, 9.0, 9.0,
        ];
        assert_eq!(run(&MaxPool2d::<1, 2, 2, 3, 5, 1, 2>, x), vec![5.0, 7.0]);
    }

    #[test]
    fn max_pool_routes_the_gradient_to_the_first_maximum_on_ties() {
        let mut layer = MaxPool2d::<1, 2, 2, 2, 4, 1, 2>;
        // Window 0 is all 3s: the gradient goes to (0, 0). Window 1 has its maximum 8 twice,
        // at (0, 3) and (1, 2): the first in scan order is (0, 3).
        let x = Tensor::from_vec(vec![3.0, 3.0, 1.0, 8.0, 3.0, 3.0, 8.0, 2.0]).unwrap();
        let mut y = Tensor::zeros(1);
        let mut cache = Module::<f64>::new_cache(&layer, 1);
        layer.forward_train(&x, &mut y, &mut cache);
        assert_eq!(y.as_slice(), &[3.0, 8.0]);
        let dy = Tensor::from_vec(vec![10.0, 20.0]).unwrap();
        let mut dx = Tensor::zeros(1);
        layer.backward(&x, &y, &dy, Some(&mut dx), &mut cache, &mut ());
        assert_eq!(dx.as_slice(), &[10.0, 0.0, 0.0, 20.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn max_pool_split_over_the_cores_matches_one_sample_at_a_time() {
        // 20 x 4 x 16 x 16 outputs: above `PARALLEL_OUTPUTS`, so the planes are split.
        type Pool = MaxPool2d<4, 2, 2, 32, 32, 16, 16>;
        let mut layer = Pool::default();
        let batch = 20;
        let values = |n: usize, seed: usize| -> Vec<f64> {
            (0..n).map(|i| ((i * 7919 + seed) % 1009) as f64).collect()
        };
        let x = Tensor::from_vec(values(batch * 4 * 32 * 32, 1)).unwrap();
        let dy = Tensor::from_vec(values(batch * 4 * 16 * 16, 2)).unwrap();
        let mut cache = Module::<f64>::new_cache(&layer, batch);
        let (mut y, mut dx) = (Tensor::zeros(batch), Tensor::zeros(batch));
        layer.forward_train(&x, &mut y, &mut cache);
        layer.backward(&x, &y, &dy, Some(&mut dx), &mut cache, &mut ());
        let mut cache = Module::<f64>::new_cache(&layer, 1);
        for b in 0..batch {
            let x_b = Tensor::from_vec(x.sample(b).to_vec()).unwrap();
            let dy_b = Tensor::from_vec(dy.sample(b).to_vec()).unwrap();
            let (mut y_b, mut dx_b) = (Tensor::zeros(1), Tensor::zeros(1));
            layer.forward_train(&x_b, &mut y_b, &mut cache);
            layer.backward(&x_b, &y_b, &dy_b, Some(&mut dx_b), &mut cache, &mut ());
            assert_eq!(y.sample(b), y_b.as_slice(), "output of sample {b}");
            assert_eq!(
                dx.sample(b),
                dx_b.as_slice(),
                "input gradient of sample {b}"
            );
        }
    }

    #[test]
    fn max_pool_propagates_nan_like_pytorch() {
        let x = vec![1.0, f64::NAN, 5.0, 2.0];
        assert!(run(&MaxPool2d::<1, 2, 2, 2, 2, 1, 1>, x)[0].is_nan());
    }

    #[test]
    fn avg_pool_averages_windows() {
        #[rustfmt::skip]
        let x = vec![
            1.0, 2.0, 3.0,
            4.0, 5.0, 6.0,
            7.0, 8.0, 9.0,
        ];
        // Window 2, stride 1: four overlapping windows.
        assert_eq!(
            run(&AvgPool2d::<1, 2, 1, 3, 3, 2, 2>, x),
            vec![3.0, 4.0, 6.0, 7.0]
        );
    }

    #[test]
    fn adaptive_bins_are_pytorchs() {
        assert_eq!(
            (0..3).map(|i| adaptive_bin(i, 7, 3)).collect::<Vec<_>>(),
            vec![(0, 3), (2, 5), (4, 7)]
        );
        assert_eq!(
            (0..2).map(|i| adaptive_bin(i, 5, 2)).collect::<Vec<_>>(),
            vec![(0, 3), (2, 5)]
        );
        // Upsampling: 2 → 3 repeats the middle value's neighbours.
        assert_eq!(
            (0..3).map(|i| adaptive_bin(i, 2, 3)).collect::<Vec<_>>(),
            vec![(0, 1), (0, 2), (1, 2)]
        );
        // A 7 x 1 column into 3 x 1: means of rows [0, 3), [2, 5), [4, 7).
        let x: Vec<f64> = (0..7).map(f64::from).collect();
        assert_eq!(
            run(&AdaptiveAvgPool2d::<1, 7, 1, 3, 1>, x),
            vec![1.0, 3.0, 5.0]
        );
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<MaxPool2d<2, 2, 2, 4, 5, 2, 2>>(3, 31);
        check_module::<MaxPool2d<2, 3, 2, 7, 6, 3, 2>>(2, 32);
        check_module::<MaxPool2d<1, 2, 1, 3, 4, 2, 3>>(2, 33);
        check_module::<AvgPool2d<2, 2, 2, 5, 4, 2, 2>>(3, 34);
        check_module::<AvgPool2d<2, 3, 1, 4, 5, 2, 3>>(2, 35);
        check_module::<AdaptiveAvgPool2d<2, 7, 5, 3, 2>>(2, 36);
        check_module::<AdaptiveAvgPool2d<1, 2, 3, 3, 5>>(2, 37);
    }

    #[test]
    fn max_pool_gradient_at_a_tie_free_input() {
        // Finite differences are only valid away from ties; random inputs have none, but check
        // a hand-made input with well-separated values too.
        let x = Tensor::from_vec((0..32).map(|i| ((i * 7) % 32) as f64).collect()).unwrap();
        check_module_at(&MaxPool2d::<2, 2, 2, 4, 4, 2, 2>, &x, 38);
    }

    fn pytorch_pool<M: Module<E> + Default, E: Float>(f: &Fixture, prefix: &str, tol: f64) {
        let key = |k: &str| format!("{prefix}.{k}");
        let mut layer = M::default();
        let (in_shape, input) = f.f64(&key("input"));
        let x = Tensor::<M::Input, E>::from_vec(cast(&input)).unwrap();
        let batch = x.batch();
        let mut y = Tensor::zeros(batch);
        let mut cache = layer.new_cache(batch);
        layer.forward_train(&x, &mut y, &mut cache);
        let (out_shape, expected) = f.f64(&key("output"));
        assert_close(&key("output"), y.as_slice(), &expected, tol);
        let dy = Tensor::from_vec(cast(&f.values(&key("grad_output"), &out_shape))).unwrap();
        let mut dx = Tensor::zeros(batch);
        let mut grads = layer.new_grads();
        layer.backward(&x, &y, &dy, Some(&mut dx), &mut cache, &mut grads);
        let expected = f.values(&key("grad.input"), &in_shape);
        assert_close(&key("grad.input"), dx.as_slice(), &expected, tol);
    }

    #[test]
    fn matches_pytorch_in_f64_and_f32() {
        let f = Fixture::open("pool.safetensors");
        pytorch_pool::<MaxPool2d<3, 2, 2, 5, 5, 2, 2>, f64>(&f, "max_k2s2", 1e-12);
        pytorch_pool::<MaxPool2d<3, 2, 2, 5, 5, 2, 2>, f32>(&f, "max_k2s2", 1e-6);
        pytorch_pool::<MaxPool2d<3, 3, 2, 7, 7, 3, 3>, f64>(&f, "max_k3s2", 1e-12);
        pytorch_pool::<MaxPool2d<3, 3, 2, 7, 7, 3, 3>, f32>(&f, "max_k3s2", 1e-6);
        pytorch_pool::<AvgPool2d<3, 3, 2, 7, 6, 3, 2>, f64>(&f, "avg_k3s2", 1e-12);
        pytorch_pool::<AvgPool2d<3, 3, 2, 7, 6, 3, 2>, f32>(&f, "avg_k3s2", 1e-6);
        pytorch_pool::<AdaptiveAvgPool2d<3, 7, 5, 3, 2>, f64>(&f, "adaptive_7x5_3x2", 1e-12);
        pytorch_pool::<AdaptiveAvgPool2d<3, 7, 5, 3, 2>, f32>(&f, "adaptive_7x5_3x2", 1e-6);
    }
}
