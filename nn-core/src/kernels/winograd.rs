//! Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016): a 3 x 3, stride-1 convolution computed as 16 matrix products that
//! together do 16 multiply-adds per 2 x 2 outputs and input channel, where im2col + GEMM does 36.
//!
//! Each 2 x 2 block of outputs ("tile") reads a 4 x 4 patch `d` of every input channel (patches
//! overlap by 2). With the fixed matrices
//!
//! ```text
//!      [1  0 -1  0]        [1   0   0]
//! Bᵀ = [0  1  1  0]    G = [½   ½   ½]    Aᵀ = [1  1  1  0]
//!      [0 -1  1  0]        [½  -½   ½]         [0  1 -1 -1]
//!      [0  1  0 -1]        [0   0   1]
//! ```
//!
//! the tile of output channel `o` is `Aᵀ [Σ_c (G g_oc Gᵀ) ⊙ (Bᵀ d_c B)] A`, exactly the
//! cross-correlation of the 3 x 3 kernels `g_oc` with the patches (up to rounding). The sum over
//! channels at each of the 16 positions `ξ` of the 4 x 4 transforms is a matrix product:
//! `M_ξ = V_ξ · U_ξ` with `V_ξ [tiles, CI]` the transformed patches and `U_ξ [CI, CO]` the
//! transformed kernels, packed once per pass as the products' right operand ([`PackedRhs`]).
//!
//! The transforms only add, subtract and halve, so the results differ from a direct sum by a
//! few rounding errors of the inputs' size, like any reordering of the sum.

use std::ops::Range;

use super::gemm::PackedRhs;
use super::im2col::ConvGeometry;
use super::matmul::{matmul, matmul_prepacked, MatMut, MatRef};
use super::parallel::join;
use super::vector::{copy, reserve, zero};
use crate::Float;

/// Positions of a 4 x 4 transform, each its own matrix product.
pub const POSITIONS: usize = 16;

/// A 3 x 3, stride-1 convolution's tiling: `tile_rows x tile_cols` tiles of 2 x 2 outputs per
/// sample (the last row or column of tiles is cut off where the output size is odd).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub geometry: ConvGeometry,
    pub tile_rows: usize,
    pub tile_cols: usize,
}

impl Tiling {
    /// The tiling of `geometry`, or `None` unless its kernel is 3 x 3 with stride 1.
    pub const fn new(geometry: ConvGeometry) -> Option<Self> {
        if geometry.kernel != 3 || geometry.stride != 1 {
            return None;
        }
        Some(Self {
            geometry,
            tile_rows: geometry.out_height.div_ceil(2),
            tile_cols: geometry.out_width.div_ceil(2),
        })
    }

    /// Values of one sample's input.
    fn input_len(&self) -> usize {
        let g = self.geometry;
        g.channels * g.height * g.width
    }

    /// Values of one sample's output with `out_channels` channels.
    fn output_len(&self, out_channels: usize) -> usize {
        out_channels * self.geometry.out_height * self.geometry.out_width
    }
}

/// The transformed kernels `U_ξ = (G g Gᵀ)_ξ`, one packed `[CI, co]` matrix per position,
/// whole or in two halves by output channel (see [`new`](Self::new)); a whole set is the
/// first half, with an empty second.
#[derive(Clone, Debug)]
pub struct TransformedKernels<E> {
    halves: [Vec<PackedRhs<E>>; 2],
    in_channels: usize,
}

impl<E: Float> TransformedKernels<E> {
    /// Room for the kernels of the convolution `tiling` to `out_channels` channels. They are
    /// kept in two halves by output channel when there are more output channels than tiles in
    /// a block (VGG16's 512-channel layers at 14 x 14: each core reads half of `U`), else whole
    /// (a single sample's products are then split by tiles: with 64 output channels, halves
    /// made every product 32 columns wide and packed `V` once per core).
    pub fn new(tiling: Tiling, out_channels: usize) -> Self {
        let in_channels = tiling.geometry.channels;
        let half = |columns: usize| {
            (0..POSITIONS)
                .map(|_| PackedRhs::new(in_channels, columns))
                .collect()
        };
        let front = if out_channels > block_tiles(tiling) {
            out_channels / 2
        } else {
            out_channels
        };
        Self {
            halves: [half(front), half(out_channels - front)],
            in_channels,
        }
    }

    /// The output channels of each half.
    fn outputs(&self) -> [Range<usize>; 2] {
        let front = self.halves[0][0].shape().1;
        [0..front, front..front + self.halves[1][0].shape().1]
    }

    /// Transforms `weight` (`[CO, CI, 3, 3]`, PyTorch's layout) into place, one half of the
    /// output channels on each core (whole kernels on one: they are the small ones).
    pub fn transform(&mut self, weight: &[E]) {
        let [front, back] = self.outputs();
        assert_eq!(
            weight.len(),
            back.end * self.in_channels * 9,
            "3 x 3 kernels"
        );
        let (weight_front, weight_back) = weight.split_at(front.end * self.in_channels * 9);
        let [first, second] = &mut self.halves;
        join(
            || transform_kernels(weight_front, first),
            || transform_kernels(weight_back, second),
        );
    }
}

