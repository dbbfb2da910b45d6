//! `nn` against PyTorch: the fixtures in tests/fixtures/ (see its README.md) hold weights
//! saved by PyTorch and the outputs, losses, gradients and optimizer trajectories PyTorch
//! computed with them in float64. A network declared with `network!` loads those weights
//! unchanged and must reproduce every number.
//!
//! The reference tensors are read with the `safetensors` crate directly, not through `nn`'s
//! loader, so a mistake in the loader cannot hide a mistake in the maths (or the reverse).

use std::path::{Path, PathBuf};

use nn::io::{load_bytes, to_bytes, WeightsError};
use nn::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

network! {
    /// PyTorch's `Sequential(Linear(64, 32), Sigmoid(), Linear(32, 10))`.
    pub struct SigmoidMlp: [64] {
        linear(32), sigmoid,
        linear(10),
    }
}

network! {
    /// PyTorch's `Sequential(Linear(20, 16), ReLU(), Linear(16, 16), Tanh(), Linear(16, 3))`.
    pub struct ReluTanhMlp: [20] {
        linear(16), relu,
        linear(16), tanh,
        linear(3),
    }
}

/// Every reference value is float64; an f64 model matches to rounding.
const F64_TOLERANCE: f64 = 1e-10;
/// An f32 model loaded from the float32 weights, run on the input rounded to f32.
const F32_TOLERANCE: f64 = 1e-5;
/// The batch of every fixture.
const BATCH: usize = 5;

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fixture file, read with the `safetensors` crate.
struct Fixture {
    name: &'static str,
    bytes: Vec<u8>,
}

impl Fixture {
    fn open(name: &'static str) -> Self {
        let path = fixture_path(name);
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
        Self { name, bytes }
    }

    fn file(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes)
            .unwrap_or_else(|e| panic!("fixture {} is not safetensors: {e}", self.name))
    }

    fn view(&self, key: &str, dtype: Dtype, shape: &[usize]) -> TensorView<'_> {
        let view = self
            .file()
            .tensor(key)
            .unwrap_or_else(|e| panic!("fixture {}: {e}", self.name));
        assert_eq!(view.dtype(), dtype, "{}: dtype of `{key}`", self.name);
        assert_eq!(view.shape(), shape, "{}: shape of `{key}`", self.name);
        view
    }

    /// A float64 tensor of the given shape.
    fn f64s(&self, key: &str, shape: &[usize]) -> Vec<f64> {
        self.view(key, Dtype::F64, shape)
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// An int64 tensor of class labels.
    fn labels(&self, key: &str, shape: &[usize]) -> Vec<usize> {
        self.view(key, Dtype::I64, shape)
            .data()
            .chunks_exact(8)
            .map(|b| usize::try_from(i64::from_le_bytes(b.try_into().unwrap())).unwrap())
            .collect()
    }

    /// Every tensor of the file: name, dtype, shape and bytes, sorted by name.
    fn tensors(&self) -> Vec<OwnedTensor> {
        owned_tensors(&self.bytes)
    }
}

