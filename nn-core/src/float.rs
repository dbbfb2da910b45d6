//! The element types a network can be built over: `f32` (the default) and `f64`
//! (used by the finite-difference gradient checks).

use std::fmt::{Debug, Display};
use std::iter::Sum;

use crate::kernels::gemm::{PackedPanels, PanelSource, Triangle};
use crate::kernels::matmul::OutputView;
use crate::kernels::MatRef;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point element type of a tensor.
pub trait Float:
    Copy
    + Default
    + Debug
    + Display
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    const ZERO: Self;
    const ONE: Self;
    /// The safetensors dtype name of this type (`"F32"` / `"F64"`).
    const DTYPE: safetensors::Dtype;
    /// Size in bytes (4 or 8).
    const BYTES: usize;

    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn tanh(self) -> Self;
    fn sqrt(self) -> Self;
    fn max(self, other: Self) -> Self;
    /// `self * a + b`, fused where the CPU has FMA (call it from code compiled with that
    /// target feature; elsewhere it is a slow software routine).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Runs `f` with this thread's scratch buffer for matrix packing. The buffer only grows,
    /// so after the first products of a given size no call allocates.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
    /// Like `with_scratch`, a second per-thread buffer: the partial product of a matrix
    /// product split by depth, held while the product's packing uses the first.
    fn with_partial_sums<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
    /// Whether `packed_gemm` has a fast path for products whose operands are both contiguous
    /// along the depth (rows of A, columns of B), used even for small products.
    const DOT_TILES: bool;
    /// The packed matrix product for this type (see `kernels::gemm`).
    fn packed_gemm(
        a: MatRef<'_, Self>,
        b: MatRef<'_, Self>,
        c: OutputView<'_, Self>,
        accumulate: bool,
        triangle: Triangle,
    );
    /// The packed matrix product with B packed beforehand (see `kernels::gemm::PackedRhs`).
    fn prepacked_gemm(
        a: MatRef<'_, Self>,
        b: PackedPanels<'_, Self>,
        c: OutputView<'_, Self>,
        accumulate: bool,
    );
    /// The packed matrix product `A · B[:, columns]` for a B that packs its own panels (see
    /// `kernels::gemm::PanelSource`).
    fn source_gemm<S: PanelSource<Self>>(
        a: MatRef<'_, Self>,
        b: &S,
        columns: std::ops::Range<usize>,
        c: OutputView<'_, Self>,
        accumulate: bool,
    );
    /// Writes `B[pc..pc + kc, jc..jc + nc]` as the 16-column panels of a prepacked B (see
    /// `kernels::gemm::PackedRhs`).
    fn pack_panels(
        b: &MatRef<'_, Self>,
        pc: usize,
        kc: usize,
        jc: usize,
        nc: usize,
        out: &mut [Self],
    );
    /// The direct convolution's micro-kernels for this type (see `kernels::direct`).
    fn direct_kernels() -> crate::kernels::direct::Kernels<Self>;
    fn is_finite(self) -> bool;
    /// Little-endian bytes, as safetensors stores them.
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads one value from exactly `Self::BYTES` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
}

/// Runs `f` with the first `len` values of this thread's `buffer`, which only grows, so after
/// the first calls of a given size none allocates.
fn with_thread_buffer<T: Copy + Default + 'static, R>(
    buffer: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    buffer.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len {
                buffer.resize(len, T::default());
            }
            f(&mut buffer[..len])
        }
        // Re-entered on this thread (a product inside a product): use a fresh buffer.
        Err(_) => f(&mut vec![T::default(); len]),
    })
}

macro_rules! impl_float {
    ($t:ty, $dtype:ident, $gemm:path, $prepacked:path, $pack:path, $source:path, $direct:path, $dot_tiles:expr, $exp:path, $tanh:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const DTYPE: safetensors::Dtype = safetensors::Dtype::$dtype;
            const BYTES: usize = std::mem::size_of::<$t>();
            const DOT_TILES: bool = $dot_tiles;

            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            fn packed_gemm(a: MatRef<'_, Self>, b: MatRef<'_, Self>, c: OutputView<'_, Self>, accumulate: bool, triangle: Triangle) {
                $gemm(a, b, c, accumulate, triangle)
            }
            fn prepacked_gemm(a: MatRef<'_, Self>, b: PackedPanels<'_, Self>, c: OutputView<'_, Self>, accumulate: bool) {
                $prepacked(a, b, c, accumulate)
            }
            fn pack_panels(b: &MatRef<'_, Self>, pc: usize, kc: usize, jc: usize, nc: usize, out: &mut [Self]) {
                $pack(b, pc, kc, jc, nc, out)
            }
            fn source_gemm<S: PanelSource<Self>>(a: MatRef<'_, Self>, b: &S, columns: std::ops::Range<usize>, c: OutputView<'_, Self>, accumulate: bool) {
                $source(a, b, columns, c, accumulate)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                thread_local! {
                    static SCRATCH: std::cell::RefCell<Vec<$t>> = const { std::cell::RefCell::new(Vec::new()) };
                }
                with_thread_buffer(&SCRATCH, len, f)
            }
            fn with_partial_sums<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                thread_local! {
                    static PARTIAL: std::cell::RefCell<Vec<$t>> = const { std::cell::RefCell::new(Vec::new()) };
                }
                with_thread_buffer(&PARTIAL, len, f)
            }
            fn direct_kernels() -> crate::kernels::direct::Kernels<Self> {
                $direct()
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Self {
                let mut buf = [0u8; std::mem::size_of::<$t>()];
                buf.copy_from_slice(bytes);
                <$t>::from_le_bytes(buf)
            }
        }
    };
}

// f32 uses the vectorisable exp and tanh of `kernels::fast_math` (within 3e-7); f64, the
// type of the gradient checks, uses the library's.
impl_float!(
    f32,
    F32,
    crate::kernels::gemm::gemm_f32,
    crate::kernels::gemm::gemm_prepacked_f32,
    crate::kernels::gemm::pack_panels_f32,
    crate::kernels::gemm::gemm_source_f32,
    crate::kernels::direct::f32_kernels,
    cfg!(target_arch = "x86_64"),
    crate::kernels::fast_math::exp,
    crate::kernels::fast_math::tanh
);
impl_float!(
    f64,
    F64,
    crate::kernels::gemm::gemm_generic::<f64>,
    crate::kernels::gemm::gemm_prepacked_generic::<f64>,
    crate::kernels::gemm::pack_panels_generic::<f64>,
    crate::kernels::gemm::gemm_source_generic,
    crate::kernels::direct::generic_kernels::<f64>,
    false,
    f64::exp,
    f64::tanh
);