/// Writes every `G g Gᵀ` of `weight` (`[co, CI, 3, 3]`) into `positions` (`[CI, co]` each).
fn transform_kernels<E: Float>(weight: &[E], positions: &mut [PackedRhs<E>]) {
    const LANES: usize = 16;
    let (in_channels, out_channels) = positions[0].shape();
    let half = E::from_f64(0.5);
    // Sixteen output channels at a time, one per lane: their entries at one input channel
    // are contiguous in the panels, so each position gets one whole run of 16 values.
    for outs in (0..out_channels).step_by(LANES) {
        let lanes = LANES.min(out_channels - outs);
        for c in 0..in_channels {
            // taps[u][v][lane] = g[o = outs + lane][c][u][v].
            let mut taps = [[[E::ZERO; LANES]; 3]; 3];
            for lane in 0..lanes {
                let g = &weight[((outs + lane) * in_channels + c) * 9..][..9];
                for (t, value) in g.iter().enumerate() {
                    taps[t / 3][t % 3][lane] = *value;
                }
            }
            // G g: rows g0, (g0 + g1 + g2) / 2, (g0 − g1 + g2) / 2 and g2 of each kernel;
            // then (G g) Gᵀ, the same combination along each row.
            let gg = combine(taps, half);
            let u = gg.map(|row| combine([[row[0]], [row[1]], [row[2]]], half));
            let at = positions[0].index(c, outs);
            for (xi, packed) in positions.iter_mut().enumerate() {
                packed.panels_mut()[at..at + lanes].copy_from_slice(&u[xi / 4][xi % 4][0][..lanes]);
            }
        }
    }
}

/// `G · g` for the three rows of `g`: `[g0, (g0 + g1 + g2) / 2, (g0 − g1 + g2) / 2, g2]`,
/// lane by lane.
fn combine<E: Float, const N: usize, const L: usize>(
    g: [[[E; L]; N]; 3],
    half: E,
) -> [[[E; L]; N]; 4] {
    let mut out = [[[E::ZERO; L]; N]; 4];
    for n in 0..N {
        for l in 0..L {
            let (g0, g1, g2) = (g[0][n][l], g[1][n][l], g[2][n][l]);
            out[0][n][l] = g0;
            out[1][n][l] = (g0 + g1 + g2) * half;
            out[2][n][l] = (g0 - g1 + g2) * half;
            out[3][n][l] = g2;
        }
    }
    out
}

/// The buffers of [`convolve`], one set per core: the transformed patches `V`
/// (`[16][CI][tiles]`) of a block of tiles, their products `M` (`[16][tiles][co]`, for the
/// kernels' whole set or one half of it at a time), and rows for the transforms. A single
/// sample's block uses the first core's `V` (and `M`, when the kernels are whole) for both.
#[derive(Clone, Debug, Default)]
pub struct Scratch<E> {
    cores: [CoreScratch<E>; 2],
}

#[derive(Clone, Debug, Default)]
struct CoreScratch<E> {
    patches: Vec<E>,
    products: Vec<E>,
    lines: Vec<E>,
}

/// Transformed patch values (`16 · CI` per tile) per block of tiles: enough tiles to reuse
/// each packed kernel panel many times, few enough to stay in the last-level cache.
const BLOCK_VALUES: usize = 1 << 19;

/// `y = bias + x ⋆ g` for the samples `x` (`[CI, H, W]` each, one after another) into `y`
/// (`[CO, OH, OW]` each), with `kernels` transformed from `g`.
///
/// A batch is split in halves, one per core. A single sample shares each block of tiles
/// between the cores instead (see `convolve_shared`).
pub fn convolve<E: Float>(
    tiling: Tiling,
    kernels: &TransformedKernels<E>,
    bias: &[E],
    x: &[E],
    y: &mut [E],
    scratch: &mut Scratch<E>,
) {
    let out_len = tiling.output_len(bias.len());
    let batch = y.len() / out_len;
    assert_eq!(
        tiling.geometry.channels, kernels.in_channels,
        "input channels"
    );
    assert_eq!(
        kernels.outputs()[1].end,
        bias.len(),
        "one bias per output channel"
    );
    assert_eq!(x.len(), batch * tiling.input_len(), "whole samples");
    let [first, second] = &mut scratch.cores;
    if batch >= 2 {
        let half = batch / 2;
        let (x_front, x_back) = x.split_at(half * tiling.input_len());
        let (y_front, y_back) = y.split_at_mut(half * out_len);
        join(
            || convolve_samples(tiling, kernels, bias, x_front, y_front, first),
            || convolve_samples(tiling, kernels, bias, x_back, y_back, second),
        );
    } else if batch == 1 {
        convolve_shared(tiling, kernels, bias, x, y, first, second);
    }
}

/// Tile rows per block: about `BLOCK_VALUES` transformed patch values.
fn block_rows(tiling: Tiling) -> usize {
    let per_row = POSITIONS * tiling.geometry.channels * tiling.tile_cols;
    (BLOCK_VALUES / per_row.max(1)).max(1)
}

/// Tiles per block of a sample.
fn block_tiles(tiling: Tiling) -> usize {
    block_rows(tiling).min(tiling.tile_rows) * tiling.tile_cols
}

/// The tile rows `rows` in blocks of `block_rows`.
fn blocks(tiling: Tiling, rows: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    let per_block = block_rows(tiling);
    let end = rows.end;
    rows.step_by(per_block)
        .map(move |start| start..(start + per_block).min(end))
}

/// `V` of every input channel of the tile rows `rows`, into `patches`.
fn all_patches<'a, E: Float>(
    tiling: Tiling,
    x: &[E],
    rows: Range<usize>,
    patches: &'a mut Vec<E>,
    lines: &mut Vec<E>,
) -> &'a [E] {
    let channels = tiling.geometry.channels;
    let tiles = rows.len() * tiling.tile_cols;
    let patches = reserve(patches, POSITIONS * channels * tiles);
    let (mut v, _) = split_positions(patches, channels * tiles);
    transform_patches(tiling, x, rows, 0..channels, &mut v, lines);
    patches
}

