//! Sequence layers and what the recurrent layers share.
//!
//! A sequence sample has shape `[T, D]` (time-major), so a batch is stored `[batch, T, D]`:
//! the rows of time step `t` of all samples are `T` rows apart, a strided view that the
//! per-step matrix products read and write in place.
//!
//! - [`Recurrent`]: the state carried from one forward to the next (truncated BPTT).
//! - [`LastStep`]: the last time step of a sequence, `[T, H] → [H]`.
//! - [`SequenceLinear`]: one linear map applied at every time step, `[T, I] → [T, O]`.

use crate::init::{fan_in_uniform, Rng};
use crate::kernels::parallel::join;
use crate::kernels::{MatMut, MatRef};
use crate::layers::linear::{linear_rows, linear_rows_backward};
use crate::module::{Module, Param, ParamMut};
use crate::{Float, Rank1, Rank2, Tensor};

/// A recurrent layer whose hidden state can be carried from one forward to the next, for
/// truncated back-propagation through time over a long sequence cut into chunks.
///
/// The cache holds the initial state `h_0` (zeros by default) and, after a forward, the final
/// state `h_T`. The initial state is a constant for the forward that uses it: backward never
/// computes a gradient for it, so gradients stop at the chunk boundary.
///
/// ```text
/// for chunk in sequence.chunks(T) {
///     layer.forward_train(&chunk, &mut y, &mut cache);
///     ...loss, backward, optimizer step...
///     L::carry_state(&mut cache);   // the next chunk starts where this one ended
/// }
/// L::reset_state(&mut cache);       // before the next, unrelated sequence
/// ```
pub trait Recurrent<E: Float>: Module<E> {
    /// Copies the final state of the last forward into the initial state of the next,
    /// detached from the gradient (truncation). Samples beyond the last forward's batch start
    /// from zeros. A backward may still follow: it uses the state its forward started from.
    fn carry_state(cache: &mut Self::Cache);

    /// Resets the initial state (and the stored final state) to zeros.
    fn reset_state(cache: &mut Self::Cache);
}

/// Panics unless a forward or backward of `batch` samples fits a cache made for `max_batch`.
pub(crate) fn check_batch(layer: &str, batch: usize, max_batch: usize) {
    assert!(
        batch <= max_batch,
        "{layer}: a batch of {batch} samples, but its cache was made by new_cache({max_batch})"
    );
}

/// The state every sample starts step `t` from, `[batch, width]`: `start` (`h_0`) at step 0,
/// else step `t - 1` of `sequence` (`[batch, steps, width]`, the states so far).
pub(crate) fn states_before<'a, E>(
    start: &'a [E],
    sequence: &'a [E],
    batch: usize,
    steps: usize,
    width: usize,
    t: usize,
) -> MatRef<'a, E> {
    if t == 0 {
        MatRef::row_major(start, batch, width)
    } else {
        step(sequence, batch, steps, width, t - 1)
    }
}

/// The state sample `b` starts step `t` from: row `b` of `start` at step 0, else its step
/// `t - 1` in `sequence` (`[batch, steps, width]`).
pub(crate) fn sample_state_before<'a, E>(
    start: &'a [E],
    sequence: &'a [E],
    b: usize,
    steps: usize,
    width: usize,
    t: usize,
) -> &'a [E] {
    if t == 0 {
        &start[b * width..(b + 1) * width]
    } else {
        let at = b * steps + t;
        &sequence[(at - 1) * width..at * width]
    }
}

/// Time step `t` of every sample of a `[batch, steps, width]` buffer: a `[batch, width]` view.
pub(crate) fn step<E>(
    data: &[E],
    batch: usize,
    steps: usize,
    width: usize,
    t: usize,
) -> MatRef<'_, E> {
    step_columns(data, batch, steps, width, width, t)
}

/// The first `cols` columns of time step `t` of every sample of a `[batch, steps, width]`
/// buffer: a `[batch, cols]` view.
pub(crate) fn step_columns<E>(
    data: &[E],
    batch: usize,
    steps: usize,
    width: usize,
    cols: usize,
    t: usize,
) -> MatRef<'_, E> {
    MatRef {
        data: data.get(t * width..).unwrap_or(&[]),
        rows: batch,
        cols,
        row_stride: steps * width,
        col_stride: 1,
    }
}

