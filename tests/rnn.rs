//! Generated sequence models: whole-network gradients, truncated BPTT, clipping, bad input.

use nn::gradcheck::{check_module_at, random_tensor};
use nn::init::rng;
use nn::optim::clip_grad_norm;
use nn::prelude::*;
use nn::train::{Tbptt, TbpttError, TrainError};

network! {
    /// A character model: token ids in, next-token logits at every step out.
    pub struct CharLstm: [4] {
        embedding(7, 5),
        lstm(6),
        linear(7),
    }
}

network! {
    /// The same weights unrolled over 6 steps (parameter shapes do not depend on T).
    pub struct CharLstm6: [6] {
        embedding(7, 5),
        lstm(6),
        linear(7),
    }
}

network! {
    /// A sequence classifier on features: tanh RNN, the last state, a linear head.
    pub struct Classifier: [5, 3] {
        rnn(4), last => [4], linear(2),
    }
}

network! {
    pub struct GruTagger: [4, 3] {
        gru(5), tanh, linear(5 => 2),
    }
}

#[test]
fn whole_sequence_networks_match_finite_differences() {
    let mut r = rng(3);
    let x = random_tensor::<Rank2<5, 3>>(&mut r, 2);
    check_module_at(&Classifier::<f64>::new(1), &x, 4);
    let x = random_tensor::<Rank2<4, 3>>(&mut r, 3);
    check_module_at(&GruTagger::<f64>::new(2), &x, 5);
}

fn stream(len: usize) -> Vec<usize> {
    (0..len).map(|i| (i * i + 3 * i) % 7).collect()
}

fn tokens<const T: usize>(ids: &[usize]) -> Tensor<Rank1<T>, f64> {
    Tensor::from_vec(ids.iter().map(|&t| t as f64).collect()).unwrap()
}

/// The gradient of the mean cross-entropy of one window, computed directly.
fn full_bptt_grads(net: &mut CharLstm<f64>, ids: &[usize]) -> Vec<f64> {
    let mut ws = net.workspace(1);
    ws.forward(net, &tokens::<4>(&ids[..4]));
    ws.loss(|y, dy| softmax_cross_entropy(y, &ids[1..5], Some(dy)))
        .unwrap();
    ws.backward(net);
    let mut grads = Vec::new();
    let grads_struct = ws.grads();
    net.clone()
        .visit_params_and_grads(grads_struct, &mut |_, g| grads.extend_from_slice(g));
    grads
}

fn params(net: &CharLstm<f64>) -> Vec<f64> {
    let mut values = Vec::new();
    net.visit_params("", &mut |p| values.extend_from_slice(p.values));
    values
}

#[test]
fn tbptt_with_k1_equal_k2_equal_t_is_exactly_full_bptt() {
    let ids = stream(5);
    let mut direct = CharLstm::<f64>::new(7);
    let mut by_tbptt = direct.clone();
    // Full BPTT: one SGD step with the gradient of the whole sequence.
    let grads = full_bptt_grads(&mut direct, &ids);
    let expected: Vec<f64> = params(&direct)
        .iter()
        .zip(&grads)
        .map(|(p, g)| p - 0.5 * g)
        .collect();
    // TBPTT(4, 4) over the same 5 tokens: one window, one update.
    let mut ws = by_tbptt.workspace(1);
    let mut sgd = Sgd::new(0.5);
    let mut updates = 0;
    Tbptt::new(4, 4, 4)
        .unwrap()
        .train_pass(&mut by_tbptt, &mut ws, &mut sgd, &ids, 1, |_, _| {
            updates += 1
        })
        .unwrap();
    assert_eq!(updates, 1);
    for (a, b) in params(&by_tbptt).iter().zip(&expected) {
        assert!((a - b).abs() < 1e-14, "{a} vs {b}");
    }
}

#[test]
fn tbptt_clips_the_gradient_before_the_step() {
    let ids = stream(5);
    let mut direct = CharLstm::<f64>::new(7);
    let mut by_tbptt = direct.clone();
    // One SGD step with the full-BPTT gradient scaled to norm 0.01.
    let grads = full_bptt_grads(&mut direct, &ids);
    let norm = grads.iter().map(|g| g * g).sum::<f64>().sqrt();
    assert!(norm > 0.01, "the bound must bite: {norm}");
    let scale = 0.01 / (norm + 1e-6);
    let expected: Vec<f64> = params(&direct)
        .iter()
        .zip(&grads)
        .map(|(p, g)| p - 0.5 * g * scale)
        .collect();
    let mut ws = by_tbptt.workspace(1);
    let mut sgd = Sgd::new(0.5);
    Tbptt::new(4, 4, 4)
        .unwrap()
        .with_max_grad_norm(0.01)
        .train_pass(&mut by_tbptt, &mut ws, &mut sgd, &ids, 1, |_, _| ())
        .unwrap();
    for (a, b) in params(&by_tbptt).iter().zip(&expected) {
        assert!((a - b).abs() < 1e-14, "{a} vs {b}");
    }
}