/// One core's samples, block by block.
fn convolve_samples<E: Float>(
    tiling: Tiling,
    kernels: &TransformedKernels<E>,
    bias: &[E],
    x: &[E],
    y: &mut [E],
    core: &mut CoreScratch<E>,
) {
    let out_len = tiling.output_len(bias.len());
    let plane = tiling.output_len(1);
    for rows in blocks(tiling, 0..y.len() / out_len * tiling.tile_rows) {
        let tiles = rows.len() * tiling.tile_cols;
        let patches = all_patches(tiling, x, rows.clone(), &mut core.patches, &mut core.lines);
        for (half, outputs) in kernels.halves.iter().zip(kernels.outputs()) {
            let products = multiply(patches, tiles, half, &mut core.products);
            let bias = &bias[outputs.clone()];
            for (k, row) in rows.clone().enumerate() {
                let (sample, tile_row) = (row / tiling.tile_rows, row % tiling.tile_rows);
                let out = &mut y[sample * out_len..][outputs.start * plane..outputs.end * plane];
                let first = k * tiling.tile_cols;
                let source = Products::new(products, tiles, first, 0..outputs.len());
                transform_outputs(tiling, &source, tile_row, bias, out, &mut core.lines);
            }
        }
    }
}

/// One sample's blocks of tiles, each shared between the cores: half of the input channels'
/// patches each, then half of the tiles' products each (kernels kept whole) or half of the
/// output channels' products each (kernels in halves), then half of the output channels each.
fn convolve_shared<E: Float>(
    tiling: Tiling,
    kernels: &TransformedKernels<E>,
    bias: &[E],
    x: &[E],
    y: &mut [E],
    first: &mut CoreScratch<E>,
    second: &mut CoreScratch<E>,
) {
    let channels = tiling.geometry.channels;
    let out_channels = bias.len();
    let whole = kernels.outputs()[1].is_empty();
    let split = if whole {
        out_channels / 2
    } else {
        kernels.outputs()[0].end
    };
    let (y_front, y_back) = y.split_at_mut(split * tiling.output_len(1));
    let (bias_front, bias_back) = bias.split_at(split);
    let in_split = channels / 2;
    for rows in blocks(tiling, 0..tiling.tile_rows) {
        let tiles = rows.len() * tiling.tile_cols;
        let patches = reserve(&mut first.patches, POSITIONS * channels * tiles);
        let (mut v_front, mut v_back) = split_positions(patches, in_split * tiles);
        let (front_lines, back_lines) = (&mut first.lines, &mut second.lines);
        join(
            || {
                let front = 0..in_split;
                transform_patches(tiling, x, rows.clone(), front, &mut v_front, front_lines)
            },
            || {
                let back = in_split..channels;
                transform_patches(tiling, x, rows.clone(), back, &mut v_back, back_lines)
            },
        );
        let patches = &*patches;
        // The back-transform of the products' columns `columns` (their output channels).
        let finish = |products: &[E],
                      columns: Range<usize>,
                      bias: &[E],
                      out: &mut [E],
                      lines: &mut Vec<E>| {
            for (k, tile_row) in rows.clone().enumerate() {
                let first = k * tiling.tile_cols;
                let source = Products::new(products, tiles, first, columns.clone());
                transform_outputs(tiling, &source, tile_row, bias, out, lines);
            }
        };
        if whole {
            let products = reserve(&mut first.products, POSITIONS * tiles * out_channels);
            let half = tiles / 2;
            let (mut m_front, mut m_back) = split_positions(products, half * out_channels);
            let kernels = &kernels.halves[0];
            join(
                || multiply_rows(patches, tiles, 0..half, kernels, &mut m_front),
                || multiply_rows(patches, tiles, half..tiles, kernels, &mut m_back),
            );
            let products = &*products;
            let (front_lines, back_lines) = (&mut first.lines, &mut second.lines);
            join(
                || finish(products, 0..split, bias_front, &mut *y_front, front_lines),
                || {
                    finish(
                        products,
                        split..out_channels,
                        bias_back,
                        &mut *y_back,
                        back_lines,
                    )
                },
            );
        } else {
            let [front, back] = &kernels.halves;
            let (front_products, back_products) = (&mut first.products, &mut second.products);
            let (front_lines, back_lines) = (&mut first.lines, &mut second.lines);
            join(
                || {
                    let products = multiply(patches, tiles, front, front_products);
                    finish(products, 0..split, bias_front, &mut *y_front, front_lines)
                },
                || {
                    let products = multiply(patches, tiles, back, back_products);
                    let columns = 0..out_channels - split;
                    finish(products, columns, bias_back, &mut *y_back, back_lines)
                },
            );
        }
    }
}

/// A block's `V` (`[16][CI][tiles]`) or `M` (`[16][tiles][CO]`) as its 16 positions, each
/// cut `at` values in (after some input channels, or some tiles).
fn split_positions<E>(data: &mut [E], at: usize) -> ([&mut [E]; POSITIONS], [&mut [E]; POSITIONS]) {
    let mut front: [&mut [E]; POSITIONS] = Default::default();
    let mut back: [&mut [E]; POSITIONS] = Default::default();
    let per_position = data.len() / POSITIONS;
    for (xi, position) in data.chunks_exact_mut(per_position.max(1)).enumerate() {
        (front[xi], back[xi]) = position.split_at_mut(at);
    }
    (front, back)
}

/// `M_ξ = V_ξ · U_ξ` for the 16 positions, into `products` (`[16][tiles][co]`).
fn multiply<'a, E: Float>(
    patches: &[E],
    tiles: usize,
    kernels: &[PackedRhs<E>],
    products: &'a mut Vec<E>,
) -> &'a [E] {
    let out_channels = kernels[0].shape().1;
    let products = reserve(products, POSITIONS * tiles * out_channels);
    let (mut all, _) = split_positions(products, tiles * out_channels);
    multiply_rows(patches, tiles, 0..tiles, kernels, &mut all);
    products
}