/// Time step `t` of every sample of a `[batch, steps, width]` buffer, writable.
pub(crate) fn step_mut<E>(
    data: &mut [E],
    batch: usize,
    steps: usize,
    width: usize,
    t: usize,
) -> MatMut<'_, E> {
    let data = if t * width <= data.len() {
        &mut data[t * width..]
    } else {
        &mut []
    };
    MatMut {
        data,
        rows: batch,
        cols: width,
        row_stride: steps * width,
        col_stride: 1,
    }
}

/// Below this many multiply-adds per sequence, a recurrence runs on one core.
const PARALLEL_RECURRENCE: usize = 1 << 20;

/// Runs `f(samples, written, read)` over the samples of a recurrence, as two halves on the
/// two cores when the work (`work_per_sample` multiply-adds each) is large enough.
///
/// Each buffer comes with its length per sample and is sample-major (sample `s` at
/// `buffer[s * len..]`); each half of the batch gets its own samples' part of every buffer.
/// The recurrence of one sample never reads another's, so the halves are independent, and one
/// join per sequence replaces one per step's product.
pub(crate) fn split_samples<E: Send + Sync, const W: usize, const R: usize>(
    batch: usize,
    work_per_sample: usize,
    written: [(&mut [E], usize); W],
    read: [(&[E], usize); R],
    f: impl Fn(usize, [&mut [E]; W], [&[E]; R]) + Sync,
) {
    if batch < 2 || batch * work_per_sample < PARALLEL_RECURRENCE {
        return f(batch, written.map(|(b, _)| b), read.map(|(b, _)| b));
    }
    let half = batch / 2;
    let mut written_back: [&mut [E]; W] = std::array::from_fn(|_| Default::default());
    let mut slot = written_back.iter_mut();
    let written_front = written.map(|(buffer, len)| {
        let (front, back) = buffer.split_at_mut(half * len);
        *slot.next().expect("one slot per buffer") = back;
        front
    });
    let read_front = read.map(|(buffer, len)| &buffer[..half * len]);
    let read_back = read.map(|(buffer, len)| &buffer[half * len..]);
    join(
        || f(half, written_front, read_front),
        || f(batch - half, written_back, read_back),
    );
}

/// Adds `bias` to every row of the row-major `rows` (rows of width `bias.len()`).
pub(crate) fn add_to_rows<E: Float>(rows: &mut [E], bias: &[E]) {
    for row in rows.chunks_exact_mut(bias.len().max(1)) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += *b;
        }
    }
}

/// The state every step started from, `[batch, steps, width]`: `h_0` (`start`, `[batch,
/// width]`) at step 0, then the output of the step before (`sequence` shifted by one step).
/// With it, `Σ_t da_tᵀ h_{t-1}` over all steps and samples is one product.
pub(crate) fn previous_states<E: Copy>(
    start: &[E],
    sequence: &[E],
    batch: usize,
    steps: usize,
    width: usize,
    out: &mut [E],
) {
    if steps == 0 {
        return;
    }
    let sample = steps * width;
    for b in 0..batch {
        let out = &mut out[b * sample..(b + 1) * sample];
        let (first, rest) = out.split_at_mut(width);
        first.copy_from_slice(&start[b * width..(b + 1) * width]);
        crate::kernels::vector::copy(rest, &sequence[b * sample..(b + 1) * sample - width]);
    }
}

/// Stores the last time step of `sequence` (`[batch, steps, width]`) into `state`
/// (`[max_batch, width]`) and zeroes the rows beyond `batch`. With no time steps the final
/// state is the initial one, `start` (`[batch, width]`).
pub(crate) fn store_final_state<E: Float>(
    state: &mut [E],
    sequence: &[E],
    start: &[E],
    batch: usize,
    steps: usize,
    width: usize,
) {
    let (used, rest) = state.split_at_mut(batch * width);
    if steps == 0 {
        crate::kernels::vector::copy(used, &start[..batch * width]);
    } else {
        for (b, row) in used.chunks_exact_mut(width.max(1)).enumerate() {
            let at = (b * steps + steps - 1) * width;
            row.copy_from_slice(&sequence[at..at + width]);
        }
    }
    rest.fill(E::ZERO);
}

