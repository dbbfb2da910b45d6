use nn::prelude::*;

network! {
    pub struct Mlp: [64] {
        linear(32), relu(0.1),
        linear(10, 20),
        linear(0),
    }
}

fn main() {}
