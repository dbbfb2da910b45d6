//! Gated recurrent unit layer, PyTorch's `nn.GRU`.

use crate::init::{fan_in_uniform, Rng};
use crate::kernels::{matmul, matmul_prepacked, MatMut, MatRef, PackedRhs};
use crate::layers::activation::{Pointwise, SigmoidFn};
use crate::layers::linear::{add_row_sums, linear_rows, linear_rows_backward};
use crate::layers::sequence::{
    add_to_rows, check_batch, previous_states, sample_state_before, split_samples, states_before,
    step, step_columns, store_final_state, Recurrent,
};
use crate::module::Module;
use crate::{Float, Rank2, Tensor};

/// A GRU over a sequence `[T, D]`, returning every `h_t` (`[T, H]`): PyTorch's
/// `nn.GRU(D, H, batch_first=True)` (one layer).
///
/// With the gates in PyTorch's order r, z, n:
/// `r = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)`,
/// `z = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)`,
/// `n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))`,
/// `h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}`.
///
/// Parameters under PyTorch's names, the gates stacked in that order, all four from
/// U(-1/√H, 1/√H): `weight_ih_l0` `[3H, D]`, `weight_hh_l0` `[3H, H]`, `bias_ih_l0` `[3H]`,
/// `bias_hh_l0` `[3H]`.
///
/// Forward: the input projections `p = X W_ihᵀ + b_ih` of every step of every sample are one
/// product (`[batch·T, D] · [D, 3H]`); then step by step `q = h_{t-1} W_hhᵀ + b_hh`
/// (`[batch, H] · [H, 3H]`), kept
/// apart because `r` multiplies only its `n` part. `h_0` is the cache's `initial_state`:
/// zeros, or the state carried from the previous forward (see [`Recurrent`]).
///
/// Backward through all `T` steps, with `g_T = 0` the gradient reaching `h_T` from later
/// steps; for `t = T .. 1`, with `dh = dy_t + g_t`:
/// `dp_n = dh ⊙ (1 − z) ⊙ (1 − n²)`, `dp_z = dh ⊙ (h_{t-1} − n) ⊙ z(1 − z)`,
/// `dp_r = dp_n ⊙ q_n ⊙ r(1 − r)`; the hidden side gets `dq = (dp_r, dp_z, dp_n ⊙ r)` and
/// `g_{t-1} = dh ⊙ z + dq W_hh`. Then over all steps at once, each one product:
/// `dW_hh += Σ_t dq_tᵀ h_{t-1}`, `db_hh += Σ dq`, `dW_ih += dpᵀ X`, `db_ih += Σ dp`,
/// `dX = dp W_ih`. `h_0` is a constant (detached).
#[derive(Clone, Debug, PartialEq)]
pub struct Gru<const T: usize, const D: usize, const H: usize, E: Float = f32> {
    /// `[W_ir; W_iz; W_in]`, `[3H, D]`, row-major.
    pub weight_ih_l0: Vec<E>,
    /// `[W_hr; W_hz; W_hn]`, `[3H, H]`, row-major.
    pub weight_hh_l0: Vec<E>,
    /// `[b_ir; b_iz; b_in]`, `[3H]`.
    pub bias_ih_l0: Vec<E>,
    /// `[b_hr; b_hz; b_hn]`, `[3H]`.
    pub bias_hh_l0: Vec<E>,
}

/// The cache of a [`Gru`]: its carried state and its working buffers, for up to `max_batch`
/// samples.
#[derive(Clone, Debug)]
pub struct GruCache<E> {
    /// `h_0` of the next forward, `[max_batch, H]`: zeros until
    /// [`carry_state`](Recurrent::carry_state) (or the caller) writes it.
    pub initial_state: Vec<E>,
    /// `h_T` of the last forward, `[max_batch, H]`; rows beyond that forward's batch are zero.
    pub final_state: Vec<E>,
    /// The `h_0` the last forward started from, `[max_batch, H]`.
    start: Vec<E>,
    /// `[max_batch, T, 3H]`: the gates `r, z, n` of every step (input projections while the
    /// forward computes them).
    gates: Vec<E>,
    /// `[max_batch, T, H]`: `q_n = W_hn h_{t-1} + b_hn` of every step.
    hidden_n: Vec<E>,
    /// `[max_batch, 3H]`: `q` of one step, in the forward.
    hidden: Vec<E>,
    /// `[max_batch, T, 3H]`: `dp` of every step, in the backward (`dq` shares its r and z
    /// parts).
    gate_grads: Vec<E>,
    /// `[max_batch, T, H]`: `dq_n = dp_n ⊙ r` of every step, in the backward.
    hidden_n_grads: Vec<E>,
    /// `[max_batch, T, H]`: `h_{t-1}` of every step, in the backward.
    previous: Vec<E>,
    /// `[max_batch, H]`: the gradient reaching `h_{t-1}` from step `t`.
    carried_grad: Vec<E>,
    /// `W_hhᵀ` packed for the forward's steps; the r and z rows of `W_hh`, and its n rows,
    /// for the backward's (once per pass).
    packed_forward: PackedRhs<E>,
    packed_backward: [PackedRhs<E>; 2],
    max_batch: usize,
}