/// The last time step of a sequence: `y = x_T`, `[T, H] → [H]` (PyTorch's `output[:, -1]`).
///
/// Backward: `dx_T = dy`, zero at every other step. Zero-sized and parameter-free, like the
/// activations.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct LastStep<const T: usize, const H: usize>;

impl<const T: usize, const H: usize, E: Float> Module<E> for LastStep<T, H> {
    type Input = Rank2<T, H>;
    type Output = Rank1<H>;
    type Cache = ();
    type Grads = ();

    const PARAMS: usize = 0;

    fn init(_rng: &mut Rng) -> Self {
        Self
    }

    fn new_cache(&self, _max_batch: usize) {}

    fn new_grads(&self) {}

    fn zero_grads(_grads: &mut ()) {}

    fn forward(&self, x: &Tensor<Rank2<T, H>, E>, y: &mut Tensor<Rank1<H>, E>, _cache: &mut ()) {
        const { assert!(T > 0, "LastStep needs a sequence of at least one step") };
        y.set_batch(x.batch());
        for (y, x) in y.as_mut_slice().chunks_exact_mut(H.max(1)).zip(x.samples()) {
            y.copy_from_slice(&x[(T - 1) * H..]);
        }
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank2<T, H>, E>,
        y: &mut Tensor<Rank1<H>, E>,
        cache: &mut (),
    ) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<Rank2<T, H>, E>,
        _y: &Tensor<Rank1<H>, E>,
        dy: &Tensor<Rank1<H>, E>,
        dx: Option<&mut Tensor<Rank2<T, H>, E>>,
        _cache: &mut (),
        _grads: &mut (),
    ) {
        if let Some(dx) = dx {
            dx.set_batch(x.batch());
            let sample = (T * H).max(1);
            for (dx, dy) in dx
                .as_mut_slice()
                .chunks_exact_mut(sample)
                .zip(dy.as_slice().chunks_exact(H.max(1)))
            {
                let (earlier, last) = dx.split_at_mut((T - 1) * H);
                earlier.fill(E::ZERO);
                last.copy_from_slice(dy);
            }
        }
    }

    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(Param<'_, E>)) {}

    fn visit_params_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(ParamMut<'_, E>)) {}

    fn visit_params_and_grads(&mut self, _grads: &(), _f: &mut dyn FnMut(&mut [E], &[E])) {}
}

/// `y_t = x_t Wᵀ + b` at every time step `t`, `[T, I] → [T, O]`: PyTorch's `nn.Linear(I, O)`
/// applied to a `[batch, T, I]` tensor.
///
/// Parameters as in PyTorch: `weight` `[O, I]`, `bias` `[O]`, both from U(-1/√I, 1/√I).
/// The batch is `batch · T` rows of one product, the maths of [`Linear`](super::Linear):
/// backward `dW += dYᵀ X`, `db += Σ_rows dY`, `dX = dY W` over all rows.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceLinear<const T: usize, const I: usize, const O: usize, E: Float = f32> {
    /// `[O, I]`, row-major.
    pub weight: Vec<E>,
    /// `[O]`.
    pub bias: Vec<E>,
}

