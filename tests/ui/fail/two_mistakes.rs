use nn::prelude::*;

network! {
    pub struct Mlp: [784] {
        linear(512), relu,
        linear(256 => 128), tanh,
        linear(10) => [12],
    }
}

fn main() {}