/// A tensor of a safetensors file, owned so that tests can edit it into a bad file.
#[derive(Clone, Debug, PartialEq)]
struct OwnedTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn owned_tensors(bytes: &[u8]) -> Vec<OwnedTensor> {
    let file = SafeTensors::deserialize(bytes).expect("a valid safetensors file");
    let mut tensors: Vec<OwnedTensor> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| OwnedTensor {
            name,
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            data: view.data().to_vec(),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    tensors
}

/// Writes tensors as a safetensors file, the way `safetensors.torch.save_file` does.
fn safetensors_bytes(tensors: &[OwnedTensor]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let view = TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap();
            (t.name.as_str(), view)
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// `(name, shape, dtype)` of every tensor of a safetensors file, sorted by name.
fn layout(bytes: &[u8]) -> Vec<(String, Vec<usize>, Dtype)> {
    owned_tensors(bytes)
        .into_iter()
        .map(|t| (t.name, t.shape, t.dtype))
        .collect()
}

fn expected_layout(tensors: &[(&str, &[usize])], dtype: Dtype) -> Vec<(String, Vec<usize>, Dtype)> {
    let mut layout: Vec<_> = tensors
        .iter()
        .map(|(name, shape)| (name.to_string(), shape.to_vec(), dtype))
        .collect();
    layout.sort();
    layout
}

const SIGMOID_LAYOUT: [(&str, &[usize]); 4] = [
    ("0.weight", &[32, 64]),
    ("0.bias", &[32]),
    ("2.weight", &[10, 32]),
    ("2.bias", &[10]),
];

const RELU_TANH_LAYOUT: [(&str, &[usize]); 6] = [
    ("0.weight", &[16, 20]),
    ("0.bias", &[16]),
    ("2.weight", &[16, 16]),
    ("2.bias", &[16]),
    ("4.weight", &[3, 16]),
    ("4.bias", &[3]),
];

/// Asserts `|actual - expected| <= tolerance * max(1, |expected|)` element by element,
/// reporting the worst element.
fn assert_close(what: &str, actual: &[f64], expected: &[f64], tolerance: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: number of values");
    let mut worst = (0, 0.0);
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let error = (a - e).abs() / e.abs().max(1.0);
        assert!(!error.is_nan(), "{what}[{i}]: {a} vs PyTorch's {e}");
        if error > worst.1 {
            worst = (i, error);
        }
    }
    let (i, error) = worst;
    assert!(
        error <= tolerance,
        "{what}[{i}] = {} but PyTorch has {} (error {error:e} > {tolerance:e})",
        actual[i],
        expected[i]
    );
}

fn to_f64<E: Float>(values: &[E]) -> Vec<f64> {
    values.iter().map(|v| v.to_f64()).collect()
}

/// `(name, shape, values)` of every parameter, in the model's order.
fn named_params<E: Float, M: Module<E>>(model: &M) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let mut params = Vec::new();
    model.visit_params("", &mut |p| {
        params.push((p.name.to_string(), p.shape.to_vec(), to_f64(p.values)))
    });
    params
}

/// `(name, shape, gradient)` of every parameter: the names and shapes of `visit_params`,
/// the gradients of `visit_params_and_grads` (which visits in the same order).
fn named_grads<M: Module<f64>>(
    model: &mut M,
    grads: &M::Grads,
) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let params = named_params(model);
    let mut gradients = Vec::new();
    model.visit_params_and_grads(grads, &mut |values, grad| {
        assert_eq!(values.len(), grad.len());
        gradients.push(grad.to_vec());
    });
    assert_eq!(gradients.len(), params.len());
    params
        .into_iter()
        .zip(gradients)
        .map(|((name, shape, _), grad)| (name, shape, grad))
        .collect()
}

fn load_model<E: Float, M: Module<E>>(weights: &str) -> M {
    let mut model = M::init(&mut rng(99));
    load(&mut model, fixture_path(weights))
        .unwrap_or_else(|e| panic!("loading {weights} (written by PyTorch): {e}"));
    model
}

fn input<E: Float, M: Module<E>>(reference: &Fixture) -> Tensor<M::Input, E> {
    let numel = <M::Input as Shape>::NUMEL;
    let values = reference.f64s("input", &[BATCH, numel]);
    Tensor::from_vec(values.into_iter().map(E::from_f64).collect()).unwrap()
}

/// Runs forward, loss and backward (with the input gradient) of an f64 model on the
/// reference input and checks everything PyTorch recorded. Returns the workspace, holding
/// the gradients, for further checks.
fn check_forward_and_backward<M: Module<f64>>(
    model: &mut M,
    reference: &Fixture,
    loss: impl FnOnce(&Tensor<M::Output, f64>, &mut Tensor<M::Output, f64>) -> f64,
) -> Workspace<M, f64> {
    let x = input::<f64, M>(reference);
    let outputs = <M::Output as Shape>::NUMEL;
    let mut ws = Workspace::new(model, BATCH);

    let output = ws.forward(model, &x).as_slice().to_vec();
    assert_close(
        "output",
        &output,
        &reference.f64s("output", &[BATCH, outputs]),
        F64_TOLERANCE,
    );
    // Inference takes the same path as the training forward.
    let mut inference = Workspace::new(model, BATCH);
    assert_close(
        "inference output",
        inference.infer(model, &x).as_slice(),
        &output,
        1e-15,
    );

    let value = ws.loss(loss);
    assert_close(
        "loss",
        &[value],
        &reference.f64s("loss", &[1]),
        F64_TOLERANCE,
    );

    let input_grad = ws.backward_to_input(model).as_slice().to_vec();
    let inputs = <M::Input as Shape>::NUMEL;
    assert_close(
        "grad.input",
        &input_grad,
        &reference.f64s("grad.input", &[BATCH, inputs]),
        F64_TOLERANCE,
    );

    let grads = named_grads(model, ws.grads());
    for (name, shape, grad) in &grads {
        let key = format!("grad.{name}");
        assert_close(&key, grad, &reference.f64s(&key, shape), F64_TOLERANCE);
    }
    ws
}

