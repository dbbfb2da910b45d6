//! Fully connected layer.

use crate::init::{fan_in_uniform, Rng};
use crate::kernels::parallel::{join, PARALLEL_VALUES};
use crate::kernels::{matmul, matmul_bias, MatMut, MatRef};
use crate::module::Module;
use crate::{Float, Rank1, Tensor};

/// `y = x Wᵀ + b`, PyTorch's `nn.Linear(I, O)`.
///
/// Parameters as in PyTorch: `weight` `[O, I]` (row-major), `bias` `[O]`, both initialised
/// from U(-1/√I, 1/√I).
///
/// Backward, for a batch `X` `[B, I]` and `dY` `[B, O]`:
/// `dW += dYᵀ X`, `db += Σ_b dY[b]`, `dX = dY W`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<const I: usize, const O: usize, E: Float = f32> {
    /// `[O, I]`, row-major.
    pub weight: Vec<E>,
    /// `[O]`.
    pub bias: Vec<E>,
}

impl<const I: usize, const O: usize, E: Float> Linear<I, O, E> {
    const WEIGHT_SHAPE: [usize; 2] = [O, I];
    const BIAS_SHAPE: [usize; 1] = [O];

    /// A layer with every parameter zero.
    pub fn zeros() -> Self {
        Self {
            weight: vec![E::ZERO; O * I],
            bias: vec![E::ZERO; O],
        }
    }
}

/// `Y = X Wᵀ + b` for `rows` rows at once: `X` `[rows, inputs]`, `W` `[outputs, inputs]`,
/// `b` `[outputs]`, `Y` `[rows, outputs]`, all row-major.
///
/// The maths of [`Linear`], shared by every layer that applies one linear map to many rows:
/// `SequenceLinear` (rows are `batch * T` time steps) and the input projections of the
/// recurrent layers.
pub(crate) fn linear_rows<E: Float>(
    rows: usize,
    inputs: usize,
    outputs: usize,
    x: &[E],
    weight: &[E],
    bias: &[E],
    y: &mut [E],
) {
    matmul_bias(
        MatRef::row_major(x, rows, inputs),
        MatRef::transposed(weight, outputs, inputs),
        MatMut::row_major(&mut y[..rows * outputs], rows, outputs),
        bias,
    );
}

/// The backward of [`linear_rows`] for `dY` `[rows, outputs]`: adds `dYᵀ X` to the weight
/// gradient and `Σ_rows dY` to the bias gradient, and writes `dX = dY W` when `dx` is given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_rows_backward<E: Float>(
    rows: usize,
    inputs: usize,
    outputs: usize,
    x: &[E],
    weight: &[E],
    dy: &[E],
    grad_weight: &mut [E],
    grad_bias: &mut [E],
    dx: Option<&mut [E]>,
) {
    let dy = &dy[..rows * outputs];
    add_row_sums(dy, grad_bias);
    matmul(
        MatRef::transposed(dy, rows, outputs),
        MatRef::row_major(x, rows, inputs),
        MatMut::row_major(grad_weight, outputs, inputs),
        true,
    );
    if let Some(dx) = dx {
        matmul(
            MatRef::row_major(dy, rows, outputs),
            MatRef::row_major(weight, outputs, inputs),
            MatMut::row_major(dx, rows, inputs),
            false,
        );
    }
}

/// `sums += Σ_r rows[r]` for the row-major rows of width `sums.len()` in `rows` (a bias
/// gradient). Large ones give each core half of the columns: each column is still summed
/// row by row, so the result does not depend on the split.
pub(crate) fn add_row_sums<E: Float>(rows: &[E], sums: &mut [E]) {
    let width = sums.len().max(1);
    // `sums[..]` += the columns `first..` of every row.
    let add_columns = |first: usize, sums: &mut [E]| {
        for row in rows.chunks_exact(width) {
            for (s, v) in sums.iter_mut().zip(&row[first..]) {
                *s += *v;
            }
        }
    };
    if rows.len() < PARALLEL_VALUES || width < 32 {
        return add_columns(0, sums);
    }
    let half = (width / 2).next_multiple_of(8);
    let (left, right) = sums.split_at_mut(half);
    join(|| add_columns(0, left), || add_columns(half, right));
}

impl<const I: usize, const O: usize, E: Float> Module<E> for Linear<I, O, E> {
    type Input = Rank1<I>;
    type Output = Rank1<O>;
    type Cache = ();
    type Grads = Self;

    const PARAMS: usize = O * I + O;

    fn init(rng: &mut Rng) -> Self {
        let mut layer = Self::zeros();
        fan_in_uniform(rng, &mut layer.weight, I);
        fan_in_uniform(rng, &mut layer.bias, I);
        layer
    }

    fn new_cache(&self, _max_batch: usize) {}

    fn new_grads(&self) -> Self {
        Self::zeros()
    }

    fn zero_grads(grads: &mut Self) {
        grads.weight.fill(E::ZERO);
        grads.bias.fill(E::ZERO);
    }

    fn forward(&self, x: &Tensor<Rank1<I>, E>, y: &mut Tensor<Rank1<O>, E>, _cache: &mut ()) {
        let batch = x.batch();
        y.set_batch(batch);
        linear_rows(
            batch,
            I,
            O,
            x.as_slice(),
            &self.weight,
            &self.bias,
            y.as_mut_slice(),
        );
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank1<I>, E>,
        y: &mut Tensor<Rank1<O>, E>,
        cache: &mut (),
    ) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<Rank1<I>, E>,
        _y: &Tensor<Rank1<O>, E>,
        dy: &Tensor<Rank1<O>, E>,
        dx: Option<&mut Tensor<Rank1<I>, E>>,
        _cache: &mut (),
        grads: &mut Self,
    ) {
        let batch = x.batch();
        let dx = dx.map(|dx| {
            dx.set_batch(batch);
            dx.as_mut_slice()
        });
        linear_rows_backward(
            batch,
            I,
            O,
            x.as_slice(),
            &self.weight,
            dy.as_slice(),
            &mut grads.weight,
            &mut grads.bias,
            dx,
        );
    }

    crate::parameters!(weight: "weight" => Self::WEIGHT_SHAPE, bias: "bias" => Self::BIAS_SHAPE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_sums_split_by_columns_equal_the_serial_sums() {
        // 300 rows of 130: above PARALLEL_VALUES, halves of 72 and 58 columns.
        const { assert!(300 * 130 >= PARALLEL_VALUES) };
        let rows: Vec<f64> = (0..300 * 130).map(|i| (i as f64 * 0.61).sin()).collect();
        let mut sums = vec![1.0; 130];
        add_row_sums(&rows, &mut sums);
        for (j, s) in sums.iter().enumerate() {
            let expected = rows.iter().skip(j).step_by(130).fold(1.0, |a, v| a + v);
            assert_eq!(*s, expected, "column {j}");
        }
    }
    use crate::gradcheck::check_module;

    #[test]
    fn forward_is_x_times_w_transposed_plus_b() {
        let layer = Linear::<2, 3, f64> {
            weight: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            bias: vec![0.5, -0.5, 1.0],
        };
        let x = Tensor::from_vec(vec![1.0, -1.0, 2.0, 0.5]).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut ());
        assert_eq!(y.as_slice(), &[-0.5, -1.5, 0.0, 3.5, 7.5, 14.0]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<Linear<5, 4, f64>>(3, 11);
        // Large enough to take the packed product split over both cores.
        check_module::<Linear<130, 70, f64>>(120, 12);
    }
}
