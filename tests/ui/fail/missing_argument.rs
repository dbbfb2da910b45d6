use nn::prelude::*;

network! {
    pub struct Mlp: [64] {
        linear(32), relu,
        linear,
    }
}

fn main() {}
