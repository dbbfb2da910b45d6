//! Matrix multiplication over strided views: `C (+)= A · B`.
//!
//! Transposes are strides, never copies: a linear layer's `X · Wᵀ` reads `W` (`[out, in]`,
//! row-major) with its strides swapped. Small products (a layer of a tiny MLP, batch 1) run in
//! hand-written loops with many accumulators, where a library call's setup would dominate;
//! large ones go to the packed, blocked product in `gemm.rs` and, above a size where it pays,
//! are split over both cores. The thresholds come from `cargo bench` (see benches/README.md).

use std::marker::PhantomData;

use crate::kernels::gemm::{
    pack_on_both_cores, packed_len, reads_in_place, PackedRhs, PanelSource, Triangle,
};
use crate::kernels::parallel::{join, meet, second_core_idle};
use crate::kernels::vector::dot;
use crate::Float;

/// Below this many multiply-adds the simple loops beat packing.
const SMALL_PRODUCT: usize = 48 * 1024;
/// Above this many multiply-adds splitting one product over the threads pays.
const PARALLEL_PRODUCT: usize = 1 << 20;
/// Products at least this many times deeper than they are tall and wide split by depth.
const DEEP_PRODUCT: usize = 2;

/// A read-only strided matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Copy, Clone, Debug)]
pub struct MatRef<'a, E> {
    pub data: &'a [E],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A writable strided matrix view.
#[derive(Debug)]
pub struct MatMut<'a, E> {
    pub data: &'a mut [E],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A writable strided view that can be cut into disjoint column or row ranges and handed to
/// another thread: what `split_at_mut` is to a slice, for matrices whose rows interleave in
/// memory once cut by columns. It is made only from a `MatMut` (an exclusive borrow) or by
/// splitting another view, so two views never cover the same element.
pub struct OutputView<'a, E> {
    ptr: *mut E,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
    /// A row added to every row of C where a product writes it without accumulating (a linear
    /// layer's bias, added as the tiles are stored instead of by a pass of its own).
    bias: Option<&'a [E]>,
    borrow: PhantomData<&'a mut [E]>,
}

// SAFETY: a view is an exclusive borrow of the elements it covers (see the type's doc), like a
// `&mut [E]`, and a shared borrow of its bias row, so sending it to another thread is sound
// when `E` is `Send` and `Sync`.
unsafe impl<E: Send + Sync> Send for OutputView<'_, E> {}

impl<'a, E: Copy> OutputView<'a, E> {
    /// Takes over `c`. Panics if the view reaches past its slice or if two of its positions
    /// share an element (a layout no caller here uses).
    pub fn new(c: MatMut<'a, E>) -> Self {
        assert!(c.fits(), "matmul: the output view reaches past its buffer");
        let injective = c.rows <= 1
            || c.cols <= 1
            || c.row_stride > (c.cols - 1) * c.col_stride
            || c.col_stride > (c.rows - 1) * c.row_stride;
        assert!(
            injective,
            "matmul: the output view covers some elements twice"
        );
        Self {
            ptr: c.data.as_mut_ptr(),
            rows: c.rows,
            cols: c.cols,
            row_stride: c.row_stride,
            col_stride: c.col_stride,
            bias: None,
            borrow: PhantomData,
        }
    }

    /// The same view with `bias` (one value per column, or none) added to each row that a
    /// product stores without accumulating.
    pub fn with_bias(self, bias: Option<&'a [E]>) -> Self {
        if let Some(bias) = bias {
            assert_eq!(bias.len(), self.cols, "matmul: a bias of the wrong width");
        }
        Self { bias, ..self }
    }

    /// The bias of columns `j..j + len`, if the view has one.
    #[inline(always)]
    pub fn bias(&self, j: usize, len: usize) -> Option<&'a [E]> {
        self.bias.map(|bias| &bias[j..j + len])
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Columns `..at` and `at..`.
    pub fn split_columns(self, at: usize) -> (Self, Self) {
        assert!(at <= self.cols);
        // SAFETY: `at * col_stride` stays within the original allocation (the view fits its
        // buffer and `at <= cols`); when `at == cols` the right view is empty and never read.
        let right = unsafe {
            self.ptr.add(if at < self.cols {
                at * self.col_stride
            } else {
                0
            })
        };
        let (bias_left, bias_right) = match self.bias {
            Some(bias) => (Some(&bias[..at]), Some(&bias[at..])),
            None => (None, None),
        };
        (
            Self {
                cols: at,
                bias: bias_left,
                ..self
            },
            Self {
                ptr: right,
                cols: self.cols - at,
                bias: bias_right,
                ..self
            },
        )
    }

    /// Rows `..at` and `at..`.
    pub fn split_rows(self, at: usize) -> (Self, Self) {
        assert!(at <= self.rows);
        // SAFETY: as in `split_columns`, with rows.
        let bottom = unsafe {
            self.ptr.add(if at < self.rows {
                at * self.row_stride
            } else {
                0
            })
        };
        (
            Self { rows: at, ..self },
            Self {
                ptr: bottom,
                rows: self.rows - at,
                ..self
            },
        )
    }

