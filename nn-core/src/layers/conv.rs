//! 2-d convolution.

use crate::init::{fan_in_uniform, Rng};
use crate::kernels::direct::{self, Direct};
use crate::kernels::im2col::{col2im, im2col, ConvGeometry, ImageColumns};
use crate::kernels::parallel::join;
use crate::kernels::vector::{copy, equal, reserve, sum};
use crate::kernels::winograd::{self, Tiling, TransformedKernels};
use crate::kernels::{matmul, matmul_source, MatMut, MatRef};
use crate::module::Module;
use crate::{Float, Rank3, Tensor};

/// PyTorch's `nn.Conv2d(CI, CO, K, stride=S, padding=P)`: a square `K x K` kernel, stride `S`
/// and zero padding `P` on both axes, over inputs `[CI, H, W]` and outputs `[CO, OH, OW]` with
/// `OH = (H + 2P − K) / S + 1` and `OW = (W + 2P − K) / S + 1` (floor, like PyTorch; `network!`
/// computes them, and a compile-time assertion checks them).
///
/// Like PyTorch, this is a cross-correlation (the kernel is not flipped):
///
/// ```text
/// y[o, i, j] = b[o] + Σ_c Σ_u Σ_v W[o, c, u, v] · x[c, S·i + u − P, S·j + v − P]
/// ```
///
/// where `x` is 0 outside the input. Parameters as in PyTorch: `weight` `[CO, CI, K, K]`,
/// `bias` `[CO]`, both initialised from U(-1/√fan_in, 1/√fan_in) with `fan_in = CI·K·K`.
///
/// Each sample is unfolded into a column matrix `col` `[CI·K·K, OH·OW]` (`kernels::im2col`),
/// so that `Y_s = W · col + b` with `W` viewed as `[CO, CI·K·K]`. Backward, per sample:
/// `dW += dY_s · colᵀ`, `db += Σ_(i,j) dY_s`, `dx_s = col2im(Wᵀ · dY_s)`. The forward never
/// writes `col` out: the product packs its panels straight from the images
/// (`im2col::ImageColumns`). The backward writes it, one sample (or group) at a time, into a
/// buffer in the cache that is allocated by the first backward pass, so inference does not
/// hold it. A 1 x 1 convolution with stride 1 and no padding needs no unfolding: the sample
/// already is the `[CI, H·W]` matrix.
///
/// A 3 x 3 convolution with stride 1 over at least `WINOGRAD_MIN_CHANNELS` input channels
/// (all of VGG16's but the first) runs its forward pass as Winograd's F(2x2, 3x3)
/// (`kernels::winograd`): 16 multiply-adds per 2 x 2 outputs and input channel instead of 36,
/// for transforms that only add and subtract. VGG16's convolutions at batch 1 went from 209 to
/// 153 ms, timed layer by layer. Its backward pass makes the weight gradient by the transposed
/// algorithm (`winograd::weight_gradient`) and the input gradient as a Winograd convolution of
/// `dy` with the kernels turned by 180° (when `CO` is at least `WINOGRAD_MIN_CHANNELS` too and
/// `P <= 2`; otherwise through `dcol` and `col2im`).
///
/// A stride-1 convolution over fewer than `WINOGRAD_MIN_CHANNELS` input channels (LeNet's,
/// VGG16's first) is computed directly instead (`kernels::direct`): the kernels read each padded
/// sample at every tap's offset, with nothing unfolded. Unfolding LeNet's images into columns
/// took a quarter of its training step, for products with only 6 or 16 output channels. Layer
/// by layer at batch 64, its first convolution went from 0.37 to 0.14 ms forward and from 0.59
/// to 0.23 ms backward (weights only), its second from 0.58 to 0.31 and from 1.23 to 1.0 ms.
/// The input gradient is the same correlation over `dy` with the kernels turned by 180° (for
/// `P < K`).
///
/// Small images (`OH·OW` below `GROUP_COLUMNS`) are unfolded several samples at a time, side by
/// side in one `[CI·K·K, G·OH·OW]` matrix, so that each product is wide enough to amortise
/// packing the weights (a 4 x 4 image alone gives a 16-column product, which runs several
/// times slower per multiply-add); the group's output `[CO, G·OH·OW]` is then copied out sample
/// by sample. Larger images go one sample at a time, straight into `y`.
///
/// A batch is split in halves, one per core, each with its own buffers and (backward) its own
/// weight gradient: one fork and join per pass instead of one per product. LeNet's products
/// are a few hundred microseconds each, and splitting each of them left the second core idle
/// between them. A single sample (VGG16 inference) splits each product instead.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d<
    const CI: usize,
    const CO: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    const H: usize,
    const W: usize,
    const OH: usize,
    const OW: usize,
    E: Float = f32,
> {
    /// `[CO, CI, K, K]`, row-major.
    pub weight: Vec<E>,
    /// `[CO]`.
    pub bias: Vec<E>,
}

/// Below this many output positions per sample, a convolution unfolds several samples into one
/// matrix of about this many columns.
pub const GROUP_COLUMNS: usize = 1024;

/// Fewer input channels than this make Winograd's products too shallow to pay for its
/// transforms (VGG16's first layer, over RGB, stays with im2col).
pub const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Below this many multiply-adds per pass over a batch, a convolution's samples are not
/// shared between the cores (each product still may be).
const PARALLEL_SAMPLES: usize = 1 << 20;

/// The buffers of a convolution, one set per core (see [`Conv2d`]), and the second core's
/// weight gradient, which is added to the first's at the end of a backward pass.
#[derive(Clone, Debug)]
pub struct ConvCache<E> {
    group: usize,
    cores: [ConvScratch<E>; 2],
    second_core_dweight: Vec<E>,
    /// The transformed kernels and buffers of a Winograd forward pass, made by the first.
    winograd: Option<WinogradForward<E>>,
    /// Likewise for the input gradient and the weight gradient, made by the first backward
    /// pass.
    winograd_input_gradient: Option<WinogradBackward<E>>,
    winograd_weight_gradient: Option<winograd::GradientScratch<E>>,
    /// The packed weights and buffers of the direct convolution, made by the first pass.
    direct: Option<DirectState<E>>,
}

