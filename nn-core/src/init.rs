//! Seeded initialisation with PyTorch's defaults, so that runs are reproducible.

use rand::{Rng as _, SeedableRng};

use crate::Float;

/// The random number generator behind initialisation, dropout and data shuffling:
/// ChaCha8, seeded, identical on every platform.
pub type Rng = rand_chacha::ChaCha8Rng;

/// A generator seeded with `seed`.
pub fn rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Fills `values` from U(-bound, bound).
pub fn uniform<E: Float>(rng: &mut Rng, values: &mut [E], bound: f64) {
    for v in values {
        *v = E::from_f64(rng.random_range(-bound..=bound));
    }
}

/// PyTorch's default for `nn.Linear` and `nn.Conv*` weights and biases:
/// `kaiming_uniform_(a = sqrt(5))` on the weight, which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
/// and the same bound for the bias.
pub fn fan_in_uniform<E: Float>(rng: &mut Rng, values: &mut [E], fan_in: usize) {
    let bound = if fan_in == 0 {
        0.0
    } else {
        1.0 / (fan_in as f64).sqrt()
    };
    uniform(rng, values, bound);
}

/// Shuffles `items` in place (Fisher-Yates), reproducibly for a given generator state.
pub fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_in_uniform_stays_within_its_bound_and_is_reproducible() {
        let mut a = vec![0.0f32; 1000];
        let mut b = vec![0.0f32; 1000];
        fan_in_uniform(&mut rng(7), &mut a, 64);
        fan_in_uniform(&mut rng(7), &mut b, 64);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| v.abs() <= 0.125));
        let mean: f32 = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!(
            a.iter().any(|v| v.abs() > 0.1),
            "values should spread over the range"
        );
    }
}