/// `M_ξ[rows] = V_ξ[rows] · U_ξ` for the 16 positions: the tiles `rows` of a block of
/// `tiles`, into `products` (position `ξ`: `[rows][CO]`).
fn multiply_rows<E: Float>(
    patches: &[E],
    tiles: usize,
    rows: Range<usize>,
    kernels: &[PackedRhs<E>],
    products: &mut [&mut [E]; POSITIONS],
) {
    let (in_channels, out_channels) = kernels[0].shape();
    if rows.is_empty() || out_channels == 0 {
        return;
    }
    if in_channels == 0 {
        // No input channels: all products are 0.
        return products.iter_mut().for_each(|m| zero(m));
    }
    let per_position = in_channels * tiles;
    for ((v, m), u) in patches
        .chunks_exact(per_position)
        .zip(products)
        .zip(kernels)
    {
        // V_ξ is stored [CI][tiles]; the product reads rows `rows` of it as [tiles, CI].
        let v = MatRef::transposed(&v[rows.start..], in_channels, tiles);
        let v = MatRef {
            rows: rows.len(),
            ..v
        };
        matmul_prepacked(v, u, MatMut::row_major(m, rows.len(), out_channels), false);
    }
}

/// `Bᵀ d B` for every patch of the tile rows `rows` (counted over the samples of `x`) and the
/// input channels `channels`, into `v` (position `ξ`: `[channels][tiles]`).
///
/// Per sample and channel, every input row the tiles read is first transformed along its
/// width once (`d B`, all tiles of the row at once), into even and odd rows apart. Tile row
/// `i` reads rows `2i .. 2i + 4` (counting the padding), that is even and odd rows `i` and
/// `i + 1`, so the combination down the rows (`Bᵀ ·`) is four long loops over all the tile
/// rows at once: images of 8 x 8 have rows of only 4 tiles.
fn transform_patches<E: Float>(
    tiling: Tiling,
    x: &[E],
    rows: Range<usize>,
    channels: Range<usize>,
    v: &mut [&mut [E]; POSITIONS],
    lines: &mut Vec<E>,
) {
    let g = tiling.geometry;
    let cols = tiling.tile_cols;
    let tiles = rows.len() * cols;
    let plane = g.height * g.width;
    for (sample, first, run) in sample_runs(tiling, rows.clone()) {
        let count = run.len();
        let at = (run.start - rows.start) * cols;
        // lines[(4 · parity + s) · line + m · cols + j]: input row 2 (first + m) + parity − P,
        // transformed along the width.
        let line = (count + 1) * cols;
        let buffer = reserve(lines, 8 * line + 2 * cols + 2);
        let (lines, padded) = buffer.split_at_mut(8 * line);
        for (local, c) in channels.clone().enumerate() {
            let image = &x[sample * tiling.input_len() + c * plane..][..plane];
            for q in 0..2 * (count + 1) {
                let (parity, m) = (q % 2, q / 2);
                let out = four_mut(
                    lines,
                    [parity * 4, parity * 4 + 1, parity * 4 + 2, parity * 4 + 3],
                    line,
                    m * cols,
                    cols,
                );
                match (2 * first + q)
                    .checked_sub(g.padding)
                    .filter(|&y| y < g.height)
                {
                    Some(y) => {
                        transform_line(&image[y * g.width..][..g.width], g.padding, padded, out)
                    }
                    None => {
                        for w in [out.0, out.1, out.2, out.3] {
                            zero(w);
                        }
                    }
                }
            }
            let n = count * cols;
            for s in 0..4 {
                let even = &lines[s * line..][..line];
                let odd = &lines[(4 + s) * line..][..line];
                let (d0, d1, d2, d3) =
                    (&even[..n], &odd[..n], &even[cols..][..n], &odd[cols..][..n]);
                let out = local * tiles + at;
                let (v0, v1, v2, v3) = four_mut_runs(v, [s, 4 + s, 8 + s, 12 + s], out, n);
                for j in 0..n {
                    [v0[j], v1[j], v2[j], v3[j]] = b_transposed([d0[j], d1[j], d2[j], d3[j]]);
                }
            }
        }
    }
}

/// The tile rows `rows` (counted over a batch) cut at the samples' boundaries: for each
/// piece, its sample, its first tile row within the sample, and its rows.
fn sample_runs(
    tiling: Tiling,
    rows: Range<usize>,
) -> impl Iterator<Item = (usize, usize, Range<usize>)> {
    let mut start = rows.start;
    std::iter::from_fn(move || {
        if start >= rows.end {
            return None;
        }
        let (sample, first) = (start / tiling.tile_rows, start % tiling.tile_rows);
        let run = start..rows.end.min((sample + 1) * tiling.tile_rows);
        start = run.end;
        Some((sample, first, run))
    })
}

/// `d B` along one input row: `w_s[j]` for the 4 values `x[2j − P .. 2j − P + 4]` (0 outside
/// the row) of tile column `j`. `padded` holds the row with its zeros around it
/// (`2 · cols + 2` values), so that the loop over tiles reads pairs of values without
/// checks and vectorises.
fn transform_line<E: Float>(
    line: &[E],
    padding: usize,
    padded: &mut [E],
    (w0, w1, w2, w3): (&mut [E], &mut [E], &mut [E], &mut [E]),
) {
    let inside = line.len().min(padded.len().saturating_sub(padding));
    let (front, rest) = padded.split_at_mut(padding.min(padded.len()));
    let (row, back) = rest.split_at_mut(inside);
    zero(front);
    copy(row, &line[..inside]);
    zero(back);
    let pairs = padded.chunks_exact(2).zip(padded[2..].chunks_exact(2));
    for ((((w0, w1), w2), w3), (front, back)) in w0.iter_mut().zip(w1).zip(w2).zip(w3).zip(pairs) {
        [*w0, *w1, *w2, *w3] = b_transposed([front[0], front[1], back[0], back[1]]);
    }
}