impl<const T: usize, const I: usize, const O: usize, E: Float> SequenceLinear<T, I, O, E> {
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

impl<const T: usize, const I: usize, const O: usize, E: Float> Module<E>
    for SequenceLinear<T, I, O, E>
{
    type Input = Rank2<T, I>;
    type Output = Rank2<T, O>;
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

    fn forward(&self, x: &Tensor<Rank2<T, I>, E>, y: &mut Tensor<Rank2<T, O>, E>, _cache: &mut ()) {
        y.set_batch(x.batch());
        linear_rows(
            x.batch() * T,
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
        x: &Tensor<Rank2<T, I>, E>,
        y: &mut Tensor<Rank2<T, O>, E>,
        cache: &mut (),
    ) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<Rank2<T, I>, E>,
        _y: &Tensor<Rank2<T, O>, E>,
        dy: &Tensor<Rank2<T, O>, E>,
        dx: Option<&mut Tensor<Rank2<T, I>, E>>,
        _cache: &mut (),
        grads: &mut Self,
    ) {
        let batch = x.batch();
        let dx = dx.map(|dx| {
            dx.set_batch(batch);
            dx.as_mut_slice()
        });
        linear_rows_backward(
            batch * T,
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

/// What the tests of the sequence layers share: PyTorch fixtures, finite differences with a
/// prepared cache (a carried state), and the state-carrying checks of the recurrent layers.
#[cfg(test)]
pub(crate) mod testing {
    use safetensors::{Dtype, SafeTensors};

    use super::Recurrent;
    use crate::gradcheck::random_tensor;
    use crate::init::rng;
    use crate::module::Module;
    use crate::{Float, Shape, Tensor};

    /// The fixtures match PyTorch's float64 results to rounding.
    pub const PYTORCH_TOLERANCE: f64 = 1e-10;

    /// A file of tests/fixtures/rnn/, written by tests/fixtures/make_rnn_fixtures.py.
    pub struct Fixture {
        name: String,
        bytes: Vec<u8>,
    }

    impl Fixture {
        pub fn open(name: &str) -> Self {
            let path = format!(
                "{}/../tests/fixtures/rnn/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {path}: {e}"));
            Self {
                name: name.to_string(),
                bytes,
            }
        }

        /// The float64 values of tensor `key`.
        pub fn values(&self, key: &str) -> Vec<f64> {
            let file = SafeTensors::deserialize(&self.bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", self.name));
            let view = file
                .tensor(key)
                .unwrap_or_else(|e| panic!("{}: no tensor {key}: {e}", self.name));
            assert_eq!(view.dtype(), Dtype::F64, "{}: {key}", self.name);
            view.data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect()
        }

        pub fn tensor<S: Shape>(&self, key: &str) -> Tensor<S, f64> {
            Tensor::from_vec(self.values(key)).expect("whole samples")
        }

        /// Loads a module's parameters from the tensors of the same names.
        pub fn load<M: Module<f64>>(&self, module: &mut M) {
            module.visit_params_mut("", &mut |p| {
                let values = self.values(p.name);
                assert_eq!(values.len(), p.values.len(), "{}: {}", self.name, p.name);
                p.values.copy_from_slice(&values);
            });
        }

        /// Checks `actual` against tensor `key` to `PYTORCH_TOLERANCE`.
        pub fn assert_matches(&self, key: &str, actual: &[f64]) {
            assert_close(&format!("{}: {key}", self.name), actual, &self.values(key));
        }
    }

    pub fn assert_close(what: &str, actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len(), "{what}: lengths");
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= PYTORCH_TOLERANCE,
                "{what}[{i}]: {a} vs {e} (difference {:e})",
                (a - e).abs()
            );
        }
    }

    /// A training forward and a backward with `dy = r`: the output, every parameter gradient
    /// with its name, and the input gradient.
    pub struct Run {
        pub output: Vec<f64>,
        pub grads: Vec<(String, Vec<f64>)>,
        pub input_grad: Vec<f64>,
    }

    pub fn run<E: Float, M: Module<E>>(
        module: &mut M,
        cache: &mut M::Cache,
        x: &Tensor<M::Input, E>,
        r: &Tensor<M::Output, E>,
    ) -> Run {
        let mut y = Tensor::zeros(x.batch());
        module.forward_train(x, &mut y, cache);
        let mut grads = module.new_grads();
        let mut dx = Tensor::zeros(x.batch());
        module.backward(x, &y, r, Some(&mut dx), cache, &mut grads);
        let mut names = Vec::new();
        module.visit_params("", &mut |p| names.push(p.name.to_string()));
        let mut values = Vec::new();
        module.visit_params_and_grads(&grads, &mut |_, g| values.push(wide(g)));
        Run {
            output: wide(y.as_slice()),
            grads: names.into_iter().zip(values).collect(),
            input_grad: wide(dx.as_slice()),
        }
    }

    impl Run {
        /// Compares with a fixture's `{case}output`, `{case}grad.<param>` and `{case}grad.input`.
        pub fn assert_matches(&self, fixture: &Fixture, case: &str) {
            fixture.assert_matches(&format!("{case}output"), &self.output);
            for (name, grad) in &self.grads {
                fixture.assert_matches(&format!("{case}grad.{name}"), grad);
            }
            fixture.assert_matches(&format!("{case}grad.input"), &self.input_grad);
        }
    }

    fn wide<E: Float>(values: &[E]) -> Vec<f64> {
        values.iter().map(|v| v.to_f64()).collect()
    }

    /// The f32 layer `Narrow` (whose products take the f32 micro-kernels) against the same
    /// layer in f64, `Wide`, with the same weights and input (rounded to f32): outputs,
    /// parameter gradients and the input gradient agree to f32 precision.
    pub fn check_f32_agrees_with_f64<Narrow: Module<f32>, Wide: Module<f64>>(
        batch: usize,
        seed: u64,
    ) {
        let mut rng = rng(seed);
        let round = |v: &mut f64| *v = f64::from(*v as f32);
        let mut wide_layer = Wide::init(&mut rng);
        let mut narrow_layer = Narrow::init(&mut rng);
        let mut values = Vec::new();
        wide_layer.visit_params_mut("", &mut |p| {
            p.values.iter_mut().for_each(round);
            values.push(p.values.to_vec());
        });
        let mut next = values.into_iter();
        narrow_layer.visit_params_mut("", &mut |p| {
            let values = next.next().expect("the same parameters");
            for (n, w) in p.values.iter_mut().zip(values) {
                *n = w as f32;
            }
        });
        let mut x = random_tensor::<Wide::Input>(&mut rng, batch);
        x.as_mut_slice().iter_mut().for_each(round);
        let mut r = random_tensor::<Wide::Output>(&mut rng, batch);
        r.as_mut_slice().iter_mut().for_each(round);
        let narrow = |t: &[f64]| t.iter().map(|v| *v as f32).collect::<Vec<_>>();
        let x32 = Tensor::<Narrow::Input, f32>::from_vec(narrow(x.as_slice())).unwrap();
        let r32 = Tensor::<Narrow::Output, f32>::from_vec(narrow(r.as_slice())).unwrap();

        let mut cache = wide_layer.new_cache(batch);
        let expected = run(&mut wide_layer, &mut cache, &x, &r);
        let mut cache = narrow_layer.new_cache(batch);
        let actual = run(&mut narrow_layer, &mut cache, &x32, &r32);
        let mut pairs = vec![
            ("output", &actual.output, &expected.output),
            ("input gradient", &actual.input_grad, &expected.input_grad),
        ];
        for ((name, a), (_, e)) in actual.grads.iter().zip(&expected.grads) {
            pairs.push((name, a, e));
        }
        for (what, actual, expected) in pairs {
            let scale = expected.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
                assert!(
                    (a - e).abs() <= 2e-5 * scale,
                    "{what}[{i}]: f32 {a} vs f64 {e} (scale {scale})"
                );
            }
        }
    }