/// What the direct convolution keeps between passes: the weights packed for the forward pass
/// and, turned by 180° and transposed, for the input gradient (both packed again every pass:
/// they are `CO·CI·K·K` values, a few thousand), and the buffers.
#[derive(Clone, Debug, Default)]
struct DirectState<E> {
    weights: Vec<E>,
    turned: Vec<E>,
    scratch: direct::Scratch<E>,
}

/// What the forward pass's Winograd convolution keeps between passes.
#[derive(Clone, Debug)]
struct WinogradForward<E> {
    kernels: TransformedKernels<E>,
    scratch: winograd::Scratch<E>,
    /// The weights `kernels` were transformed from: inference with unchanged weights (VGG16's
    /// 14.7 M) compares them instead of transforming them again, which wrote 26 M values per
    /// pass, a twentieth of W5's time.
    transformed_from: Vec<E>,
}

/// What the input gradient's Winograd convolution keeps between passes.
#[derive(Clone, Debug)]
struct WinogradBackward<E> {
    kernels: TransformedKernels<E>,
    scratch: winograd::Scratch<E>,
    /// The kernels turned by 180° and transposed, `[CI, CO, 3, 3]`.
    turned: Vec<E>,
    /// The correlation's bias: none.
    zero_bias: Vec<E>,
}

/// The buffers one core uses: for `G > 1` the group's output (or output gradient)
/// `[CO, G·OH·OW]`; the column matrix of a group of `G` samples and its gradient, made by the
/// first backward pass. `G` is 1 for images of at least `GROUP_COLUMNS` positions, and the
/// column buffers stay empty for a 1 x 1 convolution with stride 1 and no padding over such
/// images. Each is allocated on first use and then reused.
#[derive(Clone, Debug, Default)]
struct ConvScratch<E> {
    col: Vec<E>,
    dcol: Vec<E>,
    out: Vec<E>,
}

