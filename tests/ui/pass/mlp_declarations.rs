use nn::prelude::*;

network! {
    /// Explicit in-features and annotations that agree with the inferred shapes.
    pub struct Checked: [784] {
        linear(784 => 512) => [512], relu,
        hidden: { linear(512 => 256), tanh => [256] },
        linear(10), softmax => [10],
    }
}

network! {
    struct OnlyActivations: [3, 4, 5] { relu, sigmoid => [3, 4, 5] }
}

const _: () = assert!(Checked::<f32>::PARAMS == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10);

fn main() {
    let net = Checked::<f64>::new(1);
    let x = Tensor::<Rank1<784>, f64>::zeros(2);
    let y = net.predict(&x);
    assert_eq!(y.batch(), 2);
    let probabilities: f64 = y.sample(0).iter().sum();
    assert!((probabilities - 1.0).abs() < 1e-12);
    assert_eq!(OnlyActivations::<f32>::PARAMS, 0);
    assert_eq!(OnlyActivations::<f32>::OUTPUT, [3, 4, 5]);
}