/// `Bᵀ` applied to 4 values: `[x0 − x2, x1 + x2, x2 − x1, x1 − x3]`.
#[inline(always)]
fn b_transposed<E: Float>([x0, x1, x2, x3]: [E; 4]) -> [E; 4] {
    [x0 - x2, x1 + x2, x2 - x1, x1 - x3]
}

/// The `len`-long runs at `at` of the four rows `which` (increasing) of `data`, whose rows are
/// `stride` long.
fn four_mut<E>(
    data: &mut [E],
    which: [usize; 4],
    stride: usize,
    at: usize,
    len: usize,
) -> (&mut [E], &mut [E], &mut [E], &mut [E]) {
    let (_, rest) = data.split_at_mut(which[0] * stride + at);
    let (a, rest) = rest.split_at_mut((which[1] - which[0]) * stride);
    let (b, rest) = rest.split_at_mut((which[2] - which[1]) * stride);
    let (c, d) = rest.split_at_mut((which[3] - which[2]) * stride);
    (&mut a[..len], &mut b[..len], &mut c[..len], &mut d[..len])
}

/// The `len`-long runs at `at` of the four positions `xi` (increasing) of `v`.
fn four_mut_runs<'a, E>(
    v: &'a mut [&mut [E]; POSITIONS],
    xi: [usize; 4],
    at: usize,
    len: usize,
) -> (&'a mut [E], &'a mut [E], &'a mut [E], &'a mut [E]) {
    let (_, rest) = v.split_at_mut(xi[0]);
    let (a, rest) = rest.split_at_mut(xi[1] - xi[0]);
    let (b, rest) = rest.split_at_mut(xi[2] - xi[1]);
    let (c, d) = rest.split_at_mut(xi[3] - xi[2]);
    let run = |p: &'a mut [&mut [E]]| -> &'a mut [E] {
        let first: &'a mut &mut [E] = &mut p[0];
        &mut first[at..][..len]
    };
    (run(a), run(b), run(c), run(d))
}

/// The products `M` of a block (`[16][tiles][co]`): columns `columns` of the tiles from
/// `first` on.
struct Products<'a, E> {
    values: &'a [E],
    tiles: usize,
    first: usize,
    columns: Range<usize>,
}

impl<'a, E> Products<'a, E> {
    fn new(values: &'a [E], tiles: usize, first: usize, columns: Range<usize>) -> Self {
        Self {
            values,
            tiles,
            first,
            columns,
        }
    }

    /// Position `xi` of tile `first + j`, columns `columns`.
    fn get(&self, xi: usize, j: usize) -> &'a [E] {
        let width = self.values.len() / (POSITIONS * self.tiles);
        let row = &self.values[(xi * self.tiles + self.first + j) * width..][..width];
        &row[self.columns.clone()]
    }
}

/// `bias + Aᵀ M A` for one row of tiles (`tile_row` of a sample) into `out` (`[co, OH, OW]`,
/// that sample's output channels of these products).
fn transform_outputs<E: Float>(
    tiling: Tiling,
    products: &Products<'_, E>,
    tile_row: usize,
    bias: &[E],
    out: &mut [E],
    lines: &mut Vec<E>,
) {
    let g = tiling.geometry;
    let channels = bias.len();
    let (height, width) = (g.out_height, g.out_width);
    let plane = height * width;
    if channels == 0 {
        return;
    }
    // `lines`: eight rows of `channels` values, (Aᵀ M)'s top and bottom rows for each of the
    // 4 columns, then overwritten by the 4 outputs; each loop reads and writes a few
    // contiguous runs, which the compiler turns into vector code. `band`: the tile row's two
    // output rows of every channel, `band[o][a][column]`, gathered here (in L2) and then
    // copied out whole: written straight into `out`, each tile's values went to a different
    // page per channel, and the stores stalled on the misses.
    let band_len = channels * 2 * width;
    let lines = reserve(lines, 8 * channels + band_len);
    let (lines, band) = lines.split_at_mut(8 * channels);
    for j in 0..tiling.tile_cols {
        let m = |xi: usize| &products.get(xi, j)[..channels];
        let (top, bottom) = lines.split_at_mut(4 * channels);
        let columns = top
            .chunks_exact_mut(channels)
            .zip(bottom.chunks_exact_mut(channels));
        for (s, (top, bottom)) in columns.enumerate() {
            // Aᵀ M: m0 + m1 + m2 and m1 − m2 − m3 down column s.
            let (m0, m1, m2, m3) = (m(s), m(4 + s), m(8 + s), m(12 + s));
            for o in 0..channels {
                top[o] = m0[o] + m1[o] + m2[o];
                bottom[o] = m1[o] - m2[o] - m3[o];
            }
        }
        // · A along each row, into lines 0, 1 (top row of the tile) and 4, 5 (bottom row).
        for half in [0, 4] {
            let (row, _) = lines[half * channels..].split_at_mut(4 * channels);
            let (p0, rest) = row.split_at_mut(channels);
            let (p1, rest) = rest.split_at_mut(channels);
            let (p2, p3) = rest.split_at_mut(channels);
            for o in 0..channels {
                let (a, b, c, d) = (p0[o], p1[o], p2[o], p3[o]);
                p0[o] = bias[o] + a + b + c;
                p1[o] = bias[o] + b - c - d;
            }
        }
        let column = 2 * j;
        let pairs = [(0, 0), (0, 1), (1, 0), (1, 1)];
        for ((a, b), line) in pairs.into_iter().zip([0, 1, 4, 5]) {
            if column + b < width {
                let values = &lines[line * channels..][..channels];
                for (o, value) in values.iter().enumerate() {
                    band[(2 * o + a) * width + column + b] = *value;
                }
            }
        }
    }
    let first_row = 2 * tile_row;
    let rows = 2.min(height - first_row);
    for (o, rows_of_o) in band.chunks_exact(2 * width).enumerate() {
        let at = o * plane + first_row * width;
        copy(&mut out[at..at + rows * width], &rows_of_o[..rows * width]);
    }
}

