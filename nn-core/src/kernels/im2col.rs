//! im2col and col2im for one sample: a convolution as a matrix product.
//!
//! For a sample `x` `[C, H, W]`, a square kernel `K`, stride `S` and zero padding `P`, the
//! column matrix `col` `[C·K·K, OH·OW]` (row-major) holds, in row `(c·K + u)·K + v` and column
//! `i·OW + j`, the input value the kernel tap `(c, u, v)` meets at output position `(i, j)`:
//!
//! ```text
//! col[(c·K + u)·K + v, i·OW + j] = x[c, S·i + u − P, S·j + v − P]    (0 outside the input)
//! ```
//!
//! so a convolution is `Y[CO, OH·OW] = W[CO, C·K·K] · col`. `col2im` is its adjoint: it adds
//! every entry of a column matrix back to the input position it was read from, which turns
//! `dcol = Wᵀ · dY` into `dx`.
//!
//! Both walk the output rows and, for each kernel tap, compute once which output columns read
//! inside the input: the padding is filled with zeros in blocks, the rest is copied (a
//! contiguous run when `S == 1`, a strided one otherwise) without per-element bounds tests.
//! Large matrices are split over both cores.

use std::ops::Range;

use crate::kernels::gemm::{PanelSource, PANEL_SOURCE_COLUMNS};
use crate::kernels::parallel::join;
use crate::kernels::vector::{copy, zero};
use crate::Float;

/// Below this many column-matrix entries one core fills the matrix faster than two can be
/// started.
const PARALLEL_LEN: usize = 1 << 16;

/// The geometry of a 2-d convolution (or pooling window) over one sample.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels `C`.
    pub channels: usize,
    /// Input height `H`.
    pub height: usize,
    /// Input width `W`.
    pub width: usize,
    /// Kernel side `K` (square kernels only).
    pub kernel: usize,
    /// Stride `S`, the same along both axes.
    pub stride: usize,
    /// Zero padding `P` on every side.
    pub padding: usize,
    /// Output height `OH = (H + 2P − K) / S + 1`.
    pub out_height: usize,
    /// Output width `OW = (W + 2P − K) / S + 1`.
    pub out_width: usize,
}

impl ConvGeometry {
    /// The geometry of a convolution, computing the output size as PyTorch does (floor).
    ///
    /// Panics if the padded input is smaller than the kernel or the kernel or stride is 0.
    pub const fn new(
        channels: usize,
        height: usize,
        width: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        assert!(
            kernel >= 1 && stride >= 1,
            "kernel and stride must be at least 1"
        );
        assert!(
            height + 2 * padding >= kernel && width + 2 * padding >= kernel,
            "the padded input must be at least as large as the kernel"
        );
        Self {
            channels,
            height,
            width,
            kernel,
            stride,
            padding,
            out_height: (height + 2 * padding - kernel) / stride + 1,
            out_width: (width + 2 * padding - kernel) / stride + 1,
        }
    }

