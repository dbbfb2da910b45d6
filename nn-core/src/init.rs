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

/// A seed derived from `seed` and an index (SplitMix64's finaliser), so that the layers of a
/// network, or the workers of a job, draw independent sequences from one seed.
pub fn mix_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

/// Fills `values` from N(mean, std²), by the Box-Muller transform of the generator's uniform
/// draws (two normal values per pair of uniforms). PyTorch's `nn.init.normal_`, the default
/// initialisation of `nn.Embedding` with mean 0 and std 1.
pub fn normal<E: Float>(rng: &mut Rng, values: &mut [E], mean: f64, std: f64) {
    for pair in values.chunks_mut(2) {
        // u1 in (0, 1], so that its logarithm is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let radius = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        pair[0] = E::from_f64(mean + std * radius * cos);
        if let Some(second) = pair.get_mut(1) {
            *second = E::from_f64(mean + std * radius * sin);
        }
    }
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