#[test]
fn sigmoid_mlp_matches_pytorch_forward_loss_and_gradients_in_f64() {
    let reference = Fixture::open("mlp_sigmoid_reference.safetensors");
    let mut model: SigmoidMlp<f64> = load_model("mlp_sigmoid_f64.safetensors");
    let targets = reference.labels("target", &[BATCH]);
    assert_eq!(targets, [6, 6, 6, 0, 4]);

    let mut ws = check_forward_and_backward(&mut model, &reference, |y, dy| {
        softmax_cross_entropy(y, &targets, Some(dy)).unwrap()
    });
    let names: Vec<String> = named_params(&model).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);

    // The generated gradient struct has one field per layer, laid out like its parameters.
    let grads = ws.grads();
    for (key, shape, values) in [
        ("grad.0.weight", &[32, 64][..], &grads.layer_0.weight),
        ("grad.0.bias", &[32], &grads.layer_0.bias),
        ("grad.2.weight", &[10, 32], &grads.layer_2.weight),
        ("grad.2.bias", &[10], &grads.layer_2.bias),
    ] {
        assert_close(key, values, &reference.f64s(key, shape), F64_TOLERANCE);
    }

    // Gradients accumulate, as in PyTorch: a second backward without zeroing doubles them.
    let x = input::<f64, SigmoidMlp<f64>>(&reference);
    ws.forward(&mut model, &x);
    ws.loss(|y, dy| softmax_cross_entropy(y, &targets, Some(dy)).unwrap());
    ws.backward(&model);
    for (name, shape, grad) in named_grads(&mut model, ws.grads()) {
        let key = format!("grad.{name}");
        let doubled: Vec<f64> = reference
            .f64s(&key, &shape)
            .iter()
            .map(|g| 2.0 * g)
            .collect();
        assert_close(&format!("twice {key}"), &grad, &doubled, F64_TOLERANCE);
    }
    ws.zero_grads();
    for (name, _, grad) in named_grads(&mut model, ws.grads()) {
        assert!(grad.iter().all(|g| *g == 0.0), "{name} after zero_grads");
    }
}

#[test]
fn relu_tanh_mlp_matches_pytorch_forward_mse_and_gradients_in_f64() {
    let reference = Fixture::open("mlp_relu_tanh_reference.safetensors");
    let mut model: ReluTanhMlp<f64> = load_model("mlp_relu_tanh_f64.safetensors");
    let target = Tensor::from_vec(reference.f64s("target", &[BATCH, 3])).unwrap();

    check_forward_and_backward(&mut model, &reference, |y, dy| {
        mse(y, &target, Some(dy)).unwrap()
    });
    let names: Vec<String> = named_params(&model).into_iter().map(|p| p.0).collect();
    assert_eq!(
        names,
        ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    );
}

/// The f32 model, loaded from PyTorch's float32 file, on the input rounded to f32.
fn check_f32_forward<M: Module<f32>>(weights: &str, reference: &Fixture) {
    let mut model: M = load_model(weights);
    let x = input::<f32, M>(reference);
    let expected = reference.f64s("output", &[BATCH, <M::Output as Shape>::NUMEL]);
    let mut ws = Workspace::new(&model, BATCH);
    assert_close(
        &format!("{weights}: f32 inference output"),
        &to_f64(ws.infer(&model, &x).as_slice()),
        &expected,
        F32_TOLERANCE,
    );
    assert_close(
        &format!("{weights}: f32 training output"),
        &to_f64(ws.forward(&mut model, &x).as_slice()),
        &expected,
        F32_TOLERANCE,
    );
}

