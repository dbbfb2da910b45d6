//! Generated transformer networks: a decoder-only model with pre-LN blocks and an encoder
//! block with post-LN, checked against finite differences as whole networks.

use nn::gradcheck::check_module_at;
use nn::prelude::*;

network! {
    /// A decoder-only language model in miniature: token and learned position embeddings,
    /// two pre-LN blocks (causal attention, GELU feed-forward), a final norm and the head.
    pub struct TinyGpt: [6] {
        tok: embedding(11, 8),
        pos: learned_positions,
        residual { layer_norm, multi_head_attention(heads = 2, causal) },
        residual { layer_norm, linear(16), gelu, linear(8) },
        residual { layer_norm, multi_head_attention(heads = 2, causal) },
        residual { layer_norm, linear(16), gelu_tanh, linear(8) },
        ln: layer_norm,
        head: linear(11),
    }
}

network! {
    /// A BERT-style encoder block (post-LN) on features with sinusoidal positions.
    pub struct EncoderBlock: [5, 12] {
        sinusoidal_positions,
        residual { multi_head_attention(heads = 3) }, layer_norm(eps = 1e-12),
        residual { linear(24), gelu, linear(12) }, layer_norm(eps = 1e-12),
    }
}

#[test]
fn transformer_networks_match_finite_differences() {
    let ids: Vec<f64> = [3usize, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
        .iter()
        .map(|&t| t as f64)
        .collect();
    let x = Tensor::<Rank1<6>, f64>::from_vec(ids).unwrap();
    // Token ids are not differentiable: check the parameters of the token model, and the
    // whole encoder block including its input.
    nn::gradcheck::check_params_at(&TinyGpt::<f64>::new(1), &x, 2);
    let mut r = nn::init::rng(4);
    let features = nn::gradcheck::random_tensor::<Rank2<5, 12>>(&mut r, 2);
    check_module_at(&EncoderBlock::<f64>::new(3), &features, 5);
}

#[test]
fn a_causal_model_does_not_see_the_future() {
    let net = TinyGpt::<f64>::new(7);
    let a = Tensor::<Rank1<6>, f64>::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let b = Tensor::<Rank1<6>, f64>::from_vec(vec![1.0, 2.0, 3.0, 9.0, 9.0, 9.0]).unwrap();
    let (ya, yb) = (net.predict(&a), net.predict(&b));
    // Steps 0..3 see only tokens 0..3, which agree.
    assert_eq!(&ya.as_slice()[..3 * 11], &yb.as_slice()[..3 * 11]);
    assert_ne!(&ya.as_slice()[3 * 11..], &yb.as_slice()[3 * 11..]);
}

#[test]
fn a_tiny_gpt_learns_a_repeating_sequence() {
    let mut net = TinyGpt::<f32>::new(2);
    let mut ws = net.workspace(4);
    let streams: Vec<usize> = (0..4 * 7).map(|i| (i * 3) % 11).collect();
    let x = Tensor::<Rank1<6>>::from_vec(
        streams
            .chunks(7)
            .flat_map(|s| s[..6].iter().map(|&t| t as f32))
            .collect(),
    )
    .unwrap();
    let targets: Vec<usize> = streams.chunks(7).flat_map(|s| s[1..].to_vec()).collect();
    let mut adam = Adam::new(0.01);
    let mut losses = Vec::new();
    for _ in 0..80 {
        ws.forward(&mut net, &x);
        losses.push(
            ws.loss(|y, dy| softmax_cross_entropy(y, &targets, Some(dy)))
                .unwrap(),
        );
        ws.backward(&net);
        adam.step(&mut net, ws.grads());
        ws.zero_grads();
    }
    assert!(
        losses[79] < 0.1 * losses[0],
        "{} -> {}",
        losses[0],
        losses[79]
    );
}
