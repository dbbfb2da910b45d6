use nn::prelude::*;

network! {
    pub struct Mlp: [64] {
        lineer(32), relu,
        linear(10),
    }
}

fn main() {}