#[test]
fn carried_state_continues_the_sequence_where_the_last_window_left_it() {
    // Window 1 covers tokens 0..4, window 2 (k1 = 2) tokens 2..6, starting from the state after
    // token 1: its outputs must equal steps 2..6 of one forward over all six tokens.
    let ids = stream(6);
    let short = CharLstm::<f64>::new(11);
    let mut long = CharLstm6::<f64>::new(0);
    nn::io::load_bytes(&mut long, &nn::io::to_bytes(&short).unwrap()).unwrap();
    let mut ws = short.workspace(1);
    ws.infer(&short, &tokens::<4>(&ids[..4]));
    ws.carry_over(&short, 2);
    let window = ws.infer(&short, &tokens::<4>(&ids[2..6])).clone();
    let whole = long.predict(&tokens::<6>(&ids));
    for (a, b) in window.as_slice().iter().zip(&whole.as_slice()[2 * 7..]) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}

#[test]
fn tbptt_trains_a_stream_with_overlapping_windows() {
    let ids = stream(400);
    let mut net = CharLstm::<f32>::new(5);
    let mut ws = net.workspace(4);
    let mut adam = Adam::new(0.05);
    let tbptt = Tbptt::fixed::<2, 4, 4>();
    let mut losses = Vec::new();
    for _ in 0..15 {
        let loss = tbptt
            .train_pass(&mut net, &mut ws, &mut adam, &ids, 4, |_, _| ())
            .unwrap();
        losses.push(loss);
    }
    assert!(losses[14] < 0.5 * losses[0], "{losses:?}");
}

#[test]
fn invalid_k1_k2_and_bad_streams_are_clear_errors() {
    assert_eq!(
        Tbptt::new(5, 4, 4),
        Err(TbpttError::K1OutOfRange { k1: 5, k2: 4 })
    );
    assert_eq!(
        Tbptt::new(0, 4, 4),
        Err(TbpttError::K1OutOfRange { k1: 0, k2: 4 })
    );
    let err = Tbptt::new(2, 8, 4).unwrap_err();
    assert!(err.to_string().contains("the network unrolls 4"), "{err}");
    let mut net = CharLstm::<f32>::new(5);
    let mut ws = net.workspace(2);
    let mut sgd = Sgd::new(0.1);
    let tbptt = Tbptt::new(4, 4, 4).unwrap();
    let short = tbptt.train_pass(&mut net, &mut ws, &mut sgd, &stream(6), 2, |_, _| ());
    assert!(
        matches!(short, Err(TrainError::StreamTooShort { .. })),
        "{short:?}"
    );
    let bad = tbptt.train_pass(
        &mut net,
        &mut ws,
        &mut sgd,
        &[1, 2, 9, 3, 4, 5],
        1,
        |_, _| (),
    );
    assert_eq!(
        bad,
        Err(TrainError::TokenOutOfRange {
            token: 9,
            position: 2,
            vocabulary: 7
        })
    );
}

#[test]
fn a_diverging_run_stops_with_the_update_number() {
    let mut net = CharLstm::<f32>::new(5);
    net.layer_2
        .weight
        .iter_mut()
        .for_each(|w| *w = f32::INFINITY);
    let mut ws = net.workspace(1);
    let mut sgd = Sgd::new(0.1);
    let result = Tbptt::new(4, 4, 4).unwrap().train_pass(
        &mut net,
        &mut ws,
        &mut sgd,
        &stream(40),
        1,
        |_, _| (),
    );
    match result {
        Err(TrainError::Loss { update: 0, source }) => {
            assert!(source.to_string().contains("not finite"), "{source}")
        }
        other => panic!("expected a non-finite loss at update 0, got {other:?}"),
    }
}

#[test]
fn clipping_reaches_every_parameter_of_every_layer_kind() {
    let mut net = CharLstm::<f64>::new(1);
    let mut ws = net.workspace(2);
    let ids = stream(10);
    let x = tokens::<4>(&[
        ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6], ids[7],
    ]);
    ws.forward(&mut net, &x);
    ws.loss(|y, dy| softmax_cross_entropy(y, &ids[1..9], Some(dy)))
        .unwrap();
    ws.backward(&net);
    let mut squares = 0.0;
    net.clone().visit_params_and_grads(ws.grads(), &mut |_, g| {
        squares += g.iter().map(|v| v * v).sum::<f64>()
    });
    let norm = clip_grad_norm(&net, ws.grads_mut(), 1e-3);
    assert!(
        (norm - squares.sqrt()).abs() < 1e-12,
        "every gradient is visited: {norm} vs {}",
        squares.sqrt()
    );
    let mut after = 0.0;
    net.clone().visit_params_and_grads(ws.grads(), &mut |_, g| {
        after += g.iter().map(|v| v * v).sum::<f64>()
    });
    assert!((after.sqrt() - 1e-3).abs() < 1e-6);
}