    fn weighted_output<M: Module<f64> + Clone>(
        module: &M,
        x: &Tensor<M::Input, f64>,
        r: &Tensor<M::Output, f64>,
        prepare: &dyn Fn(&mut M::Cache),
    ) -> f64 {
        let mut m = module.clone();
        let mut cache = m.new_cache(x.batch());
        prepare(&mut cache);
        let mut y = Tensor::zeros(x.batch());
        m.forward_train(x, &mut y, &mut cache);
        y.as_slice()
            .iter()
            .zip(r.as_slice())
            .map(|(a, b)| a * b)
            .sum()
    }

    fn close(analytic: f64, numeric: f64) -> bool {
        (analytic - numeric).abs() <= 1e-6 + 1e-5 * analytic.abs().max(numeric.abs())
    }

    /// Central differences of `L = Σ r ⊙ f(x)` against backward, for every entry of every
    /// parameter and, with `check_input`, of the input. Every cache (the analytic one and one
    /// per evaluation) is made by `new_cache` and then handed to `prepare`: that is how a
    /// carried initial state enters, as a constant. Returns the analytic run.
    pub fn check_gradients<M: Module<f64> + Clone>(
        module: &M,
        x: &Tensor<M::Input, f64>,
        prepare: &dyn Fn(&mut M::Cache),
        check_input: bool,
        seed: u64,
    ) -> Run {
        const STEP: f64 = 1e-5;
        let r = random_tensor::<M::Output>(&mut rng(seed), x.batch());
        let mut analytic = module.clone();
        let mut cache = analytic.new_cache(x.batch());
        prepare(&mut cache);
        let run = run(&mut analytic, &mut cache, x, &r);
        let mut mismatches = Vec::new();
        for (index, (name, grad)) in run.grads.iter().enumerate() {
            for (entry, &analytic) in grad.iter().enumerate() {
                let at = |delta: f64| {
                    let mut shifted = module.clone();
                    let mut seen = 0;
                    shifted.visit_params_mut("", &mut |p| {
                        if seen == index {
                            p.values[entry] += delta;
                        }
                        seen += 1;
                    });
                    weighted_output(&shifted, x, &r, prepare)
                };
                let numeric = (at(STEP) - at(-STEP)) / (2.0 * STEP);
                if !close(analytic, numeric) {
                    mismatches.push(format!("{name}[{entry}]: {analytic} vs {numeric}"));
                }
            }
        }
        if check_input {
            for (entry, &analytic) in run.input_grad.iter().enumerate() {
                let at = |delta: f64| {
                    let mut shifted = x.clone();
                    shifted.as_mut_slice()[entry] += delta;
                    weighted_output(module, &shifted, &r, prepare)
                };
                let numeric = (at(STEP) - at(-STEP)) / (2.0 * STEP);
                if !close(analytic, numeric) {
                    mismatches.push(format!("input[{entry}]: {analytic} vs {numeric}"));
                }
            }
        }
        assert!(
            mismatches.is_empty(),
            "gradient check failed for {}:\n{}",
            std::any::type_name::<M>(),
            mismatches.join("\n")
        );
        run
    }

