//! A packed, cache-blocked matrix product `C (+)= A · B` for products too large for the
//! simple loops in `matmul.rs`.
//!
//! The classic blocking: `B` is copied in `kc x NR` panels and `A` in `MR x kc` panels into a
//! per-thread scratch buffer (grown once, so later calls do not allocate), then a micro-kernel
//! keeps an `MR x NR` tile of `C` in registers while it streams both panels. The f32 AVX2
//! kernel reads a row-major A in place instead of packing it. The micro-kernel is written
//! with AVX2 or AVX-512 intrinsics for f32 (the training type) and as plain Rust over
//! fixed-size arrays otherwise (compiled for AVX2 + FMA where present); the variant is picked
//! by runtime detection, so the speed does not depend on the `target-cpu` a user builds with.

use std::ops::Range;

use super::matmul::{MatRef, OutputView};
use super::parallel::join;
use crate::Float;

/// Depth of a packed panel. A deeper panel writes C back less often: on this project's AVX2
/// machine depth 512 doubled square products (54 -> 103 GFLOP/s at n = 512) and the MLP
/// training step, but made the wide products of convolutions 1.5x slower than depth 256
/// (W4: 401 -> 596 ms). So products with at most `DEEP_PANEL_COLUMNS` columns use the deep
/// panel, wider ones the shallow one (`cargo bench --bench kernels`, `--bench models`).
const KC_DEEP: usize = 512;
const KC_SHALLOW: usize = 256;
const DEEP_PANEL_COLUMNS: usize = 784;
/// Rows of A packed at once (a multiple of every MR): `MC x kc` of A stays in L2.
const MC: usize = 96;

/// The `MR` rows of A that one micro-kernel call multiplies, over a depth block of `kc`.
#[derive(Clone, Copy)]
enum Lhs<'a, E> {
    /// Packed by `pack_a`: `MR` values per depth step.
    Packed(&'a [E]),
    /// Read in place from a row-major A: row `i` is `data[i * row_stride..][..kc]`, for the
    /// first `rows` rows (fewer than `MR` in the last panel; the kernel repeats the last row
    /// and drops its results).
    Rows {
        data: &'a [E],
        row_stride: usize,
        rows: usize,
    },
}

impl<'a, E> Lhs<'a, E> {
    /// The packed panel, for kernels that only read packed panels (`blocked` hands them
    /// nothing else: only the AVX2 f32 product reads A in place).
    fn packed(self) -> &'a [E] {
        match self {
            Lhs::Packed(panel) => panel,
            Lhs::Rows { .. } => unreachable!("this micro-kernel reads packed panels only"),
        }
    }
}

/// Work that a product with a triangular operand or result may skip (causal attention). A
/// hint only: the product is the same with or without it, because a skipped term is a
/// multiple of an entry of A that is 0, or an entry of C that the caller does not read.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Triangle {
    /// Every tile, over the whole depth.
    #[default]
    Full,
    /// Only `C[i, j]` with `j <= i` is wanted: tiles wholly above the diagonal are not
    /// computed, and C keeps whatever it held there (`S = Q Kᵀ` under a causal mask).
    LowerC,
    /// `A[i, p] = 0` for `p > i`: row `i`'s sum stops at depth `i` (`O = P V`).
    LowerA,
    /// `A[i, p] = 0` for `p < i`: row `i`'s sum starts at depth `i` (`dV = Pᵀ dO`).
    UpperA,
}

/// Panels of a transposed A (`dYᵀ`) packed together, one depth step after another: each step
/// then writes to 8 panels instead of all of them (64 for a 384-row weight gradient), and the
/// source is still read once. W7's weight gradients: 0.77-0.81 -> 0.66-0.70 ms for the
/// 384 x 1024 x 128 one, 1.06-1.10 -> 0.88-1.01 ms for 512 x 1024 x 128.
const PANEL_GROUP: usize = 8;
/// Largest product (multiply-adds) that dot-product tiles take instead of packing.
const DOT_TILES_MAX: usize = 1 << 15;
/// Products with at most this many rows (one tile of dot products, so B is read exactly once)
/// take dot-product tiles at any size: a batch-1 linear layer is a matrix-vector product,
/// bound by reading the weight, and packing the weight would read and write it once more.
const DOT_TILE_ROWS: usize = 3;
/// Likewise for products with few columns (a classifier head `X · Wᵀ`), where packing would
/// pad every depth step of B to a whole 16-column panel and the packing of A is all the work.
const DOT_TILE_COLUMNS: usize = 12;

/// Whether `A · B` runs as tiles of dot products over the operands in place (see `dot_tiles`):
/// rows of A and columns of B both contiguous, and either a small product or few rows.
pub(crate) fn reads_in_place<E>(a: &MatRef<'_, E>, b: &MatRef<'_, E>) -> bool {
    a.col_stride == 1
        && b.row_stride == 1
        && (a.rows * b.cols * a.cols <= DOT_TILES_MAX
            || a.rows <= DOT_TILE_ROWS
            || b.cols <= DOT_TILE_COLUMNS)
}

/// Columns of B packed at once.
const NC: usize = 512;

/// The most columns a [`PanelSource`] is asked to pack at once.
pub const PANEL_SOURCE_COLUMNS: usize = NC;

/// A right operand that packs its own panels: a B that is cheaper to generate than to read,
/// such as a convolution's column matrix, packed straight from the images
/// (`im2col::ImageColumns`) instead of being written out whole and copied again.
pub trait PanelSource<E>: Sync {
    /// `(rows, cols)` of B.
    fn shape(&self) -> (usize, usize);

