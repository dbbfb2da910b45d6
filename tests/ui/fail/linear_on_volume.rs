use nn::prelude::*;

network! {
    pub struct Head: [16, 5, 5] {
        relu,
        linear(120),
    }
}

fn main() {}