impl<
        const CI: usize,
        const CO: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const H: usize,
        const W: usize,
        const OH: usize,
        const OW: usize,
        E: Float,
    > Conv2d<CI, CO, K, S, P, H, W, OH, OW, E>
{
    const WEIGHT_SHAPE: [usize; 4] = [CO, CI, K, K];
    const BIAS_SHAPE: [usize; 1] = [CO];
    /// Columns of the weight matrix: `CI·K·K`.
    const FAN_IN: usize = CI * K * K;
    /// Output positions per channel.
    const OUT_PLANE: usize = OH * OW;
    /// Values per input sample.
    const IN_LEN: usize = CI * H * W;
    /// No unfolding needed for one sample: it is already its column matrix.
    const POINTWISE: bool = K == 1 && S == 1 && P == 0;

    /// The geometry, checked at compile time against the output size in the type.
    const GEOMETRY: ConvGeometry = {
        assert!(
            K >= 1 && S >= 1,
            "Conv2d: kernel and stride must be at least 1"
        );
        assert!(
            H + 2 * P >= K && W + 2 * P >= K,
            "Conv2d: the padded input is smaller than the kernel"
        );
        assert!(
            OH == (H + 2 * P - K) / S + 1 && OW == (W + 2 * P - K) / S + 1,
            "Conv2d: OH/OW disagree with (H + 2P - K) / S + 1"
        );
        ConvGeometry::new(CI, H, W, K, S, P)
    };

    /// The forward pass's tiling when it runs as Winograd's F(2x2, 3x3) (see
    /// `kernels::winograd`): 3 x 3 kernels with stride 1 over at least
    /// `WINOGRAD_MIN_CHANNELS` input channels.
    const WINOGRAD: Option<Tiling> = if CI >= WINOGRAD_MIN_CHANNELS {
        Tiling::new(Self::GEOMETRY)
    } else {
        None
    };

    /// The direct convolution (`kernels::direct`) of a stride-1 layer over fewer than
    /// `WINOGRAD_MIN_CHANNELS` input channels, other than a 1 x 1 without padding.
    const DIRECT: Option<Direct> = if CI < WINOGRAD_MIN_CHANNELS && !Self::POINTWISE {
        Direct::new(Self::GEOMETRY, CO)
    } else {
        None
    };

    /// The input gradient's correlation when the layer is direct: `dy` correlated with the
    /// kernels turned by 180° and transposed, padded by `K − 1 − P` (so for `P < K`).
    const DIRECT_INPUT_GRADIENT: Option<Direct> = match Self::DIRECT {
        Some(direct) => direct.transposed(),
        None => None,
    };

    /// The tiling of the input gradient's convolution when it runs as Winograd's too: `dx` is
    /// `dy` correlated with the kernels turned by 180° and transposed (`CO` to `CI` channels),
    /// padded by `2 − P`, so for padding up to 2.
    const WINOGRAD_INPUT_GRADIENT: Option<Tiling> =
        if Self::WINOGRAD.is_some() && CO >= WINOGRAD_MIN_CHANNELS && P <= 2 {
            Tiling::new(ConvGeometry::new(CO, OH, OW, 3, 1, 2 - P))
        } else {
            None
        };

    /// `dx = dy ⋆ rot180(W)ᵀ` by Winograd (see `WINOGRAD_INPUT_GRADIENT`).
    fn input_gradient_winograd(
        &self,
        tiling: Tiling,
        dy: &[E],
        dx: &mut [E],
        cache: &mut ConvCache<E>,
    ) {
        let backward = cache
            .winograd_input_gradient
            .get_or_insert_with(|| WinogradBackward {
                kernels: TransformedKernels::new(tiling, CI),
                scratch: Default::default(),
                turned: vec![E::ZERO; CI * CO * 9],
                zero_bias: vec![E::ZERO; CI],
            });
        // turned[c][o][u][v] = W[o][c][2 − u][2 − v].
        for (o, kernels) in self.weight.chunks_exact(CI * 9).enumerate() {
            for (c, kernel) in kernels.chunks_exact(9).enumerate() {
                let turned = &mut backward.turned[(c * CO + o) * 9..][..9];
                for (t, value) in kernel.iter().enumerate() {
                    turned[8 - t] = *value;
                }
            }
        }
        backward.kernels.transform(&backward.turned);
        let bias = &backward.zero_bias;
        winograd::convolve(
            tiling,
            &backward.kernels,
            bias,
            dy,
            dx,
            &mut backward.scratch,
        );
    }

    /// A layer with every parameter zero.
    pub fn zeros() -> Self {
        let _ = Self::GEOMETRY;
        Self {
            weight: vec![E::ZERO; CO * Self::FAN_IN],
            bias: vec![E::ZERO; CO],
        }
    }

    /// Samples unfolded together for batches of up to `max_batch`.
    fn group_size(max_batch: usize) -> usize {
        if Self::OUT_PLANE == 0 || Self::OUT_PLANE >= GROUP_COLUMNS {
            1
        } else {
            (GROUP_COLUMNS / Self::OUT_PLANE).clamp(1, max_batch.max(1))
        }
    }

    /// `out = W · col` (or `out += W · col`) for the column matrix of the samples `images`
    /// side by side, packed straight from the images (a pointwise convolution's single sample
    /// is its own column matrix).
    fn product(weight: MatRef<'_, E>, images: &[E], out: MatMut<'_, E>, accumulate: bool) {
        let n = images.len() / Self::IN_LEN;
        if Self::POINTWISE && n == 1 {
            let col = MatRef::row_major(images, CI, Self::OUT_PLANE);
            return matmul(weight, col, out, accumulate);
        }
        let col = ImageColumns::new(Self::GEOMETRY, images, n);
        matmul_source(weight, &col, out, accumulate);
    }

    /// Whether a pass over `batch` samples runs half the samples on each core.
    fn splits_samples(batch: usize) -> bool {
        batch >= 2 && batch * CO * Self::FAN_IN * Self::OUT_PLANE >= PARALLEL_SAMPLES
    }

    /// The forward pass of the samples `x` (whole samples, one after another) into `y`.
    fn forward_samples(&self, x: &[E], y: &mut [E], group: usize, scratch: &mut ConvScratch<E>) {
        let weight = MatRef::row_major(&self.weight, CO, Self::FAN_IN);
        let out_len = CO * Self::OUT_PLANE;
        let batch = y.len() / out_len;
        for first in (0..batch).step_by(group) {
            let n = group.min(batch - first);
            let columns = n * Self::OUT_PLANE;
            let images = &x[first * Self::IN_LEN..(first + n) * Self::IN_LEN];
            if group == 1 {
                // Straight into the sample's output, on top of the bias.
                let ys = &mut y[first * out_len..][..out_len];
                for (row, b) in ys.chunks_exact_mut(Self::OUT_PLANE).zip(&self.bias) {
                    row.fill(*b);
                }
                Self::product(weight, images, MatMut::row_major(ys, CO, columns), true);
                continue;
            }
            reserve(&mut scratch.out, CO * group * Self::OUT_PLANE);
            let out = &mut scratch.out[..CO * columns];
            Self::product(weight, images, MatMut::row_major(out, CO, columns), false);
            for g in 0..n {
                let ys = &mut y[(first + g) * out_len..][..out_len];
                for (o, (row, b)) in ys
                    .chunks_exact_mut(Self::OUT_PLANE)
                    .zip(&self.bias)
                    .enumerate()
                {
                    let src = &out[o * columns + g * Self::OUT_PLANE..][..Self::OUT_PLANE];
                    for (y, v) in row.iter_mut().zip(src) {
                        *y = *v + *b;
                    }
                }
            }
        }
    }

    /// The backward pass of the samples `x` with output gradients `dy`: adds their weight
    /// gradient to `dweight` and, with `dx`, writes their input gradients.
    fn backward_samples(
        &self,
        x: &[E],
        dy: &[E],
        mut dx: Option<&mut [E]>,
        group: usize,
        scratch: &mut ConvScratch<E>,
        mut dweight: Option<&mut [E]>,
    ) {
        let out_len = CO * Self::OUT_PLANE;
        let batch = dy.len() / out_len;
        let col_len = Self::col_len(group);
        if dweight.is_some() {
            reserve(&mut scratch.col, col_len);
        }
        if dx.is_some() {
            reserve(&mut scratch.dcol, col_len);
        }
        if group > 1 {
            reserve(&mut scratch.out, CO * group * Self::OUT_PLANE);
        }
        let weight_t = MatRef::transposed(&self.weight, CO, Self::FAN_IN);
        for first in (0..batch).step_by(group) {
            let n = group.min(batch - first);
            let columns = n * Self::OUT_PLANE;
            let dy_mat = if group == 1 {
                MatRef::row_major(&dy[first * out_len..][..out_len], CO, columns)
            } else {
                // The group's output gradient, side by side like its columns.
                let dy_group = &mut scratch.out[..CO * columns];
                for g in 0..n {
                    let dys = &dy[(first + g) * out_len..][..out_len];
                    for (o, row) in dys.chunks_exact(Self::OUT_PLANE).enumerate() {
                        let at = o * columns + g * Self::OUT_PLANE;
                        copy(&mut dy_group[at..][..Self::OUT_PLANE], row);
                    }
                }
                MatRef::row_major(&scratch.out[..CO * columns], CO, columns)
            };
            if let Some(dweight) = dweight.as_deref_mut() {
                let images = &x[first * Self::IN_LEN..(first + n) * Self::IN_LEN];
                let col = Self::columns(images, &mut scratch.col);
                let col_t = MatRef {
                    rows: columns,
                    cols: Self::FAN_IN,
                    row_stride: col.col_stride,
                    col_stride: col.row_stride,
                    ..col
                };
                let dweight = MatMut::row_major(dweight, CO, Self::FAN_IN);
                matmul(dy_mat, col_t, dweight, true);
            }
            let Some(dx) = dx.as_deref_mut() else {
                continue;
            };
            let dxs = &mut dx[first * Self::IN_LEN..(first + n) * Self::IN_LEN];
            if Self::POINTWISE && n == 1 {
                matmul(weight_t, dy_mat, MatMut::row_major(dxs, CI, columns), false);
                continue;
            }
            let dcol = &mut scratch.dcol[..Self::FAN_IN * columns];
            matmul(
                weight_t,
                dy_mat,
                MatMut::row_major(dcol, Self::FAN_IN, columns),
                false,
            );
            dxs.fill(E::ZERO);
            for (g, dx_sample) in dxs.chunks_exact_mut(Self::IN_LEN).enumerate() {
                let at = g * Self::OUT_PLANE;
                col2im(Self::GEOMETRY, &scratch.dcol[at..], columns, dx_sample);
            }
        }
    }

    /// The length of the column buffers for groups of `group` samples.
    fn col_len(group: usize) -> usize {
        if Self::POINTWISE && group == 1 {
            0
        } else {
            Self::FAN_IN * group * Self::OUT_PLANE
        }
    }

    /// The column matrix `[CI·K·K, n·OH·OW]` of the `n` samples `images`, side by side: the
    /// sample itself for one sample of a pointwise convolution, else unfolded into `col`.
    fn columns<'a>(images: &'a [E], col: &'a mut [E]) -> MatRef<'a, E> {
        let n = images.len() / Self::IN_LEN;
        let columns = n * Self::OUT_PLANE;
        if Self::POINTWISE && n == 1 {
            return MatRef::row_major(images, CI, columns);
        }
        for (g, image) in images.chunks_exact(Self::IN_LEN).enumerate() {
            let at = g * Self::OUT_PLANE;
            im2col(Self::GEOMETRY, image, &mut col[at..], columns);
        }
        MatRef::row_major(&col[..Self::FAN_IN * columns], Self::FAN_IN, columns)
    }
}