    /// Writes `B[pc..pc + kc, jc..jc + nc]` into `out` as `NR`-column panels, each stored
    /// depth-major (`NR` values per depth step) and zero-padded to a whole panel: panel `q`
    /// holds columns `jc + q·NR..` at `out[q·NR·kc..]`. `nc` is at most
    /// [`PANEL_SOURCE_COLUMNS`].
    fn pack<const NR: usize>(&self, pc: usize, kc: usize, jc: usize, nc: usize, out: &mut [E]);
}

/// A matrix is its own panel source (`pack_b`).
impl<E: Float> PanelSource<E> for MatRef<'_, E> {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn pack<const NR: usize>(&self, pc: usize, kc: usize, jc: usize, nc: usize, out: &mut [E]) {
        pack_b::<E, NR>(self, pc, kc, jc, nc, out)
    }
}

/// `pack(pc, kc, jc, nc, out)`: writes B's rows `pc..pc + kc`, columns `jc..jc + nc` into
/// `out` as panels.
trait PackBlock<E>: Fn(usize, usize, usize, usize, &mut [E]) {}
impl<E, F: Fn(usize, usize, usize, usize, &mut [E])> PackBlock<E> for F {}

/// The columns `columns` of `b`, packed by `b` block by block as the product goes.
fn packing<'a, E: Float, S: PanelSource<E>, const NR: usize>(
    b: &'a S,
    columns: Range<usize>,
) -> Rhs<'a, E, impl PackBlock<E> + 'a> {
    Rhs::Packing {
        cols: columns.len(),
        pack: move |pc, kc, jc, nc, out: &mut [E]| {
            b.pack::<NR>(pc, kc, columns.start + jc, nc, out)
        },
    }
}

/// `C = A · B` (or `C += A · B`) for any element type, with the portable micro-kernel
/// compiled for the best vector extension the CPU has.
pub fn gemm_generic<E: Float>(
    a: MatRef<'_, E>,
    b: MatRef<'_, E>,
    c: OutputView<'_, E>,
    accumulate: bool,
    triangle: Triangle,
) {
    generic(a, &b, 0..b.cols, c, accumulate, triangle)
}

/// `C = A · B[:, columns]` (or `C +=`) for a B that packs itself, for any element type.
pub fn gemm_source_generic<E: Float, S: PanelSource<E>>(
    a: MatRef<'_, E>,
    b: &S,
    columns: Range<usize>,
    c: OutputView<'_, E>,
    accumulate: bool,
) {
    generic(a, b, columns, c, accumulate, Triangle::Full)
}

