//! Criterion benchmarks of the convolutional and recurrent workloads of peers.md:
//!
//! | id | network | batch | measured |
//! |----|---------|------:|----------|
//! | W3 | LeNet-5 (`nn::models::LeNet5`), 1 x 28 x 28 | 64 | training step |
//! | W4 | VGG-small (`nn::models::VggSmall`), 3 x 32 x 32 | 32 | training step |
//! | W5 | VGG16 (`nn::models::Vgg16`), 3 x 224 x 224 | 1 | forward (inference) |
//! | W6 | tanh RNN 64 -> 128 with a per-step linear to 64 classes, T = 64 | 32 | training step |
//! | W7 | decoder-only transformer: 2 pre-LN blocks, d 128, 4 heads, FFN 512, T 64, vocab 256 | 16 | training step |
//! | MiniLM | all-MiniLM-L6-v2 (`nn::models::MiniLm`), a 12-token sentence padded to 128 | 1, 8 | sentence embeddings |
//!
//! A training step is forward, mean softmax cross-entropy (over all steps for W6), backward
//! and a plain SGD update, with every buffer allocated before the timed loop.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use nn::models::{LeNet5, MiniLm, Vgg16, VggSmall};
use nn::prelude::*;

network! {
    /// W6: PyTorch's `nn.RNN(64, 128, tanh, batch_first=True)` then `nn.Linear(128, 64)` per step.
    pub struct RnnLm: [64, 64] {
        rnn(128),
        linear(64),
    }
}

network! {
    /// W7: peers.md's TinyGPT (token + learned position embeddings, two pre-LN blocks with
    /// causal 4-head attention and a GELU feed-forward, final layer norm, LM head).
    pub struct Gpt: [64] {
        tok: embedding(256, 128),
        pos: learned_positions,
        residual { layer_norm, multi_head_attention(heads = 4, causal) },
        residual { layer_norm, linear(512), gelu, linear(128) },
        residual { layer_norm, multi_head_attention(heads = 4, causal) },
        residual { layer_norm, linear(512), gelu, linear(128) },
        ln: layer_norm,
        head: linear(256),
    }
}

const _: () = assert!(Gpt::<f32>::PARAMS == 470_784);

fn inputs<S: Shape>(batch: usize) -> Tensor<S, f32> {
    let mut values = vec![0.0f32; batch * S::NUMEL];
    nn::init::uniform(&mut rng(1), &mut values, 1.0);
    Tensor::from_vec(values).expect("a whole batch")
}

fn labels(count: usize, classes: usize) -> Vec<usize> {
    (0..count).map(|i| (i * 7 + 3) % classes).collect()
}

fn train_step<M: Module<f32>>(
    c: &mut Criterion,
    id: &str,
    x: Tensor<M::Input, f32>,
    targets: Vec<usize>,
    seconds: u64,
) {
    let mut net = M::init(&mut rng(0));
    let mut ws = Workspace::<M>::new(&net, x.batch());
    let mut sgd = Sgd::new(0.001f32);
    let mut group = c.benchmark_group(id);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(seconds))
        .sample_size(20);
    group.bench_function("train_step", |b| {
        b.iter(|| {
            ws.forward(&mut net, &x);
            let loss = ws
                .loss(|y, dy| softmax_cross_entropy(y, &targets, Some(dy)))
                .expect("finite loss");
            ws.backward(&net);
            sgd.step(&mut net, ws.grads());
            ws.zero_grads();
            black_box(loss)
        })
    });
    group.bench_function("forward", |b| {
        b.iter(|| black_box(ws.infer(&net, &x).as_slice()[0]))
    });
    group.finish();
}

fn w3(c: &mut Criterion) {
    train_step::<LeNet5>(c, "W3", inputs(64), labels(64, 10), 4);
}

fn w4(c: &mut Criterion) {
    train_step::<VggSmall>(c, "W4", inputs(32), labels(32, 10), 8);
}

fn w6(c: &mut Criterion) {
    train_step::<RnnLm>(c, "W6", inputs(32), labels(32 * 64, 64), 4);
}

fn w7(c: &mut Criterion) {
    let ids: Vec<f32> = (0..16 * 64).map(|i| ((i * 37 + 11) % 256) as f32).collect();
    let x = Tensor::<Rank1<64>>::from_vec(ids).expect("a whole batch");
    train_step::<Gpt>(c, "W7", x, labels(16 * 64, 256), 5);
}

fn w5(c: &mut Criterion) {
    let net = Vgg16::<f32>::new(0);
    let x = inputs::<Rank3<3, 224, 224>>(1);
    let mut ws = net.workspace(1);
    let mut group = c.benchmark_group("W5");
    group
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .sample_size(10);
    group.bench_function("forward", |b| {
        b.iter(|| black_box(ws.infer(&net, &x).as_slice()[0]))
    });
    group.finish();
}

/// all-MiniLM-L6-v2 (random weights: the time does not depend on them) embedding one sentence
/// of 12 tokens, and a batch of 8. The network always runs its 128 steps; the key-padding mask
/// keeps the padding out of the result, not out of the work.
fn minilm(c: &mut Criterion) {
    let net = MiniLm::new(0);
    let sentence: Vec<usize> = [
        101, 1996, 4937, 7719, 2006, 1996, 13523, 2058, 1996, 4586, 1012, 102,
    ]
    .to_vec();
    let mut ws = net.workspace(8);
    let mut group = c.benchmark_group("MiniLM");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    group.bench_function("embed_1_sentence", |b| {
        let one = [sentence.clone()];
        b.iter(|| black_box(net.embed(&mut ws, &one).expect("embedded")[0][0]))
    });
    group.bench_function("embed_8_sentences", |b| {
        let eight = vec![sentence.clone(); 8];
        b.iter(|| black_box(net.embed(&mut ws, &eight).expect("embedded")[0][0]))
    });
    group.finish();
}

criterion_group!(benches, w3, w4, w6, w7, w5, minilm);
criterion_main!(benches);
