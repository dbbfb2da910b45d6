//! Criterion benchmarks of `network!`-generated MLPs on the workloads of peers.md.
//!
//! | id  | network                                             | batch |
//! |-----|-----------------------------------------------------|------:|
//! | W1  | [784] linear(512) relu linear(512) relu linear(10)  |    64 |
//! | W2a | [64] linear(32) sigmoid linear(10)                  |    32 |
//! | W2b | same as W2a                                         |     1 |
//!
//! For each: `<id>/forward` is inference (`Workspace::infer`), `<id>/train_step` is one training
//! step as peers.md defines it: forward, mean softmax cross-entropy, backward, plain SGD update
//! (lr 0.01), zeroing the gradients. Every buffer is allocated before the timed loop.
//! See benches/README.md for how to run them and the figures against PyTorch.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use nn::prelude::*;

network! {
    /// W1: PyTorch's `Sequential(Linear(784, 512), ReLU(), Linear(512, 512), ReLU(), Linear(512, 10))`.
    pub struct W1: [784] {
        linear(512), relu,
        linear(512), relu,
        linear(10) => [10],
    }
}

network! {
    /// W2a / W2b: PyTorch's `Sequential(Linear(64, 32), Sigmoid(), Linear(32, 10))`.
    pub struct W2: [64] {
        linear(32), sigmoid,
        linear(10) => [10],
    }
}

const _: () = assert!(W1::<f32>::PARAMS == 669_706);
const _: () = assert!(W2::<f32>::PARAMS == 2_410);

/// Seed of the parameters, inputs and labels.
const SEED: u64 = 0;
/// Number of classes of both workloads.
const CLASSES: usize = 10;

/// A batch of `batch` inputs with unit variance (U(-√3, √3)) and `batch` labels in `0..10`,
/// both from a fixed seed.
fn data<M: Module<f32>>(batch: usize) -> (Tensor<M::Input, f32>, Vec<usize>) {
    let mut rng = rng(SEED + 1);
    let mut values = vec![0.0f32; batch * <M::Input as Shape>::NUMEL];
    nn::init::uniform(&mut rng, &mut values, 3f64.sqrt());
    let x = Tensor::from_vec(values).expect("a whole batch");
    // A 64-bit LCG (Knuth's MMIX constants) for the labels; the high bits are the good ones.
    let mut state = SEED.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let labels = (0..batch)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) % CLASSES as u64) as usize
        })
        .collect();
    (x, labels)
}

/// Registers `<id>/forward` and `<id>/train_step` for network `M` at `batch`.
fn workload<M>(c: &mut Criterion, id: &str, batch: usize)
where
    M: Module<f32, Output = Rank1<CLASSES>>,
{
    let mut net = M::init(&mut rng(SEED));
    let (x, labels) = data::<M>(batch);
    let mut ws = Workspace::<M>::new(&net, batch);
    let mut sgd = Sgd::new(0.01f32);

    let mut group = c.benchmark_group(id);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(40);

    group.bench_function("forward", |b| {
        b.iter(|| {
            black_box(ws.infer(&net, black_box(&x)));
        })
    });

    group.bench_function("train_step", |b| {
        b.iter(|| {
            ws.forward(&mut net, black_box(&x));
            let loss = ws
                .loss(|y, dy| softmax_cross_entropy(y, &labels, Some(dy)))
                .expect("a finite loss");
            ws.backward(&net);
            sgd.step(&mut net, ws.grads());
            ws.zero_grads();
            black_box(loss)
        })
    });

    group.finish();
}

fn benches(c: &mut Criterion) {
    workload::<W1<f32>>(c, "W1", 64);
    workload::<W2<f32>>(c, "W2a", 32);
    workload::<W2<f32>>(c, "W2b", 1);
}

criterion_group!(mlp, benches);
criterion_main!(mlp);
