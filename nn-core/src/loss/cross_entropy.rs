//! Softmax cross-entropy, fused with the softmax.

use super::finite;
use crate::error::LossError;
use crate::kernels::parallel::{join, PARALLEL_VALUES};
use crate::kernels::vector;
use crate::{Float, Shape, Tensor};

/// A target that is left out of the loss (PyTorch's `ignore_index`): its row contributes
/// nothing and gets a zero gradient, and the mean is over the other rows.
pub const IGNORE: usize = usize::MAX;

/// Mean cross-entropy of `softmax(logits)` against integer class targets, PyTorch's
/// `nn.CrossEntropyLoss()`.
///
/// Rows are the last dimension of `S`: one row per sample for `[C]`, one per time step for a
/// sequence `[T, C]` (then `targets` holds `batch * T` classes, step-major within a sample).
/// For `R` rows: `L = (1/R) Σ_r (log Σ_j e^(x_rj) - x_r,t_r)`, computed with the row maximum
/// subtracted so that no exponential overflows, and `dL/dx_r = (softmax(x_r) - onehot(t_r)) / R`.
pub fn softmax_cross_entropy<S: Shape, E: Float>(
    logits: &Tensor<S, E>,
    targets: &[usize],
    grad: Option<&mut Tensor<S, E>>,
) -> Result<E, LossError> {
    let classes = S::DIMS.last().copied().unwrap_or(1);
    let rows = logits.as_slice().len() / classes;
    if rows == 0 {
        return Err(LossError::EmptyBatch);
    }
    if targets.len() != rows {
        return Err(LossError::BatchMismatch {
            samples: rows,
            targets: targets.len(),
        });
    }
    let per_sample = rows / logits.batch();
    if let Some((row, &class)) = targets
        .iter()
        .enumerate()
        .find(|(_, &c)| c >= classes && c != IGNORE)
    {
        return Err(LossError::ClassOutOfRange {
            sample: row / per_sample,
            class,
            classes,
        });
    }
    let counted = targets.iter().filter(|&&t| t != IGNORE).count();
    if counted == 0 {
        return Err(LossError::EmptyBatch);
    }
    let scale = E::ONE / E::from_f64(counted as f64);
    let total = match grad {
        Some(grad) => {
            grad.set_batch(logits.batch());
            let (x, g) = (logits.as_slice(), grad.as_mut_slice());
            if x.len() >= PARALLEL_VALUES && rows >= 2 {
                // Rows are independent: half of them on each core, the two partial losses added.
                let half = rows / 2;
                let (x0, x1) = x.split_at(half * classes);
                let (g0, g1) = g.split_at_mut(half * classes);
                let (t0, t1) = targets.split_at(half);
                let (mut first, mut second) = (E::ZERO, E::ZERO);
                join(
                    || first = rows_with_gradient(x0, g0, t0, classes, scale),
                    || second = rows_with_gradient(x1, g1, t1, classes, scale),
                );
                first + second
            } else {
                rows_with_gradient(x, g, targets, classes, scale)
            }
        }
        None => logits
            .as_slice()
            .chunks_exact(classes)
            .zip(targets)
            .filter(|(_, &t)| t != IGNORE)
            .fold(E::ZERO, |total, (x, &t)| {
                // The same sums as `rows_with_gradient`, so both give the same loss.
                let max = vector::max(x);
                let sum = vector::sum_of(x, |v| (v - max).exp());
                total + (sum.ln() + max - x[t])
            }),
    };
    finite(total * scale)
}

