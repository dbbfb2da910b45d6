//! Long short-term memory layer, PyTorch's `nn.LSTM`.

use crate::init::{fan_in_uniform, Rng};
use crate::kernels::{matmul, matmul_prepacked, MatMut, MatRef, PackedRhs};
use crate::layers::activation::{Pointwise, SigmoidFn};
use crate::layers::linear::{add_row_sums, linear_rows, linear_rows_backward};
use crate::layers::sequence::{
    add_to_rows, check_batch, previous_states, sample_state_before, split_samples, states_before,
    step, step_mut, store_final_state, Recurrent,
};
use crate::module::Module;
use crate::{Float, Rank2, Tensor};

/// An LSTM over a sequence `[T, D]`, returning every `h_t` (`[T, H]`): PyTorch's
/// `nn.LSTM(D, H, batch_first=True)` (one layer, no projection).
///
/// With `a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh` split into four gates of `H`, in
/// PyTorch's order i, f, g, o:
/// `i = σ(a_i)`, `f = σ(a_f)`, `g = tanh(a_g)`, `o = σ(a_o)`,
/// `c_t = f ⊙ c_{t-1} + i ⊙ g`, `h_t = o ⊙ tanh(c_t)`.
///
/// Parameters under PyTorch's names, the gates stacked in that order, all four from
/// U(-1/√H, 1/√H): `weight_ih_l0` `[4H, D]`, `weight_hh_l0` `[4H, H]`, `bias_ih_l0` `[4H]`,
/// `bias_hh_l0` `[4H]`.
///
/// Forward: the input projections `X W_ihᵀ + b_ih + b_hh` of every step of every sample are one
/// product (`[batch·T, D] · [D, 4H]`); then step by step `a_t += h_{t-1} W_hhᵀ`
/// (`[batch, H] · [H, 4H]`) and
/// the cell.
/// `(h_0, c_0)` are the cache's `initial_state` and `initial_cell`: zeros, or the state
/// carried from the previous forward (see [`Recurrent`]).
///
/// Backward through all `T` steps, with `g_T = 0` and `k_T = 0` the gradients reaching `h_T`
/// and `c_T` from later steps; for `t = T .. 1`:
/// `dh = dy_t + g_t`, `dc = k_t + dh ⊙ o ⊙ (1 − tanh²(c_t))`,
/// `da_i = dc ⊙ g ⊙ i(1 − i)`, `da_f = dc ⊙ c_{t-1} ⊙ f(1 − f)`, `da_g = dc ⊙ i ⊙ (1 − g²)`,
/// `da_o = dh ⊙ tanh(c_t) ⊙ o(1 − o)`, `k_{t-1} = dc ⊙ f`, `g_{t-1} = da_t W_hh`
/// (`[batch, 4H] · [4H, H]`). Then over all steps at once, each one product:
/// `dW_hh += Σ_t da_tᵀ h_{t-1}`, `dW_ih += daᵀ X`, `db_ih += Σ da`, `db_hh += Σ da`,
/// `dX = da W_ih`. `(h_0, c_0)` are constants (detached).
#[derive(Clone, Debug, PartialEq)]
pub struct Lstm<const T: usize, const D: usize, const H: usize, E: Float = f32> {
    /// `[W_ii; W_if; W_ig; W_io]`, `[4H, D]`, row-major.
    pub weight_ih_l0: Vec<E>,
    /// `[W_hi; W_hf; W_hg; W_ho]`, `[4H, H]`, row-major.
    pub weight_hh_l0: Vec<E>,
    /// `[b_ii; b_if; b_ig; b_io]`, `[4H]`.
    pub bias_ih_l0: Vec<E>,
    /// `[b_hi; b_hf; b_hg; b_ho]`, `[4H]`.
    pub bias_hh_l0: Vec<E>,
}

