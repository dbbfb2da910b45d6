//! Optimizers, with PyTorch's update rules so that hyper-parameters carry over.
//!
//! An optimizer walks the (parameter, gradient) pairs of a module in a fixed order; its state
//! (momentum, moments) is allocated on the first step, so later steps do not allocate.

pub mod adam;
pub mod clip;
pub mod sgd;

pub use adam::Adam;
pub use clip::clip_grad_norm;
pub use sgd::Sgd;

use crate::{Float, Module};

/// Updates a module's parameters from its gradients.
pub trait Optimizer<E: Float> {
    fn step<M: Module<E>>(&mut self, model: &mut M, grads: &M::Grads);
}

/// One state buffer per parameter tensor, created zeroed on first use.
#[derive(Clone, Debug, Default)]
struct StateBuffers<E> {
    buffers: Vec<Vec<E>>,
}

impl<E: Float> StateBuffers<E> {
    /// The buffer of the `index`-th parameter tensor, `len` values long.
    fn get(&mut self, index: usize, len: usize) -> &mut [E] {
        if index == self.buffers.len() {
            self.buffers.push(vec![E::ZERO; len]);
        }
        &mut self.buffers[index]
    }
}
