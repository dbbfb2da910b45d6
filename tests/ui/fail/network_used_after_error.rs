// A mistake in a layer is reported once, at the layer: code that uses the network compiles
// against the layers that checked, with no follow-on errors.
use nn::prelude::*;

network! {
    pub struct Mlp: [64] {
        linear(32), sigmoid,
        linear(31 => 10),
    }
}

fn main() {
    let net = Mlp::<f32>::new(0);
    let mut ws = net.workspace(8);
    let x = Tensor::zeros(8);
    let _ = ws.infer(&net, &x);
    println!("{}", Mlp::<f32>::summary());
}