/// `gemm_source_generic` for a product with a triangular structure.
fn generic<E: Float, S: PanelSource<E>>(
    a: MatRef<'_, E>,
    b: &S,
    columns: Range<usize>,
    c: OutputView<'_, E>,
    accumulate: bool,
    triangle: Triangle,
) {
    let wide = std::mem::size_of::<E>() == 4;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (detected just above), which is all a
            // `#[target_feature]` function requires of its caller.
            unsafe {
                if wide {
                    generic_avx2::<E, 6, 16, S>(a, b, columns, c, accumulate, triangle)
                } else {
                    generic_avx2::<E, 6, 8, S>(a, b, columns, c, accumulate, triangle)
                }
            };
            return;
        }
    }
    blocked::<E, 4, 8, _>(
        a,
        packing::<E, S, 8>(b, columns),
        c,
        accumulate,
        false,
        triangle,
        |kc, a, b, c, row, col, add| {
            store_tile(
                &micro_kernel::<E, 4, 8, false>(kc, a.packed(), b),
                c,
                row,
                col,
                add,
            )
        },
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn generic_avx2<E: Float, const MR: usize, const NR: usize, S: PanelSource<E>>(
    a: MatRef<'_, E>,
    b: &S,
    columns: Range<usize>,
    c: OutputView<'_, E>,
    accumulate: bool,
    triangle: Triangle,
) {
    blocked::<E, MR, NR, _>(
        a,
        packing::<E, S, NR>(b, columns),
        c,
        accumulate,
        false,
        triangle,
        |kc, a, b, c, row, col, add| {
            store_tile(
                &micro_kernel::<E, MR, NR, true>(kc, a.packed(), b),
                c,
                row,
                col,
                add,
            )
        },
    )
}

/// `C = A · B` (or `C += A · B`) in f32: an AVX-512 micro-kernel where the CPU has one.
pub fn gemm_f32(
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    c: OutputView<'_, f32>,
    accumulate: bool,
    triangle: Triangle,
) {
    #[cfg(target_arch = "x86_64")]
    {
        // Reading the operands in place beats packing them for small products; for large ones
        // the packed kernel wins (measured: benches/README.md).
        if reads_in_place(&a, &b)
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (detected just above).
            unsafe { avx2::dot_tiles(a, b, c, accumulate) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (detected just above).
            unsafe { f32_avx512(a, &b, 0..b.cols, c, accumulate, triangle) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            let rhs = Rhs::Packing {
                cols: b.cols,
                // SAFETY: this closure only runs inside `f32_avx2`, called just below on a CPU
                // with AVX2 and FMA.
                pack: |pc, kc, jc, nc, out: &mut [f32]| unsafe {
                    avx2::pack_b_16(&b, pc, kc, jc, nc, out)
                },
            };
            // SAFETY: the CPU supports AVX2 and FMA (detected just above).
            unsafe { f32_avx2(a, rhs, c, accumulate, triangle) };
            return;
        }
    }
    gemm_generic(a, b, c, accumulate, triangle)
}

/// `C = A · B[:, columns]` (or `C +=`) in f32 for a B that packs itself.
pub fn gemm_source_f32<S: PanelSource<f32>>(
    a: MatRef<'_, f32>,
    b: &S,
    columns: Range<usize>,
    c: OutputView<'_, f32>,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (detected just above).
            unsafe { f32_avx512(a, b, columns, c, accumulate, Triangle::Full) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            let b = packing::<f32, S, 16>(b, columns);
            // SAFETY: the CPU supports AVX2 and FMA (detected just above).
            unsafe { f32_avx2(a, b, c, accumulate, Triangle::Full) };
            return;
        }
    }
    gemm_source_generic(a, b, columns, c, accumulate)
}

/// The blocked f32 product with the AVX2 micro-kernel, for any right operand.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_avx2<P: PackBlock<f32>>(
    a: MatRef<'_, f32>,
    b: Rhs<'_, f32, P>,
    c: OutputView<'_, f32>,
    accumulate: bool,
    triangle: Triangle,
) {
    blocked::<f32, 6, 16, P>(
        a,
        b,
        c,
        accumulate,
        true,
        triangle,
        // SAFETY: this closure only runs inside `f32_avx2`, whose caller checked AVX2 and FMA.
        |kc, a, b, c, row, col, add| unsafe { avx2::kernel_6x16(kc, a, b, c, row, col, add) },
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn f32_avx512<S: PanelSource<f32>>(
    a: MatRef<'_, f32>,
    b: &S,
    columns: Range<usize>,
    c: OutputView<'_, f32>,
    accumulate: bool,
    triangle: Triangle,
) {
    blocked::<f32, 8, 32, _>(
        a,
        packing::<f32, S, 32>(b, columns),
        c,
        accumulate,
        false,
        triangle,
        // SAFETY: this closure only runs inside `f32_avx512`, whose caller checked AVX-512F.
        |kc, a, b, c, row, col, add| {
            let tile = unsafe { avx512::kernel_8x32(kc, a.packed(), b) };
            store_tile(&tile, c, row, col, add)
        },
    )
}

/// The depth of the packed panels of a product of depth `k` with `n` columns: at most
/// `KC_DEEP` or `KC_SHALLOW` (see `KC_DEEP`), and the same for every block, so that no block
/// is a thin remainder (a depth of 576 runs as 3 x 192, not 256 + 256 + 64, where the last
/// block loads and stores C for a quarter of the work).
fn panel_depth(k: usize, n: usize) -> usize {
    let most = if n <= DEEP_PANEL_COLUMNS {
        KC_DEEP
    } else {
        KC_SHALLOW
    };
    k.div_ceil(k.div_ceil(most).max(1)).max(1)
}

/// The right operand of `blocked`: packed block by block as the product goes
/// (`pack(pc, kc, jc, nc, out)` writes rows `pc..pc + kc`, columns `jc..jc + nc` as panels),
/// or panels packed beforehand.
enum Rhs<'a, E, P> {
    Packing { cols: usize, pack: P },
    Packed(PackedPanels<'a, E>),
}

impl<E, P> Rhs<'_, E, P> {
    fn cols(&self) -> usize {
        match self {
            Rhs::Packing { cols, .. } => *cols,
            Rhs::Packed(packed) => packed.cols,
        }
    }
}

/// Columns per panel of a [`PackedRhs`]: the AVX2 f32 micro-kernel's width, which the other
/// kernels (f64, or no AVX2) use for prepacked operands too.
const PACKED_NR: usize = 16;

/// A right operand packed once for many products: a recurrent layer multiplies by the same
/// `W_hhᵀ` at every time step, and packing it per step cost a tenth of W6's training step.
///
/// Holds exactly the panels the blocked product would copy B into (depth blocks of
/// `panel_depth(rows, cols)`, each all columns wide in 16-column panels), so a product reads them
/// in place. Made once with its shape (the only allocation), refilled by [`pack`](Self::pack)
/// whenever B changes.
#[derive(Clone, Debug)]
pub struct PackedRhs<E> {
    panels: Vec<E>,
    rows: usize,
    cols: usize,
}

impl<E: Float> PackedRhs<E> {
    /// Room for a `rows x cols` B; the panels hold zeros until `pack`.
    pub fn new(rows: usize, cols: usize) -> Self {
        Self {
            panels: vec![E::ZERO; packed_len(rows, cols)],
            rows,
            cols,
        }
    }

    /// The shape of B, `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Packs `b`, which must have the shape given to `new`.
    pub fn pack(&mut self, b: MatRef<'_, E>) {
        assert!(
            (b.rows, b.cols) == (self.rows, self.cols),
            "PackedRhs: packing a {}x{} matrix into room for {}x{}",
            b.rows,
            b.cols,
            self.rows,
            self.cols
        );
        let width = self.cols.div_ceil(PACKED_NR) * PACKED_NR;
        for (pc, kc) in depth_blocks(self.rows, self.cols) {
            E::pack_panels(&b, pc, kc, 0, self.cols, &mut self.panels[pc * width..]);
        }
    }

    /// Where `B[row, col]` lives in [`panels_mut`](Self::panels_mut): for a caller that
    /// computes B's entries itself and writes them straight into place, rather than into a
    /// matrix that `pack` then copies.
    pub fn index(&self, row: usize, col: usize) -> usize {
        let depth = panel_depth(self.rows, self.cols);
        let width = self.cols.div_ceil(PACKED_NR) * PACKED_NR;
        let pc = row / depth * depth;
        let kc = depth.min(self.rows - pc);
        pc * width + col / PACKED_NR * PACKED_NR * kc + (row - pc) * PACKED_NR + col % PACKED_NR
    }

    /// The panels, to be written at [`index`](Self::index) positions (padding columns must
    /// stay zero).
    pub fn panels_mut(&mut self) -> &mut [E] {
        &mut self.panels
    }

    /// The packed panels, as the products read them.
    pub fn panels(&self) -> PackedPanels<'_, E> {
        PackedPanels {
            panels: &self.panels,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// The length of the panels of a packed `rows x cols` B (see [`PackedRhs`]).
pub fn packed_len(rows: usize, cols: usize) -> usize {
    rows * cols.div_ceil(PACKED_NR) * PACKED_NR
}

/// The depth blocks `(pc, kc)` in which a `rows x cols` B is packed.
fn depth_blocks(rows: usize, cols: usize) -> impl Iterator<Item = (usize, usize)> {
    let depth = panel_depth(rows, cols);
    (0..rows)
        .step_by(depth)
        .map(move |pc| (pc, depth.min(rows - pc)))
}

/// The panels of a packed B, borrowed: those of a [`PackedRhs`], or of a B packed by
/// [`pack_on_both_cores`] for one product.
#[derive(Clone, Copy, Debug)]
pub struct PackedPanels<'a, E> {
    panels: &'a [E],
    rows: usize,
    cols: usize,
}

impl<E> PackedPanels<'_, E> {
    /// The shape of B, `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The panels of depth block `pc..pc + kc` from column `jc` on (`jc` a multiple of 16).
    fn block(&self, pc: usize, jc: usize, kc: usize) -> &[E] {
        let width = self.cols.div_ceil(PACKED_NR) * PACKED_NR;
        &self.panels[pc * width + jc * kc..]
    }
}

/// Packs `b` into `out` (at least [`packed_len`] long) as [`PackedRhs`] lays it out, each
/// depth block's columns in halves on the two cores: for a product whose rows are then shared
/// by both cores, which would otherwise pack all of B once each.
pub fn pack_on_both_cores<'a, E: Float>(b: MatRef<'_, E>, out: &'a mut [E]) -> PackedPanels<'a, E> {
    let (rows, cols) = (b.rows, b.cols);
    let width = cols.div_ceil(PACKED_NR) * PACKED_NR;
    // The left part is whole panels, unless it is all of B.
    let half = (cols / 2).next_multiple_of(PACKED_NR).min(cols);
    for (pc, kc) in depth_blocks(rows, cols) {
        let left_len = half.next_multiple_of(PACKED_NR) * kc;
        let (left, right) = out[pc * width..(pc + kc) * width].split_at_mut(left_len);
        join(
            || E::pack_panels(&b, pc, kc, 0, half, left),
            || E::pack_panels(&b, pc, kc, half, cols - half, right),
        );
    }
    PackedPanels {
        panels: &out[..rows * width],
        rows,
        cols,
    }
}

/// Writes `B[pc..pc + kc, jc..jc + nc]` into `out` as 16-column panels (see [`PackedRhs`]), for
/// any element type.
pub fn pack_panels_generic<E: Float>(
    b: &MatRef<'_, E>,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    out: &mut [E],
) {
    pack_b::<E, PACKED_NR>(b, pc, kc, jc, nc, out)
}

/// [`pack_panels_generic`] in f32, transposing a B that is a transpose (`Wᵀ`) eight by eight
/// with AVX2 where the CPU has it.
pub fn pack_panels_f32(
    b: &MatRef<'_, f32>,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (detected just above).
        return unsafe { avx2::pack_b_16(b, pc, kc, jc, nc, out) };
    }
    pack_panels_generic(b, pc, kc, jc, nc, out)
}