    /// Copies every parameter of `from` into `to` (the same layer at another sequence length).
    pub fn copy_params<A: Module<f64>, B: Module<f64>>(from: &A, to: &mut B) {
        let mut values = Vec::new();
        from.visit_params("", &mut |p| values.push(p.values.to_vec()));
        let mut next = values.into_iter();
        to.visit_params_mut("", &mut |p| {
            p.values
                .copy_from_slice(&next.next().expect("the same parameters"))
        });
    }

    /// Samples made of the values `range` of every sample of `x` (a chunk of time steps).
    fn chunk<A: Shape, B: Shape>(
        x: &Tensor<A, f64>,
        range: std::ops::Range<usize>,
    ) -> Tensor<B, f64> {
        Tensor::from_samples(x.samples().map(|s| &s[range.clone()])).expect("whole samples")
    }

    /// A batch large enough to be split over the cores (see `split_samples`) gives the same
    /// outputs, parameter gradients and input gradients as its samples run one at a time.
    pub fn check_split_batch<M: Module<f64>>(batch: usize, seed: u64) {
        let mut rng = rng(seed);
        let mut layer = M::init(&mut rng);
        let x = random_tensor::<M::Input>(&mut rng, batch);
        let r = random_tensor::<M::Output>(&mut rng, batch);
        let mut whole_cache = layer.new_cache(batch);
        let whole = run(&mut layer, &mut whole_cache, &x, &r);
        let mut cache = layer.new_cache(1);
        let mut output = Vec::new();
        let mut input_grad = Vec::new();
        let mut grads: Vec<Vec<f64>> = Vec::new();
        for b in 0..batch {
            let x_b = Tensor::<M::Input, f64>::from_vec(x.sample(b).to_vec()).unwrap();
            let r_b = Tensor::<M::Output, f64>::from_vec(r.sample(b).to_vec()).unwrap();
            let single = run(&mut layer, &mut cache, &x_b, &r_b);
            output.extend(single.output);
            input_grad.extend(single.input_grad);
            for (i, (_, g)) in single.grads.into_iter().enumerate() {
                match grads.get_mut(i) {
                    Some(sum) => sum.iter_mut().zip(g).for_each(|(s, g)| *s += g),
                    None => grads.push(g),
                }
            }
        }
        assert_close("output", &whole.output, &output);
        assert_close("input gradient", &whole.input_grad, &input_grad);
        for ((name, g), sum) in whole.grads.iter().zip(&grads) {
            assert_close(name, g, sum);
        }
    }

