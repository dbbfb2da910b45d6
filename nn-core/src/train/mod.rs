//! Training procedures beyond a single step: truncated backpropagation through time.

pub mod tbptt;

pub use tbptt::{Tbptt, TbpttError, TrainError};