    /// Row `i`, columns `j..j + len`, as a slice when the columns are contiguous.
    #[inline(always)]
    pub fn row_segment(&mut self, i: usize, j: usize, len: usize) -> Option<&mut [E]> {
        if self.col_stride != 1 {
            return None;
        }
        assert!(i < self.rows && j + len <= self.cols);
        // SAFETY: the segment lies inside the view (asserted), which fits its buffer and is the
        // only view of these elements; the slice borrows `self` mutably, so no other access
        // through this view overlaps it.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.row_stride + j), len) })
    }

    /// Pointers to `(i, j)` and the rows below it, up to `R` rows or the view's last, each the
    /// start of `len` contiguous elements, with how many rows there are (the other pointers
    /// must not be used): when the columns `j..j + len` lie inside the view and are contiguous.
    /// The rows are distinct, so the blocks behind the pointers never overlap; they stay valid
    /// while the view is not used otherwise.
    #[inline(always)]
    pub fn row_block<const R: usize>(
        &mut self,
        i: usize,
        j: usize,
        len: usize,
    ) -> Option<([*mut E; R], usize)> {
        if self.col_stride != 1 || i >= self.rows || j + len > self.cols {
            return None;
        }
        let rows = R.min(self.rows - i);
        let pointers = std::array::from_fn(|r| {
            self.ptr
                .wrapping_add((i + r.min(rows - 1)) * self.row_stride + j)
        });
        Some((pointers, rows))
    }

    /// Asks the CPU to bring the rows `i..i + rows` of columns `j..j + len` into cache (a
    /// micro-kernel prefetches the tile of C it will update while it computes). A hint only.
    #[inline(always)]
    pub fn prefetch(&self, i: usize, j: usize, rows: usize, len: usize) {
        #[cfg(target_arch = "x86_64")]
        if self.col_stride == 1 && len > 0 {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            for r in i..(i + rows).min(self.rows) {
                let first = r * self.row_stride + j;
                let last = first + len.min(self.cols - j) - 1;
                for at in [first, last] {
                    let address = self.ptr.wrapping_add(at) as *const i8;
                    // SAFETY: SSE is part of every x86_64 CPU, and a prefetch is only a hint: it
                    // never faults and reads nothing into the program, whatever the address.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(address) };
                }
            }
        }
        let _ = (i, j, rows, len);
    }

    /// Sets element `(i, j)` to `value` (plus the bias of column `j`), or adds `value` to it.
    #[inline(always)]
    pub fn store(&mut self, i: usize, j: usize, value: E, add: bool)
    where
        E: std::ops::Add<Output = E>,
    {
        assert!(i < self.rows && j < self.cols);
        let first = match self.bias {
            Some(bias) => value + bias[j],
            None => value,
        };
        // SAFETY: `(i, j)` is inside the view (asserted), the view fits its buffer (checked in
        // `new`, and splits only shrink it) and no other view covers this element.
        unsafe {
            let out = self.ptr.add(i * self.row_stride + j * self.col_stride);
            *out = if add { *out + value } else { first };
        }
    }
}

