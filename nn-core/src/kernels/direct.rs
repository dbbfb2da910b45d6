//! Direct convolution, for stride-1 layers with few input channels (LeNet's 5 x 5 layers over
//! 1 and 6 channels), where unfolding the images (im2col) costs more than the products: each
//! unfolded value meets only 6 or 16 output channels.
//!
//! With `x̃` the input padded by `P` zeros on every side and `t = (c, p, q)` a kernel tap:
//!
//! ```text
//! forward          y[o, i, j]  = b[o] + Σ_t w[o, t] · x̃[c, i + p, j + q]
//! input gradient   dx          = dỹ ⋆ rot180(w)ᵀ     (dy padded by K − 1 − P, CO to CI channels)
//! weight gradient  dw[o, t]    = Σ_{n,i,j} dy[n, o, i, j] · x̃[n, c, i + p, j + q]
//! ```
//!
//! Samples are copied into padded buffers whose rows are wide enough for whole blocks of output
//! columns, so that the inner loops have neither bounds tests nor edge cases (the extra columns
//! are computed and dropped). A tap then is an offset into the padded sample, and both passes
//! are matrix products whose operands are read in place at those offsets instead of being
//! unfolded:
//!
//! - the correlation (forward and input gradient) keeps `BLOCK` output channels x `COLUMNS`
//!   output columns of sums in registers, and per tap adds `BLOCK` broadcast weights times
//!   `COLUMNS` inputs read at the tap's offset (the GEMM micro-kernel's 6 x 16 shape);
//! - the weight gradient keeps `GRADIENT_CHANNELS` output channels x `GRADIENT_TAPS` taps of
//!   vectors in registers, and per vector of output positions reads `GRADIENT_CHANNELS` rows of
//!   `dy` and `GRADIENT_TAPS` of inputs; the lanes are summed once per group of samples.
//!
//! A batch is split in halves, one per core; the weight gradient's halves are added at the end.

use super::im2col::ConvGeometry;
use super::parallel::join;
use super::vector::{copy, reserve, sum, zero};
use crate::Float;

/// Output channels per block of the correlation.
pub const BLOCK: usize = 6;

/// Output columns per block of the correlation: two vectors of 8 `f32`.
pub const COLUMNS: usize = 16;

/// Output positions per step of the weight gradient: one vector of 8 `f32`.
pub const LANES: usize = 8;

/// Output channels per block of the weight gradient.
pub const GRADIENT_CHANNELS: usize = 4;

/// Taps per block of the weight gradient.
pub const GRADIENT_TAPS: usize = 3;

/// Below this many multiply-adds per pass one core is faster than two.
const PARALLEL_WORK: usize = 1 << 18;

/// Padded values (inputs and output gradients) per group of samples of the weight gradient:
/// enough samples to sum each vector's lanes rarely, few enough to stay in the L2 cache.
const GROUP_VALUES: usize = 1 << 16;

/// A stride-1 convolution as the direct kernels see it: `geometry` (input channels, sizes,
/// kernel, padding) and the output channels.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Direct {
    pub geometry: ConvGeometry,
    pub out_channels: usize,
}

impl Direct {
    /// The convolution, or `None` unless its stride is 1.
    pub const fn new(geometry: ConvGeometry, out_channels: usize) -> Option<Self> {
        if geometry.stride != 1 {
            return None;
        }
        Some(Self {
            geometry,
            out_channels,
        })
    }

    /// The correlation that turns this convolution's output gradient into its input gradient:
    /// `CO` to `CI` channels over `OH x OW`, padded by `K − 1 − P` (so `None` for `P >= K`).
    pub const fn transposed(self) -> Option<Self> {
        let g = self.geometry;
        if g.padding >= g.kernel {
            return None;
        }
        let geometry = ConvGeometry::new(
            self.out_channels,
            g.out_height,
            g.out_width,
            g.kernel,
            1,
            g.kernel - 1 - g.padding,
        );
        Self::new(geometry, g.channels)
    }

