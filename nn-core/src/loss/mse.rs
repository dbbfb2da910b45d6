//! Mean squared error.

use super::finite;
use crate::error::LossError;
use crate::{Float, Shape, Tensor};

/// `L = (1/N) Σ (y - t)^2` over all `N` elements of the batch, PyTorch's `nn.MSELoss()`;
/// `dL/dy = 2 (y - t) / N`.
pub fn mse<S: Shape, E: Float>(
    output: &Tensor<S, E>,
    target: &Tensor<S, E>,
    grad: Option<&mut Tensor<S, E>>,
) -> Result<E, LossError> {
    if output.batch() != target.batch() {
        return Err(LossError::BatchMismatch {
            samples: output.batch(),
            targets: target.batch(),
        });
    }
    let n = output.as_slice().len();
    if n == 0 {
        return Err(LossError::EmptyBatch);
    }
    let scale = E::ONE / E::from_f64(n as f64);
    let pairs = output.as_slice().iter().zip(target.as_slice());
    let total: E = pairs.clone().map(|(y, t)| (*y - *t) * (*y - *t)).sum();
    if let Some(grad) = grad {
        grad.set_batch(output.batch());
        let two_over_n = scale + scale;
        for (g, (y, t)) in grad.as_mut_slice().iter_mut().zip(pairs) {
            *g = two_over_n * (*y - *t);
        }
    }
    finite(total * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rank1;

    #[test]
    fn value_and_gradient_match_the_definition() {
        let y = Tensor::<Rank1<2>, f64>::from_vec(vec![1.0, 2.0, 3.0, 5.0]).unwrap();
        let t = Tensor::<Rank1<2>, f64>::from_vec(vec![0.0, 2.0, 1.0, 6.0]).unwrap();
        let mut g = Tensor::zeros(2);
        let loss = mse(&y, &t, Some(&mut g)).unwrap();
        assert_eq!(loss, (1.0 + 0.0 + 4.0 + 1.0) / 4.0);
        for i in 0..4 {
            let at = |d: f64| {
                let mut s = y.clone();
                s.as_mut_slice()[i] += d;
                mse(&s, &t, None).unwrap()
            };
            assert!(((at(1e-6) - at(-1e-6)) / 2e-6 - g.as_slice()[i]).abs() < 1e-8);
        }
    }

    #[test]
    fn mismatched_batches_and_nan_are_errors() {
        let y = Tensor::<Rank1<2>, f32>::from_vec(vec![1.0, f32::NAN]).unwrap();
        let t = Tensor::<Rank1<2>, f32>::zeros(1);
        assert!(matches!(
            mse(&y, &t, None),
            Err(LossError::NotFinite { .. })
        ));
        assert!(matches!(
            mse(&y, &Tensor::zeros(2), None),
            Err(LossError::BatchMismatch { .. })
        ));
    }
}