/// `C = A · B` (or `C += A · B`) with B packed beforehand, in f32: the AVX2 micro-kernel
/// where the CPU has AVX2 and FMA.
pub fn gemm_prepacked_f32(
    a: MatRef<'_, f32>,
    b: PackedPanels<'_, f32>,
    c: OutputView<'_, f32>,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (detected just above).
            type Unused = fn(usize, usize, usize, usize, &mut [f32]);
            unsafe { f32_avx2::<Unused>(a, Rhs::Packed(b), c, accumulate, Triangle::Full) };
            return;
        }
    }
    gemm_prepacked_generic(a, b, c, accumulate)
}

/// `C = A · B` (or `C += A · B`) with B packed beforehand, for any element type.
pub fn gemm_prepacked_generic<E: Float>(
    a: MatRef<'_, E>,
    b: PackedPanels<'_, E>,
    c: OutputView<'_, E>,
    accumulate: bool,
) {
    type Unused<E> = fn(usize, usize, usize, usize, &mut [E]);
    blocked::<E, 4, PACKED_NR, Unused<E>>(
        a,
        Rhs::Packed(b),
        c,
        accumulate,
        false,
        Triangle::Full,
        |kc, a, b, c, row, col, add| {
            store_tile(
                &micro_kernel::<E, 4, PACKED_NR, true>(kc, a.packed(), b),
                c,
                row,
                col,
                add,
            )
        },
    )
}