    /// Multiply-adds per sample.
    const fn work(&self) -> usize {
        self.out_channels * self.geometry.col_len()
    }

    /// Values per input and output sample.
    const fn sample_lens(&self) -> (usize, usize) {
        let g = self.geometry;
        (g.input_len(), self.out_channels * g.col_cols())
    }

    /// Kernel taps: `CI·K·K`.
    const fn taps(&self) -> usize {
        self.geometry.col_rows()
    }

    /// The padded layout of one input sample for output columns in blocks of `block`.
    const fn padded(&self, block: usize) -> Padded {
        let g = self.geometry;
        let rows = g.out_height + g.kernel - 1;
        let width = g.out_width.next_multiple_of(block) + g.kernel - 1;
        Padded {
            rows,
            width,
            sample: g.channels * rows * width,
        }
    }
}

/// A padded sample: per channel `rows x width` values, the input at row and column `P`, zeros
/// around it; `sample` values in all.
#[derive(Copy, Clone, Debug)]
struct Padded {
    rows: usize,
    width: usize,
    sample: usize,
}

impl Padded {
    /// Copies the sample `x` (`[C, H, W]`) into `out` (`sample` values), with zeros around.
    fn fill<E: Float>(self, g: ConvGeometry, x: &[E], out: &mut [E]) {
        zero(out);
        let plane = g.height * g.width;
        for (image, padded) in x
            .chunks_exact(plane)
            .zip(out.chunks_exact_mut(self.rows * self.width))
        {
            for (row, line) in image.chunks_exact(g.width).enumerate() {
                let at = (row + g.padding) * self.width + g.padding;
                copy(&mut padded[at..][..g.width], line);
            }
        }
    }

    /// The offset of every kernel tap `(c, p, q)` in the padded sample, in order (so the
    /// last is the largest).
    fn offsets(self, g: ConvGeometry, out: &mut Vec<usize>) {
        out.clear();
        for c in 0..g.channels {
            for p in 0..g.kernel {
                for q in 0..g.kernel {
                    out.push((c * self.rows + p) * self.width + q);
                }
            }
        }
    }
}

/// The weights `w` (`[CO, CI, K, K]`) packed for the correlation, in blocks of `BLOCK` output
/// channels: block `b` holds, for each tap `t`, the weights `w[b·BLOCK + l, t]` of its
/// channels `l` (zero past `CO`). `turned` packs `rot180(w)ᵀ` for the input gradient instead:
/// output channels `c`, taps `(o, p, q)`, weights `w[o, c, K − 1 − p, K − 1 − q]`.
pub fn arrange<E: Float>(d: Direct, w: &[E], turned: bool, out: &mut Vec<E>) {
    let g = d.geometry;
    let (ci, co, k2) = (g.channels, d.out_channels, g.kernel * g.kernel);
    let (outputs, taps) = if turned { (ci, co * k2) } else { (co, ci * k2) };
    out.clear();
    out.resize(outputs.div_ceil(BLOCK) * taps * BLOCK, E::ZERO);
    for (o, kernels) in w.chunks_exact(ci * k2).enumerate() {
        for (c, kernel) in kernels.chunks_exact(k2).enumerate() {
            for (t, value) in kernel.iter().enumerate() {
                let (output, tap) = if turned {
                    (c, o * k2 + k2 - 1 - t)
                } else {
                    (o, c * k2 + t)
                };
                out[((output / BLOCK) * taps + tap) * BLOCK + output % BLOCK] = *value;
            }
        }
    }
}

/// The kernel taps' offsets in a padded sample, in increasing order (the kernels' bounds
/// checks rely on the last being the largest).
pub struct Taps<'a> {
    offsets: &'a [usize],
}

impl<'a> Taps<'a> {
    fn new(offsets: &'a [usize]) -> Self {
        assert!(
            offsets.windows(2).all(|w| w[0] <= w[1]),
            "tap offsets must increase"
        );
        Self { offsets }
    }

