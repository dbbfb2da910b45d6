//! Generated convolutional networks: shapes, names, summaries and whole-network gradients.

use nn::gradcheck::check_module;
use nn::models::Vgg16;
use nn::prelude::*;

network! {
    /// A ResNet in miniature, named like torchvision's resnet18 (conv1, bn1, layer1.0.conv1,
    /// layer2.0.downsample.0, fc).
    pub struct TinyResNet: [3, 12, 12] {
        conv1: conv2d(4, kernel = 3, padding = 1), bn1: batch_norm2d, relu,
        layer1: {
            residual(relu) {
                conv1: conv2d(4, kernel = 3, padding = 1), bn1: batch_norm2d, relu,
                conv2: conv2d(4, kernel = 3, padding = 1), bn2: batch_norm2d,
            },
        },
        layer2: {
            residual(relu) {
                conv1: conv2d(6, kernel = 3, stride = 2, padding = 1) => [6, 6, 6], bn1: batch_norm2d, relu,
                conv2: conv2d(6, kernel = 3, padding = 1), bn2: batch_norm2d,
            } shortcut {
                conv2d(6, kernel = 1, stride = 2) => [6, 6, 6], batch_norm2d,
            } => [6, 6, 6],
        },
        avgpool: adaptive_avg_pool2d(1),
        flatten,
        fc: linear(5),
    }
}

network! {
    /// Every convolutional layer kind once, small enough for a finite-difference check.
    pub struct EveryLayer: [2, 9, 9] {
        conv2d(3, kernel = 3, stride = 2) => [3, 4, 4], tanh,
        residual { conv2d(3, kernel = 3, padding = 1), sigmoid },
        avg_pool2d(2, stride = 1) => [3, 3, 3],
        batch_norm2d,
        max_pool2d(2, stride = 1),
        adaptive_avg_pool2d(2, 1),
        flatten => [6],
        dropout(0.25),
        linear(4), softmax,
    }
}

fn names<M: Module<f32>>(model: &M) -> Vec<(String, Vec<usize>)> {
    let mut names = Vec::new();
    model.visit_params("", &mut |p| {
        names.push((p.name.to_string(), p.shape.to_vec()))
    });
    model.visit_buffers("", &mut |b| {
        names.push((b.name.to_string(), b.shape.to_vec()))
    });
    names
}

#[test]
fn vgg16_has_torchvisions_shapes_names_and_sizes() {
    assert_eq!(Vgg16::<f32>::PARAMS, 138_357_544);
    let summary = Vgg16::<f32>::summary();
    let text = summary.to_string();
    assert_eq!(summary.total_params(), 138_357_544);
    let fc1 = summary
        .rows
        .iter()
        .find(|r| r.name == "classifier.0")
        .expect("fc1 row");
    assert_eq!(
        fc1.params, 102_764_544,
        "102,760,448 weights + 4,096 biases"
    );
    assert_eq!(fc1.layer, "linear(25088 => 4096)");
    let first_conv = &summary.rows[0];
    assert_eq!(
        (first_conv.name, first_conv.output),
        ("features.0", &[64, 224, 224][..])
    );
    let flatten = summary
        .rows
        .iter()
        .find(|r| r.layer == "flatten")
        .expect("flatten row");
    assert_eq!(flatten.output, &[25_088]);
    assert!(text.contains("[512, 7, 7]"), "{text}");
    assert!(text.contains("102,764,544"), "{text}");
    // Allocating VGG16 (553 MB of f32) is too much for a test; the names come from the
    // types, so a network with the same layers at a tiny input has the same names.
    let mut conv_indices = Vec::new();
    for row in summary.rows.iter().filter(|r| r.params > 0) {
        conv_indices.push(row.name);
    }
    let expected = [
        "features.0",
        "features.2",
        "features.5",
        "features.7",
        "features.10",
        "features.12",
        "features.14",
        "features.17",
        "features.19",
        "features.21",
        "features.24",
        "features.26",
        "features.28",
        "classifier.0",
        "classifier.3",
        "classifier.6",
    ];
    assert_eq!(conv_indices, expected);
}

#[test]
fn resnet_blocks_are_named_like_torchvision() {
    let net = TinyResNet::<f32>::new(0);
    let names: Vec<String> = names(&net).into_iter().map(|(n, _)| n).collect();
    for expected in [
        "conv1.weight",
        "conv1.bias",
        "bn1.weight",
        "bn1.running_mean",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer1.0.bn2.running_var",
        "layer2.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.bias",
        "layer2.0.downsample.1.num_batches_tracked",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let bytes = nn::io::to_bytes(&net).unwrap();
    let mut other = TinyResNet::<f32>::new(1);
    nn::io::load_bytes(&mut other, &bytes).unwrap();
    assert_eq!(net, other, "parameters and running statistics round-trip");
}

#[test]
fn whole_network_gradients_match_finite_differences() {
    check_module::<TinyResNet<f64>>(3, 7);
    check_module::<EveryLayer<f64>>(4, 8);
}

#[test]
fn training_reduces_the_loss_of_a_small_cnn() {
    let mut net = TinyResNet::<f32>::new(3);
    let mut ws = net.workspace(8);
    let x = Tensor::<Rank3<3, 12, 12>>::from_vec(
        (0..8 * 432)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect(),
    )
    .unwrap();
    let labels: Vec<usize> = (0..8).map(|i| i % 5).collect();
    let mut adam = Adam::new(0.01);
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..60 {
        ws.forward(&mut net, &x);
        last = ws
            .loss(|y, dy| softmax_cross_entropy(y, &labels, Some(dy)))
            .unwrap();
        first.get_or_insert(last);
        ws.backward(&net);
        adam.step(&mut net, ws.grads());
        ws.zero_grads();
    }
    assert!(last < 0.1 * first.unwrap(), "loss {first:?} -> {last}");
}