    /// `Whole` over `2T` steps against `Half` over `T` steps with the same weights: a forward
    /// over the first half, `carry_state`, and a forward over the second half give the whole
    /// output; `final_states` of both caches agree; after `reset_state` a forward equals one
    /// from a fresh cache.
    pub fn check_carry_state<Whole, Half>(
        final_states: impl Fn(&Whole::Cache, &Half::Cache),
        seed: u64,
    ) where
        Whole: Recurrent<f64>,
        Half: Recurrent<f64>,
    {
        let batch = 3;
        let mut rng = rng(seed);
        let whole = Whole::init(&mut rng);
        let mut half = Half::init(&mut rng);
        copy_params(&whole, &mut half);
        let (n_in, n_out) = (Half::Input::NUMEL, Half::Output::NUMEL);
        assert_eq!(Whole::Input::NUMEL, 2 * n_in);
        assert_eq!(Whole::Output::NUMEL, 2 * n_out);

        let x = random_tensor::<Whole::Input>(&mut rng, batch);
        let mut whole_cache = whole.new_cache(batch);
        let mut y = Tensor::zeros(batch);
        whole.forward(&x, &mut y, &mut whole_cache);

        let first: Tensor<Half::Input, f64> = chunk(&x, 0..n_in);
        let second: Tensor<Half::Input, f64> = chunk(&x, n_in..2 * n_in);
        // A cache made for more samples than are used: the extra rows stay zero.
        let mut cache = half.new_cache(batch + 2);
        let mut y1 = Tensor::zeros(batch);
        let mut y2 = Tensor::zeros(batch);
        half.forward_train(&first, &mut y1, &mut cache);
        Half::carry_state(&mut cache);
        half.forward_train(&second, &mut y2, &mut cache);
        for b in 0..batch {
            let joined = [y1.sample(b), y2.sample(b)].concat();
            for (i, (a, e)) in joined.iter().zip(y.sample(b)).enumerate() {
                assert!(
                    (a - e).abs() < 1e-13,
                    "sample {b}, value {i}: two halves give {a}, the whole {e}"
                );
            }
        }
        final_states(&whole_cache, &cache);

        // Without carrying, the second half starts from zeros again.
        let mut fresh = Tensor::zeros(batch);
        half.forward(&second, &mut fresh, &mut half.new_cache(batch));
        Half::reset_state(&mut cache);
        half.forward(&second, &mut y2, &mut cache);
        assert_eq!(
            y2.as_slice(),
            fresh.as_slice(),
            "after reset_state the state is zero"
        );
    }

    /// A batch of no samples: forward and backward run, produce empty tensors and leave the
    /// final state zero.
    pub fn check_empty_batch<M: Module<f64>>() {
        let mut layer = M::init(&mut rng(1));
        let mut cache = layer.new_cache(2);
        let x = Tensor::<M::Input, f64>::zeros(0);
        let r = Tensor::<M::Output, f64>::zeros(0);
        let out = run(&mut layer, &mut cache, &x, &r);
        assert!(out.output.is_empty() && out.input_grad.is_empty());
        assert!(out.grads.iter().all(|(_, g)| g.iter().all(|v| *v == 0.0)));
    }