    fn offsets(&self) -> &'a [usize] {
        self.offsets
    }

    /// The largest offset.
    fn last(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0)
    }
}

/// Where the weight gradient's kernel reads a group of samples: `samples` padded inputs of
/// `x_sample` values with rows of `x_width`; padded output gradients of `dy_sample` values,
/// `dy_channel` per channel, `rows` rows of `dy_width` (a multiple of `LANES`).
#[derive(Copy, Clone, Debug)]
pub struct GradientGroup {
    pub samples: usize,
    pub rows: usize,
    pub x_sample: usize,
    pub x_width: usize,
    pub dy_sample: usize,
    pub dy_channel: usize,
    pub dy_width: usize,
}

/// The micro-kernels of one element type (see `Float::direct_kernels`).
#[derive(Copy, Clone)]
pub struct Kernels<E> {
    /// `Σ_t weights[t] ⊗ input[at + offset_t..][..COLUMNS]` for the taps' `BLOCK` weights
    /// each (`weights` holds `BLOCK` per tap): `BLOCK` output channels x `COLUMNS` outputs.
    pub correlate: fn(weights: &[E], taps: &Taps<'_>, input: &[E], at: usize) -> Sums<E>,
    /// For `GRADIENT_CHANNELS` channels of `dy` (from its start) and `GRADIENT_TAPS` taps
    /// (offsets into `x`), `Σ_{n,i,j} dy[n, o, i, j] · x[n, tap + i·x_width + j]`.
    pub gradient: fn(dy: &[E], x: &[E], taps: TapOffsets, group: GradientGroup) -> TapSums<E>,
}

/// A block of the correlation's sums: `BLOCK` output channels x `COLUMNS` output columns.
pub type Sums<E> = [[E; COLUMNS]; BLOCK];

/// The offsets of a block of the weight gradient's taps.
pub type TapOffsets = [usize; GRADIENT_TAPS];

/// A block of the weight gradient: `GRADIENT_CHANNELS` output channels x `GRADIENT_TAPS` taps.
pub type TapSums<E> = [[E; GRADIENT_TAPS]; GRADIENT_CHANNELS];

/// The portable kernels: plain loops (f64, and f32 on CPUs without AVX2 and FMA).
pub fn generic_kernels<E: Float>() -> Kernels<E> {
    Kernels {
        correlate: correlate_generic,
        gradient: gradient_generic,
    }
}

fn correlate_generic<E: Float>(weights: &[E], taps: &Taps<'_>, input: &[E], at: usize) -> Sums<E> {
    let mut sums = [[E::ZERO; COLUMNS]; BLOCK];
    for (offset, weights) in taps.offsets().iter().zip(weights.chunks_exact(BLOCK)) {
        let inputs = &input[at + offset..][..COLUMNS];
        for (row, w) in sums.iter_mut().zip(weights) {
            for (s, v) in row.iter_mut().zip(inputs) {
                *s = w.mul_add(*v, *s);
            }
        }
    }
    sums
}

fn gradient_generic<E: Float>(dy: &[E], x: &[E], taps: TapOffsets, g: GradientGroup) -> TapSums<E> {
    let mut sums = [[E::ZERO; GRADIENT_TAPS]; GRADIENT_CHANNELS];
    for n in 0..g.samples {
        for i in 0..g.rows {
            for (o, sums) in sums.iter_mut().enumerate() {
                let d = &dy[n * g.dy_sample + o * g.dy_channel + i * g.dy_width..][..g.dy_width];
                for (s, tap) in sums.iter_mut().zip(taps) {
                    let v = &x[n * g.x_sample + tap + i * g.x_width..][..g.dy_width];
                    for (d, v) in d.iter().zip(v) {
                        *s = d.mul_add(*v, *s);
                    }
                }
            }
        }
    }
    sums
}

/// The f32 kernels: AVX2 and FMA where the CPU has them.
pub fn f32_kernels() -> Kernels<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return Kernels {
            correlate: avx2::correlate,
            gradient: avx2::gradient,
        };
    }
    generic_kernels()
}

