use nn::prelude::*;

network! {
    pub struct Mlp: [64] {
        linear(32), swish,
        linear(10),
    }
}

fn main() {}