impl<
        const CI: usize,
        const CO: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const H: usize,
        const W: usize,
        const OH: usize,
        const OW: usize,
        E: Float,
    > Module<E> for Conv2d<CI, CO, K, S, P, H, W, OH, OW, E>
{
    type Input = Rank3<CI, H, W>;
    type Output = Rank3<CO, OH, OW>;
    type Cache = ConvCache<E>;
    type Grads = Self;

    const PARAMS: usize = CO * CI * K * K + CO;

    fn init(rng: &mut Rng) -> Self {
        let mut layer = Self::zeros();
        fan_in_uniform(rng, &mut layer.weight, Self::FAN_IN);
        fan_in_uniform(rng, &mut layer.bias, Self::FAN_IN);
        layer
    }

    fn new_cache(&self, max_batch: usize) -> ConvCache<E> {
        ConvCache {
            group: Self::group_size(max_batch),
            cores: Default::default(),
            second_core_dweight: Vec::new(),
            winograd: None,
            winograd_input_gradient: None,
            winograd_weight_gradient: None,
            direct: None,
        }
    }

    fn new_grads(&self) -> Self {
        Self::zeros()
    }

    fn zero_grads(grads: &mut Self) {
        grads.weight.fill(E::ZERO);
        grads.bias.fill(E::ZERO);
    }

    fn forward(
        &self,
        x: &Tensor<Rank3<CI, H, W>, E>,
        y: &mut Tensor<Rank3<CO, OH, OW>, E>,
        cache: &mut ConvCache<E>,
    ) {
        let batch = x.batch();
        y.set_batch(batch);
        if Self::OUT_PLANE == 0 {
            return;
        }
        let (x, y, group) = (x.as_slice(), y.as_mut_slice(), cache.group);
        if let Some(tiling) = Self::WINOGRAD {
            let forward = cache.winograd.get_or_insert_with(|| WinogradForward {
                kernels: TransformedKernels::new(tiling, CO),
                scratch: Default::default(),
                transformed_from: Vec::new(),
            });
            if !equal(&forward.transformed_from, &self.weight) {
                forward.kernels.transform(&self.weight);
                forward.transformed_from.clear();
                forward.transformed_from.extend_from_slice(&self.weight);
            }
            let (kernels, scratch) = (&forward.kernels, &mut forward.scratch);
            return winograd::convolve(tiling, kernels, &self.bias, x, y, scratch);
        }
        if let Some(layer) = Self::DIRECT {
            let state = cache.direct.get_or_insert_with(Default::default);
            direct::arrange(layer, &self.weight, false, &mut state.weights);
            let bias = Some(&self.bias[..]);
            return direct::correlate(layer, &state.weights, bias, x, y, &mut state.scratch);
        }
        let [first_core, second_core] = &mut cache.cores;
        if !Self::splits_samples(batch) {
            return self.forward_samples(x, y, group, first_core);
        }
        let half = batch / 2;
        let (x_front, x_back) = x.split_at(half * Self::IN_LEN);
        let (y_front, y_back) = y.split_at_mut(half * CO * Self::OUT_PLANE);
        join(
            || self.forward_samples(x_front, y_front, group, first_core),
            || self.forward_samples(x_back, y_back, group, second_core),
        );
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank3<CI, H, W>, E>,
        y: &mut Tensor<Rank3<CO, OH, OW>, E>,
        cache: &mut ConvCache<E>,
    ) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<Rank3<CI, H, W>, E>,
        _y: &Tensor<Rank3<CO, OH, OW>, E>,
        dy: &Tensor<Rank3<CO, OH, OW>, E>,
        mut dx: Option<&mut Tensor<Rank3<CI, H, W>, E>>,
        cache: &mut ConvCache<E>,
        grads: &mut Self,
    ) {
        let batch = x.batch();
        if let Some(dx) = dx.as_deref_mut() {
            dx.set_batch(batch);
        }
        if Self::OUT_PLANE == 0 {
            if let Some(dx) = dx {
                dx.fill_zero();
            }
            return;
        }
        for dys in dy.samples() {
            for (g, row) in grads.bias.iter_mut().zip(dys.chunks_exact(Self::OUT_PLANE)) {
                *g += sum(row);
            }
        }
        let (x, dy, group) = (x.as_slice(), dy.as_slice(), cache.group);
        let mut dx = dx.map(|dx| dx.as_mut_slice());
        if let Some(tiling) = Self::WINOGRAD_INPUT_GRADIENT {
            if let Some(dx) = dx.take() {
                self.input_gradient_winograd(tiling, dy, dx, cache);
            }
        }
        if let Some(tiling) = Self::WINOGRAD {
            let scratch = cache
                .winograd_weight_gradient
                .get_or_insert_with(Default::default);
            winograd::weight_gradient(tiling, x, dy, &mut grads.weight, scratch);
        }
        if let Some(layer) = Self::DIRECT {
            let state = cache.direct.get_or_insert_with(Default::default);
            direct::weight_gradient(layer, x, dy, &mut grads.weight, &mut state.scratch);
            if let Some(transposed) = Self::DIRECT_INPUT_GRADIENT {
                if let Some(dx) = dx.take() {
                    direct::arrange(layer, &self.weight, true, &mut state.turned);
                    let turned = &state.turned;
                    direct::correlate(transposed, turned, None, dy, dx, &mut state.scratch);
                }
            }
        }
        // What is left for the unfolded columns: the weight gradient unless done above, and
        // the input gradient unless done above.
        let unfolds_weight = Self::WINOGRAD.is_none() && Self::DIRECT.is_none();
        if !unfolds_weight && dx.is_none() {
            return;
        }
        let [first_core, second_core] = &mut cache.cores;
        if !Self::splits_samples(batch) {
            let dweight = unfolds_weight.then_some(&mut grads.weight[..]);
            return self.backward_samples(x, dy, dx, group, first_core, dweight);
        }
        let half = batch / 2;
        let (x_front, x_back) = x.split_at(half * Self::IN_LEN);
        let (dy_front, dy_back) = dy.split_at(half * CO * Self::OUT_PLANE);
        let (dx_front, dx_back) = match dx {
            Some(dx) => {
                let (front, back) = dx.split_at_mut(half * Self::IN_LEN);
                (Some(front), Some(back))
            }
            None => (None, None),
        };
        let second_dweight = &mut cache.second_core_dweight;
        if unfolds_weight {
            reserve(second_dweight, CO * Self::FAN_IN);
            second_dweight.fill(E::ZERO);
        }
        join(
            || {
                let dweight = unfolds_weight.then_some(&mut grads.weight[..]);
                self.backward_samples(x_front, dy_front, dx_front, group, first_core, dweight)
            },
            || {
                let dweight = unfolds_weight.then_some(&mut second_dweight[..]);
                self.backward_samples(x_back, dy_back, dx_back, group, second_core, dweight)
            },
        );
        if unfolds_weight {
            for (total, part) in grads.weight.iter_mut().zip(second_dweight.iter()) {
                *total += *part;
            }
        }
    }

    crate::parameters!(weight: "weight" => Self::WEIGHT_SHAPE, bias: "bias" => Self::BIAS_SHAPE);
}

