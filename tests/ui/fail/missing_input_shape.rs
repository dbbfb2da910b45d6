use nn::prelude::*;

network! {
    pub struct Mlp {
        linear(32), relu,
        linear(10),
    }
}

fn main() {}
