//! Gradient-norm clipping.

use crate::{Float, Module};

/// Scales all gradients of `model` together so that their global L2 norm is at most
/// `max_norm`, like PyTorch's `clip_grad_norm_`: `g ← g · max_norm / (‖g‖ + 1e-6)` when
/// `‖g‖ > max_norm`. Returns the norm before clipping (NaN or infinite if a gradient is).
pub fn clip_grad_norm<E: Float, M: Module<E>>(model: &M, grads: &mut M::Grads, max_norm: E) -> E {
    let mut squares = E::ZERO;
    model.visit_grads_mut(grads, &mut |g| {
        squares += g.iter().map(|v| *v * *v).sum::<E>()
    });
    let norm = squares.sqrt();
    let scale = max_norm / (norm + E::from_f64(1e-6));
    if norm.is_finite() && scale < E::ONE {
        model.visit_grads_mut(grads, &mut |g| g.iter_mut().for_each(|v| *v *= scale));
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Linear;

    #[test]
    fn large_gradients_are_scaled_to_the_bound_and_small_ones_kept() {
        let layer = Linear::<2, 1, f64>::zeros();
        let mut grads = Linear::<2, 1, f64> {
            weight: vec![3.0, 0.0],
            bias: vec![4.0],
        };
        let norm = clip_grad_norm(&layer, &mut grads, 1.0);
        assert_eq!(norm, 5.0);
        let clipped = (grads.weight[0].powi(2) + grads.bias[0].powi(2)).sqrt();
        assert!((clipped - 1.0).abs() < 1e-6, "{clipped}");
        let mut small = Linear::<2, 1, f64> {
            weight: vec![0.3, 0.0],
            bias: vec![0.4],
        };
        assert_eq!(clip_grad_norm(&layer, &mut small, 1.0), 0.5);
        assert_eq!(small.weight, vec![0.3, 0.0]);
    }
}