#[test]
fn f32_models_from_pytorch_float32_files_match_the_reference_outputs() {
    check_f32_forward::<SigmoidMlp<f32>>(
        "mlp_sigmoid.safetensors",
        &Fixture::open("mlp_sigmoid_reference.safetensors"),
    );
    check_f32_forward::<ReluTanhMlp<f32>>(
        "mlp_relu_tanh.safetensors",
        &Fixture::open("mlp_relu_tanh_reference.safetensors"),
    );
}

#[test]
fn float32_and_float64_files_load_to_the_same_values() {
    // The f64 files are `model.double()` of the float32 weights: every value is the same.
    let single: SigmoidMlp<f32> = load_model("mlp_sigmoid.safetensors");
    let double: SigmoidMlp<f64> = load_model("mlp_sigmoid_f64.safetensors");
    assert_eq!(named_params(&single), named_params(&double));
    let single: ReluTanhMlp<f32> = load_model("mlp_relu_tanh.safetensors");
    let double: ReluTanhMlp<f64> = load_model("mlp_relu_tanh_f64.safetensors");
    assert_eq!(named_params(&single), named_params(&double));

    // And they are the values PyTorch wrote, read independently of the loader.
    let file = Fixture::open("mlp_sigmoid_f64.safetensors");
    for (name, shape, values) in named_params(&double_sigmoid()) {
        assert_eq!(values, file.f64s(&name, &shape), "{name}");
    }
}

fn double_sigmoid() -> SigmoidMlp<f64> {
    load_model("mlp_sigmoid_f64.safetensors")
}

/// Three steps of `optimizer` on the reference batch from PyTorch's weights, each
/// `zero_grad(); loss = cross_entropy(model(input), target); loss.backward(); step()`.
fn trajectory<O: Optimizer<f64>>(mut optimizer: O) -> (SigmoidMlp<f64>, Vec<f64>) {
    let reference = Fixture::open("mlp_sigmoid_reference.safetensors");
    let x = input::<f64, SigmoidMlp<f64>>(&reference);
    let targets = reference.labels("target", &[BATCH]);
    let mut model = double_sigmoid();
    let mut ws = model.workspace(BATCH);
    let mut losses = Vec::new();
    for _ in 0..3 {
        ws.zero_grads();
        ws.forward(&mut model, &x);
        losses.push(
            ws.loss(|y, dy| softmax_cross_entropy(y, &targets, Some(dy)))
                .unwrap(),
        );
        ws.backward(&model);
        optimizer.step(&mut model, ws.grads());
    }
    (model, losses)
}

fn check_trajectory(prefix: &str, model: &SigmoidMlp<f64>, losses: &[f64]) {
    let reference = Fixture::open("mlp_sigmoid_optim_reference.safetensors");
    assert_close(
        &format!("{prefix}_losses"),
        losses,
        &reference.f64s(&format!("{prefix}_losses"), &[3]),
        F64_TOLERANCE,
    );
    let start = named_params(&double_sigmoid());
    for ((name, shape, values), (_, _, initial)) in named_params(model).into_iter().zip(start) {
        let key = format!("{prefix}.{name}");
        let expected = reference.f64s(&key, &shape);
        assert_close(&key, &values, &expected, F64_TOLERANCE);
        // The parameters did move (the comparison is not trivially true).
        assert!(values != initial, "{key} did not change");
    }
}

#[test]
fn sgd_with_momentum_and_weight_decay_follows_pytorchs_trajectory() {
    let (model, losses) = trajectory(Sgd::new(0.1).momentum(0.9).weight_decay(0.01));
    check_trajectory("sgd", &model, &losses);
    let first = Fixture::open("mlp_sigmoid_reference.safetensors").f64s("loss", &[1]);
    assert_close("first SGD loss", &losses[..1], &first, F64_TOLERANCE);
}

#[test]
fn adam_with_weight_decay_follows_pytorchs_trajectory() {
    let (model, losses) = trajectory(Adam::new(0.01).weight_decay(0.01));
    check_trajectory("adam", &model, &losses);
}

/// A path in the temporary directory that no other test (or test run) uses.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "nn-pytorch-reference-{}-{name}.safetensors",
        std::process::id()
    ))
}

