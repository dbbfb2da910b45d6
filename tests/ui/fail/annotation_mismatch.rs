use nn::prelude::*;

network! {
    pub struct Mlp: [64] {
        linear(32) => [16], sigmoid,
        linear(10),
    }
}

fn main() {}