/// The depth steps, within the block `pc..pc + kc`, that the tile of `rows` rows from `row`
/// and the columns from `col` needs (relative to `pc`), or `None` if `triangle` skips it.
fn tile_depth(
    triangle: Triangle,
    row: usize,
    rows: usize,
    col: usize,
    pc: usize,
    kc: usize,
) -> Option<Range<usize>> {
    let last_row = row + rows - 1;
    match triangle {
        Triangle::Full => Some(0..kc),
        Triangle::LowerC => (col <= last_row).then_some(0..kc),
        Triangle::LowerA => Some(0..(last_row + 1).saturating_sub(pc).min(kc)),
        Triangle::UpperA => Some(row.saturating_sub(pc).min(kc)..kc),
    }
}

/// The blocked product, for `MR x NR` register tiles computed by `kernel`. With
/// `read_rows_in_place`, a row-major A is not packed: the kernel gets `Lhs::Rows`.
#[inline(always)]
fn blocked<E: Float, const MR: usize, const NR: usize, P>(
    a: MatRef<'_, E>,
    b: Rhs<'_, E, P>,
    mut c: OutputView<'_, E>,
    accumulate: bool,
    read_rows_in_place: bool,
    triangle: Triangle,
    kernel: impl Fn(usize, Lhs<'_, E>, &[E], &mut OutputView<'_, E>, usize, usize, bool),
) where
    P: PackBlock<E>,
{
    let (m, k, n) = (a.rows, a.cols, b.cols());
    let depth = panel_depth(k, n);
    // A row-major A is read where it lies: its rows are contiguous along the depth already,
    // and packing them was a twentieth of W7's training step.
    let in_place = read_rows_in_place && a.col_stride == 1;
    // Otherwise all rows of A are packed once per depth block and reused by every block of
    // columns: a convolution's weight (A) meets a very wide B, and repacking it per block of
    // B cost more than the packing of B itself.
    let a_len = if in_place {
        0
    } else {
        m.div_ceil(MR) * MR * depth
    };
    let b_len = match b {
        Rhs::Packing { .. } => NC.min(n.div_ceil(NR) * NR) * depth,
        Rhs::Packed(_) => 0,
    };
    E::with_scratch(a_len + b_len, |scratch| {
        let (a_pack, b_pack) = scratch.split_at_mut(a_len);
        let mut pc = 0;
        while pc < k {
            let kc = depth.min(k - pc);
            // The first depth block overwrites C unless the caller accumulates.
            let add = accumulate || pc > 0;
            if !in_place {
                pack_a::<E, MR>(&a, 0, m, pc, kc, a_pack);
            }
            let mut jc = 0;
            while jc < n {
                let nc = NC.min(n - jc);
                let b_block: &[E] = match &b {
                    Rhs::Packing { pack, .. } => {
                        pack(pc, kc, jc, nc, b_pack);
                        b_pack
                    }
                    Rhs::Packed(packed) => packed.block(pc, jc, kc),
                };
                let mut ic = 0;
                while ic < m {
                    let mc = MC.min(m - ic);
                    for jr in (0..nc).step_by(NR) {
                        let b_panel = &b_block[jr * kc..][..kc * NR];
                        for ir in (0..mc).step_by(MR) {
                            let (row, col) = (ic + ir, jc + jr);
                            let Some(depth) =
                                tile_depth(triangle, row, MR.min(m - row), col, pc, kc)
                            else {
                                continue;
                            };
                            // A tile with no depth left still clears C in the first block.
                            if depth.is_empty() && add {
                                continue;
                            }
                            let a_panel = if in_place {
                                Lhs::Rows {
                                    data: &a.data[row * a.row_stride + pc + depth.start..],
                                    row_stride: a.row_stride,
                                    rows: MR.min(m - row),
                                }
                            } else {
                                Lhs::Packed(
                                    &a_pack[row * kc + depth.start * MR..][..depth.len() * MR],
                                )
                            };
                            let b_panel = &b_panel[depth.start * NR..depth.end * NR];
                            // The tile's rows of C arrive while the kernel computes.
                            c.prefetch(row, col, MR, NR);
                            kernel(depth.len(), a_panel, b_panel, &mut c, row, col, add);
                        }
                    }
                    ic += mc;
                }
                jc += nc;
            }
            pc += kc;
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Lhs;
    use crate::kernels::matmul::{MatRef, OutputView};
    use crate::kernels::vector::dot;

    /// The lane sums of four vectors, as one vector of four: three horizontal adds and one
    /// add of the halves, instead of a full reduction per vector.
    #[target_feature(enable = "avx2,fma")]
    fn horizontal_sums4(v: [__m256; 4]) -> __m128 {
        let s01 = _mm256_hadd_ps(v[0], v[1]);
        let s23 = _mm256_hadd_ps(v[2], v[3]);
        let s = _mm256_hadd_ps(s01, s23);
        _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1))
    }

    /// The dot products of `R` rows with 4 columns, all `k` long: `R x 4` accumulators over
    /// the first `k8` (a multiple of 8), then the scalar tails.
    #[target_feature(enable = "avx2,fma")]
    fn dot_tile<const R: usize>(rows: [&[f32]; R], cols: [&[f32]; 4], k8: usize) -> [[f32; 4]; R] {
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        for p in (0..k8).step_by(8) {
            // SAFETY: every row and column holds k >= k8 >= p + 8 floats.
            let (av, bv) = unsafe {
                (
                    rows.map(|r| _mm256_loadu_ps(r.as_ptr().add(p))),
                    cols.map(|c| _mm256_loadu_ps(c.as_ptr().add(p))),
                )
            };
            for r in 0..R {
                for s in 0..4 {
                    acc[r][s] = _mm256_fmadd_ps(av[r], bv[s], acc[r][s]);
                }
            }
        }
        let mut out = [[0.0f32; 4]; R];
        for r in 0..R {
            // SAFETY: `out[r]` holds exactly four floats.
            unsafe { _mm_storeu_ps(out[r].as_mut_ptr(), horizontal_sums4(acc[r])) };
            for (s, col) in cols.iter().enumerate() {
                let tail: f32 = rows[r][k8..]
                    .iter()
                    .zip(&col[k8..])
                    .map(|(x, y)| x * y)
                    .sum();
                out[r][s] += tail;
            }
        }
        out
    }

    /// `C (+)= A · B` when rows of A and columns of B are both contiguous along the depth
    /// (a linear layer's `X · Wᵀ`): 3 x 4 tiles of dot products (1 x 4 for the last rows),
    /// 12 ymm accumulators, no packing at all; each operand row is read straight from memory.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_tiles(
        a: MatRef<'_, f32>,
        b: MatRef<'_, f32>,
        mut c: OutputView<'_, f32>,
        accumulate: bool,
    ) {
        const MR: usize = super::DOT_TILE_ROWS;
        const NR: usize = 4;
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let k8 = k / 8 * 8;
        let a_row = |i: usize| &a.data[i * a.row_stride..][..k];
        let b_col = |j: usize| &b.data[j * b.col_stride..][..k];
        let store = |c: &mut OutputView<'_, f32>, i: usize, j: usize, values: &[f32]| {
            for (s, value) in values.iter().enumerate() {
                c.store(i, j + s, *value, accumulate);
            }
        };
        // Columns outer: four columns of B (a few KB) stay in L1 while all rows of A stream
        // past from L2, so B is read from memory once.
        for j in (0..n).step_by(NR) {
            if j + NR > n {
                for r in 0..m {
                    for s in j..n {
                        c.store(r, s, dot(a_row(r), b_col(s)), accumulate);
                    }
                }
                continue;
            }
            let cols = [b_col(j), b_col(j + 1), b_col(j + 2), b_col(j + 3)];
            let mut i = 0;
            while i + MR <= m {
                let tile = dot_tile([a_row(i), a_row(i + 1), a_row(i + 2)], cols, k8);
                for (r, values) in tile.iter().enumerate() {
                    store(&mut c, i + r, j, values);
                }
                i += MR;
            }
            for r in i..m {
                let [values] = dot_tile([a_row(r)], cols, k8);
                store(&mut c, r, j, &values);
            }
        }
    }

    /// `pack_b` for 16-column panels, with whole panels of a column-contiguous B (a weight
    /// read as `Wᵀ`) transposed 8 x 8 in registers instead of scattered one value at a time.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pack_b_16(
        b: &MatRef<'_, f32>,
        pc: usize,
        kc: usize,
        jc: usize,
        nc: usize,
        out: &mut [f32],
    ) {
        if b.row_stride != 1 || b.col_stride == 1 {
            return super::pack_b::<f32, 16>(b, pc, kc, jc, nc, out);
        }
        const NR: usize = 16;
        let panels = nc / NR;
        let k8 = kc / 8 * 8;
        for panel in 0..panels {
            let dst = &mut out[panel * NR * kc..][..NR * kc];
            let column = |j: usize| &b.data[(jc + panel * NR + j) * b.col_stride + pc..][..kc];
            for half in 0..2 {
                let cols: [&[f32]; 8] = std::array::from_fn(|j| column(half * 8 + j));
                for p in (0..k8).step_by(8) {
                    // SAFETY: every column holds kc >= p + 8 floats.
                    let rows = cols.map(|c| unsafe { _mm256_loadu_ps(c.as_ptr().add(p)) });
                    for (q, v) in transpose8(rows).into_iter().enumerate() {
                        let at = (p + q) * NR + half * 8;
                        // SAFETY: `at + 8 <= (p + 8) * NR <= kc * NR`, the panel's length.
                        unsafe { _mm256_storeu_ps(dst[at..at + 8].as_mut_ptr(), v) };
                    }
                }
                for p in k8..kc {
                    for (j, c) in cols.iter().enumerate() {
                        dst[p * NR + half * 8 + j] = c[p];
                    }
                }
            }
        }
        if panels * NR < nc {
            let done = panels * NR;
            super::pack_b::<f32, 16>(b, pc, kc, jc + done, nc - done, &mut out[done * kc..]);
        }
    }

    /// The transpose of an 8 x 8 block: `out[q][j] = rows[j][q]`.
    #[target_feature(enable = "avx2,fma")]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }

    /// A 6 x 16 tile of `A_panel · B_panel` over depth `kc`, written (or added) into C at
    /// `(row, col)`: 12 ymm accumulators, two B vectors and one broadcast of A per row and
    /// depth step (15 of the 16 registers). The tile goes from the registers straight into
    /// C, its rows past C's last dropped; a tile cut by C's last column goes through
    /// `store_tile`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_6x16(
        kc: usize,
        a: Lhs<'_, f32>,
        b: &[f32],
        c: &mut OutputView<'_, f32>,
        row: usize,
        col: usize,
        add: bool,
    ) {
        let b = &b[..kc * 16];
        // Where row `i` of A starts, and how far apart its depth steps are.
        let (a_rows, a_step): ([*const f32; 6], usize) = match a {
            Lhs::Packed(a) => {
                // (With no depth, `a` is empty and the pointers are never read.)
                let a = a[..kc * 6].as_ptr();
                (std::array::from_fn(|i| a.wrapping_add(i)), 6)
            }
            Lhs::Rows {
                data,
                row_stride,
                rows,
            } => {
                // Rows past A's last repeat it; `row_block` and `store_tile` drop them.
                let row = |i: usize| data[i.min(rows - 1) * row_stride..][..kc].as_ptr();
                (std::array::from_fn(row), 1)
            }
        };
        let mut acc = [[_mm256_setzero_ps(); 2]; 6];
        // The two layouts get a loop each, so that the depth step is a constant.
        macro_rules! depth_loop {
            ($step:expr) => {
                for p in 0..kc {
                    // SAFETY: B holds 16 floats per depth step, and A's row `i` holds row `i`'s
                    // `kc` values `$step` apart (both checked by the slicing above).
                    unsafe {
                        let b0 = _mm256_loadu_ps(b.as_ptr().add(p * 16));
                        let b1 = _mm256_loadu_ps(b.as_ptr().add(p * 16 + 8));
                        for i in 0..6 {
                            let ai = _mm256_broadcast_ss(&*a_rows[i].add(p * $step));
                            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
                            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
                        }
                    }
                }
            };
        }
        if a_step == 6 {
            depth_loop!(6);
        } else {
            depth_loop!(1);
        }
        if let Some((rows, valid)) = c.row_block::<6>(row, col, 16) {
            // What the tile is added to: C itself, or the bias (zero without one).
            let bias = if add { None } else { c.bias(col, 16) };
            let bias = bias.map_or([_mm256_setzero_ps(); 2], |bias| {
                // SAFETY: `bias` holds exactly 16 floats, read as two unaligned vectors of 8.
                unsafe {
                    [
                        _mm256_loadu_ps(bias.as_ptr()),
                        _mm256_loadu_ps(bias.as_ptr().add(8)),
                    ]
                }
            });
            for (out, acc) in rows.into_iter().zip(acc).take(valid) {
                // SAFETY: `row_block` checked that these `valid` rows of 16 contiguous floats
                // lie in C, and nothing else touches C while the pointers are used.
                unsafe {
                    let (lo, hi) = (out, out.add(8));
                    let (base_lo, base_hi) = if add {
                        (_mm256_loadu_ps(lo), _mm256_loadu_ps(hi))
                    } else {
                        (bias[0], bias[1])
                    };
                    _mm256_storeu_ps(lo, _mm256_add_ps(base_lo, acc[0]));
                    _mm256_storeu_ps(hi, _mm256_add_ps(base_hi, acc[1]));
                }
            }
            return;
        }
        let mut tile = [[0.0f32; 16]; 6];
        for (row, acc) in tile.iter_mut().zip(acc) {
            // SAFETY: each tile row holds exactly 16 floats, written as two vectors of 8.
            unsafe {
                _mm256_storeu_ps(row.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[1]);
            }
        }
        super::store_tile(&tile, c, row, col, add);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// An 8 x 32 tile of `A_panel · B_panel` over depth `kc`: 16 zmm accumulators, two
    /// B vectors and one broadcast of A per row and depth step.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_8x32(kc: usize, a: &[f32], b: &[f32]) -> [[f32; 32]; 8] {
        let (a, b) = (&a[..kc * 8], &b[..kc * 32]);
        let mut acc = [[_mm512_setzero_ps(); 2]; 8];
        for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(32)) {
            // SAFETY: `b` holds exactly 32 floats, read as two unaligned vectors of 16.
            let (b0, b1) = unsafe {
                (
                    _mm512_loadu_ps(b.as_ptr()),
                    _mm512_loadu_ps(b.as_ptr().add(16)),
                )
            };
            for i in 0..8 {
                let ai = _mm512_set1_ps(a[i]);
                acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
            }
        }
        let mut tile = [[0.0f32; 32]; 8];
        for (row, acc) in tile.iter_mut().zip(acc) {
            // SAFETY: each tile row holds exactly 32 floats, written as two vectors of 16.
            unsafe {
                _mm512_storeu_ps(row.as_mut_ptr(), acc[0]);
                _mm512_storeu_ps(row.as_mut_ptr().add(16), acc[1]);
            }
        }
        tile
    }
}

