//! Token embedding, PyTorch's `nn.Embedding`.

use thiserror::Error;

use crate::init::{normal, Rng};
use crate::module::Module;
use crate::{Float, Rank1, Rank2, Tensor};

/// `y_t = W[x_t]`: each of the `T` token ids of a sample picks a row of the table `W`
/// (`[V, D]`), so a sequence of ids `[T]` becomes a sequence of vectors `[T, D]`.
/// PyTorch's `nn.Embedding(V, D)` (no `padding_idx`, no `max_norm`).
///
/// Parameter as in PyTorch: `weight` `[V, D]`, initialised from N(0, 1).
///
/// The ids travel in an ordinary tensor, as floats (exact up to 2^24 in `f32`): build it with
/// [`Embedding::tokens_to_tensor`], which checks them. An id that is not an integer in `0..V`
/// is a bug in the caller's data, and `forward` and `backward` **panic** on it, naming the id,
/// its sample and step, and `V`.
///
/// Backward: the rows of `dY` are added into the rows of the weight gradient their ids picked
/// (a scatter-add: an id used twice gets both rows). Ids are not differentiable: `dx`, when
/// asked for, is zero.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding<const V: usize, const D: usize, const T: usize, E: Float = f32> {
    /// `[V, D]`, row-major: row `i` is the vector of token `i`.
    pub weight: Vec<E>,
}

/// Token ids that do not fit an embedding's input.
#[derive(Debug, Error, PartialEq)]
pub enum TokenError {
    #[error("{len} token ids do not form whole sequences of {steps} steps")]
    NotWholeSequences { len: usize, steps: usize },
    #[error(
        "token id {id} (sample {sample}, step {step}) is out of range: the vocabulary has {vocab} tokens"
    )]
    OutOfRange {
        id: usize,
        sample: usize,
        step: usize,
        vocab: usize,
    },
    #[error("token id {id} (sample {sample}, step {step}) cannot be stored exactly as {float}")]
    NotExact {
        id: usize,
        sample: usize,
        step: usize,
        float: &'static str,
    },
}

impl<const V: usize, const D: usize, const T: usize, E: Float> Embedding<V, D, T, E> {
    const WEIGHT_SHAPE: [usize; 2] = [V, D];

    /// A table with every entry zero.
    pub fn zeros() -> Self {
        Self {
            weight: vec![E::ZERO; V * D],
        }
    }

    /// The input tensor for sequences of token ids, `T` per sample (`ids.len() / T` samples),
    /// checked: every id must be below `V` and exactly representable in `E`. This is the
    /// place to reject bad data; `forward` panics on it.
    pub fn tokens_to_tensor(ids: &[usize]) -> Result<Tensor<Rank1<T>, E>, TokenError> {
        if T == 0 || !ids.len().is_multiple_of(T) {
            return Err(TokenError::NotWholeSequences {
                len: ids.len(),
                steps: T,
            });
        }
        let mut values = Vec::with_capacity(ids.len());
        for (position, &id) in ids.iter().enumerate() {
            let (sample, step) = (position / T, position % T);
            if id >= V {
                return Err(TokenError::OutOfRange {
                    id,
                    sample,
                    step,
                    vocab: V,
                });
            }
            let value = E::from_f64(id as f64);
            if value.to_f64() != id as f64 {
                return Err(TokenError::NotExact {
                    id,
                    sample,
                    step,
                    float: std::any::type_name::<E>(),
                });
            }
            values.push(value);
        }
        Ok(Tensor::from_vec(values).expect("whole sequences, checked above"))
    }

    /// The row of the table that the value at flat `position` of an input picks.
    /// Panics unless the value is an integer in `0..V`.
    fn row(value: E, position: usize) -> usize {
        let id = value.to_f64();
        if id >= 0.0 && id < V as f64 && id.fract() == 0.0 {
            id as usize
        } else {
            panic!(
                "Embedding: token id {value} (sample {}, step {}) is not an integer in 0..{V}; \
                 check ids with Embedding::tokens_to_tensor",
                position / T.max(1),
                position % T.max(1)
            )
        }
    }
}

impl<const V: usize, const D: usize, const T: usize, E: Float> Module<E> for Embedding<V, D, T, E> {
    type Input = Rank1<T>;
    type Output = Rank2<T, D>;
    type Cache = ();
    type Grads = Self;

    const PARAMS: usize = V * D;

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