/// The buffers of one core: padded samples, padded output gradients, and (second core) its
/// part of the weight gradient.
#[derive(Clone, Debug, Default)]
struct CoreScratch<E> {
    padded: Vec<E>,
    gradient: Vec<E>,
    dweight: Vec<E>,
}

/// The buffers of the direct kernels: one set per core, and the taps' offsets.
#[derive(Clone, Debug, Default)]
pub struct Scratch<E> {
    cores: [CoreScratch<E>; 2],
    offsets: Vec<usize>,
}

/// `y = bias + x ⋆ w` for the samples `x` (whole samples, one after another) into `y`, with
/// `weights` packed by [`arrange`] (`bias` `None` for none).
///
/// A batch is split in halves, one per core; a single sample, by blocks of output channels.
pub fn correlate<E: Float>(
    d: Direct,
    weights: &[E],
    bias: Option<&[E]>,
    x: &[E],
    y: &mut [E],
    scratch: &mut Scratch<E>,
) {
    let (in_len, out_len) = d.sample_lens();
    let batch = y.len() / out_len.max(1);
    let padded = d.padded(COLUMNS);
    padded.offsets(d.geometry, &mut scratch.offsets);
    let taps = Taps::new(&scratch.offsets);
    let [first, second] = &mut scratch.cores;
    let blocks = d.out_channels.div_ceil(BLOCK);
    if batch * d.work() < PARALLEL_WORK || (batch == 1 && blocks == 1) {
        return correlate_samples(d, weights, &taps, bias, x, y, first);
    }
    if batch == 1 {
        let xp = reserve(&mut first.padded, padded.sample);
        padded.fill(d.geometry, x, xp);
        let xp = &*xp;
        let split = (blocks / 2) * BLOCK;
        let (front, back) = y.split_at_mut(split * d.geometry.col_cols());
        join(
            || correlate_channels(d, weights, &taps, bias, xp, front, 0),
            || correlate_channels(d, weights, &taps, bias, xp, back, split),
        );
        return;
    }
    let half = batch / 2;
    let (x_front, x_back) = x.split_at(half * in_len);
    let (y_front, y_back) = y.split_at_mut(half * out_len);
    join(
        || correlate_samples(d, weights, &taps, bias, x_front, y_front, first),
        || correlate_samples(d, weights, &taps, bias, x_back, y_back, second),
    );
}

fn correlate_samples<E: Float>(
    d: Direct,
    weights: &[E],
    taps: &Taps<'_>,
    bias: Option<&[E]>,
    x: &[E],
    y: &mut [E],
    scratch: &mut CoreScratch<E>,
) {
    let (in_len, out_len) = d.sample_lens();
    let padded = d.padded(COLUMNS);
    let xp = reserve(&mut scratch.padded, padded.sample);
    for (x, y) in x.chunks_exact(in_len).zip(y.chunks_exact_mut(out_len)) {
        padded.fill(d.geometry, x, xp);
        correlate_channels(d, weights, taps, bias, xp, y, 0);
    }
}

