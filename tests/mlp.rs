//! Whole generated MLPs: shapes, gradients against finite differences, training.

use nn::gradcheck::check_module;
use nn::prelude::*;

network! {
    /// The W2 workload of peers.md: PyTorch's `Sequential(Linear(64, 32), Sigmoid(), Linear(32, 10))`.
    pub struct Small: [64] {
        linear(32), sigmoid,
        linear(32 => 10) => [10],
    }
}

network! {
    pub struct Deep: [20] {
        encoder: {
            linear(16), relu,
            linear(16), tanh,
        },
        head: { linear(3), softmax },
    }
}

const _: () = assert!(Small::<f32>::PARAMS == 2_410);

#[test]
fn constants_and_summary_follow_the_declaration() {
    assert_eq!(Small::<f32>::INPUT, [64]);
    assert_eq!(Small::<f32>::OUTPUT, [10]);
    let summary = Small::<f32>::summary().to_string();
    assert!(summary.contains("linear(64 => 32)"), "{summary}");
    assert!(summary.contains("total parameters: 2,410"), "{summary}");
    let mut names = Vec::new();
    Small::<f32>::new(0).visit_params("", &mut |p| {
        names.push((p.name.to_string(), p.shape.to_vec()))
    });
    assert_eq!(
        names,
        [
            ("0.weight".to_string(), vec![32, 64]),
            ("0.bias".to_string(), vec![32]),
            ("2.weight".to_string(), vec![10, 32]),
            ("2.bias".to_string(), vec![10]),
        ]
    );
    let mut deep = Vec::new();
    Deep::<f32>::new(0).visit_params("", &mut |p| deep.push(p.name.to_string()));
    assert_eq!(deep[0], "encoder.0.weight");
    assert_eq!(deep[5], "head.0.bias");
}

#[test]
fn whole_network_gradients_match_finite_differences() {
    check_module::<Small<f64>>(4, 1);
    check_module::<Deep<f64>>(3, 2);
}