/// `MR x NR` of `A_panel · B_panel` over depth `kc`, in registers.
#[inline(always)]
fn micro_kernel<E: Float, const MR: usize, const NR: usize, const FUSED: bool>(
    kc: usize,
    a_panel: &[E],
    b_panel: &[E],
) -> [[E; NR]; MR] {
    let mut tile = [[E::ZERO; NR]; MR];
    for (a, b) in a_panel
        .chunks_exact(MR)
        .zip(b_panel.chunks_exact(NR))
        .take(kc)
    {
        for i in 0..MR {
            let ai = a[i];
            for j in 0..NR {
                tile[i][j] = if FUSED {
                    ai.mul_add(b[j], tile[i][j])
                } else {
                    tile[i][j] + ai * b[j]
                };
            }
        }
    }
    tile
}

/// Writes (or adds) the valid part of a tile into C at `(row, col)`.
#[inline(always)]
fn store_tile<E: Float, const MR: usize, const NR: usize>(
    tile: &[[E; NR]; MR],
    c: &mut OutputView<'_, E>,
    row: usize,
    col: usize,
    add: bool,
) {
    let rows = MR.min(c.rows() - row);
    let cols = NR.min(c.cols() - col);
    let bias = if add { None } else { c.bias(col, cols) };
    for (i, tile_row) in tile.iter().enumerate().take(rows) {
        if let Some(out) = c.row_segment(row + i, col, cols) {
            if add {
                for (o, v) in out.iter_mut().zip(tile_row) {
                    *o += *v;
                }
            } else if let Some(bias) = bias {
                for ((o, v), b) in out.iter_mut().zip(tile_row).zip(bias) {
                    *o = *v + *b;
                }
            } else {
                out.copy_from_slice(&tile_row[..cols]);
            }
            continue;
        }
        for (j, value) in tile_row.iter().enumerate().take(cols) {
            c.store(row + i, col + j, *value, add);
        }
    }
}

