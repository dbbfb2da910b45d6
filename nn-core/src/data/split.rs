//! A seeded, shuffled split of a data set into training and test samples.

use crate::init::{rng, shuffle};

/// Shuffles the indices `0..len` with `seed` and splits them into `(train, test)`, the test
/// part holding `ceil(test_fraction * len)` of them (as scikit-learn's `train_test_split`
/// counts). The same `len`, `test_fraction` and `seed` always give the same split.
///
/// The indices select samples for [`Dataset::fill_batch`](super::Dataset::fill_batch);
/// shuffle `train` again each epoch with [`crate::init::shuffle`].
///
/// # Panics
/// If `test_fraction` is not within `[0, 1]`.
pub fn train_test_split(len: usize, test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    assert!(
        (0.0..=1.0).contains(&test_fraction),
        "the test fraction must be within [0, 1], not {test_fraction}"
    );
    let exact = test_fraction * len as f64;
    // A product that is an integer up to rounding error (0.2 * 1800) is not rounded up.
    let test_len = if (exact - exact.round()).abs() < 1e-9 {
        exact.round()
    } else {
        exact.ceil()
    } as usize;
    let mut indices: Vec<usize> = (0..len).collect();
    shuffle(&mut rng(seed), &mut indices);
    let test = indices.split_off(len - test_len.min(len));
    (indices, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_a_seeded_partition_of_the_indices() {
        let (train, test) = train_test_split(1797, 0.2, 0);
        assert_eq!((train.len(), test.len()), (1437, 360));
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1797).collect::<Vec<_>>());
        assert_ne!(
            train[..20],
            (0..20).collect::<Vec<_>>()[..],
            "the indices should be shuffled"
        );

        assert_eq!(
            train_test_split(1797, 0.2, 0),
            (train.clone(), test.clone())
        );
        let (other_train, _) = train_test_split(1797, 0.2, 1);
        assert_ne!(other_train, train, "another seed should give another split");
    }

    #[test]
    fn the_test_size_rounds_up_except_for_exact_products() {
        assert_eq!(train_test_split(1800, 0.2, 0).1.len(), 360);
        assert_eq!(train_test_split(10, 0.25, 0).1.len(), 3);
        let (train, test) = train_test_split(10, 0.0, 0);
        assert_eq!((train.len(), test.len()), (10, 0));
        let (train, test) = train_test_split(10, 1.0, 0);
        assert_eq!((train.len(), test.len()), (0, 10));
        assert_eq!(train_test_split(0, 0.2, 0), (vec![], vec![]));
    }

    #[test]
    #[should_panic(expected = "the test fraction must be within [0, 1], not 20")]
    fn a_fraction_outside_zero_to_one_is_a_mistake() {
        train_test_split(100, 20.0, 0);
    }
}