/// The buffers of [`weight_gradient`], one set per core: a block's transformed patches `V`
/// and transformed output gradients `Z` (`[16][CO][tiles]`), and the sums `S_ξ = Σ Z_ξ V_ξᵀ`
/// (`[16][CO][CI]`) over that core's tiles.
#[derive(Clone, Debug, Default)]
pub struct GradientScratch<E> {
    cores: [GradientCore<E>; 2],
}

#[derive(Clone, Debug, Default)]
struct GradientCore<E> {
    patches: Vec<E>,
    gradients: Vec<E>,
    sums: Vec<E>,
    lines: Vec<E>,
}

/// `dweight += ∂L/∂g` for the samples `x` with output gradients `dy`, by the transpose of
/// F(2x2, 3x3) (Winograd's F(3x3, 2x2)): `∂L/∂g_oc = Gᵀ [Σ_tiles (A dY_o Aᵀ) ⊙ (Bᵀ d_c B)] G`,
/// where
///
/// ```text
///     [1  0]
/// A = [1  1]        (the forward pass is y = Aᵀ [Σ_c U_oc ⊙ V_c] A with U = G g Gᵀ)
///     [1 -1]
///     [0 -1]
/// ```
///
/// The sum over tiles at each position is a matrix product `Z_ξ · V_ξᵀ` of depth `tiles`. The
/// tile rows of the batch are split in halves, one per core, each summing its own `S`.
pub fn weight_gradient<E: Float>(
    tiling: Tiling,
    x: &[E],
    dy: &[E],
    dweight: &mut [E],
    scratch: &mut GradientScratch<E>,
) {
    let in_channels = tiling.geometry.channels;
    let out_channels = dweight.len() / (9 * in_channels.max(1));
    let out_len = tiling.output_len(out_channels);
    let batch = dy.len() / out_len.max(1);
    assert_eq!(
        dweight.len(),
        out_channels * in_channels * 9,
        "3 x 3 kernels"
    );
    assert_eq!(x.len(), batch * tiling.input_len(), "whole samples");
    let rows = batch * tiling.tile_rows;
    let sums_len = POSITIONS * out_channels * in_channels;
    let [first, second] = &mut scratch.cores;
    for core in [&mut *first, &mut *second] {
        reserve(&mut core.sums, sums_len).fill(E::ZERO);
    }
    join(
        || sum_products(tiling, x, dy, out_channels, 0..rows / 2, first),
        || sum_products(tiling, x, dy, out_channels, rows / 2..rows, second),
    );
    let sums = &mut first.sums[..sums_len];
    for (total, part) in sums.iter_mut().zip(&second.sums[..sums_len]) {
        *total += *part;
    }
    // Gᵀ S G for every (o, c): the 4 x 4 sum back to a 3 x 3 kernel gradient.
    let half = E::from_f64(0.5);
    let per_position = out_channels * in_channels;
    for (oc, kernel) in dweight.chunks_exact_mut(9).enumerate() {
        let s = |xi: usize| sums[xi * per_position + oc];
        // Gᵀ S: rows S0 + (S1 + S2) / 2, (S1 − S2) / 2, (S1 + S2) / 2 + S3 of each column.
        let columns: [[E; 3]; 4] = std::array::from_fn(|column| {
            fold(
                [s(column), s(4 + column), s(8 + column), s(12 + column)],
                half,
            )
        });
        let rows: [[E; 4]; 3] = std::array::from_fn(|u| columns.map(|column| column[u]));
        for (u, row) in rows.iter().enumerate() {
            for (v, value) in fold(*row, half).into_iter().enumerate() {
                kernel[3 * u + v] += value;
            }
        }
    }
}

/// `Gᵀ` applied to 4 values: `[s0 + (s1 + s2) / 2, (s1 − s2) / 2, (s1 + s2) / 2 + s3]`.
fn fold<E: Float>([s0, s1, s2, s3]: [E; 4], half: E) -> [E; 3] {
    let (plus, minus) = ((s1 + s2) * half, (s1 - s2) * half);
    [s0 + plus, minus, plus + s3]
}

/// `S_ξ += Z_ξ · V_ξᵀ` over the tile rows `rows`, block by block.
fn sum_products<E: Float>(
    tiling: Tiling,
    x: &[E],
    dy: &[E],
    out_channels: usize,
    rows: Range<usize>,
    core: &mut GradientCore<E>,
) {
    let in_channels = tiling.geometry.channels;
    for block in blocks(tiling, rows) {
        let tiles = block.len() * tiling.tile_cols;
        let patches = all_patches(tiling, x, block.clone(), &mut core.patches, &mut core.lines);
        let gradients = reserve(&mut core.gradients, POSITIONS * out_channels * tiles);
        transform_gradients(tiling, dy, out_channels, block, gradients, &mut core.lines);
        let sums = &mut core.sums[..POSITIONS * out_channels * in_channels];
        let per_sum = out_channels * in_channels;
        for ((z, v), sum) in gradients
            .chunks_exact(out_channels * tiles)
            .zip(patches.chunks_exact(in_channels * tiles))
            .zip(sums.chunks_exact_mut(per_sum.max(1)))
        {
            let z = MatRef::row_major(z, out_channels, tiles);
            // V_ξ is stored [CI][tiles]; the product reads it as [tiles, CI].
            let v_t = MatRef::transposed(v, in_channels, tiles);
            let sum = MatMut::row_major(sum, out_channels, in_channels);
            matmul(z, v_t, sum, true);
        }
    }
}