    /// Gradients stop at a carried state: after a forward over `first` and `carry_state`, the
    /// gradients of a chunk `second` match central differences in which the carried state is
    /// a constant (computed once, with the unperturbed parameters), for the parameters and
    /// the input. They differ from the untruncated gradients (so the state is not zero and the
    /// check would notice a leak). `carry_state` between the forward and its backward changes
    /// nothing.
    pub fn check_state_is_detached<M: Recurrent<f64> + Clone>(seed: u64) {
        let batch = 2;
        let mut rng = rng(seed);
        let layer = M::init(&mut rng);
        let first = random_tensor::<M::Input>(&mut rng, batch);
        let second = random_tensor::<M::Input>(&mut rng, batch);
        let carried = |cache: &mut M::Cache| {
            let mut y = Tensor::zeros(batch);
            layer.forward(&first, &mut y, cache);
            M::carry_state(cache);
        };
        let truncated = check_gradients(&layer, &second, &carried, true, seed);

        // The same loss with a zero initial state gives other gradients: the carried state
        // matters, so the check above would have seen gradients leaking into it.
        let r = random_tensor::<M::Output>(&mut crate::init::rng(seed), batch);
        let mut from_zero = layer.clone();
        let mut cache = from_zero.new_cache(batch);
        let zero = run(&mut from_zero, &mut cache, &second, &r);
        let differs = zero
            .grads
            .iter()
            .zip(&truncated.grads)
            .any(|((_, a), (_, b))| a.iter().zip(b).any(|(a, b)| (a - b).abs() > 1e-6));
        assert!(differs, "the carried state should change the gradients");

        // carry_state between forward and backward: the backward still uses the state its
        // forward started from.
        let mut m = layer.clone();
        let mut cache = m.new_cache(batch);
        carried(&mut cache);
        let mut y = Tensor::zeros(batch);
        m.forward_train(&second, &mut y, &mut cache);
        M::carry_state(&mut cache);
        let mut grads = m.new_grads();
        let mut dx = Tensor::zeros(batch);
        m.backward(&second, &y, &r, Some(&mut dx), &mut cache, &mut grads);
        let mut values = Vec::new();
        m.visit_params_and_grads(&grads, &mut |_, g| values.push(g.to_vec()));
        for ((name, expected), actual) in truncated.grads.iter().zip(&values) {
            assert_eq!(actual, expected, "{name} after carry_state");
        }
        assert_eq!(dx.as_slice(), &truncated.input_grad[..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_module;

    #[test]
    fn last_step_picks_the_last_row_and_routes_the_gradient_there() {
        let x = Tensor::<Rank2<3, 2>, f64>::from_vec((0..12).map(f64::from).collect()).unwrap();
        let mut y = Tensor::zeros(0);
        let layer = LastStep::<3, 2>;
        Module::<f64>::forward(&layer, &x, &mut y, &mut ());
        assert_eq!(y.as_slice(), &[4.0, 5.0, 10.0, 11.0]);
        let dy = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let mut dx = Tensor::from_vec(vec![9.0; 12]).unwrap();
        layer.backward(&x, &y, &dy, Some(&mut dx), &mut (), &mut ());
        assert_eq!(
            dx.as_slice(),
            &[0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0]
        );
    }

    #[test]
    fn sequence_linear_applies_one_linear_map_at_every_step() {
        let layer = SequenceLinear::<2, 2, 3, f64> {
            weight: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            bias: vec![0.5, -0.5, 1.0],
        };
        // Two samples of two steps; the rows are those of Linear's test.
        let x = Tensor::from_vec(vec![1.0, -1.0, 2.0, 0.5, 2.0, 0.5, 1.0, -1.0]).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut ());
        assert_eq!(
            y.as_slice(),
            &[-0.5, -1.5, 0.0, 3.5, 7.5, 14.0, 3.5, 7.5, 14.0, -0.5, -1.5, 0.0]
        );
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<LastStep<1, 3>>(2, 1);
        check_module::<LastStep<4, 3>>(3, 2);
        check_module::<SequenceLinear<1, 3, 2, f64>>(2, 3);
        check_module::<SequenceLinear<5, 4, 3, f64>>(3, 4);
        // batch · T = 200 rows: the packed product, split over both cores.
        check_module::<SequenceLinear<20, 64, 48, f64>>(10, 5);
    }

    #[test]
    fn sequence_linear_has_linears_names_shapes_and_init() {
        use crate::layers::Linear;
        let sequence = SequenceLinear::<7, 5, 4, f32>::init(&mut crate::init::rng(3));
        let linear = Linear::<5, 4, f32>::init(&mut crate::init::rng(3));
        assert_eq!(sequence.weight, linear.weight);
        assert_eq!(sequence.bias, linear.bias);
        let mut seen = Vec::new();
        sequence.visit_params("out", &mut |p| {
            seen.push((p.name.to_string(), p.shape.to_vec()))
        });
        assert_eq!(
            seen,
            vec![
                ("out.weight".to_string(), vec![4, 5]),
                ("out.bias".to_string(), vec![4])
            ]
        );
    }
}
