//! Losses: each returns the mean loss over the batch (PyTorch's default reduction) and,
//! when asked, writes its gradient with respect to the network's output.
//!
//! A loss that is NaN or infinite is an error (`LossError::NotFinite`), never a number to
//! train on.

pub mod cross_entropy;
pub mod mse;

pub use cross_entropy::{softmax_cross_entropy, IGNORE};
pub use mse::mse;

use crate::error::LossError;
use crate::Float;

fn finite<E: Float>(loss: E) -> Result<E, LossError> {
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(LossError::NotFinite {
            value: loss.to_f64(),
        })
    }
}
