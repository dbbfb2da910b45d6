//! Adam.

use super::{Optimizer, StateBuffers};
use crate::{Float, Module};

/// PyTorch's `torch.optim.Adam` (L2 weight decay added to the gradient, not AdamW). At step `t`:
///
/// ```text
/// g ← g + λ p
/// m ← β1 m + (1 - β1) g,   v ← β2 v + (1 - β2) g²
/// p ← p - η (m / (1 - β1^t)) / (√(v / (1 - β2^t)) + ε)
/// ```
#[derive(Clone, Debug)]
pub struct Adam<E: Float = f32> {
    pub learning_rate: E,
    pub beta1: E,
    pub beta2: E,
    pub epsilon: E,
    pub weight_decay: E,
    first_moment: StateBuffers<E>,
    second_moment: StateBuffers<E>,
    steps: i32,
}

impl<E: Float> Adam<E> {
    /// Adam with PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, no weight decay.
    pub fn new(learning_rate: E) -> Self {
        Self {
            learning_rate,
            beta1: E::from_f64(0.9),
            beta2: E::from_f64(0.999),
            epsilon: E::from_f64(1e-8),
            weight_decay: E::ZERO,
            first_moment: StateBuffers::default(),
            second_moment: StateBuffers::default(),
            steps: 0,
        }
    }

    pub fn betas(mut self, beta1: E, beta2: E) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    pub fn epsilon(mut self, epsilon: E) -> Self {
        self.epsilon = epsilon;
        self
    }

    pub fn weight_decay(mut self, weight_decay: E) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl<E: Float> Optimizer<E> for Adam<E> {
    fn step<M: Module<E>>(&mut self, model: &mut M, grads: &M::Grads) {
        self.steps += 1;
        let Self {
            learning_rate: lr,
            beta1,
            beta2,
            epsilon,
            weight_decay: wd,
            ..
        } = *self;
        let t = self.steps;
        let correction1 = E::ONE - E::from_f64(beta1.to_f64().powi(t));
        let correction2 = E::ONE - E::from_f64(beta2.to_f64().powi(t));
        let step_size = lr / correction1;
        let inv_sqrt_correction2 = E::ONE / correction2.sqrt();
        let mut index = 0;
        model.visit_params_and_grads(grads, &mut |params, grads| {
            let m = self.first_moment.get(index, params.len());
            let v = self.second_moment.get(index, params.len());
            index += 1;
            for (((p, g), m), v) in params
                .iter_mut()
                .zip(grads)
                .zip(m.iter_mut())
                .zip(v.iter_mut())
            {
                let g = *g + wd * *p;
                *m = beta1 * *m + (E::ONE - beta1) * g;
                *v = beta2 * *v + (E::ONE - beta2) * g * g;
                *p -= step_size * *m / (v.sqrt() * inv_sqrt_correction2 + epsilon);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Linear;

    #[test]
    fn first_steps_follow_pytorch() {
        // The first Adam step moves every parameter by lr * sign(g) (up to ε), whatever |g| is.
        let mut model = Linear::<1, 1, f64> {
            weight: vec![1.0],
            bias: vec![-2.0],
        };
        let grads = Linear::<1, 1, f64> {
            weight: vec![0.3],
            bias: vec![-40.0],
        };
        let mut adam = Adam::new(0.01);
        adam.step(&mut model, &grads);
        assert!((model.weight[0] - 0.99).abs() < 1e-9);
        assert!((model.bias[0] + 1.99).abs() < 1e-9);
        // Second step with the same gradient: m̂ = g, v̂ = g², so again lr * sign(g).
        adam.step(&mut model, &grads);
        assert!((model.weight[0] - 0.98).abs() < 1e-9);
    }
}