    fn forward(&self, x: &Tensor<Rank1<T>, E>, y: &mut Tensor<Rank2<T, D>, E>, _cache: &mut ()) {
        y.set_batch(x.batch());
        for (position, (&id, y)) in x
            .as_slice()
            .iter()
            .zip(y.as_mut_slice().chunks_exact_mut(D.max(1)))
            .enumerate()
        {
            let row = Self::row(id, position);
            crate::kernels::vector::copy(y, &self.weight[row * D..(row + 1) * D]);
        }
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank1<T>, E>,
        y: &mut Tensor<Rank2<T, D>, E>,
        cache: &mut (),
    ) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<Rank1<T>, E>,
        _y: &Tensor<Rank2<T, D>, E>,
        dy: &Tensor<Rank2<T, D>, E>,
        dx: Option<&mut Tensor<Rank1<T>, E>>,
        _cache: &mut (),
        grads: &mut Self,
    ) {
        for (position, (&id, dy)) in x
            .as_slice()
            .iter()
            .zip(dy.as_slice().chunks_exact(D.max(1)))
            .enumerate()
        {
            let row = Self::row(id, position);
            for (g, d) in grads.weight[row * D..(row + 1) * D].iter_mut().zip(dy) {
                *g += *d;
            }
        }
        if let Some(dx) = dx {
            dx.set_batch(x.batch());
            dx.fill_zero();
        }
    }

    crate::parameters!(
        weight: "weight" => Self::WEIGHT_SHAPE,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::sequence::testing::check_gradients;

    fn table() -> Embedding<4, 2, 3, f64> {
        Embedding {
            weight: vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5],
        }
    }

    #[test]
    fn forward_picks_the_rows_of_the_ids() {
        let layer = table();
        let x = Embedding::<4, 2, 3, f64>::tokens_to_tensor(&[3, 0, 1, 1, 1, 2]).unwrap();
        assert_eq!(x.batch(), 2);
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut ());
        assert_eq!(
            y.as_slice(),
            &[3.0, 3.5, 0.0, 0.5, 1.0, 1.5, 1.0, 1.5, 1.0, 1.5, 2.0, 2.5]
        );
    }

    #[test]
    fn backward_scatter_adds_rows_and_gives_no_input_gradient() {
        let layer = table();
        let x = Tensor::from_vec(vec![3.0, 1.0, 1.0]).unwrap();
        let y = Tensor::zeros(1);
        let dy = Tensor::from_vec(vec![1.0, 2.0, 10.0, 20.0, 100.0, 200.0]).unwrap();
        let mut grads = layer.new_grads();
        grads.weight[0] = 7.0; // gradients accumulate
        let mut dx = Tensor::from_vec(vec![9.0; 3]).unwrap();
        layer.backward(&x, &y, &dy, Some(&mut dx), &mut (), &mut grads);
        assert_eq!(
            grads.weight,
            vec![7.0, 0.0, 110.0, 220.0, 0.0, 0.0, 1.0, 2.0]
        );
        assert_eq!(dx.as_slice(), &[0.0; 3]);
    }

    #[test]
    fn weight_gradients_match_finite_differences() {
        // The ids are not differentiable (a shifted id is no id), so only the table is checked.
        let layer = Embedding::<6, 3, 5, f64>::init(&mut crate::init::rng(4));
        let x =
            Embedding::<6, 3, 5, f64>::tokens_to_tensor(&[0, 5, 2, 2, 1, 4, 4, 3, 0, 5]).unwrap();
        check_gradients(&layer, &x, &|_| {}, false, 5);
    }

    #[test]
    fn tokens_to_tensor_rejects_bad_ids() {
        type Small = Embedding<4, 2, 3, f32>;
        assert_eq!(
            Small::tokens_to_tensor(&[0, 1]).unwrap_err(),
            TokenError::NotWholeSequences { len: 2, steps: 3 }
        );
        let err = Small::tokens_to_tensor(&[0, 1, 2, 3, 4, 0]).unwrap_err();
        assert_eq!(
            err,
            TokenError::OutOfRange {
                id: 4,
                sample: 1,
                step: 1,
                vocab: 4
            }
        );
        assert_eq!(
            err.to_string(),
            "token id 4 (sample 1, step 1) is out of range: the vocabulary has 4 tokens"
        );
        // 2^24 + 1 is the first integer an f32 cannot hold.
        type Huge = Embedding<{ (1 << 24) + 2 }, 1, 1, f32>;
        assert!(Huge::tokens_to_tensor(&[1 << 24]).is_ok());
        assert!(matches!(
            Huge::tokens_to_tensor(&[(1 << 24) + 1]),
            Err(TokenError::NotExact { id: 16_777_217, .. })
        ));
        assert!(
            Embedding::<{ (1 << 24) + 2 }, 1, 1, f64>::tokens_to_tensor(&[(1 << 24) + 1]).is_ok()
        );
    }

    #[test]
    #[should_panic(expected = "token id 4 (sample 1, step 0) is not an integer in 0..4")]
    fn an_id_out_of_range_panics_naming_it() {
        let x = Tensor::from_vec(vec![0.0, 1.0, 2.0, 4.0, 0.0, 0.0]).unwrap();
        table().forward(&x, &mut Tensor::zeros(0), &mut ());
    }

    #[test]
    #[should_panic(expected = "token id 1.5 (sample 0, step 2) is not an integer in 0..4")]
    fn a_fractional_id_panics_naming_it() {
        let x = Tensor::from_vec(vec![0.0, 1.0, 1.5]).unwrap();
        table().forward(&x, &mut Tensor::zeros(0), &mut ());
    }

    #[test]
    fn init_is_standard_normal_and_reproducible() {
        let a = Embedding::<1000, 20, 1, f64>::init(&mut crate::init::rng(9));
        let b = Embedding::<1000, 20, 1, f64>::init(&mut crate::init::rng(9));
        assert_eq!(a, b);
        let n = a.weight.len() as f64;
        let mean = a.weight.iter().sum::<f64>() / n;
        let variance = a
            .weight
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.03, "variance {variance}");
        let beyond_two = a.weight.iter().filter(|v| v.abs() > 2.0).count() as f64 / n;
        assert!(
            (beyond_two - 0.0455).abs() < 0.005,
            "P(|x| > 2) = {beyond_two}"
        );
        let mut odd = [0.0f32; 3];
        crate::init::normal(&mut crate::init::rng(1), &mut odd, 5.0, 0.0);
        assert_eq!(odd, [5.0; 3], "odd lengths, mean and std");
    }
}