/// Packs rows `ic..ic+mc`, columns `pc..pc+kc` of A into `MR`-row panels, each stored
/// depth-major (`MR` values per depth step), zero-padded to a whole panel.
#[inline(always)]
fn pack_a<E: Float, const MR: usize>(
    a: &MatRef<'_, E>,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    out: &mut [E],
) {
    let full_panels = if a.row_stride == 1 { mc / MR } else { 0 };
    if full_panels > 0 {
        // A is a transpose (`dYᵀ X` in a backward): one depth step of a group of panels is
        // one contiguous stretch of memory. Read each once and deal it out, group by group
        // (read panel by panel instead, a tall dY was fetched from L3 once per panel; all
        // panels at once, each depth step wrote to every panel).
        for first in (0..full_panels).step_by(PANEL_GROUP) {
            let panels = PANEL_GROUP.min(full_panels - first);
            for p in 0..kc {
                let src = &a.data[ic + first * MR + (pc + p) * a.col_stride..][..panels * MR];
                for (panel, values) in src.chunks_exact(MR).enumerate() {
                    out[(first + panel) * MR * kc + p * MR..][..MR].copy_from_slice(values);
                }
            }
        }
    }
    for (panel, rows) in (0..mc).step_by(MR).enumerate().skip(full_panels) {
        let dst = &mut out[panel * MR * kc..][..MR * kc];
        let valid = MR.min(mc - rows);
        if a.col_stride == 1 && valid == MR {
            // A is row-major (a weight): the panel's rows are read side by side, front to back.
            let rows: [&[E]; MR] =
                std::array::from_fn(|i| &a.data[(ic + rows + i) * a.row_stride + pc..][..kc]);
            for (p, dst) in dst.chunks_exact_mut(MR).enumerate() {
                for (d, row) in dst.iter_mut().zip(&rows) {
                    *d = row[p];
                }
            }
            continue;
        }
        // The last, partial panel: zeros below its rows. (Element by element with index
        // arithmetic, it took a third of a 16-row recurrent step's product.)
        if a.col_stride == 1 {
            dst.fill(E::ZERO);
            for i in 0..valid {
                let row = &a.data[(ic + rows + i) * a.row_stride + pc..][..kc];
                for (p, value) in row.iter().enumerate() {
                    dst[p * MR + i] = *value;
                }
            }
            continue;
        }
        if a.row_stride == 1 {
            for (p, dst) in dst.chunks_exact_mut(MR).enumerate() {
                let start = ic + rows + (pc + p) * a.col_stride;
                dst[..valid].copy_from_slice(&a.data[start..start + valid]);
                dst[valid..].fill(E::ZERO);
            }
            continue;
        }
        for p in 0..kc {
            for i in 0..MR {
                dst[p * MR + i] = if i < valid {
                    a.data[(ic + rows + i) * a.row_stride + (pc + p) * a.col_stride]
                } else {
                    E::ZERO
                };
            }
        }
    }
}