/// The output channels `first..` (as many as `y` holds, starting at a block boundary) of the
/// padded sample `xp`.
fn correlate_channels<E: Float>(
    d: Direct,
    weights: &[E],
    taps: &Taps<'_>,
    bias: Option<&[E]>,
    xp: &[E],
    y: &mut [E],
    first: usize,
) {
    let g = d.geometry;
    let (oh, ow) = (g.out_height, g.out_width);
    let width = d.padded(COLUMNS).width;
    let kernel = E::direct_kernels().correlate;
    let block_weights = d.taps() * BLOCK;
    let channels = y.len() / (oh * ow);
    for (b0, weights) in (0..channels)
        .step_by(BLOCK)
        .zip(weights[first * d.taps()..].chunks_exact(block_weights))
    {
        for i in 0..oh {
            for j0 in (0..ow).step_by(COLUMNS) {
                let sums = kernel(weights, taps, xp, i * width + j0);
                let n = COLUMNS.min(ow - j0);
                for (b, sums) in (b0..channels).zip(&sums) {
                    let bias = bias.map_or(E::ZERO, |bias| bias[first + b]);
                    let out = &mut y[(b * oh + i) * ow + j0..][..n];
                    for (out, s) in out.iter_mut().zip(sums) {
                        *out = *s + bias;
                    }
                }
            }
        }
    }
}

/// `dw += Σ_n dy_n ⋆ x̃_n` (`[CO, CI, K, K]`, PyTorch's layout) for the samples `x` and their
/// output gradients `dy`.
pub fn weight_gradient<E: Float>(
    d: Direct,
    x: &[E],
    dy: &[E],
    dw: &mut [E],
    scratch: &mut Scratch<E>,
) {
    let (in_len, out_len) = d.sample_lens();
    let batch = dy.len() / out_len.max(1);
    d.padded(LANES).offsets(d.geometry, &mut scratch.offsets);
    let taps = &scratch.offsets[..];
    let [first, second] = &mut scratch.cores;
    if batch < 2 || batch * d.work() < PARALLEL_WORK {
        return weight_gradient_samples(d, taps, x, dy, dw, first);
    }
    let half = batch / 2;
    let (x_front, x_back) = x.split_at(half * in_len);
    let (dy_front, dy_back) = dy.split_at(half * out_len);
    // Taken out of `second` while it lends its other buffers to the second core.
    let mut second_dw = std::mem::take(&mut second.dweight);
    let len = dw.len();
    zero(reserve(&mut second_dw, len));
    join(
        || weight_gradient_samples(d, taps, x_front, dy_front, dw, first),
        || weight_gradient_samples(d, taps, x_back, dy_back, &mut second_dw[..len], second),
    );
    for (total, part) in dw.iter_mut().zip(&second_dw) {
        *total += *part;
    }
    second.dweight = second_dw;
}

