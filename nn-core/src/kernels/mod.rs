//! Numeric kernels shared by the layers.

pub mod gemm;
pub mod matmul;
pub mod parallel;
pub mod vector;

pub use matmul::{matmul, MatMut, MatRef};
