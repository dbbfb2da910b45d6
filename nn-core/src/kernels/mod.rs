//! Numeric kernels shared by the layers.

pub mod direct;
pub mod fast_math;
pub mod gemm;
pub mod im2col;
pub mod matmul;
pub mod parallel;
pub mod special;
pub mod vector;
pub mod winograd;

pub use gemm::{PackedRhs, Triangle};
pub use im2col::{col2im, im2col, ConvGeometry, ImageColumns};
pub use matmul::{
    matmul, matmul_bias, matmul_prepacked, matmul_source, matmul_triangular, MatMut, MatRef,
};