/// Packs rows `pc..pc+kc`, columns `jc..jc+nc` of B into `NR`-column panels, each stored
/// depth-major (`NR` values per depth step), zero-padded to a whole panel.
#[inline(always)]
fn pack_b<E: Float, const NR: usize>(
    b: &MatRef<'_, E>,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    out: &mut [E],
) {
    let full_panels = if b.col_stride == 1 { nc / NR } else { 0 };
    if full_panels > 0 {
        // B is row-major: read each row once, front to back, and deal it out to the panels.
        // (Reading panel by panel instead jumps a whole row ahead per depth step, which on wide
        // convolution products cost more than the micro-kernel itself.)
        for p in 0..kc {
            let row = &b.data[(pc + p) * b.row_stride + jc..][..full_panels * NR];
            for (panel, src) in row.chunks_exact(NR).enumerate() {
                out[panel * NR * kc + p * NR..][..NR].copy_from_slice(src);
            }
        }
    }
    for (panel, cols) in (0..nc).step_by(NR).enumerate().skip(full_panels) {
        let dst = &mut out[panel * NR * kc..][..NR * kc];
        let valid = NR.min(nc - cols);
        if b.row_stride == 1 && b.col_stride != 1 {
            // B is a transpose (a weight read as Wᵀ): its columns are contiguous, so read down
            // each column and scatter into the panel, which stays in L1.
            for j in 0..NR {
                if j < valid {
                    let column = &b.data[(jc + cols + j) * b.col_stride + pc..][..kc];
                    for (p, value) in column.iter().enumerate() {
                        dst[p * NR + j] = *value;
                    }
                } else {
                    for p in 0..kc {
                        dst[p * NR + j] = E::ZERO;
                    }
                }
            }
            continue;
        }
        for p in 0..kc {
            let row = &mut dst[p * NR..][..NR];
            let src = (pc + p) * b.row_stride + (jc + cols) * b.col_stride;
            if b.col_stride == 1 {
                row[..valid].copy_from_slice(&b.data[src..src + valid]);
                row[valid..].fill(E::ZERO);
            } else {
                for (j, value) in row.iter_mut().enumerate() {
                    *value = if j < valid {
                        b.data[src + j * b.col_stride]
                    } else {
                        E::ZERO
                    };
                }
            }
        }
    }
}
