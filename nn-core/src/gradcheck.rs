//! Finite-difference gradient checks in f64, for layers and whole generated networks.
//!
//! The check takes a module with seeded random parameters and input, a random weighting `r`
//! of its output, and the scalar `L = Σ r ⊙ f(x)`. Backward with `dy = r` must give the same
//! `dL/dθ` and `dL/dx` as central differences `(L(θ + h) - L(θ - h)) / 2h`.

use rand::Rng as _;

use crate::init::{rng, Rng};
use crate::module::Module;
use crate::Tensor;

const STEP: f64 = 1e-5;
/// At most this many entries of each parameter tensor (and of the input) are checked, chosen
/// at random, so that large layers are checked in reasonable time.
const ENTRIES_PER_TENSOR: usize = 40;

/// The result of comparing one analytic derivative with its finite-difference estimate.
#[derive(Debug)]
pub struct Mismatch {
    pub what: String,
    pub analytic: f64,
    pub numeric: f64,
}

/// Checks `M`'s backward against central differences; panics with every mismatch found.
pub fn check_module<M: Module<f64> + Clone>(batch: usize, seed: u64) {
    let mut rng = rng(seed);
    let module = M::init(&mut rng);
    let x = random_tensor::<M::Input>(&mut rng, batch);
    check_module_at(&module, &x, seed);
}

/// Like `check_module`, at a given module and input.
pub fn check_module_at<M: Module<f64> + Clone>(module: &M, x: &Tensor<M::Input, f64>, seed: u64) {
    let mismatches = compare(module, x, seed);
    assert!(
        mismatches.is_empty(),
        "gradient check failed for {}:\n{mismatches:#?}",
        std::any::type_name::<M>()
    );
}

/// A tensor of `batch` samples drawn from U(-1, 1).
pub fn random_tensor<S: crate::Shape>(rng: &mut Rng, batch: usize) -> Tensor<S, f64> {
    let values = (0..batch * S::NUMEL)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(values).expect("whole samples by construction")
}

fn weighted_output<M: Module<f64> + Clone>(
    module: &M,
    x: &Tensor<M::Input, f64>,
    r: &Tensor<M::Output, f64>,
) -> f64 {
    // A fresh clone and cache each time, so state a training forward changes (running
    // statistics, dropout generators) is the same for every evaluation.
    let mut m = module.clone();
    let mut cache = m.new_cache(x.batch());
    let mut y = Tensor::zeros(x.batch());
    m.forward_train(x, &mut y, &mut cache);
    y.as_slice()
        .iter()
        .zip(r.as_slice())
        .map(|(a, b)| a * b)
        .sum()
}

fn chosen_entries(rng: &mut Rng, len: usize) -> Vec<usize> {
    if len <= ENTRIES_PER_TENSOR {
        (0..len).collect()
    } else {
        (0..ENTRIES_PER_TENSOR)
            .map(|_| rng.random_range(0..len))
            .collect()
    }
}

fn close(analytic: f64, numeric: f64) -> bool {
    (analytic - numeric).abs() <= 1e-6 + 1e-5 * analytic.abs().max(numeric.abs())
}

/// Checks only the parameter gradients, for modules whose input is not differentiable (token
/// ids into an embedding); panics with every mismatch found.
pub fn check_params_at<M: Module<f64> + Clone>(module: &M, x: &Tensor<M::Input, f64>, seed: u64) {
    let mismatches = compare_inner(module, x, seed, false);
    assert!(
        mismatches.is_empty(),
        "gradient check failed for {}:\n{mismatches:#?}",
        std::any::type_name::<M>()
    );
}

/// Returns every derivative on which backward and finite differences disagree.
pub fn compare<M: Module<f64> + Clone>(
    module: &M,
    x: &Tensor<M::Input, f64>,
    seed: u64,
) -> Vec<Mismatch> {
    compare_inner(module, x, seed, true)
}

fn compare_inner<M: Module<f64> + Clone>(
    module: &M,
    x: &Tensor<M::Input, f64>,
    seed: u64,
    check_input: bool,
) -> Vec<Mismatch> {
    let mut rng = rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let batch = x.batch();
    let r = random_tensor::<M::Output>(&mut rng, batch);

    // Analytic gradients.
    let mut trained = module.clone();
    let mut cache = trained.new_cache(batch);
    let mut y = Tensor::zeros(batch);
    trained.forward_train(x, &mut y, &mut cache);
    let mut grads = trained.new_grads();
    let mut dx = Tensor::zeros(batch);
    trained.backward(
        x,
        &y,
        &r,
        check_input.then_some(&mut dx),
        &mut cache,
        &mut grads,
    );
    let mut param_grads: Vec<Vec<f64>> = Vec::new();
    let mut reader = module.clone();
    reader.visit_params_and_grads(&grads, &mut |_, g| param_grads.push(g.to_vec()));
    let mut names = Vec::new();
    module.visit_params("", &mut |p| names.push(p.name.to_string()));

    let mut mismatches = Vec::new();
    for (index, (name, grad)) in names.iter().zip(&param_grads).enumerate() {
        for entry in chosen_entries(&mut rng, grad.len()) {
            let at = |delta: f64| {
                let mut shifted = module.clone();
                let mut seen = 0;
                shifted.visit_params_mut("", &mut |p| {
                    if seen == index {
                        p.values[entry] += delta;
                    }
                    seen += 1;
                });
                weighted_output(&shifted, x, &r)
            };
            let numeric = (at(STEP) - at(-STEP)) / (2.0 * STEP);
            if !close(grad[entry], numeric) {
                mismatches.push(Mismatch {
                    what: format!("{name}[{entry}]"),
                    analytic: grad[entry],
                    numeric,
                });
            }
        }
    }
    let input_entries = if check_input {
        chosen_entries(&mut rng, x.as_slice().len())
    } else {
        Vec::new()
    };
    for entry in input_entries {
        let at = |delta: f64| {
            let mut shifted = x.clone();
            shifted.as_mut_slice()[entry] += delta;
            weighted_output(module, &shifted, &r)
        };
        let numeric = (at(STEP) - at(-STEP)) / (2.0 * STEP);
        let analytic = dx.as_slice()[entry];
        if !close(analytic, numeric) {
            mismatches.push(Mismatch {
                what: format!("input[{entry}]"),
                analytic,
                numeric,
            });
        }
    }
    mismatches
}
