//! Stochastic gradient descent with momentum and weight decay.

use super::{Optimizer, StateBuffers};
use crate::{Float, Module};

/// PyTorch's `torch.optim.SGD`. Per parameter `p` with gradient `g`:
///
/// ```text
/// g ← g + λ p                       (weight decay λ)
/// b ← g on the first step, else μ b + (1 - τ) g      (momentum μ, dampening τ)
/// g ← g + μ b if Nesterov, else b
/// p ← p - η g
/// ```
#[derive(Clone, Debug)]
pub struct Sgd<E: Float = f32> {
    pub learning_rate: E,
    pub momentum: E,
    pub dampening: E,
    pub weight_decay: E,
    pub nesterov: bool,
    velocity: StateBuffers<E>,
    started: bool,
}

impl<E: Float> Sgd<E> {
    /// Plain SGD: `p ← p - η g`.
    pub fn new(learning_rate: E) -> Self {
        Self {
            learning_rate,
            momentum: E::ZERO,
            dampening: E::ZERO,
            weight_decay: E::ZERO,
            nesterov: false,
            velocity: StateBuffers::default(),
            started: false,
        }
    }

    pub fn momentum(mut self, momentum: E) -> Self {
        self.momentum = momentum;
        self
    }

    pub fn dampening(mut self, dampening: E) -> Self {
        self.dampening = dampening;
        self
    }

    pub fn weight_decay(mut self, weight_decay: E) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }
}

impl<E: Float> Optimizer<E> for Sgd<E> {
    fn step<M: Module<E>>(&mut self, model: &mut M, grads: &M::Grads) {
        let Self {
            learning_rate: lr,
            momentum: mu,
            dampening,
            weight_decay: wd,
            nesterov,
            ..
        } = *self;
        let first = !self.started;
        let mut index = 0;
        model.visit_params_and_grads(grads, &mut |params, grads| {
            let velocity = if mu != E::ZERO {
                Some(self.velocity.get(index, params.len()))
            } else {
                None
            };
            index += 1;
            match velocity {
                None => {
                    for (p, g) in params.iter_mut().zip(grads) {
                        *p -= lr * (*g + wd * *p);
                    }
                }
                Some(velocity) => {
                    for ((p, g), b) in params.iter_mut().zip(grads).zip(velocity.iter_mut()) {
                        let g = *g + wd * *p;
                        *b = if first {
                            g
                        } else {
                            mu * *b + (E::ONE - dampening) * g
                        };
                        let update = if nesterov { g + mu * *b } else { *b };
                        *p -= lr * update;
                    }
                }
            }
        });
        self.started = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Linear;

    fn layer(values: [f64; 2]) -> Linear<1, 1, f64> {
        Linear {
            weight: vec![values[0]],
            bias: vec![values[1]],
        }
    }

    #[test]
    fn momentum_and_weight_decay_follow_pytorch() {
        // torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01), p = 1, grad = 0.5
        // for two steps: p = 0.9490, then 0.8528... (computed by hand from the rule above).
        let mut model = layer([1.0, 0.0]);
        let grads = layer([0.5, 0.0]);
        let mut sgd = Sgd::new(0.1).momentum(0.9).weight_decay(0.01);
        sgd.step(&mut model, &grads);
        assert!((model.weight[0] - (1.0 - 0.1 * 0.51)).abs() < 1e-12);
        let g2 = 0.5 + 0.01 * 0.949;
        let b2 = 0.9 * 0.51 + g2;
        sgd.step(&mut model, &grads);
        assert!((model.weight[0] - (0.949 - 0.1 * b2)).abs() < 1e-12);
    }

    #[test]
    fn nesterov_adds_the_look_ahead() {
        let mut model = layer([1.0, 1.0]);
        let grads = layer([1.0, -1.0]);
        let mut sgd = Sgd::new(0.5).momentum(0.5).nesterov(true);
        sgd.step(&mut model, &grads);
        // b = g; update = g + 0.5 g = 1.5 g.
        assert_eq!(model.weight[0], 1.0 - 0.75);
        assert_eq!(model.bias[0], 1.0 + 0.75);
    }
}