/// `Z = A dY Aᵀ` for every 2 x 2 tile of the output gradients in the tile rows `rows`, into
/// `z` (position `ξ`: `[CO][tiles]`). Outputs past an odd edge count as 0.
///
/// With the tile's gradients `e f` over `g h`, `A dY` has rows `[e, f]`, `[e + g, f + h]`,
/// `[e − g, f − h]` and `[−g, −h]`, and `· Aᵀ` maps each row `[p, q]` to
/// `[p, p + q, p − q, −q]`.
fn transform_gradients<E: Float>(
    tiling: Tiling,
    dy: &[E],
    out_channels: usize,
    rows: Range<usize>,
    z: &mut [E],
    lines: &mut Vec<E>,
) {
    let g = tiling.geometry;
    let (height, width) = (g.out_height, g.out_width);
    let cols = tiling.tile_cols;
    let tiles = rows.len() * cols;
    let plane = height * width;
    for (sample, first, tile_rows) in sample_runs(tiling, rows.clone()) {
        // The tile rows of one sample: first `A dY` (the 8 rows `p` and `q` of its 4 rows,
        // each over all of them), then `· Aᵀ` in four long loops.
        let run = tile_rows.len() * cols;
        let buffer = reserve(lines, 8 * run + 4 * cols);
        let (halves, padded) = buffer.split_at_mut(8 * run);
        for o in 0..out_channels {
            let gradient = &dy[(sample * out_channels + o) * plane..][..plane];
            let [p0, q0, p1, q1, p2, q2, p3, q3] = eight_mut(halves, run);
            for k in 0..tile_rows.len() {
                // The tile row's two output rows, padded with zeros to 2 · cols values
                // where the output's width or height is odd.
                let y = 2 * (first + k);
                let (top, bottom) = if width == 2 * cols && y + 1 < height {
                    (
                        &gradient[y * width..][..width],
                        &gradient[(y + 1) * width..][..width],
                    )
                } else {
                    zero(padded);
                    let (top, bottom) = padded.split_at_mut(2 * cols);
                    for (line, y) in [top, bottom].into_iter().zip([y, y + 1]) {
                        if y < height {
                            copy(&mut line[..width], &gradient[y * width..][..width]);
                        }
                    }
                    let (top, bottom) = padded.split_at(2 * cols);
                    (top, bottom)
                };
                let pairs = top.chunks_exact(2).zip(bottom.chunks_exact(2));
                for (j, (upper, lower)) in (k * cols..).zip(pairs) {
                    let (e, f, g, h) = (upper[0], upper[1], lower[0], lower[1]);
                    (p0[j], q0[j]) = (e, f);
                    (p1[j], q1[j]) = (e + g, f + h);
                    (p2[j], q2[j]) = (e - g, f - h);
                    (p3[j], q3[j]) = (-g, -h);
                }
            }
            let at = o * tiles + (tile_rows.start - rows.start) * cols;
            let mut out: [&mut [E]; POSITIONS] = Default::default();
            for (xi, position) in z.chunks_exact_mut(out_channels * tiles).enumerate() {
                out[xi] = &mut position[at..at + run];
            }
            let [r0, r1, r2, r3] = out_rows(&mut out);
            for (r, out) in [r0, r1, r2, r3].into_iter().enumerate() {
                let (p, q) = (
                    &halves[2 * r * run..][..run],
                    &halves[(2 * r + 1) * run..][..run],
                );
                let [z0, z1, z2, z3] = out;
                for j in 0..run {
                    z0[j] = p[j];
                    z1[j] = p[j] + q[j];
                    z2[j] = p[j] - q[j];
                    z3[j] = -q[j];
                }
            }
        }
    }
}

/// The eight `len`-long rows at the front of `data`.
fn eight_mut<E>(data: &mut [E], len: usize) -> [&mut [E]; 8] {
    let mut rows: [&mut [E]; 8] = Default::default();
    for (row, chunk) in rows.iter_mut().zip(data.chunks_exact_mut(len)) {
        *row = chunk;
    }
    rows
}

