use nn::prelude::*;

network! {
    pub struct Mlp: [64] {
        linear(32), sigmoid,
        linear(64 => 10),
    }
}

fn main() {}
