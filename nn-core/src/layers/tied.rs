//! An output head that shares its weight with a token embedding ("weight tying", Press & Wolf,
//! 2017, "Using the Output Embedding to Improve Language Models"; GPT-2's `lm_head`).

use crate::kernels::{matmul, MatMut, MatRef};
use crate::{Float, Shape, Tensor};

/// `y = x Eᵀ` on every `D`-wide row of the input: logits over a vocabulary of `V` tokens, with
/// the `[V, D]` table `E` of an embedding as the weight and no bias, like PyTorch's
/// `head = nn.Linear(D, V, bias=False); head.weight = embedding.weight`.
///
/// Backward: `dE += dYᵀ X` (added to the embedding's own gradient, which its backward then adds
/// to), `dX = dY E`.
///
/// The head owns no tensor: a network declares it as `linear(V, tied = embedding_name)` and
/// hands it the embedding's table and gradient, so it has no parameters to save or load (as
/// PyTorch's `save_model` keeps one name for a shared tensor).
pub struct TiedLinear<const D: usize, const V: usize>;

impl<const D: usize, const V: usize> TiedLinear<D, V> {
    /// Rows of one sample: its input is `rows × D`, its output `rows × V`.
    fn rows<I: Shape, O: Shape>() -> usize {
        const {
            assert!(D > 0 && V > 0);
        }
        let rows = I::NUMEL / D;
        assert!(
            rows * D == I::NUMEL && rows * V == O::NUMEL,
            "TiedLinear<{D}, {V}>: an input of {} values and an output of {} are not rows of {D} and {V}",
            I::NUMEL,
            O::NUMEL
        );
        rows
    }

    /// `y = x Eᵀ`, for `weight` = `E` `[V, D]`.
    pub fn forward<I: Shape, O: Shape, E: Float>(
        weight: &[E],
        x: &Tensor<I, E>,
        y: &mut Tensor<O, E>,
    ) {
        let rows = x.batch() * Self::rows::<I, O>();
        y.set_batch(x.batch());
        matmul(
            MatRef::row_major(x.as_slice(), rows, D),
            MatRef::transposed(weight, V, D),
            MatMut::row_major(y.as_mut_slice(), rows, V),
            false,
        );
    }

    /// Adds `dYᵀ X` to `grad_weight` and, when `dx` is given, writes `dX = dY E` into it.
    pub fn backward<I: Shape, O: Shape, E: Float>(
        weight: &[E],
        x: &Tensor<I, E>,
        dy: &Tensor<O, E>,
        dx: Option<&mut Tensor<I, E>>,
        grad_weight: &mut [E],
    ) {
        let rows = x.batch() * Self::rows::<I, O>();
        matmul(
            MatRef::transposed(dy.as_slice(), rows, V),
            MatRef::row_major(x.as_slice(), rows, D),
            MatMut::row_major(grad_weight, V, D),
            true,
        );
        if let Some(dx) = dx {
            dx.set_batch(x.batch());
            matmul(
                MatRef::row_major(dy.as_slice(), rows, V),
                MatRef::row_major(weight, V, D),
                MatMut::row_major(dx.as_mut_slice(), rows, D),
                false,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Rank1, Rank2};

    #[test]
    fn logits_are_dot_products_with_the_embedding_rows() {
        // E = [[1, 0], [0, 1], [1, 1]]: three tokens of width 2.
        let table = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let x = Tensor::<Rank2<2, 2>, f64>::from_vec(vec![2.0, 3.0, -1.0, 4.0]).unwrap();
        let mut y = Tensor::<Rank2<2, 3>, f64>::zeros(1);
        TiedLinear::<2, 3>::forward(&table, &x, &mut y);
        assert_eq!(y.as_slice(), &[2.0, 3.0, 5.0, -1.0, 4.0, 3.0]);

        let dy = Tensor::<Rank2<2, 3>, f64>::from_vec(vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0]).unwrap();
        let mut grad = vec![10.0; 6];
        let mut dx = Tensor::zeros(1);
        TiedLinear::<2, 3>::backward(&table, &x, &dy, Some(&mut dx), &mut grad);
        // dE = dYᵀ X accumulates: row 0 gets x_0, row 2 gets x_1.
        assert_eq!(grad, vec![12.0, 13.0, 10.0, 10.0, 9.0, 14.0]);
        // dX = dY E: row 0 is E_0, row 1 is E_2.
        assert_eq!(dx.as_slice(), &[1.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn a_vector_input_is_one_row() {
        let table = [1.0f32, 2.0, 3.0, 4.0];
        let x = Tensor::<Rank1<2>, f32>::from_vec(vec![1.0, 1.0]).unwrap();
        let mut y = Tensor::<Rank1<2>, f32>::zeros(1);
        TiedLinear::<2, 2>::forward(&table, &x, &mut y);
        assert_eq!(y.as_slice(), &[3.0, 7.0]);
    }
}