/// Saves `model`, checks the file's layout with the `safetensors` crate, and loads it into
/// a model initialised differently: the two must be equal.
fn check_round_trip<E: Float, M: Module<E> + PartialEq + std::fmt::Debug>(
    case: &str,
    model: &M,
    layout_expected: &[(&str, &[usize])],
    dtype: Dtype,
) {
    let path = temp_path(case);
    save(model, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    assert_eq!(
        layout(&bytes),
        expected_layout(layout_expected, dtype),
        "{case}"
    );
    assert_eq!(
        bytes,
        to_bytes(model).unwrap(),
        "{case}: save writes to_bytes"
    );
    // Every tensor holds the parameter's values, row-major, little-endian.
    let file = SafeTensors::deserialize(&bytes).unwrap();
    for (name, _, values) in named_params(model) {
        let data = file.tensor(&name).unwrap().data().to_vec();
        let size = data.len() / values.len();
        let read: Vec<f64> = data
            .chunks_exact(size)
            .map(|b| match size {
                4 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
                _ => f64::from_le_bytes(b.try_into().unwrap()),
            })
            .collect();
        assert_eq!(read, values, "{case}: {name}");
    }

    let mut fresh = M::init(&mut rng(12_345));
    assert_ne!(&fresh, model, "{case}: the fresh model starts different");
    let path = temp_path(&format!("{case}-reload"));
    std::fs::write(&path, &bytes).unwrap();
    let loaded = load(&mut fresh, &path);
    std::fs::remove_file(&path).unwrap();
    loaded.unwrap();
    assert_eq!(&fresh, model, "{case}");
}

#[test]
fn saved_weights_round_trip_with_pytorchs_names_and_shapes() {
    check_round_trip(
        "sigmoid-f32",
        &SigmoidMlp::<f32>::new(42),
        &SIGMOID_LAYOUT,
        Dtype::F32,
    );
    check_round_trip(
        "sigmoid-f64",
        &SigmoidMlp::<f64>::new(43),
        &SIGMOID_LAYOUT,
        Dtype::F64,
    );
    check_round_trip(
        "relu-tanh-f32",
        &ReluTanhMlp::<f32>::new(44),
        &RELU_TANH_LAYOUT,
        Dtype::F32,
    );
    check_round_trip(
        "relu-tanh-f64",
        &ReluTanhMlp::<f64>::new(45),
        &RELU_TANH_LAYOUT,
        Dtype::F64,
    );

    // Weights that came from PyTorch are written back byte for byte as PyTorch wrote them.
    for (weights, f32_model) in [
        ("mlp_sigmoid.safetensors", true),
        ("mlp_sigmoid_f64.safetensors", false),
        ("mlp_relu_tanh.safetensors", true),
        ("mlp_relu_tanh_f64.safetensors", false),
    ] {
        let saved = match (weights.starts_with("mlp_sigmoid"), f32_model) {
            (true, true) => to_bytes(&load_model::<f32, SigmoidMlp<f32>>(weights)),
            (true, false) => to_bytes(&load_model::<f64, SigmoidMlp<f64>>(weights)),
            (false, true) => to_bytes(&load_model::<f32, ReluTanhMlp<f32>>(weights)),
            (false, false) => to_bytes(&load_model::<f64, ReluTanhMlp<f64>>(weights)),
        }
        .unwrap();
        assert_eq!(
            owned_tensors(&saved),
            Fixture::open(weights).tensors(),
            "{weights}"
        );
    }
}

/// Loads `bytes` into a copy of `model`, expecting an error; checks that the model is
/// unchanged and returns the error.
fn load_error<E: Float, M: Module<E> + Clone + PartialEq + std::fmt::Debug>(
    model: &M,
    bytes: &[u8],
) -> WeightsError {
    let mut target = model.clone();
    let error = load_bytes(&mut target, bytes).expect_err("a bad file must not load");
    assert_eq!(&target, model, "a failed load changed the model ({error})");
    error
}

fn with_tensor(tensors: &[OwnedTensor], replacement: OwnedTensor) -> Vec<OwnedTensor> {
    let mut tensors: Vec<OwnedTensor> = tensors
        .iter()
        .filter(|t| t.name != replacement.name)
        .cloned()
        .collect();
    tensors.push(replacement);
    tensors
}

fn zeros(name: &str, dtype: Dtype, shape: &[usize]) -> OwnedTensor {
    OwnedTensor {
        name: name.to_string(),
        dtype,
        shape: shape.to_vec(),
        data: vec![0; shape.iter().product::<usize>() * dtype.bitsize() / 8],
    }
}

#[test]
fn weights_of_another_architecture_are_named_errors_that_change_nothing() {
    let sigmoid: SigmoidMlp<f64> = double_sigmoid();
    let relu_tanh: ReluTanhMlp<f64> = load_model("mlp_relu_tanh_f64.safetensors");
    let sigmoid_file = Fixture::open("mlp_sigmoid_f64.safetensors");
    let relu_tanh_file = Fixture::open("mlp_relu_tanh_f64.safetensors");

    // Both networks start with a `0.weight`, of different shapes.
    let error = load_error(&sigmoid, &relu_tanh_file.bytes);
    assert!(
        matches!(&error, WeightsError::WrongShape { name, expected, found }
            if name == "0.weight" && expected == &[32, 64] && found == &[16, 20]),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "tensor `0.weight` has shape [16, 20] in the weights file, but the model needs [32, 64]"
    );
    let error = load_error(&relu_tanh, &sigmoid_file.bytes);
    assert_eq!(
        error.to_string(),
        "tensor `0.weight` has shape [32, 64] in the weights file, but the model needs [16, 20]"
    );

    // The relu/tanh file without its last layer.
    let first_layers: Vec<OwnedTensor> = relu_tanh_file
        .tensors()
        .into_iter()
        .filter(|t| !t.name.starts_with("4."))
        .collect();
    let error = load_error(&relu_tanh, &safetensors_bytes(&first_layers));
    assert!(
        matches!(&error, WeightsError::Missing { name, expected }
            if name == "4.weight" && expected == &[3, 16]),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "tensor `4.weight` [3, 16] is missing from the weights file"
    );

    // A file with one tensor too many (the sigmoid weights plus a third layer).
    let extra = with_tensor(
        &sigmoid_file.tensors(),
        zeros("4.weight", Dtype::F64, &[3, 16]),
    );
    let error = load_error(&sigmoid, &safetensors_bytes(&extra));
    assert!(
        matches!(&error, WeightsError::Unexpected { name, found }
            if name == "4.weight" && found == &[3, 16]),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the weights file has tensor `4.weight` [3, 16] that the model does not have"
    );

    // The last tensor missing: the three before it were fine, and still nothing is written.
    let no_bias: Vec<OwnedTensor> = sigmoid_file
        .tensors()
        .into_iter()
        .filter(|t| t.name != "2.bias")
        .collect();
    let error = load_error(&sigmoid, &safetensors_bytes(&no_bias));
    assert_eq!(
        error.to_string(),
        "tensor `2.bias` [10] is missing from the weights file"
    );

    // A state_dict saved from a wrapper module: every name has a prefix.
    let prefixed: Vec<OwnedTensor> = sigmoid_file
        .tensors()
        .into_iter()
        .map(|t| OwnedTensor {
            name: format!("model.{}", t.name),
            ..t
        })
        .collect();
    let error = load_error(&sigmoid, &safetensors_bytes(&prefixed));
    assert_eq!(
        error.to_string(),
        "tensor `0.weight` [32, 64] is missing from the weights file"
    );
}

#[test]
fn wrong_shapes_and_dtypes_are_named_errors_that_change_nothing() {
    let single: SigmoidMlp<f32> = load_model("mlp_sigmoid.safetensors");
    let double = double_sigmoid();
    let single_file = Fixture::open("mlp_sigmoid.safetensors");
    let double_file = Fixture::open("mlp_sigmoid_f64.safetensors");

    // `2.weight` [10, 31] instead of [10, 32].
    let narrow = with_tensor(
        &single_file.tensors(),
        zeros("2.weight", Dtype::F32, &[10, 31]),
    );
    let error = load_error(&single, &safetensors_bytes(&narrow));
    assert!(
        matches!(&error, WeightsError::WrongShape { name, expected, found }
            if name == "2.weight" && expected == &[10, 32] && found == &[10, 31]),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "tensor `2.weight` has shape [10, 31] in the weights file, but the model needs [10, 32]"
    );

    // A weight stored as [in, out] (transposed) instead of PyTorch's [out, in].
    let transposed = with_tensor(
        &single_file.tensors(),
        zeros("0.weight", Dtype::F32, &[64, 32]),
    );
    assert_eq!(
        load_error(&single, &safetensors_bytes(&transposed)).to_string(),
        "tensor `0.weight` has shape [64, 32] in the weights file, but the model needs [32, 64]"
    );

    // A bias with an extra dimension: same element count, different shape.
    let column = with_tensor(
        &single_file.tensors(),
        zeros("2.bias", Dtype::F32, &[10, 1]),
    );
    assert_eq!(
        load_error(&single, &safetensors_bytes(&column)).to_string(),
        "tensor `2.bias` has shape [10, 1] in the weights file, but the model needs [10]"
    );

    // The float64 file into an f32 model, and the float32 file into an f64 model.
    let error = load_error(&single, &double_file.bytes);
    assert!(
        matches!(&error, WeightsError::WrongDtype { name, expected: Dtype::F32, found: Dtype::F64 }
            if name == "0.weight"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "tensor `0.weight` is F64 in the weights file, but the model is F32"
    );
    assert_eq!(
        load_error(&double, &single_file.bytes).to_string(),
        "tensor `0.weight` is F32 in the weights file, but the model is F64"
    );

    // Only the last tensor in half precision: caught before anything is written.
    let half = with_tensor(&single_file.tensors(), zeros("2.bias", Dtype::BF16, &[10]));
    let error = load_error(&single, &safetensors_bytes(&half));
    assert!(
        matches!(&error, WeightsError::WrongDtype { name, expected: Dtype::F32, found: Dtype::BF16 }
            if name == "2.bias"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "tensor `2.bias` is BF16 in the weights file, but the model is F32"
    );
}

#[test]
fn truncated_and_garbage_files_are_corrupt_errors_that_change_nothing() {
    let model: SigmoidMlp<f32> = load_model("mlp_sigmoid.safetensors");
    let bytes = Fixture::open("mlp_sigmoid.safetensors").bytes;
    const PREFIX: &str = "not a valid safetensors file (truncated or corrupt?): ";

    // A truncated copy on disk, loaded by path.
    let path = temp_path("truncated");
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let mut target = model.clone();
    let error = load(&mut target, &path).expect_err("a truncated file must not load");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(target, model);
    assert!(matches!(error, WeightsError::Corrupt { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("{PREFIX}incomplete metadata, file not fully covered")
    );

    // Cut in the tensor data, in the JSON header, in the length prefix, and empty.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for (cut, reason) in [
        (
            bytes.len() / 2,
            "incomplete metadata, file not fully covered",
        ),
        (
            8 + header_len,
            "incomplete metadata, file not fully covered",
        ),
        (8 + header_len / 2, "invalid header length"),
        (5, "header too small"),
        (0, "header too small"),
    ] {
        let error = load_error(&model, &bytes[..cut]);
        assert!(matches!(error, WeightsError::Corrupt { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("{PREFIX}{reason}"),
            "cut at {cut} bytes"
        );
    }

    // Random bytes, a text file and the start of a zip archive (what `torch.save` writes).
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00archive/data.pkl".to_vec();
    for garbage in [random, b"definitely not safetensors".to_vec(), zip] {
        let error = load_error(&model, &garbage);
        assert!(matches!(error, WeightsError::Corrupt { .. }), "{error:?}");
        assert_eq!(error.to_string(), format!("{PREFIX}header too large"));
    }

    // A plausible length prefix followed by something that is not JSON.
    let mut not_json = 16u64.to_le_bytes().to_vec();
    not_json.extend_from_slice(b"{\"0.weight\": ???");
    let error = load_error(&model, &not_json);
    assert!(
        error
            .to_string()
            .starts_with(&format!("{PREFIX}invalid JSON in header")),
        "{error}"
    );

    // A file that does not exist names the path.
    let missing = temp_path("does-not-exist");
    let error = load(&mut model.clone(), &missing).unwrap_err();
    assert!(matches!(error, WeightsError::Read { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot read weights file {}: ", missing.display())),
        "{error}"
    );
}
