//! Tables added to a sequence `[T, D]`: learned positions, BERT's token types, and Vaswani et
//! al.'s fixed sinusoids.

use crate::init::{normal, Rng};
use crate::module::{Module, Param, ParamMut};
use crate::{Float, Rank2, Tensor};

/// `y_t = x_t + W_{r(t)}`: a learned table `W` `[ROWS, D]` added to a sequence `[T, D]`, row
/// `r(t) = t` at step `t` when `PER_STEP` (learned positions), row 0 at every step otherwise
/// (BERT's token types for single-segment input). Use it through [`LearnedPositions`] and
/// [`TokenTypeEmbedding`].
///
/// The parameter `weight` is the table of a PyTorch `nn.Embedding(ROWS, D)`, initialised like
/// it from N(0, 1). Rows no step uses are kept, saved and loaded; their gradient is zero.
///
/// Backward: `dW_{r(t)} += Σ_batch dy_t`, `dx = dy`.
#[derive(Clone, Debug, PartialEq)]
pub struct AddedTable<
    const T: usize,
    const D: usize,
    const ROWS: usize,
    const PER_STEP: bool,
    E: Float = f32,
> {
    /// `[ROWS, D]`.
    pub weight: Vec<E>,
}

/// `y_t = x_t + P_t` at every time step: a learned position embedding, `[T, D] → [T, D]`,
/// PyTorch's `x + pos(torch.arange(T))` with `pos = nn.Embedding(ROWS, D)`. A table may have
/// more rows than the sequence has steps (BERT's has 512 for any length); a sequence longer
/// than the table is a compile-time error.
pub type LearnedPositions<const T: usize, const D: usize, const ROWS: usize, E = f32> =
    AddedTable<T, D, ROWS, true, E>;

/// `y_t = x_t + E_0` at every step: BERT's token-type (segment) embedding
/// (`token_type_embeddings`, `nn.Embedding(TYPES, D)`) for a single sentence, whose token
/// types are all 0. The network's input is one sequence of token ids, so rows 1.. are only
/// kept for loading and saving.
pub type TokenTypeEmbedding<const T: usize, const D: usize, const TYPES: usize, E = f32> =
    AddedTable<T, D, TYPES, false, E>;

impl<const T: usize, const D: usize, const ROWS: usize, const PER_STEP: bool, E: Float>
    AddedTable<T, D, ROWS, PER_STEP, E>
{
    const SHAPE: [usize; 2] = {
        assert!(
            if PER_STEP { T <= ROWS } else { ROWS > 0 },
            "AddedTable: the sequence is longer than the position table"
        );
        [ROWS, D]
    };

    /// A table of zeros.
    pub fn zeros() -> Self {
        Self {
            weight: vec![E::ZERO; Self::SHAPE[0] * D],
        }
    }

    /// The row added at step `t`.
    fn row(t: usize) -> usize {
        if PER_STEP {
            t
        } else {
            0
        }
    }

    /// The steps of every sample, each with the table row it adds: `(step, row)` pairs of
    /// `D`-wide slices, for `values` holding whole samples.
    fn steps(values: &[E]) -> impl Iterator<Item = (usize, &[E])> {
        values
            .chunks_exact(D.max(1))
            .enumerate()
            .map(|(i, step)| (Self::row(i % T), step))
    }
}

/// `y = x + table`, sample by sample.
fn add_to_samples<E: Float>(x: &[E], table: &[E], y: &mut [E]) {
    for (ys, xs) in y
        .chunks_exact_mut(table.len().max(1))
        .zip(x.chunks_exact(table.len().max(1)))
    {
        for ((y, x), p) in ys.iter_mut().zip(xs).zip(table) {
            *y = *x + *p;
        }
    }
}

/// `dx = dy` when asked.
fn pass_gradient<E: Float, const T: usize, const D: usize>(
    dy: &Tensor<Rank2<T, D>, E>,
    dx: Option<&mut Tensor<Rank2<T, D>, E>>,
) {
    if let Some(dx) = dx {
        dx.copy_from(dy);
    }
}