/// The 16 positions' runs as 4 rows of 4 (`ξ = 4 r + s`).
fn out_rows<'a, E>(out: &'a mut [&mut [E]; POSITIONS]) -> [[&'a mut [E]; 4]; 4] {
    let mut rows = out.iter_mut();
    std::array::from_fn(|_| std::array::from_fn(|_| &mut **rows.next().expect("16 positions")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{rng, uniform, Rng};

    /// The convolution summed directly from its definition.
    fn direct(g: ConvGeometry, co: usize, weight: &[f64], bias: &[f64], x: &[f64]) -> Vec<f64> {
        let (oh, ow) = (g.out_height, g.out_width);
        let mut y = vec![0.0; co * oh * ow];
        for o in 0..co {
            for i in 0..oh {
                for j in 0..ow {
                    let mut sum = bias[o];
                    for c in 0..g.channels {
                        for u in 0..3 {
                            for v in 0..3 {
                                let (yy, xx) = (
                                    (i + u) as isize - g.padding as isize,
                                    (j + v) as isize - g.padding as isize,
                                );
                                if yy >= 0
                                    && xx >= 0
                                    && (yy as usize) < g.height
                                    && (xx as usize) < g.width
                                {
                                    sum += weight[((o * g.channels + c) * 3 + u) * 3 + v]
                                        * x[(c * g.height + yy as usize) * g.width + xx as usize];
                                }
                            }
                        }
                    }
                    y[o * oh * ow + i * ow + j] = sum;
                }
            }
        }
        y
    }

    /// (input channels, height, width, padding, output channels, samples): odd and even
    /// sizes, padding 0 to 2, one channel, and a half of the output channels that is not a
    /// whole number of 16-column panels.
    const CASES: [(usize, usize, usize, usize, usize, usize); 5] = [
        (3, 5, 7, 1, 4, 2),
        (2, 6, 6, 0, 3, 3),
        (5, 4, 9, 2, 17, 1),
        (1, 3, 3, 0, 1, 2),
        (20, 8, 5, 1, 33, 3),
    ];

    fn tiling(ci: usize, h: usize, w: usize, p: usize) -> (ConvGeometry, Tiling) {
        let g = ConvGeometry::new(ci, h, w, 3, 1, p);
        (g, Tiling::new(g).expect("3 x 3, stride 1"))
    }

    fn values(rng: &mut Rng, len: usize) -> Vec<f64> {
        let mut values = vec![0.0; len];
        uniform(rng, &mut values, 1.0);
        values
    }

    #[test]
    fn matches_the_direct_sum_for_odd_and_even_sizes_and_any_padding() {
        let mut rng = rng(7);
        for (ci, h, w, p, co, batch) in CASES {
            let (g, tiling) = tiling(ci, h, w, p);
            let weight = values(&mut rng, co * ci * 9);
            let bias = values(&mut rng, co);
            let x = values(&mut rng, batch * ci * h * w);
            let mut kernels = TransformedKernels::new(tiling, co);
            kernels.transform(&weight);
            let out_len = co * g.out_height * g.out_width;
            let mut scratch = Scratch::default();
            // The whole batch (split between the cores), then each sample alone (shared).
            let mut y = vec![f64::NAN; batch * out_len];
            convolve(tiling, &kernels, &bias, &x, &mut y, &mut scratch);
            let mut alone = vec![f64::NAN; batch * out_len];
            for (xs, ys) in x
                .chunks_exact(ci * h * w)
                .zip(alone.chunks_exact_mut(out_len))
            {
                convolve(tiling, &kernels, &bias, xs, ys, &mut scratch);
            }
            assert_eq!(y, alone, "{ci}x{h}x{w}: a batch and its samples alone");
            for s in 0..batch {
                let expected = direct(g, co, &weight, &bias, &x[s * ci * h * w..][..ci * h * w]);
                for (i, (a, b)) in y[s * out_len..][..out_len]
                    .iter()
                    .zip(&expected)
                    .enumerate()
                {
                    assert!(
                        (a - b).abs() < 1e-12,
                        "{ci}x{h}x{w} p{p}: [{s}, {i}] {a} vs {b}"
                    );
                }
            }
        }
    }

    /// The weight gradient summed directly: `dW[o][c][u][v] = Σ_s,i,j dy[s][o][i][j] ·
    /// x[s][c][i + u − P][j + v − P]`.
    fn direct_weight_gradient(g: ConvGeometry, co: usize, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let (ci, h, w, p) = (g.channels, g.height, g.width, g.padding);
        let (oh, ow) = (g.out_height, g.out_width);
        let batch = dy.len() / (co * oh * ow);
        let mut dw = vec![0.0; co * ci * 9];
        for s in 0..batch {
            for o in 0..co {
                for c in 0..ci {
                    for u in 0..3 {
                        for v in 0..3 {
                            let mut sum = 0.0;
                            for i in 0..oh {
                                for j in 0..ow {
                                    let (yy, xx) =
                                        ((i + u).wrapping_sub(p), (j + v).wrapping_sub(p));
                                    if yy < h && xx < w {
                                        sum += dy[((s * co + o) * oh + i) * ow + j]
                                            * x[((s * ci + c) * h + yy) * w + xx];
                                    }
                                }
                            }
                            dw[((o * ci + c) * 3 + u) * 3 + v] += sum;
                        }
                    }
                }
            }
        }
        dw
    }

    #[test]
    fn weight_gradient_matches_the_direct_sum() {
        let mut rng = rng(9);
        for (ci, h, w, p, co, batch) in CASES {
            let (g, tiling) = tiling(ci, h, w, p);
            let x = values(&mut rng, batch * ci * h * w);
            let dy = values(&mut rng, batch * co * g.out_height * g.out_width);
            // Added to what is there.
            let mut dweight = vec![1.0; co * ci * 9];
            let mut scratch = GradientScratch::default();
            weight_gradient(tiling, &x, &dy, &mut dweight, &mut scratch);
            let expected = direct_weight_gradient(g, co, &x, &dy);
            for (i, (a, b)) in dweight.iter().zip(&expected).enumerate() {
                assert!(
                    (a - 1.0 - b).abs() < 1e-12,
                    "{ci}x{h}x{w} p{p}: [{i}] {a} vs 1 + {b}"
                );
            }
        }
    }

    #[test]
    fn only_tiles_three_by_three_stride_one() {
        assert!(Tiling::new(ConvGeometry::new(1, 8, 8, 3, 2, 1)).is_none());
        assert!(Tiling::new(ConvGeometry::new(1, 8, 8, 5, 1, 2)).is_none());
    }
}