/// The cache of an [`Lstm`]: its carried state `(h, c)` and its working buffers, for up to
/// `max_batch` samples.
#[derive(Clone, Debug)]
pub struct LstmCache<E> {
    /// `h_0` of the next forward, `[max_batch, H]`: zeros until
    /// [`carry_state`](Recurrent::carry_state) (or the caller) writes it.
    pub initial_state: Vec<E>,
    /// `c_0` of the next forward, `[max_batch, H]`, like `initial_state`.
    pub initial_cell: Vec<E>,
    /// `h_T` of the last forward, `[max_batch, H]`; rows beyond that forward's batch are zero.
    pub final_state: Vec<E>,
    /// `c_T` of the last forward, `[max_batch, H]`, like `final_state`.
    pub final_cell: Vec<E>,
    /// The `h_0` and `c_0` the last forward started from, `[max_batch, H]` each.
    start_state: Vec<E>,
    start_cell: Vec<E>,
    /// `[max_batch, T, 4H]`: the gates `i, f, g, o` of every step (pre-activations while
    /// the forward computes them).
    gates: Vec<E>,
    /// `[max_batch, T, H]`: `c_t` of every step.
    cells: Vec<E>,
    /// `[max_batch, T, 4H]`: `da` of every step, in the backward.
    gate_grads: Vec<E>,
    /// `[max_batch, T, H]`: `h_{t-1}` of every step, in the backward.
    previous: Vec<E>,
    /// `[max_batch, H]` each: the gradients reaching `h_{t-1}` and `c_{t-1}` from step `t`.
    carried_grad: Vec<E>,
    carried_cell_grad: Vec<E>,
    /// `W_hhᵀ` packed for the forward's steps, `W_hh` for the backward's (once per pass).
    packed_forward: PackedRhs<E>,
    packed_backward: PackedRhs<E>,
    max_batch: usize,
}

impl<E> LstmCache<E> {
    /// The largest batch this cache holds.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }
}

