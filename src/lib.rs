#![doc = include_str!("../README.md")]

// Lets `network!`'s generated `::nn::` paths resolve inside this crate too (the model zoo).
extern crate self as nn;

pub mod models;

pub use nn_core::*;
pub use nn_macros::network;

/// Everything a model file usually needs.
pub mod prelude {
    pub use nn_core::init::rng;
    pub use nn_core::io::{load, save};
    pub use nn_core::loss::{mse, softmax_cross_entropy};
    pub use nn_core::optim::{Adam, Optimizer, Sgd};
    pub use nn_core::{Float, Module, Rank1, Rank2, Rank3, Shape, Tensor, Workspace};
    pub use nn_macros::network;
}
