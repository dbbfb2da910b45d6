//! Elman recurrent layer with tanh, PyTorch's `nn.RNN`.

use crate::init::{fan_in_uniform, Rng};
use crate::kernels::{matmul, matmul_prepacked, MatMut, MatRef, PackedRhs};
use crate::layers::linear::{add_row_sums, linear_rows, linear_rows_backward};
use crate::layers::sequence::{
    add_to_rows, check_batch, previous_states, split_samples, states_before, step, step_mut,
    store_final_state, Recurrent,
};
use crate::module::Module;
use crate::{Float, Rank2, Tensor};

/// `h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)` over a sequence `[T, D]`, returning
/// every `h_t` (`[T, H]`): PyTorch's `nn.RNN(D, H, batch_first=True)` (one layer, tanh).
///
/// Parameters under PyTorch's names, all four from U(-1/√H, 1/√H): `weight_ih_l0` `[H, D]`,
/// `weight_hh_l0` `[H, H]`, `bias_ih_l0` `[H]`, `bias_hh_l0` `[H]`.
///
/// Forward: the input projections `a = X W_ihᵀ + b_ih + b_hh` of every step of every sample
/// are one product (`[batch·T, D] · [D, H]`); then step by step `a_t += h_{t-1} W_hhᵀ`
/// (`[batch, H] · [H, H]`) and
/// `h_t = tanh(a_t)`. `h_0` is the cache's `initial_state`: zeros, or the state carried from
/// the previous forward (see [`Recurrent`]).
///
/// Backward through all `T` steps, for `dY` `[batch, T, H]`, with `g_T = 0` the gradient
/// reaching `h_T` from later steps; for `t = T .. 1`:
/// `da_t = (dy_t + g_t) ⊙ (1 − h_t²)` and `g_{t-1} = da_t W_hh` (`[batch, H] · [H, H]`).
/// Then over all steps at once, each one product: `dW_hh += Σ_t da_tᵀ h_{t-1}`,
/// `dW_ih += daᵀ X`, `db_ih += Σ da`, `db_hh += Σ da`, `dX = da W_ih`. `h_0` is a constant
/// (detached): no gradient flows into it.
#[derive(Clone, Debug, PartialEq)]
pub struct Rnn<const T: usize, const D: usize, const H: usize, E: Float = f32> {
    /// `W_ih`, `[H, D]`, row-major.
    pub weight_ih_l0: Vec<E>,
    /// `W_hh`, `[H, H]`, row-major.
    pub weight_hh_l0: Vec<E>,
    /// `b_ih`, `[H]`.
    pub bias_ih_l0: Vec<E>,
    /// `b_hh`, `[H]`.
    pub bias_hh_l0: Vec<E>,
}

/// The cache of an [`Rnn`]: its carried state and its working buffers, for up to `max_batch`
/// samples.
#[derive(Clone, Debug)]
pub struct RnnCache<E> {
    /// `h_0` of the next forward, `[max_batch, H]`: zeros until
    /// [`carry_state`](Recurrent::carry_state) (or the caller) writes it.
    pub initial_state: Vec<E>,
    /// `h_T` of the last forward, `[max_batch, H]`; rows beyond that forward's batch are zero.
    pub final_state: Vec<E>,
    /// The `h_0` the last forward started from, `[max_batch, H]`: its backward needs it, also
    /// after `carry_state` has replaced `initial_state`.
    start: Vec<E>,
    /// `[max_batch, T, H]`: the pre-activations `a` in the forward, `da` in the backward.
    pre: Vec<E>,
    /// `[max_batch, T, H]`: `h_{t-1}` of every step, in the backward.
    previous: Vec<E>,
    /// `[max_batch, H]`: the gradient reaching `h_{t-1}` from step `t`.
    carried_grad: Vec<E>,
    /// `W_hhᵀ` packed for the forward's steps, `W_hh` for the backward's (once per pass).
    packed_forward: PackedRhs<E>,
    packed_backward: PackedRhs<E>,
    max_batch: usize,
}

impl<E> RnnCache<E> {
    /// The largest batch this cache holds.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }
}

