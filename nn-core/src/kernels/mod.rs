//! Numeric kernels shared by the layers.

pub mod matmul;
pub mod vector;

pub use matmul::{matmul, MatMut, MatRef};