impl<const T: usize, const D: usize, const H: usize, E: Float> Lstm<T, D, H, E> {
    const SHAPES: [&'static [usize]; 4] = [&[4 * H, D], &[4 * H, H], &[4 * H], &[4 * H]];

    /// A layer with every parameter zero.
    pub fn zeros() -> Self {
        Self {
            weight_ih_l0: vec![E::ZERO; 4 * H * D],
            weight_hh_l0: vec![E::ZERO; 4 * H * H],
            bias_ih_l0: vec![E::ZERO; 4 * H],
            bias_hh_l0: vec![E::ZERO; 4 * H],
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
    /// gates, the cells and the final state.
    fn run(
        &self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, H>, E>,
        cache: &mut LstmCache<E>,
    ) {
        let batch = x.batch();
        check_batch("Lstm", batch, cache.max_batch);
        y.set_batch(batch);
        let y = y.as_mut_slice();
        let start_state = &mut cache.start_state[..batch * H];
        crate::kernels::vector::copy(start_state, &cache.initial_state[..batch * H]);
        let start_cell = &mut cache.start_cell[..batch * H];
        crate::kernels::vector::copy(start_cell, &cache.initial_cell[..batch * H]);
        let gates = &mut cache.gates[..batch * T * 4 * H];
        let cells = &mut cache.cells[..batch * T * H];
        linear_rows(
            batch * T,
            D,
            4 * H,
            x.as_slice(),
            &self.weight_ih_l0,
            &self.bias_ih_l0,
            gates,
        );
        add_to_rows(gates, &self.bias_hh_l0);
        cache
            .packed_forward
            .pack(MatRef::transposed(&self.weight_hh_l0, 4 * H, H));
        let weight_hh_t = &cache.packed_forward;
        let y = &mut y[..batch * T * H];
        // Every sample's recurrence is its own: two halves of the batch run all their steps
        // on the two cores (see `split_samples`).
        let written = [
            (&mut *gates, T * 4 * H),
            (&mut *cells, T * H),
            (&mut *y, T * H),
        ];
        let read = [(&*start_state, H), (&*start_cell, H)];
        split_samples(batch, T * 4 * H * H, written, read, |n, written, read| {
            let [gates, cells, y] = written;
            let [start_state, start_cell] = read;
            Self::recur(weight_hh_t, start_state, start_cell, gates, cells, y, n)
        });
        store_final_state(&mut cache.final_state, y, start_state, batch, T, H);
        store_final_state(&mut cache.final_cell, cells, start_cell, batch, T, H);
    }

    /// The `T` steps of the forward for `batch` samples from `(h_0, c_0)`: the activated
    /// gates, the cells and `h_t` into `y`.
    fn recur(
        weight_hh_t: &PackedRhs<E>,
        start_state: &[E],
        start_cell: &[E],
        gates: &mut [E],
        cells: &mut [E],
        y: &mut [E],
        batch: usize,
    ) {
        for t in 0..T {
            let previous = states_before(start_state, y, batch, T, H, t);
            matmul_prepacked(
                previous,
                weight_hh_t,
                step_mut(gates, batch, T, 4 * H, t),
                true,
            );
            for b in 0..batch {
                let at = b * T + t;
                let (earlier, current) = cells.split_at_mut(at * H);
                let c_prev = if t == 0 {
                    &start_cell[b * H..(b + 1) * H]
                } else {
                    &earlier[(at - 1) * H..]
                };
                let row = &mut gates[at * 4 * H..(at + 1) * 4 * H];
                let (i, rest) = row.split_at_mut(H);
                let (f, rest) = rest.split_at_mut(H);
                let (g, o) = rest.split_at_mut(H);
                let h = &mut y[at * H..(at + 1) * H];
                for j in 0..H {
                    i[j] = SigmoidFn::value(i[j]);
                    f[j] = SigmoidFn::value(f[j]);
                    g[j] = g[j].tanh();
                    o[j] = SigmoidFn::value(o[j]);
                    let c = f[j] * c_prev[j] + i[j] * g[j];
                    current[j] = c;
                    h[j] = o[j] * c.tanh();
                }
            }
        }
    }

    /// The `T` steps of the backward for `batch` samples, from the last: the gate gradients
    /// `da` of every step; `later` and `later_cell` carry the gradients reaching `h_{t-1}`
    /// and `c_{t-1}`.
    #[allow(clippy::too_many_arguments)]
    fn backprop_steps(
        weight_hh: &PackedRhs<E>,
        start_cell: &[E],
        gates: &[E],
        cells: &[E],
        dy: &[E],
        da: &mut [E],
        later: &mut [E],
        later_cell: &mut [E],
        batch: usize,
    ) {
        later.fill(E::ZERO);
        later_cell.fill(E::ZERO);
        for t in (0..T).rev() {
            for b in 0..batch {
                let at = b * T + t;
                let c_prev = sample_state_before(start_cell, cells, b, T, H, t);
                let c = &cells[at * H..(at + 1) * H];
                let row = &gates[at * 4 * H..(at + 1) * 4 * H];
                let (i, f, g, o) = (&row[..H], &row[H..2 * H], &row[2 * H..3 * H], &row[3 * H..]);
                let d_row = &mut da[at * 4 * H..(at + 1) * 4 * H];
                let (di, rest) = d_row.split_at_mut(H);
                let (df, rest) = rest.split_at_mut(H);
                let (dg, d_o) = rest.split_at_mut(H);
                let dy = &dy[at * H..(at + 1) * H];
                let g_later = &later[b * H..(b + 1) * H];
                let k_later = &mut later_cell[b * H..(b + 1) * H];
                for j in 0..H {
                    let tanh_c = c[j].tanh();
                    let dh = dy[j] + g_later[j];
                    let dc = k_later[j] + dh * o[j] * (E::ONE - tanh_c * tanh_c);
                    di[j] = dc * g[j] * i[j] * (E::ONE - i[j]);
                    df[j] = dc * c_prev[j] * f[j] * (E::ONE - f[j]);
                    dg[j] = dc * i[j] * (E::ONE - g[j] * g[j]);
                    d_o[j] = dh * tanh_c * o[j] * (E::ONE - o[j]);
                    k_later[j] = dc * f[j];
                }
            }
            if t > 0 {
                matmul_prepacked(
                    step(da, batch, T, 4 * H, t),
                    weight_hh,
                    MatMut::row_major(later, batch, H),
                    false,
                );
            }
        }
    }
}

impl<const T: usize, const D: usize, const H: usize, E: Float> Module<E> for Lstm<T, D, H, E> {
    type Input = Rank2<T, D>;
    type Output = Rank2<T, H>;
    type Cache = LstmCache<E>;
    type Grads = Self;

    const PARAMS: usize = 4 * (H * D + H * H + 2 * H);

    fn init(rng: &mut Rng) -> Self {
        let mut layer = Self::zeros();
        for values in layer.values_mut() {
            fan_in_uniform(rng, values, H);
        }
        layer
    }

    fn new_cache(&self, max_batch: usize) -> LstmCache<E> {
        LstmCache {
            initial_state: vec![E::ZERO; max_batch * H],
            initial_cell: vec![E::ZERO; max_batch * H],
            final_state: vec![E::ZERO; max_batch * H],
            final_cell: vec![E::ZERO; max_batch * H],
            start_state: vec![E::ZERO; max_batch * H],
            start_cell: vec![E::ZERO; max_batch * H],
            gates: vec![E::ZERO; max_batch * T * 4 * H],
            cells: vec![E::ZERO; max_batch * T * H],
            gate_grads: vec![E::ZERO; max_batch * T * 4 * H],
            previous: vec![E::ZERO; max_batch * T * H],
            carried_grad: vec![E::ZERO; max_batch * H],
            carried_cell_grad: vec![E::ZERO; max_batch * H],
            packed_forward: PackedRhs::new(H, 4 * H),
            packed_backward: PackedRhs::new(4 * H, H),
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
        cache: &mut LstmCache<E>,
    ) {
        self.run(x, y, cache);
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, H>, E>,
        cache: &mut LstmCache<E>,
    ) {
        self.run(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &Tensor<Rank2<T, H>, E>,
        dy: &Tensor<Rank2<T, H>, E>,
        dx: Option<&mut Tensor<Rank2<T, D>, E>>,
        cache: &mut LstmCache<E>,
        grads: &mut Self,
    ) {
        let batch = x.batch();
        check_batch("Lstm", batch, cache.max_batch);
        let (y, dy) = (y.as_slice(), dy.as_slice());
        let start_state = &cache.start_state[..batch * H];
        let start_cell = &cache.start_cell[..batch * H];
        let gates = &cache.gates[..batch * T * 4 * H];
        let cells = &cache.cells[..batch * T * H];
        let da = &mut cache.gate_grads[..batch * T * 4 * H];
        let later = &mut cache.carried_grad[..batch * H];
        let later_cell = &mut cache.carried_cell_grad[..batch * H];
        cache
            .packed_backward
            .pack(MatRef::row_major(&self.weight_hh_l0, 4 * H, H));
        let weight_hh = &cache.packed_backward;
        let dy = &dy[..batch * T * H];
        let written = [
            (&mut *da, T * 4 * H),
            (&mut *later, H),
            (&mut *later_cell, H),
        ];
        let read = [
            (start_cell, H),
            (gates, T * 4 * H),
            (cells, T * H),
            (dy, T * H),
        ];
        split_samples(batch, T * 4 * H * H, written, read, |n, written, read| {
            let [da, later, later_cell] = written;
            let [start_cell, gates, cells, dy] = read;
            Self::backprop_steps(
                weight_hh, start_cell, gates, cells, dy, da, later, later_cell, n,
            )
        });
        let previous = &mut cache.previous[..batch * T * H];
        previous_states(start_state, y, batch, T, H, previous);
        matmul(
            MatRef::transposed(da, batch * T, 4 * H),
            MatRef::row_major(previous, batch * T, H),
            MatMut::row_major(&mut grads.weight_hh_l0, 4 * H, H),
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
            4 * H,
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
    fn carry_over(&self, cache: &mut LstmCache<E>, output: &Tensor<Rank2<T, H>, E>, steps: usize) {
        assert!(
            (1..=T).contains(&steps),
            "carry_over: {steps} steps of a {T}-step layer"
        );
        for b in 0..output.batch() {
            let state = &output.sample(b)[(steps - 1) * H..steps * H];
            cache.initial_state[b * H..(b + 1) * H].copy_from_slice(state);
            let cells = &cache.cells[b * T * H + (steps - 1) * H..][..H];
            cache.initial_cell[b * H..(b + 1) * H].copy_from_slice(cells);
        }
    }

    fn clear_state(&self, cache: &mut LstmCache<E>) {
        <Self as Recurrent<E>>::reset_state(cache);
    }
}

impl<const T: usize, const D: usize, const H: usize, E: Float> Recurrent<E> for Lstm<T, D, H, E> {
    fn carry_state(cache: &mut LstmCache<E>) {
        crate::kernels::vector::copy(&mut cache.initial_state, &cache.final_state);
        crate::kernels::vector::copy(&mut cache.initial_cell, &cache.final_cell);
    }

    fn reset_state(cache: &mut LstmCache<E>) {
        cache.initial_state.fill(E::ZERO);
        cache.initial_cell.fill(E::ZERO);
        cache.final_state.fill(E::ZERO);
        cache.final_cell.fill(E::ZERO);
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
    fn forward_follows_the_cell_by_hand() {
        // D = 1, H = 1; gate weights (i, f, g, o) on x and on h, biases only in b_ih.
        let layer = Lstm::<2, 1, 1, f64> {
            weight_ih_l0: vec![0.5, -0.4, 0.3, 0.2],
            weight_hh_l0: vec![0.1, 0.2, -0.3, 0.4],
            bias_ih_l0: vec![0.0, 1.0, 0.0, -0.5],
            bias_hh_l0: vec![0.0; 4],
        };
        let x = Tensor::from_vec(vec![1.0, -1.0]).unwrap();
        let mut y = Tensor::zeros(1);
        let mut cache = layer.new_cache(1);
        layer.forward(&x, &mut y, &mut cache);
        let (mut h, mut c) = (0.0, 0.0);
        let mut expected = Vec::new();
        for x in [1.0, -1.0] {
            let i = sigmoid(0.5 * x + 0.1 * h);
            let f = sigmoid(-0.4 * x + 1.0 + 0.2 * h);
            let g = (0.3 * x - 0.3 * h).tanh();
            let o = sigmoid(0.2 * x - 0.5 + 0.4 * h);
            c = f * c + i * g;
            h = o * c.tanh();
            expected.push(h);
        }
        for (a, e) in y.as_slice().iter().zip(&expected) {
            assert!((a - e).abs() < 1e-15, "{a} vs {e}");
        }
        assert!((cache.final_cell[0] - c).abs() < 1e-15);
        assert!((cache.final_state[0] - h).abs() < 1e-15);
    }

    #[test]
    fn a_batch_split_over_the_cores_matches_one_sample_at_a_time() {
        // 12 samples x 16 steps x 4·40² multiply-adds: above `PARALLEL_RECURRENCE` (2^20).
        check_split_batch::<Lstm<16, 5, 40, f64>>(12, 7);
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<Lstm<1, 3, 4, f64>>(2, 1);
        check_module::<Lstm<3, 3, 4, f64>>(3, 2);
        check_module::<Lstm<5, 2, 3, f64>>(2, 3);
        // Products large enough for the packed kernel, split over both cores.
        check_module::<Lstm<3, 48, 40, f64>>(40, 4);
    }

    #[test]
    fn f32_agrees_with_f64() {
        // Products large enough for the f32 micro-kernel, split over both cores.
        check_f32_agrees_with_f64::<Lstm<6, 64, 96, f32>, Lstm<6, 64, 96, f64>>(24, 9);
    }

    #[test]
    fn matches_pytorch() {
        let fixture = Fixture::open("lstm.safetensors");
        let mut layer = Lstm::<5, 3, 4, f64>::zeros();
        fixture.load(&mut layer);
        let x = fixture.tensor("input");
        let r = fixture.tensor("r");

        let mut cache = layer.new_cache(2);
        run(&mut layer, &mut cache, &x, &r).assert_matches(&fixture, "");
        fixture.assert_matches("h_n", &cache.final_state);
        fixture.assert_matches("c_n", &cache.final_cell);

        let mut cache = layer.new_cache(2);
        cache.initial_state = fixture.values("h0");
        cache.initial_cell = fixture.values("c0");
        run(&mut layer, &mut cache, &x, &r).assert_matches(&fixture, "h0.");
        fixture.assert_matches("h0.h_n", &cache.final_state);
        fixture.assert_matches("h0.c_n", &cache.final_cell);
    }

    #[test]
    fn carried_state_joins_two_halves_into_the_whole() {
        check_carry_state::<Lstm<6, 3, 4, f64>, Lstm<3, 3, 4, f64>>(
            |whole, half| {
                let n = whole.final_state.len();
                assert_eq!(whole.final_state, half.final_state[..n]);
                assert_eq!(whole.final_cell, half.final_cell[..n]);
            },
            7,
        );
    }

    #[test]
    fn an_empty_batch_passes_through() {
        check_empty_batch::<Lstm<3, 2, 4, f64>>();
    }

    #[test]
    fn gradients_do_not_flow_into_the_carried_state() {
        check_state_is_detached::<Lstm<3, 3, 4, f64>>(8);
    }

    #[test]
    fn parameters_have_pytorchs_names_shapes_and_init_bound() {
        let layer = Lstm::<2, 3, 16, f32>::init(&mut crate::init::rng(1));
        let mut seen = Vec::new();
        layer.visit_params("lstm", &mut |p| {
            assert!(p.values.iter().all(|v| v.abs() <= 0.25), "U(-1/4, 1/4)");
            seen.push((p.name.to_string(), p.shape.to_vec()));
        });
        assert_eq!(
            seen,
            vec![
                ("lstm.weight_ih_l0".to_string(), vec![64, 3]),
                ("lstm.weight_hh_l0".to_string(), vec![64, 16]),
                ("lstm.bias_ih_l0".to_string(), vec![64]),
                ("lstm.bias_hh_l0".to_string(), vec![64]),
            ]
        );
        assert_eq!(
            <Lstm<2, 3, 16, f32> as Module<f32>>::PARAMS,
            4 * (16 * 3 + 16 * 16 + 32)
        );
    }
}