impl<const T: usize, const D: usize, const H: usize, E: Float> Rnn<T, D, H, E> {
    const SHAPES: [&'static [usize]; 4] = [&[H, D], &[H, H], &[H], &[H]];

    /// A layer with every parameter zero.
    pub fn zeros() -> Self {
        Self {
            weight_ih_l0: vec![E::ZERO; H * D],
            weight_hh_l0: vec![E::ZERO; H * H],
            bias_ih_l0: vec![E::ZERO; H],
            bias_hh_l0: vec![E::ZERO; H],
        }
    }

    /// The four parameters, in PyTorch's order.
    fn values_mut(&mut self) -> [&mut [E]; 4] {
        [
            &mut self.weight_ih_l0,
            &mut self.weight_hh_l0,
            &mut self.bias_ih_l0,
            &mut self.bias_hh_l0,
        ]
    }

    /// The forward of both `forward` and `forward_train`: `y` gets every `h_t`, the cache the
    /// pre-activations and the final state.
    fn run(
        &self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, H>, E>,
        cache: &mut RnnCache<E>,
    ) {
        let batch = x.batch();
        check_batch("Rnn", batch, cache.max_batch);
        y.set_batch(batch);
        let y = y.as_mut_slice();
        let start = &mut cache.start[..batch * H];
        crate::kernels::vector::copy(start, &cache.initial_state[..batch * H]);
        let pre = &mut cache.pre[..batch * T * H];
        linear_rows(
            batch * T,
            D,
            H,
            x.as_slice(),
            &self.weight_ih_l0,
            &self.bias_ih_l0,
            pre,
        );
        add_to_rows(pre, &self.bias_hh_l0);
        cache
            .packed_forward
            .pack(MatRef::transposed(&self.weight_hh_l0, H, H));
        let weight_hh_t = &cache.packed_forward;
        let y = &mut y[..batch * T * H];
        // Every sample's recurrence is its own: two halves of the batch run all their steps
        // on the two cores, one join per sequence instead of one per step.
        let (written, read) = ([(&mut *pre, T * H), (&mut *y, T * H)], [(&*start, H)]);
        split_samples(batch, T * H * H, written, read, |n, [pre, y], [start]| {
            Self::recur(weight_hh_t, start, pre, y, n)
        });
        store_final_state(&mut cache.final_state, y, start, batch, T, H);
    }

    /// The `T` steps of the forward for `batch` samples: `a_t += h_{t-1} W_hhᵀ`, then
    /// `h_t = tanh(a_t)`, with `h_0 = start`.
    fn recur(weight_hh_t: &PackedRhs<E>, start: &[E], pre: &mut [E], y: &mut [E], batch: usize) {
        for t in 0..T {
            let previous = states_before(start, y, batch, T, H, t);
            matmul_prepacked(previous, weight_hh_t, step_mut(pre, batch, T, H, t), true);
            for b in 0..batch {
                let at = (b * T + t) * H;
                for (h, a) in y[at..at + H].iter_mut().zip(&pre[at..at + H]) {
                    *h = a.tanh();
                }
            }
        }
    }

    /// The `T` steps of the backward for `batch` samples, from the last: `da_t` from `dy_t`
    /// and the gradient `later` reaching `h_t`, then `later = da_t W_hh`.
    fn backprop_steps(
        weight_hh: &PackedRhs<E>,
        dy: &[E],
        y: &[E],
        da: &mut [E],
        later: &mut [E],
        batch: usize,
    ) {
        later.fill(E::ZERO);
        for t in (0..T).rev() {
            for (b, later) in later.chunks_exact(H.max(1)).enumerate() {
                let at = (b * T + t) * H;
                for (((da, dy), h), g) in da[at..at + H]
                    .iter_mut()
                    .zip(&dy[at..at + H])
                    .zip(&y[at..at + H])
                    .zip(later)
                {
                    *da = (*dy + *g) * (E::ONE - *h * *h);
                }
            }
            if t > 0 {
                matmul_prepacked(
                    step(da, batch, T, H, t),
                    weight_hh,
                    MatMut::row_major(later, batch, H),
                    false,
                );
            }
        }
    }
}

impl<const T: usize, const D: usize, const H: usize, E: Float> Module<E> for Rnn<T, D, H, E> {
    type Input = Rank2<T, D>;
    type Output = Rank2<T, H>;
    type Cache = RnnCache<E>;
    type Grads = Self;

    const PARAMS: usize = H * D + H * H + 2 * H;

    fn init(rng: &mut Rng) -> Self {
        let mut layer = Self::zeros();
        for values in layer.values_mut() {
            fan_in_uniform(rng, values, H);
        }
        layer
    }

