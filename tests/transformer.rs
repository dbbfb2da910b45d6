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

network! {
    /// GPT-2's layout in miniature: blocks repeated under `h`, residuals that add no name, a
    /// position table longer than the context, and an output head tied to the token embedding.
    pub struct TiedGpt: [6] {
        transformer: {
            wte: embedding(11, 8),
            wpe: learned_positions(8),
            h: repeat(2) {
                _: residual { ln_1: layer_norm, attn: multi_head_attention(heads = 2, causal) },
                _: residual { ln_2: layer_norm, mlp.c_fc: linear(16), gelu_tanh, mlp.c_proj: linear(8) },
            },
            ln_f: layer_norm,
        },
        lm_head: linear(11, tied = transformer.wte),
    }
}

// The head shares the embedding's table: it adds no parameter.
const _: () = assert!(TiedGpt::<f32>::PARAMS == 11 * 8 + 8 * 8 + 2 * 600 + 16);

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
    // The tied table's gradient is the embedding's plus the head's.
    nn::gradcheck::check_params_at(&TiedGpt::<f64>::new(1), &x, 3);
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

#[test]
fn named_repeated_blocks_and_a_tied_head_use_gpt2_names() {
    let mut names = Vec::new();
    TiedGpt::<f32>::new(0)
        .visit_params("", &mut |p| names.push(format!("{} {:?}", p.name, p.shape)));
    let block = |i: usize| {
        [
            format!("transformer.h.{i}.ln_1.weight [8]"),
            format!("transformer.h.{i}.ln_1.bias [8]"),
            format!("transformer.h.{i}.attn.in_proj_weight [24, 8]"),
            format!("transformer.h.{i}.attn.in_proj_bias [24]"),
            format!("transformer.h.{i}.attn.out_proj.weight [8, 8]"),
            format!("transformer.h.{i}.attn.out_proj.bias [8]"),
            format!("transformer.h.{i}.ln_2.weight [8]"),
            format!("transformer.h.{i}.ln_2.bias [8]"),
            format!("transformer.h.{i}.mlp.c_fc.weight [16, 8]"),
            format!("transformer.h.{i}.mlp.c_fc.bias [16]"),
            format!("transformer.h.{i}.mlp.c_proj.weight [8, 16]"),
            format!("transformer.h.{i}.mlp.c_proj.bias [8]"),
        ]
    };
    let mut expected = vec![
        "transformer.wte.weight [11, 8]".to_string(),
        "transformer.wpe.weight [8, 8]".to_string(),
    ];
    expected.extend(block(0));
    expected.extend(block(1));
    expected.extend([
        "transformer.ln_f.weight [8]".to_string(),
        "transformer.ln_f.bias [8]".to_string(),
    ]);
    assert_eq!(names, expected);
    // Saved and loaded under those names, the head follows its embedding.
    let net = TiedGpt::<f32>::new(5);
    let mut other = TiedGpt::<f32>::new(6);
    nn::io::load_bytes(&mut other, &nn::io::to_bytes(&net).unwrap()).unwrap();
    let x = Tensor::<Rank1<6>>::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    assert_eq!(net.predict(&x), other.predict(&x));
}

#[test]
fn padding_lengths_reach_every_attention_layer_of_a_network() {
    let net = EncoderBlock::<f64>::new(2);
    let mut r = nn::init::rng(9);
    let x = nn::gradcheck::random_tensor::<Rank2<5, 12>>(&mut r, 2);
    // The same sequences with other values in their padding: sample 0 is 3 steps long,
    // sample 1 is 5.
    let mut changed = x.clone();
    for t in 3..5 {
        for v in &mut changed.as_mut_slice()[t * 12..(t + 1) * 12] {
            *v += 10.0;
        }
    }
    let mut ws = net.workspace(2);
    let outputs = |ws: &mut Workspace<EncoderBlock<f64>, f64>, x| ws.infer(&net, x).clone();
    let (plain, plain_changed) = (outputs(&mut ws, &x), outputs(&mut ws, &changed));
    assert_ne!(plain.as_slice()[..36], plain_changed.as_slice()[..36]);

    ws.set_padding(&net, Some(&[3, 5])).unwrap();
    let (padded, padded_changed) = (outputs(&mut ws, &x), outputs(&mut ws, &changed));
    assert_eq!(padded.as_slice()[..36], padded_changed.as_slice()[..36]);
    assert_eq!(padded.as_slice()[60..], plain.as_slice()[60..]);
    assert!(ws.set_padding(&net, Some(&[6, 1])).is_err());

    ws.set_padding(&net, None).unwrap();
    assert_eq!(outputs(&mut ws, &x), plain);
}