/// The summed loss of the rows of `x` (`classes` wide), and their gradient `g` (softmax
/// scaled by `scale`, minus `scale` at the target); rows whose target is `IGNORE` get zeros.
fn rows_with_gradient<E: Float>(
    x: &[E],
    g: &mut [E],
    targets: &[usize],
    classes: usize,
    scale: E,
) -> E {
    let mut total = E::ZERO;
    // Three passes over all rows rather than one per row: with few classes a row is shorter
    // than a vector register, and the exponentials of all rows in one loop vectorise.
    // 1: g = x - max of its row. (The row's max and sum take `vector`'s independent
    // accumulators: as folds, each was one long dependency chain, and together nearly a
    // third of the time of W7's loss.)
    for (x, g) in x.chunks_exact(classes).zip(g.chunks_exact_mut(classes)) {
        let max = vector::max(x);
        for (g, x) in g.iter_mut().zip(x) {
            *g = *x - max;
        }
    }
    // 2: g = e^g.
    for g in g.iter_mut() {
        *g = g.exp();
    }
    // 3: the loss log Σe^(x - max) - (x_t - max), and g = softmax / counted - onehot.
    for ((g, x), &t) in g
        .chunks_exact_mut(classes)
        .zip(x.chunks_exact(classes))
        .zip(targets)
    {
        if t == IGNORE {
            g.fill(E::ZERO);
            continue;
        }
        let sum = vector::sum(g);
        let max = vector::max(x);
        total += sum.ln() + max - x[t];
        let inverse = scale / sum;
        for g in g.iter_mut() {
            *g *= inverse;
        }
        g[t] -= scale;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Rank1, Rank2};

    #[test]
    fn a_batch_split_over_the_cores_matches_the_definition() {
        // 300 rows of 128 logits: above `PARALLEL_VALUES`, so the rows are split in two.
        let (rows, classes) = (300, 128);
        let x: Vec<f64> = (0..rows * classes)
            .map(|i| ((i * 7919) % 1013) as f64 / 100.0 - 5.0)
            .collect();
        let targets: Vec<usize> = (0..rows).map(|r| (r * 37) % classes).collect();
        let logits = Tensor::<Rank1<128>, f64>::from_vec(x.clone()).unwrap();
        let mut grad = Tensor::zeros(rows);
        let loss = softmax_cross_entropy(&logits, &targets, Some(&mut grad)).unwrap();
        let mut expected = 0.0;
        for (r, row) in x.chunks_exact(classes).enumerate() {
            let sum: f64 = row.iter().map(|v| v.exp()).sum();
            expected += sum.ln() - row[targets[r]];
            for (j, v) in row.iter().enumerate() {
                let onehot = if j == targets[r] { 1.0 } else { 0.0 };
                let g = (v.exp() / sum - onehot) / rows as f64;
                assert!((grad.sample(r)[j] - g).abs() < 1e-15, "row {r}, class {j}");
            }
        }
        assert!((loss - expected / rows as f64).abs() < 1e-12);
    }

    #[test]
    fn the_loss_is_the_same_with_and_without_the_gradient() {
        // Both paths sum a row's exponentials in the same order: a validation loss equals the
        // training loss of the same batch to the last bit (f32, rows of 37 and 256 classes;
        // batches below `PARALLEL_VALUES`, whose rows are not split between the cores, which
        // would change the order in which the rows' losses are added).
        fn check<S: Shape>(rows: usize) {
            let n = rows * S::NUMEL;
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1013) as f32 / 50.0 - 10.0)
                .collect();
            let targets: Vec<usize> = (0..rows).map(|r| (r * 31) % S::NUMEL).collect();
            let logits = Tensor::<S, f32>::from_vec(x).unwrap();
            let mut grad = Tensor::zeros(rows);
            let with = softmax_cross_entropy(&logits, &targets, Some(&mut grad)).unwrap();
            let without = softmax_cross_entropy(&logits, &targets, None).unwrap();
            assert_eq!(with.to_bits(), without.to_bits(), "{} classes", S::NUMEL);
        }
        check::<Rank1<37>>(5);
        check::<Rank1<256>>(100);
    }

    #[test]
    fn matches_the_definition_and_pytorch_values() {
        // torch.nn.functional.cross_entropy(torch.tensor([[1., 2., 3.], [1., -1., 0.]]),
        //                                   torch.tensor([2, 0])) = 0.4076059644...
        let logits =
            Tensor::<Rank1<3>, f64>::from_vec(vec![1.0, 2.0, 3.0, 1.0, -1.0, 0.0]).unwrap();
        let loss = softmax_cross_entropy(&logits, &[2, 0], None).unwrap();
        let expected = 0.5 * ((1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 3.0)
            + 0.5 * ((1f64.exp() + (-1f64).exp() + 1.0).ln() - 1.0);
        assert!((loss - expected).abs() < 1e-12);
        assert!((loss - 0.407_605_964_4).abs() < 1e-9);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let values: Vec<f64> = (0..24).map(|i| ((i * 7 % 11) as f64 - 5.0) * 0.3).collect();
        let targets = [1, 0, 3, 2, 2, 1];
        let logits = Tensor::<Rank2<3, 4>, f64>::from_vec(values).unwrap();
        let mut grad = Tensor::zeros(2);
        softmax_cross_entropy(&logits, &targets, Some(&mut grad)).unwrap();
        for i in 0..24 {
            let at = |d: f64| {
                let mut shifted = logits.clone();
                shifted.as_mut_slice()[i] += d;
                softmax_cross_entropy(&shifted, &targets, None).unwrap()
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!((numeric - grad.as_slice()[i]).abs() < 1e-8, "entry {i}");
        }
    }

    #[test]
    fn ignored_targets_leave_the_mean_and_get_no_gradient() {
        let logits =
            Tensor::<Rank2<3, 2>, f64>::from_vec(vec![1.0, 2.0, 0.5, -0.5, 3.0, 0.0]).unwrap();
        let mut grad = Tensor::zeros(1);
        let loss = softmax_cross_entropy(&logits, &[1, IGNORE, 0], Some(&mut grad)).unwrap();
        let only = Tensor::<Rank2<2, 2>, f64>::from_vec(vec![1.0, 2.0, 3.0, 0.0]).unwrap();
        let expected = softmax_cross_entropy(&only, &[1, 0], None).unwrap();
        assert!((loss - expected).abs() < 1e-15);
        assert_eq!(&grad.as_slice()[2..4], &[0.0, 0.0]);
        assert!(matches!(
            softmax_cross_entropy(&only, &[IGNORE, IGNORE], None),
            Err(LossError::EmptyBatch)
        ));
    }

    #[test]
    fn huge_logits_stay_finite_and_bad_input_is_an_error() {
        let logits = Tensor::<Rank1<2>, f32>::from_vec(vec![1e30, -1e30]).unwrap();
        assert_eq!(softmax_cross_entropy(&logits, &[0], None).unwrap(), 0.0);
        assert!(matches!(
            softmax_cross_entropy(&logits, &[2], None),
            Err(LossError::ClassOutOfRange {
                sample: 0,
                class: 2,
                classes: 2
            })
        ));
        assert!(matches!(
            softmax_cross_entropy(&logits, &[0, 1], None),
            Err(LossError::BatchMismatch { .. })
        ));
        let nan = Tensor::<Rank1<2>, f32>::from_vec(vec![f32::NAN, 0.0]).unwrap();
        assert!(matches!(
            softmax_cross_entropy(&nan, &[0], None),
            Err(LossError::NotFinite { .. })
        ));
    }
}