fn weight_gradient_samples<E: Float>(
    d: Direct,
    offsets: &[usize],
    x: &[E],
    dy: &[E],
    dw: &mut [E],
    scratch: &mut CoreScratch<E>,
) {
    let g = d.geometry;
    let (oh, ow, co) = (g.out_height, g.out_width, d.out_channels);
    let (in_len, out_len) = d.sample_lens();
    let padded = d.padded(LANES);
    // dy with its rows widened to whole vectors and its channels to whole blocks, zeros around.
    let dy_width = ow.next_multiple_of(LANES);
    let dy_channel = oh * dy_width;
    let dy_sample = co.next_multiple_of(GRADIENT_CHANNELS) * dy_channel;
    let group = (GROUP_VALUES / (padded.sample + dy_sample)).max(1);
    let xp = reserve(&mut scratch.padded, group * padded.sample);
    let dyp = reserve(&mut scratch.gradient, group * dy_sample);
    zero(dyp);
    let kernel = E::direct_kernels().gradient;
    let taps = d.taps();
    for (x, dy) in x.chunks(group * in_len).zip(dy.chunks(group * out_len)) {
        let samples = dy.len() / out_len;
        for (x, xp) in x
            .chunks_exact(in_len)
            .zip(xp.chunks_exact_mut(padded.sample))
        {
            padded.fill(g, x, xp);
        }
        for (dy, dyp) in dy
            .chunks_exact(out_len)
            .zip(dyp.chunks_exact_mut(dy_sample))
        {
            for (row, line) in dy.chunks_exact(ow).enumerate() {
                copy(&mut dyp[row * dy_width..][..ow], line);
            }
        }
        let shape = GradientGroup {
            samples,
            rows: oh,
            x_sample: padded.sample,
            x_width: padded.width,
            dy_sample,
            dy_channel,
            dy_width,
        };
        for t0 in (0..taps).step_by(GRADIENT_TAPS) {
            // A last, partial group repeats its last tap; the repeats are dropped.
            let group_taps = std::array::from_fn(|l| offsets[(t0 + l).min(taps - 1)]);
            for o0 in (0..co).step_by(GRADIENT_CHANNELS) {
                let sums = kernel(&dyp[o0 * dy_channel..], xp, group_taps, shape);
                for (o, sums) in (o0..co).zip(&sums) {
                    for (t, s) in (t0..taps).zip(sums) {
                        dw[o * taps + t] += *s;
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{GradientGroup, Sums, TapOffsets, TapSums, Taps, BLOCK, COLUMNS, GRADIENT_TAPS};

    /// [`super::Kernels::correlate`] in AVX2: `BLOCK` x 2 vectors of sums.
    pub fn correlate(weights: &[f32], taps: &Taps<'_>, input: &[f32], at: usize) -> Sums<f32> {
        let offsets = taps.offsets();
        assert!(weights.len() >= offsets.len() * BLOCK, "correlate: weights");
        assert!(
            at + taps.last() + COLUMNS <= input.len(),
            "correlate: input"
        );
        // SAFETY: only handed out by `f32_kernels` on a CPU with AVX2 and FMA; every read is
        // in bounds: tap `t`'s weights are `weights[t·BLOCK..][..BLOCK]` (checked above), its
        // inputs `input[at + offset..][..COLUMNS]` with `offset <= taps.last()` (checked above,
        // `Taps` keeps its offsets in increasing order).
        unsafe { correlate_avx2(weights, offsets, input, at) }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; `weights` holds `BLOCK` values per offset, and `input` holds
    /// `at + offset + COLUMNS` values for every offset.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn correlate_avx2(
        weights: &[f32],
        offsets: &[usize],
        input: &[f32],
        at: usize,
    ) -> Sums<f32> {
        let mut acc = [[_mm256_setzero_ps(); 2]; BLOCK];
        let (w, x) = (weights.as_ptr(), input.as_ptr().add(at));
        for (t, offset) in offsets.iter().enumerate() {
            let (x0, x1) = (
                _mm256_loadu_ps(x.add(*offset)),
                _mm256_loadu_ps(x.add(offset + 8)),
            );
            let w = w.add(t * BLOCK);
            for (l, acc) in acc.iter_mut().enumerate() {
                let w = _mm256_broadcast_ss(&*w.add(l));
                acc[0] = _mm256_fmadd_ps(w, x0, acc[0]);
                acc[1] = _mm256_fmadd_ps(w, x1, acc[1]);
            }
        }
        let mut sums = [[0.0; COLUMNS]; BLOCK];
        for (sums, acc) in sums.iter_mut().zip(acc) {
            _mm256_storeu_ps(sums.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(sums.as_mut_ptr().add(8), acc[1]);
        }
        sums
    }

    /// [`super::Kernels::gradient`] in AVX2: `GRADIENT_CHANNELS` x `GRADIENT_TAPS` vectors of
    /// sums.
    pub fn gradient(dy: &[f32], x: &[f32], taps: TapOffsets, g: GradientGroup) -> TapSums<f32> {
        assert!(
            g.samples >= 1 && g.rows >= 1 && g.dy_width.is_multiple_of(8),
            "gradient: shape"
        );
        let last_row = (g.samples - 1) * g.dy_sample + (g.rows - 1) * g.dy_width;
        assert!(
            last_row + (super::GRADIENT_CHANNELS - 1) * g.dy_channel + g.dy_width <= dy.len(),
            "gradient: dy"
        );
        let last_tap = taps.iter().copied().max().unwrap_or(0);
        let last_row = (g.samples - 1) * g.x_sample + (g.rows - 1) * g.x_width;
        assert!(last_row + last_tap + g.dy_width <= x.len(), "gradient: x");
        // SAFETY: only handed out by `f32_kernels` on a CPU with AVX2 and FMA; the reads are
        // rows of `dy_width` values of `GRADIENT_CHANNELS` channels of `dy` and at the taps of
        // `x`, for `samples` samples and `rows` rows, the last of which are checked above.
        unsafe { gradient_avx2(dy, x, taps, g) }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; `dy` and `x` hold every row `g` describes (see `gradient`).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gradient_avx2(
        dy: &[f32],
        x: &[f32],
        taps: TapOffsets,
        g: GradientGroup,
    ) -> TapSums<f32> {
        let mut acc = [[_mm256_setzero_ps(); GRADIENT_TAPS]; super::GRADIENT_CHANNELS];
        for n in 0..g.samples {
            for i in 0..g.rows {
                let d = dy.as_ptr().add(n * g.dy_sample + i * g.dy_width);
                let v = x.as_ptr().add(n * g.x_sample + i * g.x_width);
                for j in (0..g.dy_width).step_by(8) {
                    // Plain loops, not closures: a closure would not inherit the target features.
                    let mut xs = [_mm256_setzero_ps(); GRADIENT_TAPS];
                    for (x, tap) in xs.iter_mut().zip(taps) {
                        *x = _mm256_loadu_ps(v.add(tap + j));
                    }
                    for (o, acc) in acc.iter_mut().enumerate() {
                        let d = _mm256_loadu_ps(d.add(o * g.dy_channel + j));
                        for (acc, x) in acc.iter_mut().zip(xs) {
                            *acc = _mm256_fmadd_ps(d, x, *acc);
                        }
                    }
                }
            }
        }
        let mut sums = TapSums::default();
        for (sums, acc) in sums.iter_mut().zip(acc) {
            for (total, acc) in sums.iter_mut().zip(acc) {
                let mut lanes = [0.0; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
                *total = super::sum(&lanes);
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(CI, CO, K, P, H, W, batch)`: LeNet's two layers; an odd channel count; a single
    /// sample split by channel blocks between the cores; images large enough for several groups
    /// of samples per core in the weight gradient; padding at least the kernel (no transposed
    /// correlation).
    const CASES: [(usize, usize, usize, usize, usize, usize, usize); 6] = [
        (1, 6, 5, 2, 28, 28, 3),
        (6, 16, 5, 0, 14, 14, 5),
        (3, 7, 3, 1, 9, 11, 1),
        (4, 13, 3, 1, 24, 24, 1),
        (5, 4, 3, 1, 40, 40, 9),
        (2, 3, 2, 2, 4, 5, 2),
    ];

    fn values(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104729) % 2003) as f64 / 1001.0 - 1.0)
            .collect()
    }

    /// The input at `(c, r, s)` of the padded sample, 0 in the padding.
    fn at(x: &[f64], g: ConvGeometry, c: usize, r: usize, s: usize) -> f64 {
        let (r, s) = (
            r as isize - g.padding as isize,
            s as isize - g.padding as isize,
        );
        if r < 0 || s < 0 || r >= g.height as isize || s >= g.width as isize {
            return 0.0;
        }
        x[(c * g.height + r as usize) * g.width + s as usize]
    }

    /// The forward pass, the weight gradient and the input gradient as plain sums.
    fn sums(d: Direct, w: &[f64], b: &[f64], x: &[f64], dy: &[f64]) -> [Vec<f64>; 3] {
        let g = d.geometry;
        let (ci, co, k, oh, ow) = (
            g.channels,
            d.out_channels,
            g.kernel,
            g.out_height,
            g.out_width,
        );
        let batch = x.len() / g.input_len();
        let mut y = vec![0.0; batch * co * oh * ow];
        let mut dw = vec![0.0; w.len()];
        let mut dx = vec![0.0; x.len()];
        for n in 0..batch {
            let xs = &x[n * g.input_len()..][..g.input_len()];
            for (o, bias) in b.iter().enumerate() {
                for i in 0..oh {
                    for j in 0..ow {
                        let out = ((n * co + o) * oh + i) * ow + j;
                        y[out] = *bias;
                        for c in 0..ci {
                            for p in 0..k {
                                for q in 0..k {
                                    let wi = ((o * ci + c) * k + p) * k + q;
                                    let v = at(xs, g, c, i + p, j + q);
                                    y[out] += w[wi] * v;
                                    dw[wi] += dy[out] * v;
                                    let (r, s) = (i + p, j + q);
                                    if r >= g.padding
                                        && s >= g.padding
                                        && r - g.padding < g.height
                                        && s - g.padding < g.width
                                    {
                                        let xi =
                                            ((n * ci + c) * g.height + r - g.padding) * g.width + s
                                                - g.padding;
                                        dx[xi] += w[wi] * dy[out];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        [y, dw, dx]
    }

    fn check<E: Float>(tol: f64) {
        for (ci, co, k, p, h, w, batch) in CASES {
            let d = Direct::new(ConvGeometry::new(ci, h, w, k, 1, p), co).unwrap();
            let (in_len, out_len) = d.sample_lens();
            let weight = values(co * ci * k * k, 1);
            let bias = values(co, 2);
            let x = values(batch * in_len, 3);
            let dy = values(batch * out_len, 4);
            let [y_ref, dw_ref, dx_ref] = sums(d, &weight, &bias, &x, &dy);
            let cast = |v: &[f64]| v.iter().map(|v| E::from_f64(*v)).collect::<Vec<E>>();
            let close = |what: &str, a: &[E], b: &[f64]| {
                assert_eq!(a.len(), b.len(), "{what}: lengths");
                let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (i, (a, b)) in a.iter().zip(b).enumerate() {
                    let err = (a.to_f64() - b).abs() / scale;
                    assert!(
                        err <= tol,
                        "{what} {ci} {co} {k} {p} {h}x{w}: [{i}] {a} vs {b}"
                    );
                }
            };
            let mut scratch = Scratch::default();
            let mut packed = Vec::new();
            arrange(d, &cast(&weight), false, &mut packed);
            let mut y = vec![E::ZERO; y_ref.len()];
            correlate(
                d,
                &packed,
                Some(&cast(&bias)),
                &cast(&x),
                &mut y,
                &mut scratch,
            );
            close("forward", &y, &y_ref);
            // Accumulated on top of what is there.
            let mut dw = vec![E::ONE; dw_ref.len()];
            weight_gradient(d, &cast(&x), &cast(&dy), &mut dw, &mut scratch);
            let dw_ref: Vec<f64> = dw_ref.iter().map(|v| v + 1.0).collect();
            close("weight gradient", &dw, &dw_ref);
            if let Some(transposed) = d.transposed() {
                arrange(d, &cast(&weight), true, &mut packed);
                let mut dx = vec![E::ZERO; dx_ref.len()];
                correlate(transposed, &packed, None, &cast(&dy), &mut dx, &mut scratch);
                close("input gradient", &dx, &dx_ref);
            } else {
                assert!(p >= k);
            }
        }
    }

    #[test]
    fn the_portable_kernels_match_direct_sums_in_f64() {
        check::<f64>(1e-12);
    }

    #[test]
    fn the_f32_kernels_match_direct_sums() {
        check::<f32>(2e-5);
    }

    #[test]
    fn large_passes_are_split_between_the_cores() {
        let split =
            |(ci, co, k, p, h, w, batch): (usize, usize, usize, usize, usize, usize, usize)| {
                let d = Direct::new(ConvGeometry::new(ci, h, w, k, 1, p), co).unwrap();
                batch * d.work() >= PARALLEL_WORK
            };
        assert!(split(CASES[1]) && split(CASES[3]) && split(CASES[4]));
    }
}
