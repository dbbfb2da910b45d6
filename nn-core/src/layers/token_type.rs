//! BERT's token-type (segment) embedding for single-segment input.

use crate::init::{normal, Rng};
use crate::module::Module;
use crate::{Float, Rank2, Tensor};

/// `y_t = x_t + E_0` at every step: the embedding of token type 0 added to a sequence
/// `[T, D] → [T, D]`, as BERT does for a single sentence (all token-type ids 0).
///
/// The parameter `weight` `[TYPES, D]` is the table of a PyTorch `nn.Embedding(TYPES, D)`
/// (BERT's `token_type_embeddings`), initialised like it from N(0, 1). Only row 0 is used:
/// the network's input is one sequence of token ids, so every token has type 0. The other rows
/// are kept so that a pretrained table loads and saves unchanged; their gradient is zero.
///
/// Backward: `dE_0 += Σ_batch Σ_t dy_t`, `dx = dy`.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenTypeEmbedding<const T: usize, const D: usize, const TYPES: usize, E: Float = f32> {
    /// `[TYPES, D]`.
    pub weight: Vec<E>,
}

impl<const T: usize, const D: usize, const TYPES: usize, E: Float>
    TokenTypeEmbedding<T, D, TYPES, E>
{
    const SHAPE: [usize; 2] = [TYPES, D];

    /// A table of zeros.
    pub fn zeros() -> Self {
        Self {
            weight: vec![E::ZERO; TYPES * D],
        }
    }
}

impl<const T: usize, const D: usize, const TYPES: usize, E: Float> Module<E>
    for TokenTypeEmbedding<T, D, TYPES, E>
{
    type Input = Rank2<T, D>;
    type Output = Rank2<T, D>;
    type Cache = ();
    type Grads = Self;

    const PARAMS: usize = TYPES * D;

    fn init(rng: &mut Rng) -> Self {
        let mut layer = Self::zeros();
        normal(rng, &mut layer.weight, 0.0, 1.0);
        layer
    }

    fn new_cache(&self, _max_batch: usize) {}

    fn new_grads(&self) -> Self {
        Self::zeros()
    }

    fn zero_grads(grads: &mut Self) {
        grads.weight.fill(E::ZERO);
    }

    fn forward(&self, x: &Tensor<Rank2<T, D>, E>, y: &mut Tensor<Rank2<T, D>, E>, _cache: &mut ()) {
        y.set_batch(x.batch());
        let type_0 = &self.weight[..D];
        for (y, x) in y
            .as_mut_slice()
            .chunks_exact_mut(D.max(1))
            .zip(x.as_slice().chunks_exact(D.max(1)))
        {
            for ((y, x), e) in y.iter_mut().zip(x).zip(type_0) {
                *y = *x + *e;
            }
        }
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, D>, E>,
        cache: &mut (),
    ) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        _x: &Tensor<Rank2<T, D>, E>,
        _y: &Tensor<Rank2<T, D>, E>,
        dy: &Tensor<Rank2<T, D>, E>,
        dx: Option<&mut Tensor<Rank2<T, D>, E>>,
        _cache: &mut (),
        grads: &mut Self,
    ) {
        crate::layers::linear::add_row_sums(dy.as_slice(), &mut grads.weight[..D]);
        if let Some(dx) = dx {
            dx.copy_from(dy);
        }
    }

    crate::parameters!(
        weight: "weight" => Self::SHAPE,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_module;

    #[test]
    fn adds_the_first_row_at_every_step() {
        let layer = TokenTypeEmbedding::<2, 2, 2, f64> {
            weight: vec![1.0, 2.0, 100.0, 200.0],
        };
        let x = Tensor::from_vec(vec![0.0, 0.0, 10.0, 10.0]).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut ());
        assert_eq!(y.as_slice(), &[1.0, 2.0, 11.0, 12.0]);
        let mut grads = layer.new_grads();
        let dy = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        layer.backward(&x, &y, &dy, None, &mut (), &mut grads);
        assert_eq!(grads.weight, vec![4.0, 6.0, 0.0, 0.0]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<TokenTypeEmbedding<3, 4, 2, f64>>(2, 1);
    }
}