    /// Rows of the column matrix: `C·K·K`.
    pub const fn col_rows(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Columns of the column matrix: `OH·OW`.
    pub const fn col_cols(&self) -> usize {
        self.out_height * self.out_width
    }

    /// Entries of the column matrix.
    pub const fn col_len(&self) -> usize {
        self.col_rows() * self.col_cols()
    }

    /// Entries of one input sample: `C·H·W`.
    pub const fn input_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The same geometry restricted to `channels` channels.
    const fn with_channels(self, channels: usize) -> Self {
        Self { channels, ..self }
    }
}

/// The output positions `o` in `0..out_len` whose input position `stride·o + offset − padding`
/// lies in `0..in_len`, as a range `lo..hi` (empty when there are none).
#[inline]
fn valid_range(
    offset: usize,
    padding: usize,
    stride: usize,
    in_len: usize,
    out_len: usize,
) -> (usize, usize) {
    if stride == 1 {
        // The common case, without divisions.
        let lo = padding.saturating_sub(offset).min(out_len);
        let hi = (in_len + padding).saturating_sub(offset).min(out_len);
        return (lo, hi.max(lo));
    }
    let lo = if offset >= padding {
        0
    } else {
        (padding - offset).div_ceil(stride)
    }
    .min(out_len);
    let hi = if in_len + padding > offset {
        ((in_len + padding - offset - 1) / stride + 1).min(out_len)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Fills the column matrix of the sample `x` (`[C, H, W]`): row `r` of the `[C·K·K, OH·OW]`
/// matrix is written to `col[r·row_stride..][..OH·OW]`. `row_stride` is `OH·OW` for a
/// contiguous matrix, larger when the columns of several samples sit side by side (a convolution
/// over small images unfolds several samples into one matrix). Every entry of the matrix is
/// written; the gaps between rows are left alone.
pub fn im2col<E: Float>(g: ConvGeometry, x: &[E], col: &mut [E], row_stride: usize) {
    let (rows, cols) = (g.col_rows(), g.col_cols());
    assert!(row_stride >= cols, "im2col: row stride shorter than a row");
    if rows == 0 || cols == 0 {
        return;
    }
    let x = &x[..g.input_len()];
    let col = &mut col[..(rows - 1) * row_stride + cols];
    if rows * cols >= PARALLEL_LEN && rows >= 2 {
        // Rows only read `x`, so any split of the rows is independent.
        let half = rows / 2;
        let (top, bottom) = col.split_at_mut(half * row_stride);
        join(
            || im2col_rows(g, x, 0..half, top, row_stride),
            || im2col_rows(g, x, half..rows, bottom, row_stride),
        );
    } else {
        im2col_rows(g, x, 0..rows, col, row_stride);
    }
}

/// Fills the rows `rows` of the column matrix; `col` starts at the first of them.
fn im2col_rows<E: Float>(
    g: ConvGeometry,
    x: &[E],
    rows: Range<usize>,
    col: &mut [E],
    row_stride: usize,
) {
    let image = ImageColumns::new(g, x, 1);
    let cols = g.col_cols();
    let start = image.column(0);
    let mut tap = Tap::of_row(rows.start, g.kernel);
    for index in 0..rows.len() {
        image.row_segment(tap, start, &mut col[index * row_stride..][..cols]);
        tap = tap.next(g.kernel);
    }
}

/// A row of the column matrix: kernel tap `(u, v)` of input channel `c`.
#[derive(Clone, Copy, Debug)]
struct Tap {
    c: usize,
    u: usize,
    v: usize,
}

impl Tap {
    fn of_row(row: usize, kernel: usize) -> Self {
        Self {
            c: row / (kernel * kernel),
            u: row / kernel % kernel,
            v: row % kernel,
        }
    }

    /// The tap of the next row.
    fn next(self, kernel: usize) -> Self {
        match (self.u + 1 < kernel, self.v + 1 < kernel) {
            (_, true) => Self {
                v: self.v + 1,
                ..self
            },
            (true, false) => Self {
                u: self.u + 1,
                v: 0,
                ..self
            },
            (false, false) => Self {
                c: self.c + 1,
                u: 0,
                v: 0,
            },
        }
    }
}

/// A column of the column matrix: position `from` of output row `i` of sample `sample`.
#[derive(Clone, Copy, Debug)]
struct Column {
    sample: usize,
    i: usize,
    from: usize,
}

/// The column matrix of `samples` consecutive samples side by side, `[C·K·K, samples·OH·OW]`
/// (sample `s` in columns `s·OH·OW..`), as the right operand of a product that packs it
/// straight from the images (a [`PanelSource`]): the matrix itself is never written out. For
/// VGG16's second convolution it is 115 MB, which `im2col` writes and the product's packing
/// reads back.
#[derive(Clone, Copy, Debug)]
pub struct ImageColumns<'a, E> {
    geometry: ConvGeometry,
    images: &'a [E],
    samples: usize,
}

impl<'a, E: Float> ImageColumns<'a, E> {
    /// The column matrix of the `samples` samples `[C, H, W]` stored one after another at the
    /// start of `images`.
    pub fn new(geometry: ConvGeometry, images: &'a [E], samples: usize) -> Self {
        let len = samples * geometry.input_len();
        assert!(
            images.len() >= len,
            "ImageColumns: {} values for {samples} samples of {}",
            images.len(),
            geometry.input_len()
        );
        Self {
            geometry,
            images: &images[..len],
            samples,
        }
    }

    /// Where column `j` of the matrix reads.
    fn column(&self, j: usize) -> Column {
        let ow = self.geometry.out_width.max(1);
        let line = j / ow;
        Column {
            sample: line / self.geometry.out_height.max(1),
            i: line % self.geometry.out_height.max(1),
            from: j % ow,
        }
    }

    /// Writes the entries of the row of kernel tap `tap` from column `start` on into `out`
    /// (as many as it holds), one output row of one sample at a time: zeros where the tap reads
    /// the padding, a copy of the input row (strided when `S > 1`) where it reads inside. (No
    /// divisions here: an 8 x 8 image's rows are 64 values, and ten divisions per row took
    /// longer than writing it.)
    fn row_segment(&self, tap: Tap, start: Column, mut out: &mut [E]) {
        let g = self.geometry;
        let (w, s, p) = (g.width, g.stride, g.padding);
        let (oh, ow) = (g.out_height, g.out_width);
        let Tap { c, u, v } = tap;
        let (i_lo, i_hi) = valid_range(u, p, s, g.height, oh);
        let (j_lo, j_hi) = valid_range(v, p, s, w, ow);
        // Where the input row that output row `i` of sample `sample` reads starts in `images`.
        let input_row =
            |sample: usize, i: usize| sample * g.input_len() + (c * g.height + s * i + u - p) * w;
        // Positions `from..to` of output row `i` of sample `sample`, into `dst`.
        let line = |sample: usize, i: usize, from: usize, to: usize, dst: &mut [E]| {
            if i < i_lo || i >= i_hi {
                return zero(dst);
            }
            let lo = j_lo.clamp(from, to);
            let hi = j_hi.clamp(lo, to);
            let (left, rest) = dst.split_at_mut(lo - from);
            let (inside, right) = rest.split_at_mut(hi - lo);
            zero(left);
            zero(right);
            if inside.is_empty() {
                return;
            }
            let src = &self.images[input_row(sample, i)..][..w];
            let start = s * lo + v - p;
            if s == 1 {
                // Rows of a small image are short: a `memcpy` call per row cost more than
                // the copy (see `vector::copy`).
                copy(inside, &src[start..start + inside.len()]);
            } else {
                for (d, x) in inside.iter_mut().zip(src[start..].iter().step_by(s)) {
                    *d = *x;
                }
            }
        };
        // `count` whole output rows from row `i` of sample `sample`, all reading inside the
        // input vertically, with stride 1: each is the input row shifted by `v − P`, zeros
        // where that runs past its ends.
        let whole_lines = |sample: usize, i: usize, count: usize, dst: &mut [E]| {
            let width = j_hi - j_lo;
            if width == 0 {
                return zero(dst);
            }
            let first = input_row(sample, i) + j_lo + v - p;
            if ow == w {
                // The rows are consecutive in the input too: one copy for all of them, then
                // zeros over the few values per row that it took from the neighbouring rows.
                let len = (count - 1) * ow + width;
                copy(&mut dst[j_lo..j_lo + len], &self.images[first..first + len]);
                for line in dst.chunks_exact_mut(ow) {
                    zero(&mut line[..j_lo]);
                    zero(&mut line[j_hi..]);
                }
            } else {
                for (k, line) in dst.chunks_exact_mut(ow).enumerate() {
                    zero(&mut line[..j_lo]);
                    copy(
                        &mut line[j_lo..j_hi],
                        &self.images[first + k * w..][..width],
                    );
                    zero(&mut line[j_hi..]);
                }
            }
        };
        let Column {
            mut sample,
            mut i,
            mut from,
        } = start;
        while !out.is_empty() {
            let count = if s == 1 && from == 0 && (i_lo..i_hi).contains(&i) {
                (out.len() / ow).min(i_hi - i)
            } else {
                0
            };
            if count >= 2 {
                let (dst, rest) = std::mem::take(&mut out).split_at_mut(count * ow);
                whole_lines(sample, i, count, dst);
                out = rest;
                i += count;
                if i == oh {
                    (sample, i) = (sample + 1, 0);
                }
                continue;
            }
            let to = ow.min(from + out.len());
            let (dst, rest) = std::mem::take(&mut out).split_at_mut(to - from);
            line(sample, i, from, to, dst);
            out = rest;
            (from, i) = (0, i + 1);
            if i == oh {
                (sample, i) = (sample + 1, 0);
            }
        }
    }
}

impl<E: Float> PanelSource<E> for ImageColumns<'_, E> {
    fn shape(&self) -> (usize, usize) {
        let g = self.geometry;
        (g.col_rows(), self.samples * g.col_cols())
    }

    fn pack<const NR: usize>(&self, pc: usize, kc: usize, jc: usize, nc: usize, out: &mut [E]) {
        // Each row of the block is made whole in L1, then dealt out to the panels.
        let mut row = [E::ZERO; PANEL_SOURCE_COLUMNS];
        let row = &mut row[..nc];
        let full_panels = nc / NR;
        let start = self.column(jc);
        let mut tap = Tap::of_row(pc, self.geometry.kernel);
        for p in 0..kc {
            self.row_segment(tap, start, row);
            tap = tap.next(self.geometry.kernel);
            let (whole, tail) = row.split_at(full_panels * NR);
            for (panel, values) in whole.chunks_exact(NR).enumerate() {
                out[panel * NR * kc + p * NR..][..NR].copy_from_slice(values);
            }
            if !tail.is_empty() {
                let dst = &mut out[full_panels * NR * kc + p * NR..][..NR];
                let (values, padding) = dst.split_at_mut(tail.len());
                copy(values, tail);
                zero(padding);
            }
        }
    }
}

/// Adds every entry of a column matrix (row `r` at `col[r·row_stride..][..OH·OW]`, as `im2col`
/// lays it out) into the position of `dx` (`[C, H, W]`) it was read from:
/// `dx += col2im(col)`. Entries that were read from the padding are dropped. Zero `dx` first
/// for a plain `col2im`.
pub fn col2im<E: Float>(g: ConvGeometry, col: &[E], row_stride: usize, dx: &mut [E]) {
    let (rows, cols) = (g.col_rows(), g.col_cols());
    assert!(row_stride >= cols, "col2im: row stride shorter than a row");
    if rows == 0 || cols == 0 {
        return;
    }
    let col = &col[..(rows - 1) * row_stride + cols];
    let dx = &mut dx[..g.input_len()];
    if rows * cols >= PARALLEL_LEN && g.channels >= 2 {
        // A channel's rows write only that channel's plane: split on a channel boundary.
        let half = g.channels / 2;
        let (col_top, col_bottom) = col.split_at(half * g.kernel * g.kernel * row_stride);
        let (dx_top, dx_bottom) = dx.split_at_mut(half * g.height * g.width);
        join(
            || col2im_channels(g.with_channels(half), col_top, row_stride, dx_top),
            || {
                let rest = g.with_channels(g.channels - half);
                col2im_channels(rest, col_bottom, row_stride, dx_bottom)
            },
        );
    } else {
        col2im_channels(g, col, row_stride, dx);
    }
}

fn col2im_channels<E: Float>(g: ConvGeometry, col: &[E], row_stride: usize, dx: &mut [E]) {
    let (w, k, s, p) = (g.width, g.kernel, g.stride, g.padding);
    let (oh, ow) = (g.out_height, g.out_width);
    let plane = g.height * w;
    for c in 0..g.channels {
        let dx_plane = &mut dx[c * plane..][..plane];
        for tap in 0..k * k {
            let src = &col[(c * k * k + tap) * row_stride..][..oh * ow];
            let (u, v) = (tap / k, tap % k);
            let (i_lo, i_hi) = valid_range(u, p, s, g.height, oh);
            let (j_lo, j_hi) = valid_range(v, p, s, w, ow);
            if j_lo == j_hi {
                continue;
            }
            for i in i_lo..i_hi {
                let inside = &src[i * ow + j_lo..i * ow + j_hi];
                let dst = &mut dx_plane[(s * i + u - p) * w..][..w];
                let start = s * j_lo + v - p;
                if s == 1 {
                    for (d, c) in dst[start..start + inside.len()].iter_mut().zip(inside) {
                        *d += *c;
                    }
                } else {
                    for (d, c) in dst[start..].iter_mut().step_by(s).zip(inside) {
                        *d += *c;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::MatRef;

    /// The definition, one entry at a time.
    fn naive_im2col(g: ConvGeometry, x: &[f64]) -> Vec<f64> {
        let (k, s, p) = (g.kernel as isize, g.stride as isize, g.padding as isize);
        let mut col = vec![0.0; g.col_len()];
        for c in 0..g.channels {
            for u in 0..k {
                for v in 0..k {
                    let row = (c * g.kernel + u as usize) * g.kernel + v as usize;
                    for i in 0..g.out_height {
                        for j in 0..g.out_width {
                            let h = s * i as isize + u - p;
                            let w = s * j as isize + v - p;
                            if h >= 0 && w >= 0 && (h as usize) < g.height && (w as usize) < g.width
                            {
                                col[row * g.col_cols() + i * g.out_width + j] =
                                    x[(c * g.height + h as usize) * g.width + w as usize];
                            }
                        }
                    }
                }
            }
        }
        col
    }

    fn values(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 + seed) * 0.737).sin()).collect()
    }

    const GEOMETRIES: &[(usize, usize, usize, usize, usize, usize)] = &[
        // (C, H, W, K, S, P)
        (1, 3, 3, 3, 1, 1),
        (2, 5, 4, 3, 2, 1),
        (3, 7, 6, 1, 1, 0),
        (2, 6, 7, 2, 2, 0),
        (2, 8, 5, 5, 3, 2),
        (1, 2, 2, 3, 1, 2),
        (2, 4, 4, 4, 1, 3),
        // Stride 1 with rows narrower than the input's (no padding, or less than K / 2).
        (3, 9, 8, 3, 1, 0),
        (2, 10, 9, 5, 1, 1),
        // Large enough to be split over both cores.
        (5, 40, 33, 3, 1, 1),
        (4, 41, 40, 3, 2, 1),
    ];

    #[test]
    fn im2col_matches_the_definition() {
        for &(c, h, w, k, s, p) in GEOMETRIES {
            let g = ConvGeometry::new(c, h, w, k, s, p);
            let x = values(g.input_len(), 0.5);
            let mut col = vec![f64::NAN; g.col_len()];
            im2col(g, &x, &mut col, g.col_cols());
            assert_eq!(col, naive_im2col(g, &x), "{g:?}");
            // With a wider row stride, the gaps are left alone.
            let stride = g.col_cols() + 3;
            let mut wide = vec![7.0; g.col_rows() * stride];
            im2col(g, &x, &mut wide, stride);
            for (r, row) in wide.chunks_exact(stride).enumerate() {
                assert_eq!(row[..g.col_cols()], col[r * g.col_cols()..][..g.col_cols()]);
                assert_eq!(row[g.col_cols()..], [7.0; 3]);
            }
        }
    }

    #[test]
    fn image_columns_pack_the_panels_of_the_column_matrix() {
        // Several samples side by side, packed from any column into panels of 4 and 16
        // columns, equal the definition's matrix packed the same way.
        for &(c, h, w, k, s, p) in GEOMETRIES {
            let g = ConvGeometry::new(c, h, w, k, s, p);
            let samples = 3;
            let x = values(samples * g.input_len(), 0.25);
            let (rows, cols) = (g.col_rows(), samples * g.col_cols());
            let mut matrix = vec![0.0; rows * cols];
            for (sample, image) in x.chunks_exact(g.input_len()).enumerate() {
                let col = naive_im2col(g, image);
                for (r, row) in col.chunks_exact(g.col_cols()).enumerate() {
                    matrix[r * cols + sample * g.col_cols()..][..g.col_cols()].copy_from_slice(row);
                }
            }
            let source = ImageColumns::new(g, &x, samples);
            assert_eq!(source.shape(), (rows, cols));
            let matrix = MatRef::row_major(&matrix, rows, cols);
            for (pc, jc) in [(0, 0), (rows / 2, 1), (rows - 1, cols / 3)] {
                let (kc, nc) = (rows - pc, (cols - jc).min(37));
                let len = kc * nc.div_ceil(4) * 16;
                let (mut packed, mut expected) = (vec![7.0; len], vec![7.0; len]);
                source.pack::<4>(pc, kc, jc, nc, &mut packed);
                matrix.pack::<4>(pc, kc, jc, nc, &mut expected);
                assert_eq!(packed, expected, "{g:?} from ({pc}, {jc}), 4 wide");
                source.pack::<16>(pc, kc, jc, nc, &mut packed);
                matrix.pack::<16>(pc, kc, jc, nc, &mut expected);
                assert_eq!(packed, expected, "{g:?} from ({pc}, {jc}), 16 wide");
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> = <x, col2im(c)> for all x and c.
        for &(c, h, w, k, s, p) in GEOMETRIES {
            let g = ConvGeometry::new(c, h, w, k, s, p);
            let x = values(g.input_len(), 0.5);
            let cols = values(g.col_len(), 3.0);
            let mut im = vec![0.0; g.col_len()];
            im2col(g, &x, &mut im, g.col_cols());
            let mut back = vec![1.0; g.input_len()];
            col2im(g, &cols, g.col_cols(), &mut back);
            let left: f64 = im.iter().zip(&cols).map(|(a, b)| a * b).sum();
            let right: f64 = x.iter().zip(&back).map(|(a, b)| a * (b - 1.0)).sum();
            assert!((left - right).abs() < 1e-9, "{g:?}: {left} vs {right}");
            // The same matrix with a wider row stride (garbage in the gaps) gives the same dx.
            let stride = g.col_cols() + 2;
            let mut wide = vec![1e6; g.col_rows() * stride];
            for (r, row) in cols.chunks_exact(g.col_cols()).enumerate() {
                wide[r * stride..][..g.col_cols()].copy_from_slice(row);
            }
            let mut back_wide = vec![1.0; g.input_len()];
            col2im(g, &wide, stride, &mut back_wide);
            assert_eq!(back, back_wide, "{g:?}");
        }
    }

    #[test]
    fn output_size_is_floored_like_pytorch() {
        let g = ConvGeometry::new(1, 7, 6, 3, 2, 1);
        assert_eq!((g.out_height, g.out_width), (4, 3));
        let g = ConvGeometry::new(1, 224, 224, 3, 1, 1);
        assert_eq!((g.out_height, g.out_width), (224, 224));
    }
}
