//! Layers: each one's forward and backward side by side, with the formula in its doc comment
//! and a finite-difference gradient check beside it.

pub mod activation;
pub mod linear;
pub mod softmax;

pub use activation::{Activation, Pointwise, Relu, ReluFn, Sigmoid, SigmoidFn, Tanh, TanhFn};
pub use linear::Linear;
pub use softmax::Softmax;
