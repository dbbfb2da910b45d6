//! Well-known architectures declared with `network!`, with the parameter names of their
//! reference implementations so that published weights load without renaming.

pub mod lenet;
pub mod minilm;
pub mod vgg;

pub use lenet::LeNet5;
pub use minilm::MiniLm;
pub use vgg::{Vgg16, VggSmall};