impl<E> GruCache<E> {
    /// The largest batch this cache holds.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }
}

impl<const T: usize, const D: usize, const H: usize, E: Float> Gru<T, D, H, E> {
    const SHAPES: [&'static [usize]; 4] = [&[3 * H, D], &[3 * H, H], &[3 * H], &[3 * H]];

    /// A layer with every parameter zero.
    pub fn zeros() -> Self {
        Self {
            weight_ih_l0: vec![E::ZERO; 3 * H * D],
            weight_hh_l0: vec![E::ZERO; 3 * H * H],
            bias_ih_l0: vec![E::ZERO; 3 * H],
            bias_hh_l0: vec![E::ZERO; 3 * H],
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
    /// gates, `q_n` and the final state.
    fn run(
        &self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, H>, E>,
        cache: &mut GruCache<E>,
    ) {
        let batch = x.batch();
        check_batch("Gru", batch, cache.max_batch);
        y.set_batch(batch);
        let y = y.as_mut_slice();
        let start = &mut cache.start[..batch * H];
        crate::kernels::vector::copy(start, &cache.initial_state[..batch * H]);
        let gates = &mut cache.gates[..batch * T * 3 * H];
        let hidden_n = &mut cache.hidden_n[..batch * T * H];
        let q = &mut cache.hidden[..batch * 3 * H];
        linear_rows(
            batch * T,
            D,
            3 * H,
            x.as_slice(),
            &self.weight_ih_l0,
            &self.bias_ih_l0,
            gates,
        );
        cache
            .packed_forward
            .pack(MatRef::transposed(&self.weight_hh_l0, 3 * H, H));
        let (weight_hh_t, bias_hh) = (&cache.packed_forward, &self.bias_hh_l0);
        let y = &mut y[..batch * T * H];
        // Every sample's recurrence is its own: two halves of the batch run all their steps
        // on the two cores (see `split_samples`).
        let written = [
            (&mut *gates, T * 3 * H),
            (&mut *hidden_n, T * H),
            (&mut *q, 3 * H),
            (&mut *y, T * H),
        ];
        let work = T * 3 * H * H;
        split_samples(
            batch,
            work,
            written,
            [(&*start, H)],
            |n, written, [start]| {
                let [gates, hidden_n, q, y] = written;
                Self::recur(weight_hh_t, bias_hh, start, gates, hidden_n, q, y, n)
            },
        );
        store_final_state(&mut cache.final_state, y, start, batch, T, H);
    }

    /// The `T` steps of the forward for `batch` samples, from `h_0 = start`: the gates, the
    /// kept `q_n`, and `h_t` into `y`; `q` is one step's `h_{t-1} W_hhᵀ + b_hh`.
    #[allow(clippy::too_many_arguments)]
    fn recur(
        weight_hh_t: &PackedRhs<E>,
        bias_hh: &[E],
        start: &[E],
        gates: &mut [E],
        hidden_n: &mut [E],
        q: &mut [E],
        y: &mut [E],
        batch: usize,
    ) {
        for t in 0..T {
            let previous = states_before(start, y, batch, T, H, t);
            matmul_prepacked(
                previous,
                weight_hh_t,
                MatMut::row_major(q, batch, 3 * H),
                false,
            );
            add_to_rows(q, bias_hh);
            for b in 0..batch {
                let at = b * T + t;
                let (earlier, current) = y.split_at_mut(at * H);
                let h_prev = if t == 0 {
                    &start[b * H..(b + 1) * H]
                } else {
                    &earlier[(at - 1) * H..]
                };
                let row = &mut gates[at * 3 * H..(at + 1) * 3 * H];
                let (r, rest) = row.split_at_mut(H);
                let (z, n) = rest.split_at_mut(H);
                let q = &q[b * 3 * H..(b + 1) * 3 * H];
                let (q_r, q_z, q_n) = (&q[..H], &q[H..2 * H], &q[2 * H..]);
                let kept_n = &mut hidden_n[at * H..(at + 1) * H];
                for j in 0..H {
                    r[j] = SigmoidFn::value(r[j] + q_r[j]);
                    z[j] = SigmoidFn::value(z[j] + q_z[j]);
                    n[j] = (n[j] + r[j] * q_n[j]).tanh();
                    kept_n[j] = q_n[j];
                    current[j] = (E::ONE - z[j]) * n[j] + z[j] * h_prev[j];
                }
            }
        }
    }

    /// The `T` steps of the backward for `batch` samples, from the last: the gate gradients
    /// `dp` and `dq_n` of every step, and `later`, the gradient reaching `h_{t-1}`.
    #[allow(clippy::too_many_arguments)]
    fn backprop_steps(
        [w_rz, w_n]: &[PackedRhs<E>; 2],
        start: &[E],
        gates: &[E],
        hidden_n: &[E],
        y: &[E],
        dy: &[E],
        dp: &mut [E],
        dq_n: &mut [E],
        later: &mut [E],
        batch: usize,
    ) {
        later.fill(E::ZERO);
        for t in (0..T).rev() {
            for b in 0..batch {
                let at = b * T + t;
                let h_prev = sample_state_before(start, y, b, T, H, t);
                let row = &gates[at * 3 * H..(at + 1) * 3 * H];
                let (r, z, n) = (&row[..H], &row[H..2 * H], &row[2 * H..]);
                let q_n = &hidden_n[at * H..(at + 1) * H];
                let dp_row = &mut dp[at * 3 * H..(at + 1) * 3 * H];
                let (dp_r, rest) = dp_row.split_at_mut(H);
                let (dp_z, dp_n) = rest.split_at_mut(H);
                let dq_n = &mut dq_n[at * H..(at + 1) * H];
                let dy = &dy[at * H..(at + 1) * H];
                let g = &mut later[b * H..(b + 1) * H];
                for j in 0..H {
                    let dh = dy[j] + g[j];
                    dp_n[j] = dh * (E::ONE - z[j]) * (E::ONE - n[j] * n[j]);
                    dp_z[j] = dh * (h_prev[j] - n[j]) * z[j] * (E::ONE - z[j]);
                    dp_r[j] = dp_n[j] * q_n[j] * r[j] * (E::ONE - r[j]);
                    dq_n[j] = dp_n[j] * r[j];
                    // The direct path h_{t-1} → h_t; the gate paths are added below.
                    g[j] = dh * z[j];
                }
            }
            if t > 0 {
                // g_{t-1} += dq_t W_hh, with dq_t = (dp_r, dp_z | dq_n) of this step.
                matmul_prepacked(
                    step_columns(dp, batch, T, 3 * H, 2 * H, t),
                    w_rz,
                    MatMut::row_major(&mut *later, batch, H),
                    true,
                );
                matmul_prepacked(
                    step(dq_n, batch, T, H, t),
                    w_n,
                    MatMut::row_major(&mut *later, batch, H),
                    true,
                );
            }
        }
    }
}

impl<const T: usize, const D: usize, const H: usize, E: Float> Module<E> for Gru<T, D, H, E> {
    type Input = Rank2<T, D>;
    type Output = Rank2<T, H>;
    type Cache = GruCache<E>;
    type Grads = Self;

    const PARAMS: usize = 3 * (H * D + H * H + 2 * H);

    fn init(rng: &mut Rng) -> Self {
        let mut layer = Self::zeros();
        for values in layer.values_mut() {
            fan_in_uniform(rng, values, H);
        }
        layer
    }

    fn new_cache(&self, max_batch: usize) -> GruCache<E> {
        GruCache {
            initial_state: vec![E::ZERO; max_batch * H],
            final_state: vec![E::ZERO; max_batch * H],
            start: vec![E::ZERO; max_batch * H],
            gates: vec![E::ZERO; max_batch * T * 3 * H],
            hidden_n: vec![E::ZERO; max_batch * T * H],
            hidden: vec![E::ZERO; max_batch * 3 * H],
            gate_grads: vec![E::ZERO; max_batch * T * 3 * H],
            hidden_n_grads: vec![E::ZERO; max_batch * T * H],
            previous: vec![E::ZERO; max_batch * T * H],
            carried_grad: vec![E::ZERO; max_batch * H],
            packed_forward: PackedRhs::new(H, 3 * H),
            packed_backward: [PackedRhs::new(2 * H, H), PackedRhs::new(H, H)],
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
        cache: &mut GruCache<E>,
    ) {
        self.run(x, y, cache);
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, H>, E>,
        cache: &mut GruCache<E>,
    ) {
        self.run(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &Tensor<Rank2<T, H>, E>,
        dy: &Tensor<Rank2<T, H>, E>,
        dx: Option<&mut Tensor<Rank2<T, D>, E>>,
        cache: &mut GruCache<E>,
        grads: &mut Self,
    ) {
        let batch = x.batch();
        check_batch("Gru", batch, cache.max_batch);
        let (y, dy) = (y.as_slice(), dy.as_slice());
        let rows = batch * T;
        let start = &cache.start[..batch * H];
        let gates = &cache.gates[..rows * 3 * H];
        let hidden_n = &cache.hidden_n[..rows * H];
        let dp = &mut cache.gate_grads[..rows * 3 * H];
        let dq_n = &mut cache.hidden_n_grads[..rows * H];
        let later = &mut cache.carried_grad[..batch * H];
        let (w_rz, w_n) = self.weight_hh_l0.split_at(2 * H * H);
        let [packed_rz, packed_n] = &mut cache.packed_backward;
        packed_rz.pack(MatRef::row_major(w_rz, 2 * H, H));
        packed_n.pack(MatRef::row_major(w_n, H, H));
        let weight_hh = &cache.packed_backward;
        let dy = &dy[..rows * H];
        let written = [(&mut *dp, T * 3 * H), (&mut *dq_n, T * H), (&mut *later, H)];
        let read = [
            (start, H),
            (gates, T * 3 * H),
            (hidden_n, T * H),
            (&y[..rows * H], T * H),
            (dy, T * H),
        ];
        split_samples(batch, T * 3 * H * H, written, read, |n, written, read| {
            let [dp, dq_n, later] = written;
            let [start, gates, hidden_n, y, dy] = read;
            Self::backprop_steps(weight_hh, start, gates, hidden_n, y, dy, dp, dq_n, later, n)
        });
        // dW_hh += Σ_t dq_tᵀ h_{t-1}, db_hh += Σ dq: the r and z rows from dp, the n rows from
        // dq_n.
        let previous = &mut cache.previous[..rows * H];
        previous_states(start, y, batch, T, H, previous);
        let previous = MatRef::row_major(&*previous, rows, H);
        let (dw_rz, dw_n) = grads.weight_hh_l0.split_at_mut(2 * H * H);
        let dq_rz_t = MatRef {
            data: &*dp,
            rows: 2 * H,
            cols: rows,
            row_stride: 1,
            col_stride: 3 * H,
        };
        matmul(dq_rz_t, previous, MatMut::row_major(dw_rz, 2 * H, H), true);
        matmul(
            MatRef::transposed(dq_n, rows, H),
            previous,
            MatMut::row_major(dw_n, H, H),
            true,
        );
        let (db_rz, db_n) = grads.bias_hh_l0.split_at_mut(2 * H);
        for row in dp.chunks_exact((3 * H).max(1)) {
            for (sum, v) in db_rz.iter_mut().zip(row) {
                *sum += *v;
            }
        }
        add_row_sums(dq_n, db_n);
        let dx = dx.map(|dx| {
            dx.set_batch(batch);
            dx.as_mut_slice()
        });
        linear_rows_backward(
            batch * T,
            D,
            3 * H,
            x.as_slice(),
            &self.weight_ih_l0,
            dp,
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
    fn carry_over(&self, cache: &mut GruCache<E>, output: &Tensor<Rank2<T, H>, E>, steps: usize) {
        assert!(
            (1..=T).contains(&steps),
            "carry_over: {steps} steps of a {T}-step layer"
        );
        for b in 0..output.batch() {
            let state = &output.sample(b)[(steps - 1) * H..steps * H];
            cache.initial_state[b * H..(b + 1) * H].copy_from_slice(state);
        }
    }

    fn clear_state(&self, cache: &mut GruCache<E>) {
        <Self as Recurrent<E>>::reset_state(cache);
    }
}

impl<const T: usize, const D: usize, const H: usize, E: Float> Recurrent<E> for Gru<T, D, H, E> {
    fn carry_state(cache: &mut GruCache<E>) {
        crate::kernels::vector::copy(&mut cache.initial_state, &cache.final_state);
    }

    fn reset_state(cache: &mut GruCache<E>) {
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

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn forward_follows_the_gates_by_hand() {
        // D = 1, H = 1; gates (r, z, n).
        let layer = Gru::<2, 1, 1, f64> {
            weight_ih_l0: vec![0.5, -0.4, 0.3],
            weight_hh_l0: vec![0.1, 0.2, -0.6],
            bias_ih_l0: vec![0.0, 0.5, 0.1],
            bias_hh_l0: vec![0.2, 0.0, 0.3],
        };
        let x = Tensor::from_vec(vec![1.0, -1.0]).unwrap();
        let mut y = Tensor::zeros(1);
        let mut cache = layer.new_cache(1);
        layer.forward(&x, &mut y, &mut cache);
        let mut h = 0.0;
        let mut expected = Vec::new();
        for x in [1.0, -1.0] {
            let r = sigmoid(0.5 * x + 0.1 * h + 0.2);
            let z = sigmoid(-0.4 * x + 0.5 + 0.2 * h);
            let n = (0.3 * x + 0.1 + r * (-0.6 * h + 0.3)).tanh();
            h = (1.0 - z) * n + z * h;
            expected.push(h);
        }
        for (a, e) in y.as_slice().iter().zip(&expected) {
            assert!((a - e).abs() < 1e-15, "{a} vs {e}");
        }
        assert!((cache.final_state[0] - h).abs() < 1e-15);
    }

    #[test]
    fn a_batch_split_over_the_cores_matches_one_sample_at_a_time() {
        // 12 samples x 16 steps x 3·48² multiply-adds: above `PARALLEL_RECURRENCE` (2^20).
        check_split_batch::<Gru<16, 5, 48, f64>>(12, 6);
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<Gru<1, 3, 4, f64>>(2, 1);
        check_module::<Gru<3, 3, 4, f64>>(3, 2);
        check_module::<Gru<5, 2, 3, f64>>(2, 3);
        // Products large enough for the packed kernel, split over both cores.
        check_module::<Gru<3, 48, 48, f64>>(40, 4);
    }

    #[test]
    fn f32_agrees_with_f64() {
        // Products large enough for the f32 micro-kernel, split over both cores.
        check_f32_agrees_with_f64::<Gru<6, 64, 96, f32>, Gru<6, 64, 96, f64>>(24, 9);
    }

    #[test]
    fn matches_pytorch() {
        let fixture = Fixture::open("gru.safetensors");
        let mut layer = Gru::<5, 3, 4, f64>::zeros();
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
        check_carry_state::<Gru<6, 3, 4, f64>, Gru<3, 3, 4, f64>>(
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
    fn an_empty_batch_passes_through() {
        check_empty_batch::<Gru<3, 2, 4, f64>>();
    }

    #[test]
    fn gradients_do_not_flow_into_the_carried_state() {
        check_state_is_detached::<Gru<3, 3, 4, f64>>(8);
    }

    #[test]
    fn parameters_have_pytorchs_names_shapes_and_init_bound() {
        let layer = Gru::<2, 3, 16, f32>::init(&mut crate::init::rng(1));
        let mut seen = Vec::new();
        layer.visit_params("gru", &mut |p| {
            assert!(p.values.iter().all(|v| v.abs() <= 0.25), "U(-1/4, 1/4)");
            seen.push((p.name.to_string(), p.shape.to_vec()));
        });
        assert_eq!(
            seen,
            vec![
                ("gru.weight_ih_l0".to_string(), vec![48, 3]),
                ("gru.weight_hh_l0".to_string(), vec![48, 16]),
                ("gru.bias_ih_l0".to_string(), vec![48]),
                ("gru.bias_hh_l0".to_string(), vec![48]),
            ]
        );
        assert_eq!(
            <Gru<2, 3, 16, f32> as Module<f32>>::PARAMS,
            3 * (16 * 3 + 16 * 16 + 32)
        );
    }
}
