use nn::prelude::*;

network! {
    pub struct Mlp: [100] {
        linear(64 => 32), relu,
        linear(10),
    }
}

fn main() {}