    fn new_cache(&self, max_batch: usize) -> RnnCache<E> {
        RnnCache {
            initial_state: vec![E::ZERO; max_batch * H],
            final_state: vec![E::ZERO; max_batch * H],
            start: vec![E::ZERO; max_batch * H],
            pre: vec![E::ZERO; max_batch * T * H],
            previous: vec![E::ZERO; max_batch * T * H],
            carried_grad: vec![E::ZERO; max_batch * H],
            packed_forward: PackedRhs::new(H, H),
            packed_backward: PackedRhs::new(H, H),
            max_batch,
        }
    }

    fn new_grads(&self) -> Self {
        Self::zeros()
    }

    fn zero_grads(grads: &mut Self) {
        for g in grads.values_mut() {
            g.fill(E::ZERO);
        }
    }

    fn forward(
        &self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, H>, E>,
        cache: &mut RnnCache<E>,
    ) {
        self.run(x, y, cache);
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, H>, E>,
        cache: &mut RnnCache<E>,
    ) {
        self.run(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &Tensor<Rank2<T, H>, E>,
        dy: &Tensor<Rank2<T, H>, E>,
        dx: Option<&mut Tensor<Rank2<T, D>, E>>,
        cache: &mut RnnCache<E>,
        grads: &mut Self,
    ) {
        let batch = x.batch();
        check_batch("Rnn", batch, cache.max_batch);
        let (y, dy) = (y.as_slice(), dy.as_slice());
        let start = &cache.start[..batch * H];
        let da = &mut cache.pre[..batch * T * H];
        let later = &mut cache.carried_grad[..batch * H];
        cache
            .packed_backward
            .pack(MatRef::row_major(&self.weight_hh_l0, H, H));
        let weight_hh = &cache.packed_backward;
        let (dy, y) = (&dy[..batch * T * H], &y[..batch * T * H]);
        let written = [(&mut *da, T * H), (&mut *later, H)];
        split_samples(
            batch,
            T * H * H,
            written,
            [(dy, T * H), (y, T * H)],
            |n, [da, later], [dy, y]| Self::backprop_steps(weight_hh, dy, y, da, later, n),
        );
        let previous = &mut cache.previous[..batch * T * H];
        previous_states(start, y, batch, T, H, previous);
        matmul(
            MatRef::transposed(da, batch * T, H),
            MatRef::row_major(previous, batch * T, H),
            MatMut::row_major(&mut grads.weight_hh_l0, H, H),
            true,
        );
        add_row_sums(da, &mut grads.bias_hh_l0);
        let dx = dx.map(|dx| {
            dx.set_batch(batch);
            dx.as_mut_slice()
        });
        linear_rows_backward(
            batch * T,
            D,
            H,
            x.as_slice(),
            &self.weight_ih_l0,
            da,
            &mut grads.weight_ih_l0,
            &mut grads.bias_ih_l0,
            dx,
        );
    }

    crate::parameters!(
        weight_ih_l0: "weight_ih_l0" => Self::SHAPES[0],
        weight_hh_l0: "weight_hh_l0" => Self::SHAPES[1],
        bias_ih_l0: "bias_ih_l0" => Self::SHAPES[2],
        bias_hh_l0: "bias_hh_l0" => Self::SHAPES[3],
    );

    /// The state after `steps` steps of the last forward (the output at step `steps`, and
    /// for an LSTM its cell) becomes the next forward's initial state; the next backward
    /// treats it as a constant (truncated BPTT).
    fn carry_over(&self, cache: &mut RnnCache<E>, output: &Tensor<Rank2<T, H>, E>, steps: usize) {
        assert!(
            (1..=T).contains(&steps),
            "carry_over: {steps} steps of a {T}-step layer"
        );
        for b in 0..output.batch() {
            let state = &output.sample(b)[(steps - 1) * H..steps * H];
            cache.initial_state[b * H..(b + 1) * H].copy_from_slice(state);
        }
    }

    fn clear_state(&self, cache: &mut RnnCache<E>) {
        <Self as Recurrent<E>>::reset_state(cache);
    }
}

impl<const T: usize, const D: usize, const H: usize, E: Float> Recurrent<E> for Rnn<T, D, H, E> {
    fn carry_state(cache: &mut RnnCache<E>) {
        crate::kernels::vector::copy(&mut cache.initial_state, &cache.final_state);
    }