impl<const T: usize, const D: usize, const ROWS: usize, const PER_STEP: bool, E: Float> Module<E>
    for AddedTable<T, D, ROWS, PER_STEP, E>
{
    type Input = Rank2<T, D>;
    type Output = Rank2<T, D>;
    type Cache = ();
    type Grads = Self;

    const PARAMS: usize = ROWS * D;

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
        let ys = y.as_mut_slice().chunks_exact_mut(D.max(1));
        for (y, (row, x)) in ys.zip(Self::steps(x.as_slice())) {
            let added = &self.weight[row * D..][..D];
            for ((y, x), w) in y.iter_mut().zip(x).zip(added) {
                *y = *x + *w;
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
        for (row, dy) in Self::steps(dy.as_slice()) {
            for (g, d) in grads.weight[row * D..][..D].iter_mut().zip(dy) {
                *g += *d;
            }
        }
        pass_gradient(dy, dx);
    }

    crate::parameters!(
        weight: "weight" => Self::SHAPE,
    );
}

/// `y_t = x_t + PE_t` with the fixed sinusoidal encoding of Vaswani et al. (2017),
/// `[T, D] → [T, D]`:
///
/// ```text
/// PE[t, 2i]     = sin(t / 10000^(2i/D))
/// PE[t, 2i + 1] = cos(t / 10000^(2i/D))
/// ```
///
/// No parameters. The table is computed once (in f64, then rounded) by `new_cache` and kept in
/// the cache. Backward: `dx = dy`.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct SinusoidalPositions<const T: usize, const D: usize>;

impl<const T: usize, const D: usize> SinusoidalPositions<T, D> {
    /// The table `PE`, `[T, D]` row-major.
    pub fn table<E: Float>() -> Vec<E> {
        let mut table = Vec::with_capacity(T * D);
        for t in 0..T {
            for j in 0..D {
                let i2 = (j - j % 2) as f64;
                let angle = t as f64 / 10_000f64.powf(i2 / D as f64);
                table.push(E::from_f64(if j % 2 == 0 {
                    angle.sin()
                } else {
                    angle.cos()
                }));
            }
        }
        table
    }
}

/// The cache of [`SinusoidalPositions`]: its table.
#[derive(Clone, Debug, PartialEq)]
pub struct SinusoidalCache<E> {
    table: Vec<E>,
}

impl<const T: usize, const D: usize, E: Float> Module<E> for SinusoidalPositions<T, D> {
    type Input = Rank2<T, D>;
    type Output = Rank2<T, D>;
    type Cache = SinusoidalCache<E>;
    type Grads = ();

    const PARAMS: usize = 0;

    fn init(_rng: &mut Rng) -> Self {
        Self
    }

    fn new_cache(&self, _max_batch: usize) -> SinusoidalCache<E> {
        SinusoidalCache {
            table: Self::table(),
        }
    }

    fn new_grads(&self) {}

    fn zero_grads(_grads: &mut ()) {}

    fn forward(
        &self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, D>, E>,
        cache: &mut SinusoidalCache<E>,
    ) {
        y.set_batch(x.batch());
        add_to_samples(x.as_slice(), &cache.table, y.as_mut_slice());
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, D>, E>,
        cache: &mut SinusoidalCache<E>,
    ) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        _x: &Tensor<Rank2<T, D>, E>,
        _y: &Tensor<Rank2<T, D>, E>,
        dy: &Tensor<Rank2<T, D>, E>,
        dx: Option<&mut Tensor<Rank2<T, D>, E>>,
        _cache: &mut SinusoidalCache<E>,
        _grads: &mut (),
    ) {
        pass_gradient(dy, dx);
    }

    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(Param<'_, E>)) {}

    fn visit_params_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(ParamMut<'_, E>)) {}

    fn visit_params_and_grads(&mut self, _grads: &(), _f: &mut dyn FnMut(&mut [E], &[E])) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_module;
    use crate::layers::sequence::testing::assert_close;

    #[test]
    fn learned_positions_add_row_t_at_step_t() {
        let layer = LearnedPositions::<2, 3, 2, f64> {
            weight: vec![1.0, 2.0, 3.0, 10.0, 20.0, 30.0],
        };
        let x = Tensor::from_vec((0..12).map(f64::from).collect()).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut ());
        assert_eq!(
            y.as_slice(),
            &[1.0, 3.0, 5.0, 13.0, 24.0, 35.0, 7.0, 9.0, 11.0, 19.0, 30.0, 41.0]
        );
        // dP sums dy over the batch, dx = dy.
        let mut grads = layer.new_grads();
        grads.weight[0] = 100.0;
        let dy = Tensor::from_vec((0..12).map(|v| f64::from(v) * 0.5).collect()).unwrap();
        let mut dx = Tensor::zeros(0);
        layer.backward(&x, &y, &dy, Some(&mut dx), &mut (), &mut grads);
        assert_eq!(
            grads.weight,
            vec![103.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            "accumulates"
        );
        assert_eq!(dx, dy);
    }

    #[test]
    fn learned_positions_are_drawn_from_a_standard_normal() {
        let layer = LearnedPositions::<64, 128, 64, f64>::init(&mut crate::init::rng(1));
        let n = layer.weight.len() as f64;
        let mean = layer.weight.iter().sum::<f64>() / n;
        let var = layer
            .weight
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum::<f64>()
            / n;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean}, var {var}"
        );
        let mut names = Vec::new();
        layer.visit_params("pos", &mut |p| {
            names.push((p.name.to_string(), p.shape.to_vec()))
        });
        assert_eq!(names, vec![("pos.weight".to_string(), vec![64, 128])]);
    }

    #[test]
    fn sinusoids_follow_vaswani_et_al() {
        let table = SinusoidalPositions::<3, 5>::table::<f64>();
        let row = |t: f64| {
            vec![
                t.sin(),
                t.cos(),
                (t / 10_000f64.powf(0.4)).sin(),
                (t / 10_000f64.powf(0.4)).cos(),
                (t / 10_000f64.powf(0.8)).sin(),
            ]
        };
        assert_close("PE", &table, &[row(0.0), row(1.0), row(2.0)].concat());
        assert_eq!(&table[..5], &[0.0, 1.0, 0.0, 1.0, 0.0]);
        // D = 4, t = 1: sin 1, cos 1, sin 0.01, cos 0.01.
        let table = SinusoidalPositions::<2, 4>::table::<f64>();
        assert_close(
            "PE",
            &table[4..],
            &[1f64.sin(), 1f64.cos(), 0.01f64.sin(), 0.01f64.cos()],
        );

        let layer = SinusoidalPositions::<3, 5>;
        let x = crate::gradcheck::random_tensor::<Rank2<3, 5>>(&mut crate::init::rng(2), 2);
        let mut y = Tensor::zeros(0);
        let mut cache = Module::<f64>::new_cache(&layer, 2);
        layer.forward(&x, &mut y, &mut cache);
        let expected: Vec<f64> = x
            .as_slice()
            .iter()
            .zip(table_twice(&SinusoidalPositions::<3, 5>::table::<f64>()))
            .map(|(x, p)| x + p)
            .collect();
        assert_close("y", y.as_slice(), &expected);
    }

    fn table_twice(table: &[f64]) -> Vec<f64> {
        [table, table].concat()
    }

    #[test]
    fn token_types_add_the_first_row_at_every_step() {
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
        check_module::<LearnedPositions<4, 3, 4, f64>>(3, 1);
        check_module::<LearnedPositions<4, 3, 7, f64>>(3, 1);
        check_module::<SinusoidalPositions<5, 6>>(2, 2);
    }
}