/// Reading the PyTorch reference files in tests/fixtures/cnn/ (written by
/// tests/fixtures/make_cnn_fixtures.py), shared by the tests of the CNN layers.
#[cfg(test)]
pub(crate) mod fixture {
    use safetensors::{Dtype, SafeTensors};

    /// A fixture file's bytes.
    pub struct Fixture(Vec<u8>);

    impl Fixture {
        pub fn open(name: &str) -> Self {
            let path = format!(
                "{}/../tests/fixtures/cnn/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            Self(std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}")))
        }

        /// A float64 tensor's shape and values.
        pub fn f64(&self, key: &str) -> (Vec<usize>, Vec<f64>) {
            let file = SafeTensors::deserialize(&self.0).expect("a safetensors file");
            let view = file
                .tensor(key)
                .unwrap_or_else(|e| panic!("no tensor {key}: {e}"));
            assert_eq!(view.dtype(), Dtype::F64, "{key}");
            let values = view
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            (view.shape().to_vec(), values)
        }

        /// A float64 tensor's values, after checking its shape.
        pub fn values(&self, key: &str, shape: &[usize]) -> Vec<f64> {
            let (actual, values) = self.f64(key);
            assert_eq!(actual, shape, "shape of {key}");
            values
        }

        /// An int64 scalar.
        pub fn i64(&self, key: &str) -> i64 {
            let file = SafeTensors::deserialize(&self.0).expect("a safetensors file");
            let view = file
                .tensor(key)
                .unwrap_or_else(|e| panic!("no tensor {key}: {e}"));
            assert_eq!(view.dtype(), Dtype::I64, "{key}");
            i64::from_le_bytes(view.data().try_into().expect("one int64"))
        }
    }

    /// Asserts `|a − b| <= tol · max(1, |b|)` everywhere.
    pub fn assert_close<E: crate::Float>(what: &str, actual: &[E], expected: &[f64], tol: f64) {
        assert_eq!(actual.len(), expected.len(), "{what}: length");
        for (i, (a, b)) in actual.iter().zip(expected).enumerate() {
            let a = a.to_f64();
            assert!(
                (a - b).abs() <= tol * b.abs().max(1.0),
                "{what}[{i}]: {a} vs PyTorch's {b}"
            );
        }
    }

    /// Converts reference values to the element type under test.
    pub fn cast<E: crate::Float>(values: &[f64]) -> Vec<E> {
        values.iter().map(|v| E::from_f64(*v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{assert_close, cast, Fixture};
    use super::*;
    use crate::gradcheck::check_module;

    #[test]
    fn padding_one_keeps_the_size_and_correlates_without_flipping() {
        // One channel, 3 x 3 input, a 3 x 3 kernel that is not symmetric, padding 1.
        let layer = Conv2d::<1, 1, 3, 1, 1, 3, 3, 3, 3, f64> {
            weight: vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0],
            bias: vec![0.5],
        };
        let x = Tensor::from_vec((1..=9).map(f64::from).collect()).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut layer.new_cache(1));
        // y[i, j] = 0.5 + x[i - 1, j] + 2 x[i + 1, j + 1] (0 outside).
        #[rustfmt::skip]
        let expected = [
            0.5 + 0.0 + 2.0 * 5.0, 0.5 + 0.0 + 2.0 * 6.0, 0.5,
            0.5 + 1.0 + 2.0 * 8.0, 0.5 + 2.0 + 2.0 * 9.0, 0.5 + 3.0,
            0.5 + 4.0,             0.5 + 5.0,             0.5 + 6.0,
        ];
        assert_eq!(y.as_slice(), &expected);
    }

    #[test]
    fn stride_two_floors_the_output_size() {
        // 2 channels, 4 x 5 input, 2 x 2 kernel of ones on channel 0 and twos on channel 1,
        // stride 2, no padding: OH = (4 - 2) / 2 + 1 = 2, OW = (5 - 2) / 2 + 1 = 2 (the last
        // column is never read).
        let mut weight = vec![1.0; 4];
        weight.extend([2.0; 4]);
        let layer = Conv2d::<2, 1, 2, 2, 0, 4, 5, 2, 2, f64> {
            weight,
            bias: vec![0.0],
        };
        let x = Tensor::from_vec((0..40).map(f64::from).collect()).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut layer.new_cache(1));
        let window = |c: usize, i: usize, j: usize| -> f64 {
            let at = |h: usize, w: usize| (c * 20 + h * 5 + w) as f64;
            at(2 * i, 2 * j)
                + at(2 * i, 2 * j + 1)
                + at(2 * i + 1, 2 * j)
                + at(2 * i + 1, 2 * j + 1)
        };
        let expected: Vec<f64> = (0..2)
            .flat_map(|i| (0..2).map(move |j| (i, j)))
            .map(|(i, j)| window(0, i, j) + 2.0 * window(1, i, j))
            .collect();
        assert_eq!(y.as_slice(), &expected[..]);
    }

    #[test]
    fn one_by_one_convolution_mixes_channels_per_pixel() {
        let layer = Conv2d::<2, 3, 1, 1, 0, 2, 2, 2, 2, f64> {
            weight: vec![1.0, 0.0, 0.0, 1.0, 1.0, -1.0],
            bias: vec![0.0, 0.0, 10.0],
        };
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).unwrap();
        let mut y = Tensor::zeros(0);
        let mut cache = layer.new_cache(1);
        layer.forward(&x, &mut y, &mut cache);
        #[rustfmt::skip]
        assert_eq!(
            y.as_slice(),
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 6.0, 6.0, 6.0, 6.0]
        );
    }

    #[test]
    fn gradients_match_finite_differences() {
        // (K, S, P) = (3, 1, 1): same size (a direct convolution, as are all with stride 1 and
        // fewer than 16 input channels but the pointwise ones).
        check_module::<Conv2d<2, 3, 3, 1, 1, 5, 4, 5, 4, f64>>(2, 21);
        // (1, 1, 0): the pointwise path.
        check_module::<Conv2d<3, 2, 1, 1, 0, 3, 4, 3, 4, f64>>(3, 22);
        // (3, 2, 1) on 7 x 6: floor to 4 x 3.
        check_module::<Conv2d<2, 3, 3, 2, 1, 7, 6, 4, 3, f64>>(2, 23);
        // (2, 2, 0) on 5 x 5: the last row and column are never read.
        check_module::<Conv2d<1, 2, 2, 2, 0, 5, 5, 2, 2, f64>>(2, 24);
        // (5, 1, 2), (1, 2, 0) and (3, 3, 2): wide kernel, strided 1 x 1, padding > stride.
        check_module::<Conv2d<2, 2, 5, 1, 2, 4, 6, 4, 6, f64>>(2, 25);
        check_module::<Conv2d<2, 3, 1, 2, 0, 5, 4, 3, 2, f64>>(2, 26);
        check_module::<Conv2d<1, 2, 3, 3, 2, 5, 7, 3, 3, f64>>(2, 27);
        // Large enough for both cores: a direct convolution whose samples are split between
        // them.
        check_module::<Conv2d<8, 16, 3, 1, 1, 24, 24, 24, 24, f64>>(2, 28);
        // Groups of two samples and a last group of one, for a 3 x 3 (stride 2) and a 1 x 1
        // kernel.
        check_module::<Conv2d<1, 2, 3, 2, 1, 39, 39, 20, 20, f64>>(3, 29);
        check_module::<Conv2d<2, 2, 1, 1, 0, 20, 20, 20, 20, f64>>(3, 30);
        // Winograd forward passes: padding 1, 0 and 2, a single sample and a batch.
        check_module::<Conv2d<16, 3, 3, 1, 1, 5, 6, 5, 6, f64>>(1, 31);
        check_module::<Conv2d<16, 2, 3, 1, 0, 6, 5, 4, 3, f64>>(3, 32);
        check_module::<Conv2d<17, 2, 3, 1, 2, 3, 4, 5, 6, f64>>(2, 33);
        // ... and Winograd input gradients (at least 16 output channels too), padded by 2 − P.
        check_module::<Conv2d<16, 16, 3, 1, 2, 3, 4, 5, 6, f64>>(2, 34);
        check_module::<Conv2d<16, 17, 3, 1, 0, 5, 4, 3, 2, f64>>(1, 35);
        // Direct: padding 2 >= K (the input gradient through the columns instead); a single
        // sample split by output channels between the cores.
        check_module::<Conv2d<2, 3, 2, 1, 2, 4, 5, 7, 8, f64>>(2, 36);
        check_module::<Conv2d<4, 13, 3, 1, 1, 24, 24, 24, 24, f64>>(1, 37);
        // Stride 1 through the columns: a 5 x 5 kernel over 16 channels, in groups of samples.
        check_module::<Conv2d<16, 3, 5, 1, 2, 6, 7, 6, 7, f64>>(3, 38);
    }

    /// Forward and backward of `layer` on `x` with a cache made for `max_batch`.
    fn run<M: Module<f64>>(
        layer: &M,
        x: &Tensor<M::Input, f64>,
        max_batch: usize,
    ) -> (Vec<f64>, M::Grads, Vec<f64>) {
        let batch = x.batch();
        let mut cache = layer.new_cache(max_batch);
        let mut y = Tensor::zeros(batch);
        layer.forward(x, &mut y, &mut cache);
        let dy = Tensor::from_vec(
            (0..y.as_slice().len())
                .map(|i| (i as f64 * 0.3).sin())
                .collect(),
        )
        .unwrap();
        let mut grads = layer.new_grads();
        let mut dx = Tensor::zeros(batch);
        layer.backward(x, &y, &dy, Some(&mut dx), &mut cache, &mut grads);
        (y.into_vec(), grads, dx.into_vec())
    }

    fn grouping_agrees<M: Module<f64, Grads = M> + PartialEq + std::fmt::Debug>(batch: usize) {
        let layer = M::init(&mut crate::init::rng(5));
        let x = crate::gradcheck::random_tensor(&mut crate::init::rng(6), batch);
        let (y1, g1, dx1) = run(&layer, &x, 1);
        for max_batch in [2, batch] {
            let (y, g, dx) = run(&layer, &x, max_batch);
            let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-12);
            assert!(close(&y, &y1) && close(&dx, &dx1), "max batch {max_batch}");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            g.visit_params("", &mut |p| a.extend_from_slice(p.values));
            g1.visit_params("", &mut |p| b.extend_from_slice(p.values));
            assert!(close(&a, &b), "grads, max batch {max_batch}");
        }
    }

    #[test]
    fn unfolding_several_samples_at_once_changes_nothing() {
        // One sample per product (a cache for batch 1), groups of 2 with a last group of 1, and
        // all 5 samples at once.
        grouping_agrees::<Conv2d<2, 3, 3, 2, 1, 7, 6, 4, 3, f64>>(5);
        grouping_agrees::<Conv2d<3, 2, 1, 1, 0, 3, 4, 3, 4, f64>>(5);
        grouping_agrees::<Conv2d<16, 4, 5, 1, 2, 5, 5, 5, 5, f64>>(5);
    }

    #[test]
    fn splitting_the_batch_between_the_cores_changes_nothing() {
        // 7 samples of 16 x 16 (groups of 4): halves of 3 and 4 samples, above
        // `PARALLEL_SAMPLES`, against each sample on its own.
        type Columns = Conv2d<16, 8, 5, 1, 2, 16, 16, 16, 16, f64>;
        assert!(Columns::DIRECT.is_none() && Columns::WINOGRAD.is_none());
        assert!(Columns::splits_samples(7) && !Columns::splits_samples(1));
        splitting_agrees::<16, 8, 5, 2>();
        // The same for a direct convolution.
        assert!(Conv2d::<8, 16, 3, 1, 1, 16, 16, 16, 16>::DIRECT.is_some());
        splitting_agrees::<8, 16, 3, 1>();
    }

    /// A batch of 7 samples of 16 x 16 against each sample on its own.
    fn splitting_agrees<const CI: usize, const CO: usize, const K: usize, const P: usize>() {
        let layer = Conv2d::<CI, CO, K, 1, P, 16, 16, 16, 16, f64>::init(&mut crate::init::rng(7));
        let x = crate::gradcheck::random_tensor(&mut crate::init::rng(8), 7);
        let (y, grads, dx) = run(&layer, &x, 7);
        let (mut y_alone, mut dx_alone) = (Vec::new(), Vec::new());
        let mut dweight = vec![0.0; grads.weight.len()];
        for sample in x.samples() {
            let x = Tensor::from_vec(sample.to_vec()).unwrap();
            // The same output gradient as that sample's part of `run`'s.
            let offset = y_alone.len();
            let mut cache = layer.new_cache(1);
            let mut ys = Tensor::zeros(1);
            layer.forward(&x, &mut ys, &mut cache);
            let dy = Tensor::from_vec(
                (offset..offset + ys.as_slice().len())
                    .map(|i| (i as f64 * 0.3).sin())
                    .collect(),
            )
            .unwrap();
            let mut g = layer.new_grads();
            let mut dxs = Tensor::zeros(1);
            layer.backward(&x, &ys, &dy, Some(&mut dxs), &mut cache, &mut g);
            y_alone.extend_from_slice(ys.as_slice());
            dx_alone.extend_from_slice(dxs.as_slice());
            dweight.iter_mut().zip(&g.weight).for_each(|(d, g)| *d += g);
        }
        let close = |a: &[f64], b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-10)
        };
        assert!(close(&y, &y_alone), "outputs");
        assert!(close(&dx, &dx_alone), "input gradients");
        assert!(close(&grads.weight, &dweight), "weight gradients");
    }

    #[test]
    fn winograd_kernels_are_transformed_again_when_the_weights_change() {
        type Layer = Conv2d<16, 4, 3, 1, 1, 6, 5, 6, 5, f64>;
        let mut layer = Layer::init(&mut crate::init::rng(11));
        let x = crate::gradcheck::random_tensor(&mut crate::init::rng(12), 2);
        let mut cache = layer.new_cache(2);
        let (mut y, mut again) = (Tensor::zeros(2), Tensor::zeros(2));
        layer.forward(&x, &mut y, &mut cache);
        // One weight changed in place, as an optimizer does: the same cache must see it.
        layer.weight[17] += 0.5;
        layer.forward(&x, &mut again, &mut cache);
        let mut fresh = Tensor::zeros(2);
        layer.forward(&x, &mut fresh, &mut layer.new_cache(2));
        assert_ne!(y.as_slice(), again.as_slice());
        assert_eq!(again.as_slice(), fresh.as_slice());
    }

    #[test]
    fn group_sizes_follow_the_image_size_and_the_batch() {
        type Small = Conv2d<1, 1, 3, 2, 1, 8, 8, 4, 4, f64>;
        let layer = Small::zeros();
        let mut cache = layer.new_cache(100);
        assert_eq!(cache.group, 64);
        // The column buffers come with the first backward pass: inference never holds them.
        let x = Tensor::zeros(100);
        let mut y = Tensor::zeros(100);
        layer.forward(&x, &mut y, &mut cache);
        let first_core = &cache.cores[0];
        assert!(first_core.col.is_empty() && first_core.dcol.is_empty());
        assert_eq!(first_core.out.len(), 64 * 16);
        let mut grads = layer.new_grads();
        layer.backward(&x, &y, &y, None, &mut cache, &mut grads);
        let first_core = &cache.cores[0];
        assert_eq!(first_core.col.len(), 9 * 64 * 16);
        // The gradient of the columns only with an input gradient to make.
        assert!(first_core.dcol.is_empty());
        let mut dx = Tensor::zeros(100);
        layer.backward(&x, &y, &y, Some(&mut dx), &mut cache, &mut grads);
        assert_eq!(cache.cores[0].dcol.len(), 9 * 64 * 16);
        let cache = Conv2d::<1, 1, 3, 1, 1, 4, 4, 4, 4, f32>::zeros().new_cache(3);
        assert_eq!(cache.group, 3);
        let cache = Conv2d::<1, 1, 3, 1, 1, 32, 32, 32, 32, f32>::zeros().new_cache(64);
        assert_eq!(cache.group, 1);
        // A pointwise convolution over one sample at a time unfolds nothing.
        assert_eq!(Conv2d::<2, 1, 1, 1, 0, 32, 32, 32, 32, f32>::col_len(1), 0);
    }

    #[test]
    fn parameters_are_named_and_shaped_like_pytorch() {
        let layer = Conv2d::<3, 8, 3, 1, 1, 4, 4, 4, 4>::zeros();
        let mut seen = Vec::new();
        layer.visit_params("features.0", &mut |p| {
            seen.push((p.name.to_string(), p.shape.to_vec(), p.values.len()))
        });
        assert_eq!(
            seen,
            vec![
                ("features.0.weight".to_string(), vec![8, 3, 3, 3], 216),
                ("features.0.bias".to_string(), vec![8], 8),
            ]
        );
        assert_eq!(
            <Conv2d<3, 8, 3, 1, 1, 4, 4, 4, 4> as Module<f32>>::PARAMS,
            224
        );
    }

    #[test]
    fn init_is_bounded_by_one_over_root_fan_in() {
        let layer: Conv2d<4, 8, 3, 1, 1, 4, 4, 4, 4> =
            Module::<f32>::init(&mut crate::init::rng(3));
        let bound = 1.0 / (36.0f32).sqrt();
        assert!(layer
            .weight
            .iter()
            .chain(&layer.bias)
            .all(|v| v.abs() <= bound));
        assert!(layer.weight.iter().any(|v| v.abs() > 0.8 * bound));
    }

    /// Forward and backward of the PyTorch convolution `prefix` of `conv.safetensors`, in `E`.
    fn pytorch_case<
        const CI: usize,
        const CO: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const H: usize,
        const W: usize,
        const OH: usize,
        const OW: usize,
        E: Float,
    >(
        f: &Fixture,
        prefix: &str,
        tol: f64,
    ) {
        let key = |k: &str| format!("{prefix}.{k}");
        let weight_shape = [CO, CI, K, K];
        let layer = Conv2d::<CI, CO, K, S, P, H, W, OH, OW, E> {
            weight: cast(&f.values(&key("weight"), &weight_shape)),
            bias: cast(&f.values(&key("bias"), &[CO])),
        };
        let (in_shape, input) = f.f64(&key("input"));
        assert_eq!(&in_shape[1..], &[CI, H, W]);
        let x = Tensor::from_vec(cast::<E>(&input)).unwrap();
        let batch = x.batch();
        let out_shape = [batch, CO, OH, OW];
        let mut y = Tensor::zeros(batch);
        let mut cache = layer.new_cache(batch);
        layer.forward(&x, &mut y, &mut cache);
        let expected = f.values(&key("output"), &out_shape);
        assert_close(&key("output"), y.as_slice(), &expected, tol);

        let dy = Tensor::from_vec(cast::<E>(&f.values(&key("grad_output"), &out_shape))).unwrap();
        let mut grads = layer.new_grads();
        let mut dx = Tensor::zeros(batch);
        layer.backward(&x, &y, &dy, Some(&mut dx), &mut cache, &mut grads);
        let expected = f.values(&key("grad.weight"), &weight_shape);
        assert_close(&key("grad.weight"), &grads.weight, &expected, tol);
        let expected = f.values(&key("grad.bias"), &[CO]);
        assert_close(&key("grad.bias"), &grads.bias, &expected, tol);
        let expected = f.values(&key("grad.input"), &in_shape);
        assert_close(&key("grad.input"), dx.as_slice(), &expected, tol);
    }

    #[test]
    fn matches_pytorch_in_f64_and_f32() {
        let f = Fixture::open("conv.safetensors");
        pytorch_case::<3, 4, 3, 2, 1, 7, 6, 4, 3, f64>(&f, "k3s2p1", 1e-12);
        pytorch_case::<3, 4, 3, 2, 1, 7, 6, 4, 3, f32>(&f, "k3s2p1", 1e-5);
        pytorch_case::<2, 3, 5, 1, 2, 6, 5, 6, 5, f64>(&f, "k5s1p2", 1e-12);
        pytorch_case::<2, 3, 5, 1, 2, 6, 5, 6, 5, f32>(&f, "k5s1p2", 1e-5);
        pytorch_case::<4, 3, 1, 1, 0, 3, 5, 3, 5, f64>(&f, "k1s1p0", 1e-12);
        pytorch_case::<4, 3, 1, 1, 0, 3, 5, 3, 5, f32>(&f, "k1s1p0", 1e-5);
        pytorch_case::<2, 2, 2, 2, 0, 5, 7, 2, 3, f64>(&f, "k2s2p0", 1e-12);
        pytorch_case::<2, 2, 2, 2, 0, 5, 7, 2, 3, f32>(&f, "k2s2p0", 1e-5);
        // Winograd forward passes, for a batch and for a single sample.
        type Wide = Conv2d<20, 24, 3, 1, 1, 9, 7, 9, 7>;
        assert!(Wide::WINOGRAD.is_some());
        pytorch_case::<20, 24, 3, 1, 1, 9, 7, 9, 7, f64>(&f, "k3s1p1_wide", 1e-12);
        pytorch_case::<20, 24, 3, 1, 1, 9, 7, 9, 7, f32>(&f, "k3s1p1_wide", 1e-5);
        pytorch_case::<16, 18, 3, 1, 0, 8, 7, 6, 5, f64>(&f, "k3s1p0_wide", 1e-12);
        pytorch_case::<16, 18, 3, 1, 0, 8, 7, 6, 5, f32>(&f, "k3s1p0_wide", 1e-5);
    }
}