    fn reset_state(cache: &mut RnnCache<E>) {
        cache.initial_state.fill(E::ZERO);
        cache.final_state.fill(E::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_module;
    use crate::layers::sequence::testing::{
        check_carry_state, check_empty_batch, check_f32_agrees_with_f64, check_split_batch,
        check_state_is_detached, run, Fixture,
    };

    #[test]
    fn forward_follows_the_recurrence_by_hand() {
        // D = 1, H = 1: h_t = tanh(0.5 x_t + 0.1 + (-0.3) h_{t-1} + 0.2).
        let layer = Rnn::<3, 1, 1, f64> {
            weight_ih_l0: vec![0.5],
            weight_hh_l0: vec![-0.3],
            bias_ih_l0: vec![0.1],
            bias_hh_l0: vec![0.2],
        };
        let x = Tensor::from_vec(vec![1.0, -2.0, 0.5]).unwrap();
        let mut y = Tensor::zeros(1);
        let mut cache = layer.new_cache(1);
        layer.forward(&x, &mut y, &mut cache);
        let h1 = (0.5f64 + 0.3).tanh();
        let h2 = (-1.0 + 0.3 - 0.3 * h1).tanh();
        let h3 = (0.25 + 0.3 - 0.3 * h2).tanh();
        for (a, e) in y.as_slice().iter().zip([h1, h2, h3]) {
            assert!((a - e).abs() < 1e-15, "{a} vs {e}");
        }
        assert_eq!(cache.final_state, vec![y.as_slice()[2]]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<Rnn<1, 3, 4, f64>>(2, 1);
        check_module::<Rnn<3, 3, 4, f64>>(3, 2);
        check_module::<Rnn<5, 2, 3, f64>>(2, 3);
        // Products large enough for the packed kernel, split over both cores.
        check_module::<Rnn<4, 64, 96, f64>>(40, 4);
    }

    #[test]
    fn f32_agrees_with_f64() {
        // Products large enough for the f32 micro-kernel, split over both cores.
        check_f32_agrees_with_f64::<Rnn<6, 64, 96, f32>, Rnn<6, 64, 96, f64>>(24, 9);
    }

    #[test]
    fn matches_pytorch() {
        let fixture = Fixture::open("rnn.safetensors");
        let mut layer = Rnn::<5, 3, 4, f64>::zeros();
        fixture.load(&mut layer);
        let x = fixture.tensor("input");
        let r = fixture.tensor("r");

        let mut cache = layer.new_cache(2);
        run(&mut layer, &mut cache, &x, &r).assert_matches(&fixture, "");
        fixture.assert_matches("h_n", &cache.final_state);

        let mut cache = layer.new_cache(2);
        cache.initial_state = fixture.values("h0");
        run(&mut layer, &mut cache, &x, &r).assert_matches(&fixture, "h0.");
        fixture.assert_matches("h0.h_n", &cache.final_state);
    }

    #[test]
    fn carried_state_joins_two_halves_into_the_whole() {
        check_carry_state::<Rnn<6, 3, 4, f64>, Rnn<3, 3, 4, f64>>(
            |whole, half| {
                assert_eq!(
                    whole.final_state,
                    half.final_state[..whole.final_state.len()]
                )
            },
            7,
        );
    }

    #[test]
    fn a_batch_split_over_the_cores_matches_one_sample_at_a_time() {
        // 20 samples x 16 steps x 64² multiply-adds: above `PARALLEL_RECURRENCE` (2^20).
        check_split_batch::<Rnn<16, 3, 64, f64>>(20, 5);
    }

    #[test]
    fn an_empty_batch_passes_through() {
        check_empty_batch::<Rnn<3, 2, 4, f64>>();
    }

    #[test]
    fn gradients_do_not_flow_into_the_carried_state() {
        check_state_is_detached::<Rnn<3, 3, 4, f64>>(8);
    }

    #[test]
    fn parameters_have_pytorchs_names_shapes_and_init_bound() {
        let layer = Rnn::<2, 3, 16, f32>::init(&mut crate::init::rng(1));
        let mut seen = Vec::new();
        layer.visit_params("rnn", &mut |p| {
            assert!(p.values.iter().all(|v| v.abs() <= 0.25), "U(-1/4, 1/4)");
            seen.push((p.name.to_string(), p.shape.to_vec()));
        });
        assert_eq!(
            seen,
            vec![
                ("rnn.weight_ih_l0".to_string(), vec![16, 3]),
                ("rnn.weight_hh_l0".to_string(), vec![16, 16]),
                ("rnn.bias_ih_l0".to_string(), vec![16]),
                ("rnn.bias_hh_l0".to_string(), vec![16]),
            ]
        );
        assert_eq!(
            <Rnn<2, 3, 16, f32> as Module<f32>>::PARAMS,
            16 * 3 + 16 * 16 + 32
        );
    }
}