impl<'a, E> MatRef<'a, E> {
    /// A row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [E], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major `rows x cols` matrix stored in `data` (a `cols x rows` view).
    pub fn transposed(data: &'a [E], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows: cols,
            cols: rows,
            row_stride: 1,
            col_stride: cols,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> E
    where
        E: Copy,
    {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

impl<'a, E> MatMut<'a, E> {
    /// A row-major `rows x cols` matrix.
    pub fn row_major(data: &'a mut [E], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `C = A · B`, or `C += A · B` when `accumulate` is set.
///
/// Panics if the views' dimensions disagree or a view reaches past its slice: callers are the
/// layers, whose shapes are fixed by their types, so a mismatch is a bug in this crate.
pub fn matmul<E: Float>(a: MatRef<'_, E>, b: MatRef<'_, E>, c: MatMut<'_, E>, accumulate: bool) {
    product(a, b, c, None, accumulate, Triangle::Full)
}

/// `C = A · B + 1 biasᵀ`: `bias` (one value per column) added to every row, as the product
/// stores its tiles (a linear layer's `X Wᵀ + b`, without a pass that first fills C with `b`).
pub fn matmul_bias<E: Float>(a: MatRef<'_, E>, b: MatRef<'_, E>, c: MatMut<'_, E>, bias: &[E]) {
    product(a, b, c, Some(bias), false, Triangle::Full)
}

/// [`matmul`] for a product with a triangular operand or result (see [`Triangle`]), which
/// skips the work that the triangle makes zero or unread. Such a product runs on one core:
/// the triangle is stated for whole rows and columns, which a split would shift.
pub fn matmul_triangular<E: Float>(
    a: MatRef<'_, E>,
    b: MatRef<'_, E>,
    c: MatMut<'_, E>,
    accumulate: bool,
    triangle: Triangle,
) {
    product(a, b, c, None, accumulate, triangle)
}

/// `C = A · B` (`+ 1 biasᵀ` with a bias, `+ C` when accumulating; not both), skipping what
/// `triangle` allows.
fn product<E: Float>(
    a: MatRef<'_, E>,
    b: MatRef<'_, E>,
    c: MatMut<'_, E>,
    bias: Option<&[E]>,
    accumulate: bool,
    triangle: Triangle,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && c.rows == m && c.cols == n,
        "matmul: [{m}x{k}] · [{}x{n}] into [{}x{}]",
        b.rows,
        c.rows,
        c.cols
    );
    assert!(
        a.fits() && b.fits() && c.fits(),
        "matmul: a view reaches past its buffer"
    );
    if let Some(bias) = bias {
        assert!(
            bias.len() == n && !accumulate,
            "matmul: a bias of {} values for {n} columns (or with accumulate)",
            bias.len()
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    let work = m * n * k;
    // Products in dot-product form (`X · Wᵀ`) that `gemm.rs` reads in place, without packing.
    let in_place = E::DOT_TILES && reads_in_place(&a, &b);
    if k == 0 || (work <= SMALL_PRODUCT && !in_place) {
        // The simple loops take the bias the plain way: C filled with it, then accumulated.
        if let Some(bias) = bias {
            for i in 0..m {
                for (j, value) in bias.iter().enumerate() {
                    c.data[i * c.row_stride + j * c.col_stride] = *value;
                }
            }
        } else if !accumulate && k == 0 {
            for i in 0..m {
                for j in 0..n {
                    c.data[i * c.row_stride + j * c.col_stride] = E::ZERO;
                }
            }
        }
        if k > 0 {
            small_matmul(a, b, c, accumulate || bias.is_some());
        }
        return;
    }
    let output = |c| OutputView::new(c).with_bias(bias);
    if triangle != Triangle::Full {
        E::packed_gemm(a, b, output(c), accumulate, triangle);
        return;
    }
    match split(m, k, n, in_place, true) {
        Split::Depth(half) => by_depth_halves(a, b, c, bias, half, accumulate),
        Split::Columns(half) => {
            let (left, right) = output(c).split_columns(half);
            let b_left = MatRef { cols: half, ..b };
            let b_right = MatRef {
                data: &b.data[half * b.col_stride..],
                cols: n - half,
                ..b
            };
            join(
                || E::packed_gemm(a, b_left, left, accumulate, Triangle::Full),
                || E::packed_gemm(a, b_right, right, accumulate, Triangle::Full),
            );
        }
        Split::Rows => {
            let rows_of = |a: MatRef<'_, E>, c: OutputView<'_, E>| {
                E::packed_gemm(a, b, c, accumulate, Triangle::Full)
            };
            let packed = packed_len(k, n);
            if in_place {
                by_row_chunks(a, output(c), k * n, rows_of)
            } else if packed <= SHARED_RHS {
                // A small B is packed once, by both cores, into panels that both then read.
                E::with_partial_sums(packed, |panels| {
                    let b = pack_on_both_cores(b, panels);
                    by_row_chunks(a, output(c), packed, |a, c| {
                        E::prepacked_gemm(a, b, c, accumulate)
                    })
                })
            } else {
                // A larger one by each core for its half, block by block, as the product goes.
                by_row_halves(a, output(c), rows_of)
            }
        }
        Split::Whole => E::packed_gemm(a, b, output(c), accumulate, Triangle::Full),
    }
}

/// How a product is shared between the two cores.
enum Split {
    /// Wide: the columns of B and C before and after this one, so each core packs (or reads)
    /// only its part of B.
    Columns(usize),
    /// Tall: the rows of A and C, in halves.
    Rows,
    /// Deep (a weight gradient `dYᵀ X` over a batch of tokens): the depth before and after this
    /// step, each core packing only its part of both operands; the second core's partial
    /// product is added to C at the end.
    Depth(usize),
    /// Too small to be worth a second core.
    Whole,
}

/// The split of an `[m x k] · [k x n]` product, by depth only if `by_depth` and the operands
/// are packed. (Dot-product tiles, which read B in place, split by rows once A has many: each
/// core then reads all of B but writes whole rows of C.)
fn split(m: usize, k: usize, n: usize, in_place: bool, by_depth: bool) -> Split {
    if m * n * k < PARALLEL_PRODUCT {
        Split::Whole
    } else if by_depth && !in_place && k >= DEEP_PRODUCT * m.max(n) && second_core_idle() {
        // (Inside another split, both halves would run here, adding C twice for nothing. A
        // matrix-vector product, read in place, is bound by reading the matrix: its columns
        // split as well, without the partial sums.)
        Split::Depth((k / 2).next_multiple_of(8))
    } else if n >= m && n >= 32 && !(in_place && m >= 16) {
        Split::Columns((n / 2).next_multiple_of(16).min(n))
    } else if m >= 16 {
        Split::Rows
    } else {
        Split::Whole
    }
}

/// `C (+)= A[:, ..half] · B[..half, :]` (plus the bias, if any) on this core and
/// `A[:, half..] · B[half.., :]` into a buffer on the other, added to C once both are done.
fn by_depth_halves<E: Float>(
    a: MatRef<'_, E>,
    b: MatRef<'_, E>,
    c: MatMut<'_, E>,
    bias: Option<&[E]>,
    half: usize,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let a_front = MatRef { cols: half, ..a };
    let a_back = MatRef {
        data: &a.data[half * a.col_stride..],
        cols: k - half,
        ..a
    };
    let b_front = MatRef { rows: half, ..b };
    let b_back = MatRef {
        data: &b.data[half * b.row_stride..],
        rows: k - half,
        ..b
    };
    let (row_stride, col_stride) = (c.row_stride, c.col_stride);
    E::with_partial_sums(m * n, |partial| {
        join(
            || {
                let front = MatMut {
                    data: &mut *c.data,
                    ..c
                };
                E::packed_gemm(
                    a_front,
                    b_front,
                    OutputView::new(front).with_bias(bias),
                    accumulate,
                    Triangle::Full,
                )
            },
            || {
                let back = OutputView::new(MatMut::row_major(partial, m, n));
                E::packed_gemm(a_back, b_back, back, false, Triangle::Full)
            },
        );
        if col_stride == 1 && row_stride == n {
            // Row-major C (a weight gradient): contiguous adds, half the rows on each core.
            let add = |c: &mut [E], partial: &[E]| {
                for (c, value) in c.iter_mut().zip(partial) {
                    *c += *value;
                }
            };
            let (c_top, c_bottom) = c.data[..m * n].split_at_mut(m / 2 * n);
            let (p_top, p_bottom) = partial.split_at(m / 2 * n);
            join(|| add(c_top, p_top), || add(c_bottom, p_bottom));
            return;
        }
        for (i, partial_row) in partial.chunks_exact(n).enumerate() {
            for (j, value) in partial_row.iter().enumerate() {
                c.data[i * row_stride + j * col_stride] += *value;
            }
        }
    });
}

/// Checks the shapes of `A · B` into `c` for `what` (B known by its shape, packed beforehand
/// or packing itself), and finishes an empty product (a zero depth clears C unless
/// accumulating). Returns `c` when there is a product left to compute.
fn nonempty<'c, E: Float>(
    what: &str,
    a: &MatRef<'_, E>,
    (b_rows, n): (usize, usize),
    c: MatMut<'c, E>,
    accumulate: bool,
) -> Option<MatMut<'c, E>> {
    let (m, k) = (a.rows, a.cols);
    assert!(
        b_rows == k && c.rows == m && c.cols == n,
        "{what}: [{m}x{k}] · [{b_rows}x{n}] into [{}x{}]",
        c.rows,
        c.cols
    );
    assert!(
        a.fits() && c.fits(),
        "{what}: a view reaches past its buffer"
    );
    if m == 0 || n == 0 || k == 0 {
        if k == 0 {
            // Let `matmul` clear C (or leave it) as for any product.
            matmul(*a, MatRef::row_major(&[], 0, n), c, accumulate);
        }
        return None;
    }
    Some(c)
}

/// `C = A · B`, or `C += A · B`, for a B that packs its own panels (a convolution's column
/// matrix made straight from the images, see [`PanelSource`]), split over both cores like
/// [`matmul`].
pub fn matmul_source<E: Float, S: PanelSource<E>>(
    a: MatRef<'_, E>,
    b: &S,
    c: MatMut<'_, E>,
    accumulate: bool,
) {
    let Some(c) = nonempty("matmul_source", &a, b.shape(), c, accumulate) else {
        return;
    };
    let (m, k, n) = (a.rows, a.cols, c.cols);
    let out = OutputView::new(c);
    // Not by depth: a source is split by its columns (a convolution's positions), and the
    // deep products of a convolution (512 x 4608 x 196 in VGG16) are tall enough for rows.
    match split(m, k, n, false, false) {
        Split::Whole | Split::Depth(_) => E::source_gemm(a, b, 0..n, out, accumulate),
        Split::Columns(half) => {
            let (left, right) = out.split_columns(half);
            join(
                || E::source_gemm(a, b, 0..half, left, accumulate),
                || E::source_gemm(a, b, half..n, right, accumulate),
            );
        }
        Split::Rows => by_row_halves(a, out, |a, c| E::source_gemm(a, b, 0..n, c, accumulate)),
    }
}

/// `C[:, j..j + W] (+)= A · B[:, j..j + W]` for a row-major B and C, row by row of C: the `W`
/// accumulators stay in registers for the whole depth instead of C being loaded and stored
/// once per depth step.
#[inline(always)]
fn axpy_block<E: Float, const W: usize>(
    a: &MatRef<'_, E>,
    b: &MatRef<'_, E>,
    c: &mut MatMut<'_, E>,
    j: usize,
    accumulate: bool,
) {
    for i in 0..a.rows {
        let mut acc = [E::ZERO; W];
        for p in 0..a.cols {
            let factor = a.at(i, p);
            let b_row: &[E; W] = b.data[p * b.row_stride + j..][..W]
                .try_into()
                .expect("W columns");
            for (acc, b) in acc.iter_mut().zip(b_row) {
                *acc = factor.mul_add(*b, *acc);
            }
        }
        let c_row = &mut c.data[i * c.row_stride + j..][..W];
        for (c, acc) in c_row.iter_mut().zip(acc) {
            *c = if accumulate { *c + acc } else { acc };
        }
    }
}

/// `C = A · B`, or `C += A · B`, for a B packed beforehand (a weight used by many products,
/// see [`PackedRhs`]). Large products are split by rows over both cores, sharing B's panels.
pub fn matmul_prepacked<E: Float>(
    a: MatRef<'_, E>,
    b: &PackedRhs<E>,
    c: MatMut<'_, E>,
    accumulate: bool,
) {
    let Some(c) = nonempty("matmul_prepacked", &a, b.shape(), c, accumulate) else {
        return;
    };
    let (m, k, n) = (a.rows, a.cols, c.cols);
    let out = OutputView::new(c);
    let b = b.panels();
    if m * n * k >= PARALLEL_PRODUCT && m >= 16 {
        by_row_chunks(a, out, packed_len(k, n), |a, c| {
            E::prepacked_gemm(a, b, c, accumulate)
        });
    } else {
        E::prepacked_gemm(a, b, out, accumulate);
    }
}

/// Runs `product` on the top and on the bottom half of the rows of A and C, one per core.
fn by_row_halves<E: Float>(
    a: MatRef<'_, E>,
    out: OutputView<'_, E>,
    product: impl Fn(MatRef<'_, E>, OutputView<'_, E>) + Sync,
) {
    let half = a.rows / 2;
    let (top, bottom) = out.split_rows(half);
    let a_top = MatRef { rows: half, ..a };
    let a_bottom = MatRef {
        data: &a.data[half * a.row_stride..],
        rows: a.rows - half,
        ..a
    };
    join(|| product(a_top, top), || product(a_bottom, bottom));
}

/// The most pieces `by_row_chunks` cuts a product's rows into.
const ROW_CHUNKS: usize = 32;
/// Rows per piece of `by_row_chunks` come in multiples of this: whole register tiles of every
/// kernel (6 rows for the AVX2 f32 one, 4 for the others, 3 for dot-product tiles).
const CHUNK_ROWS: usize = 12;
/// Products with rows for fewer pieces than this take fixed halves.
const MIN_ROW_CHUNKS: usize = 8;
/// The most values of B that `by_row_chunks` lets every piece read again (256 KiB of f32,
/// half this machine's L2): each piece runs over all of B, where halves read B's blocks once
/// per 96 rows. W7's right operands are at most this size.
const SHARED_RHS: usize = 1 << 16;

/// Runs `product` on pieces of the rows of A and C, which the two cores take from both ends
/// until they meet (`parallel::meet`). Fixed halves left one core waiting for the other: the
/// two cores of this machine run at speeds that vary from moment to moment (a W7 product's
/// two halves differed by 15% either way in one product out of five). Handing the pieces out
/// in turn instead was slower than halves.
///
/// `b_len` is the number of values of B each piece reads: above `SHARED_RHS`, halves.
fn by_row_chunks<E: Float>(
    a: MatRef<'_, E>,
    out: OutputView<'_, E>,
    b_len: usize,
    product: impl Fn(MatRef<'_, E>, OutputView<'_, E>) + Sync,
) {
    let m = a.rows;
    if !second_core_idle() {
        // Inside another split (a convolution's half batch): one core would take every
        // piece, each a product of its own with B's panels reused over fewer rows.
        return product(a, out);
    }
    if m < MIN_ROW_CHUNKS * CHUNK_ROWS || b_len > SHARED_RHS {
        return by_row_halves(a, out, product);
    }
    let chunk = m.div_ceil(ROW_CHUNKS).next_multiple_of(CHUNK_ROWS);
    meet(
        m.div_ceil(chunk),
        out,
        |view, pieces| {
            let rows = view.rows();
            view.split_rows((pieces * chunk).min(rows))
        },
        |i, piece| {
            let a_piece = MatRef {
                data: &a.data[i * chunk * a.row_stride..],
                rows: piece.rows(),
                ..a
            };
            product(a_piece, piece)
        },
    );
}

/// Loops for small products, picking the form whose inner loop is contiguous.
fn small_matmul<E: Float>(
    a: MatRef<'_, E>,
    b: MatRef<'_, E>,
    mut c: MatMut<'_, E>,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if a.col_stride == 1 && b.row_stride == 1 {
        // Rows of A against columns of B, both contiguous: one dot product per output.
        for i in 0..m {
            let a_row = &a.data[i * a.row_stride..][..k];
            for j in 0..n {
                let b_col = &b.data[j * b.col_stride..][..k];
                let out = &mut c.data[i * c.row_stride + j * c.col_stride];
                let value = dot(a_row, b_col);
                *out = if accumulate { *out + value } else { value };
            }
        }
    } else if b.col_stride == 1 && c.col_stride == 1 {
        // Rows of B and C contiguous: C[i, :] += A[i, p] · B[p, :], 32 (then 8, then 1)
        // columns of C at a time held in registers over the whole depth.
        let mut j = 0;
        while j + 32 <= n {
            axpy_block::<E, 32>(&a, &b, &mut c, j, accumulate);
            j += 32;
        }
        while j + 8 <= n {
            axpy_block::<E, 8>(&a, &b, &mut c, j, accumulate);
            j += 8;
        }
        while j < n {
            axpy_block::<E, 1>(&a, &b, &mut c, j, accumulate);
            j += 1;
        }
    } else {
        for i in 0..m {
            for j in 0..n {
                let mut value = E::ZERO;
                for p in 0..k {
                    value += a.at(i, p) * b.at(p, j);
                }
                let out = &mut c.data[i * c.row_stride + j * c.col_stride];
                *out = if accumulate { *out + value } else { value };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &MatRef<'_, f64>, b: &MatRef<'_, f64>) -> Vec<f64> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols).map(|p| a.at(i, p) * b.at(p, j)).sum();
            }
        }
        out
    }

    fn values(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 + seed) * 0.731).sin()).collect()
    }

    fn view<E>(data: &[E], rows: usize, cols: usize, transposed: bool) -> MatRef<'_, E> {
        if transposed {
            MatRef::transposed(data, cols, rows)
        } else {
            MatRef::row_major(data, rows, cols)
        }
    }

    /// A and B of the given lengths in f64 (from `seed` and `seed + 1`) and rounded to f32.
    fn operands(a_len: usize, b_len: usize, seed: f64) -> (Vec<f64>, Vec<f64>, Vec<f32>, Vec<f32>) {
        let (a, b) = (values(a_len, seed), values(b_len, seed + 1.0));
        let narrow = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        let (a32, b32) = (narrow(&a), narrow(&b));
        (a, b, a32, b32)
    }

    #[test]
    fn f32_products_match_f64_in_every_form_and_size() {
        for &(m, k, n) in &[
            (1, 7, 1),
            (3, 8, 4),
            (5, 19, 7),
            (32, 64, 32),
            (31, 37, 10),
            (2, 16, 9),
            (64, 784, 512),
            (70, 64, 513),
            // Packed, with a depth that is not a multiple of 8 and a partial last panel.
            (40, 301, 100),
            // Few rows: dot products at any size.
            (2, 700, 300),
            // Deep: split by depth when the second core is free.
            (40, 1100, 30),
            // A transposed A of 19 whole panels (packed in groups of 8, 8 and 3) and 4 rows.
            (118, 40, 50),
        ] {
            let (a64, b64, a32, b32) = operands(m * k, k * n, 3.0);
            let forms = [(false, false), (true, true), (false, true), (true, false)];
            for (ta, tb) in forms {
                let expected = naive(&view(&a64[..], m, k, ta), &view(&b64[..], k, n, tb));
                let mut c = vec![0.5f32; m * n];
                matmul(
                    view(&a32[..], m, k, ta),
                    view(&b32[..], k, n, tb),
                    MatMut::row_major(&mut c, m, n),
                    true,
                );
                for (x, y) in c.iter().zip(&expected) {
                    let tolerance = 1e-4 * (k as f64).sqrt();
                    assert!(
                        (*x as f64 - 0.5 - y).abs() < tolerance,
                        "m={m} k={k} n={n} {ta} {tb}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_strided_row_major_a_is_read_in_place() {
        // Rows of A 3x wider than the product (one head inside a `[T, 3D]` projection), a
        // partial last panel (40 = 6 x 6 + 4 rows) and two depth blocks (k = 600).
        for &(m, k, n) in &[(40, 96, 64), (40, 600, 40)] {
            let stride = 3 * k;
            let (a64, b64, a32, b32) = operands(m * stride, k * n, 5.0);
            fn strided<E>(data: &[E], rows: usize, cols: usize, stride: usize) -> MatRef<'_, E> {
                MatRef {
                    data,
                    rows,
                    cols,
                    row_stride: stride,
                    col_stride: 1,
                }
            }
            let expected = naive(
                &strided(&a64[..], m, k, stride),
                &view(&b64[..], k, n, false),
            );
            let mut c = vec![0.0f32; m * n];
            matmul(
                strided(&a32[..], m, k, stride),
                view(&b32[..], k, n, false),
                MatMut::row_major(&mut c, m, n),
                false,
            );
            for (x, y) in c.iter().zip(&expected) {
                assert!(
                    (f64::from(*x) - y).abs() < 1e-4 * (k as f64).sqrt(),
                    "m={m} k={k} n={n}: {x} vs {y}"
                );
            }
        }
    }

    /// `A` of `m x k` with the zeros that `triangle` promises.
    fn triangular_a(m: usize, k: usize, triangle: Triangle, seed: f64) -> Vec<f64> {
        let mut a = values(m * k, seed);
        for i in 0..m {
            for p in 0..k {
                let zero = match triangle {
                    Triangle::LowerA => p > i,
                    Triangle::UpperA => p < i,
                    Triangle::Full | Triangle::LowerC => false,
                };
                if zero {
                    a[i * k + p] = 0.0;
                }
            }
        }
        a
    }

    #[test]
    fn triangular_products_match_the_full_product_where_it_is_read() {
        // Square and not, partial panels, and depths over two blocks (k = 600, in f32 and
        // f64); A row-major (read in place in f32) and transposed (packed).
        for &(m, k, n) in &[(64, 64, 32), (70, 70, 40), (40, 600, 50), (600, 40, 600)] {
            for triangle in [Triangle::LowerC, Triangle::LowerA, Triangle::UpperA] {
                for transposed in [false, true] {
                    let a64 = triangular_a(m, k, triangle, 2.0);
                    let a_t: Vec<f64> = (0..m * k).map(|x| a64[(x % m) * k + x / m]).collect();
                    let a_data = if transposed { a_t } else { a64.clone() };
                    let b64 = values(k * n, 3.0);
                    let expected =
                        naive(&view(&a64[..], m, k, false), &view(&b64[..], k, n, false));
                    let read = |i: usize, j: usize| triangle != Triangle::LowerC || j <= i;
                    let mut c = vec![7.0f64; m * n];
                    matmul_triangular(
                        view(&a_data[..], m, k, transposed),
                        view(&b64[..], k, n, false),
                        MatMut::row_major(&mut c, m, n),
                        false,
                        triangle,
                    );
                    let narrow = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
                    let (a32, b32) = (narrow(&a_data), narrow(&b64));
                    let mut c32 = vec![7.0f32; m * n];
                    matmul_triangular(
                        view(&a32[..], m, k, transposed),
                        view(&b32[..], k, n, false),
                        MatMut::row_major(&mut c32, m, n),
                        false,
                        triangle,
                    );
                    for i in 0..m {
                        for j in (0..n).filter(|&j| read(i, j)) {
                            let (e, x, y) = (expected[i * n + j], c[i * n + j], c32[i * n + j]);
                            let what = format!(
                                "{triangle:?} m={m} k={k} n={n} transposed={transposed} ({i}, {j})"
                            );
                            assert!((x - e).abs() < 1e-9, "f64 {what}: {x} vs {e}");
                            assert!(
                                (f64::from(y) - e).abs() < 1e-4 * (k as f64).sqrt(),
                                "f32 {what}: {y} vs {e}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_bias_is_added_to_every_row_on_every_path() {
        // No depth, the simple loops, dot tiles (few rows), packed whole, split by columns,
        // by rows and by depth, and partial panels; in f64 and f32 (A · Bᵀ, a linear layer).
        for &(m, k, n) in &[
            (3, 0, 4),
            (3, 5, 4),
            (2, 700, 300),
            (40, 64, 40),
            (64, 784, 512),
            (1024, 128, 40),
            (40, 1100, 30),
            (70, 64, 513),
        ] {
            let (a64, b64, a32, b32) = operands(m * k, k * n, 4.0);
            let bias64 = values(n, 9.0);
            let bias32: Vec<f32> = bias64.iter().map(|x| *x as f32).collect();
            let plain = naive(&view(&a64[..], m, k, false), &view(&b64[..], k, n, true));
            let mut c64 = vec![f64::NAN; m * n];
            matmul_bias(
                view(&a64[..], m, k, false),
                view(&b64[..], k, n, true),
                MatMut::row_major(&mut c64, m, n),
                &bias64,
            );
            let mut c32 = vec![f32::NAN; m * n];
            matmul_bias(
                view(&a32[..], m, k, false),
                view(&b32[..], k, n, true),
                MatMut::row_major(&mut c32, m, n),
                &bias32,
            );
            for (at, e) in plain.iter().enumerate() {
                let e = e + bias64[at % n];
                let (x, y) = (c64[at], f64::from(c32[at]));
                assert!(
                    (x - e).abs() < 1e-9,
                    "f64 m={m} k={k} n={n} at {at}: {x} vs {e}"
                );
                let tolerance = 1e-4 * (k as f64).sqrt().max(1.0);
                assert!(
                    (y - e).abs() < tolerance,
                    "f32 m={m} k={k} n={n} at {at}: {y} vs {e}"
                );
            }
        }
    }

    #[test]
    fn products_shared_in_row_pieces_match_the_naive_product() {
        // Tall products that both cores take in pieces of rows (`by_row_chunks`): B packed by
        // both cores (two depth blocks at k = 520), a last piece shorter than the others, dot
        // tiles read in place (n <= 12, B transposed), and a B above `SHARED_RHS` (halves,
        // each core packing its own); alone, and nested in a `join`, where the product runs
        // whole on one core.
        for &(m, k, n) in &[
            (200, 128, 100),
            (1000, 64, 40),
            (700, 520, 100),
            (400, 300, 10),
            (700, 600, 120),
        ] {
            let (a64, b64, a32, b32) = operands(m * k, k * n, 6.0);
            let forms = [(false, false), (true, true), (false, true), (true, false)];
            for (nested, (ta, tb)) in [false, true]
                .into_iter()
                .flat_map(|x| forms.map(|f| (x, f)))
            {
                let expected = naive(&view(&a64[..], m, k, ta), &view(&b64[..], k, n, tb));
                let mut c64 = vec![0.5f64; m * n];
                let mut c32 = vec![0.5f32; m * n];
                let mut run = || {
                    let out = MatMut::row_major(&mut c64, m, n);
                    matmul(
                        view(&a64[..], m, k, ta),
                        view(&b64[..], k, n, tb),
                        out,
                        true,
                    );
                    let out = MatMut::row_major(&mut c32, m, n);
                    matmul(
                        view(&a32[..], m, k, ta),
                        view(&b32[..], k, n, tb),
                        out,
                        true,
                    );
                };
                if nested {
                    join(run, || ());
                } else {
                    run();
                }
                for (at, e) in expected.iter().enumerate() {
                    let (x, y) = (c64[at] - 0.5, f64::from(c32[at]) - 0.5);
                    let what = format!("m={m} k={k} n={n} {ta} {tb} nested {nested} at {at}");
                    assert!((x - e).abs() < 1e-9, "f64 {what}: {x} vs {e}");
                    assert!(
                        (y - e).abs() < 1e-4 * (k as f64).sqrt(),
                        "f32 {what}: {y} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn prepacked_products_match_the_naive_product() {
        // Depth blocks (k > 512), partial panels, two blocks of columns with shallow panels
        // (n = 900), rows split over the cores (m x n x k above 2^20; in halves at 40 rows, in
        // pieces at 300), an empty depth.
        for &(m, k, n) in &[
            (5, 7, 3),
            (16, 128, 128),
            (300, 64, 64),
            (13, 600, 37),
            (40, 300, 900),
            (3, 0, 5),
        ] {
            let (a64, b64, a32, b32) = operands(m * k, k * n, 5.0);
            for transposed in [false, true] {
                let expected = naive(
                    &view(&a64[..], m, k, false),
                    &view(&b64[..], k, n, transposed),
                );
                let mut packed = PackedRhs::new(k, n);
                packed.pack(view(&b64[..], k, n, transposed));
                let mut c = vec![0.25; m * n];
                let out = MatMut::row_major(&mut c, m, n);
                matmul_prepacked(view(&a64[..], m, k, false), &packed, out, true);
                for (x, y) in c.iter().zip(&expected) {
                    assert!((x - 0.25 - y).abs() < 1e-9, "f64 m={m} k={k} n={n}");
                }
                let mut packed = PackedRhs::new(k, n);
                packed.pack(view(&b32[..], k, n, transposed));
                let mut c = vec![0.0f32; m * n];
                let out = MatMut::row_major(&mut c, m, n);
                matmul_prepacked(view(&a32[..], m, k, false), &packed, out, false);
                for (x, y) in c.iter().zip(&expected) {
                    let tolerance = 1e-4 * (k as f64).sqrt().max(1.0);
                    assert!((*x as f64 - y).abs() < tolerance, "f32 m={m} k={k} n={n}");
                }
            }
        }
    }

    #[test]
    fn a_product_split_by_depth_adds_both_halves_into_c() {
        // `dYᵀ X` as a weight gradient has it (A transposed), and the other forms; called
        // directly, since `matmul` splits by depth only when the worker is free.
        let (m, k, n) = (24, 1000, 50);
        // A shape `matmul` splits by depth when the worker is free. (Asking `split` itself
        // failed now and then: other tests running at the same time hold the worker.)
        assert!(k >= DEEP_PRODUCT * m.max(n) && m * n * k >= PARALLEL_PRODUCT);
        let a_data = values(m * k, 4.0);
        let b_data = values(k * n, 5.0);
        for (a, b) in [
            (
                MatRef::transposed(&a_data[..], k, m),
                MatRef::row_major(&b_data[..], k, n),
            ),
            (
                MatRef::row_major(&a_data[..], m, k),
                MatRef::transposed(&b_data[..], n, k),
            ),
        ] {
            let expected = naive(&a, &b);
            let mut c = vec![1.0; m * n];
            by_depth_halves(a, b, MatMut::row_major(&mut c, m, n), None, 504, false);
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - y).abs() < 1e-9, "{x} vs {y}");
            }
            by_depth_halves(a, b, MatMut::row_major(&mut c, m, n), None, 496, true);
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - 2.0 * y).abs() < 1e-9, "accumulated: {x} vs {y}");
            }
        }
    }

    #[test]
    fn every_transpose_form_matches_the_naive_product_small_and_large() {
        for &(m, k, n) in &[
            (3, 5, 4),
            // 32-, 8- and 1-column blocks of the small row-major form.
            (4, 9, 45),
            (1, 64, 32),
            (32, 64, 32),
            (64, 300, 70),
            (70, 64, 513),
        ] {
            let a_data = values(m * k, 1.0);
            let b_data = values(k * n, 2.0);
            let forms = [
                (
                    MatRef::row_major(&a_data[..], m, k),
                    MatRef::row_major(&b_data[..], k, n),
                ),
                (
                    MatRef::transposed(&a_data[..], k, m),
                    MatRef::transposed(&b_data[..], n, k),
                ),
                (
                    MatRef::row_major(&a_data[..], m, k),
                    MatRef::transposed(&b_data[..], n, k),
                ),
                (
                    MatRef::transposed(&a_data[..], k, m),
                    MatRef::row_major(&b_data[..], k, n),
                ),
            ];
            for (a, b) in forms {
                let expected = naive(&a, &b);
                let mut c = vec![1.0; m * n];
                matmul(a, b, MatMut::row_major(&mut c, m, n), false);
                for (x, y) in c.iter().zip(&expected) {
                    assert!((x - y).abs() < 1e-9, "m={m} k={k} n={n}: {x} vs {y}");
                }
                matmul(a, b, MatMut::row_major(&mut c, m, n), true);
                for (x, y) in c.iter().zip(&expected) {
                    assert!((x - 2.0 * y).abs() < 1e-9, "accumulate m={m} k={k} n={n}");
                }
            }
        }
    }
}
