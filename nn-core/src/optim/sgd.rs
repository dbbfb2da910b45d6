//! Stochastic gradient descent with momentum and weight decay.

use super::{Optimizer, StateBuffers};
use crate::kernels::parallel::join;
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

/// Parameter tensors at least this long are updated by both cores, half each: the update is
/// a pass over memory, and one core alone cannot use all of the bandwidth (W1's step spent a
/// tenth of its time here on one core).
const PARALLEL_UPDATE: usize = 1 << 16;

/// The constants of one step, shared by every tensor's update.
#[derive(Clone, Copy)]
struct Step<E> {
    lr: E,
    mu: E,
    dampening: E,
    wd: E,
    nesterov: bool,
    first: bool,
}

impl<E: Float> Step<E> {
    /// Updates one tensor (or a piece of it) and its momentum buffer, if any.
    fn apply(self, params: &mut [E], grads: &[E], velocity: Option<&mut [E]>) {
        let Self {
            lr,
            mu,
            dampening,
            wd,
            nesterov,
            first,
        } = self;
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
    }

    /// `apply`, split over both cores for long tensors.
    fn apply_split(self, params: &mut [E], grads: &[E], velocity: Option<&mut [E]>) {
        if params.len() < PARALLEL_UPDATE {
            return self.apply(params, grads, velocity);
        }
        let half = params.len() / 2;
        let (p0, p1) = params.split_at_mut(half);
        let (g0, g1) = grads.split_at(half);
        let (v0, v1) = match velocity {
            Some(v) => {
                let (v0, v1) = v.split_at_mut(half);
                (Some(v0), Some(v1))
            }
            None => (None, None),
        };
        join(|| self.apply(p0, g0, v0), || self.apply(p1, g1, v1));
    }
}

impl<E: Float> Optimizer<E> for Sgd<E> {
    fn step<M: Module<E>>(&mut self, model: &mut M, grads: &M::Grads) {
        let step = Step {
            lr: self.learning_rate,
            mu: self.momentum,
            dampening: self.dampening,
            wd: self.weight_decay,
            nesterov: self.nesterov,
            first: !self.started,
        };
        let mut index = 0;
        model.visit_params_and_grads(grads, &mut |params, grads| {
            let velocity = if step.mu != E::ZERO {
                Some(self.velocity.get(index, params.len()))
            } else {
                None
            };
            index += 1;
            step.apply_split(params, grads, velocity);
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

    #[test]
    fn long_tensors_split_over_the_cores_update_every_element_alike() {
        // 300 x 300 weights are above `PARALLEL_UPDATE`, so both halves run on different cores.
        let mut model = Linear::<300, 300, f64>::zeros();
        let mut grads = Linear::<300, 300, f64>::zeros();
        for (i, g) in grads.weight.iter_mut().enumerate() {
            *g = (i % 7) as f64 - 3.0;
        }
        let mut sgd = Sgd::new(0.1).momentum(0.9).weight_decay(0.01);
        sgd.step(&mut model, &grads);
        sgd.step(&mut model, &grads);
        for (i, w) in model.weight.iter().enumerate() {
            let g = (i % 7) as f64 - 3.0;
            let w1 = -0.1 * g;
            let b2 = 0.9 * g + (g + 0.01 * w1);
            assert!((w - (w1 - 0.1 * b2)).abs() < 1e-12, "element {i}");
        }
    }
}
