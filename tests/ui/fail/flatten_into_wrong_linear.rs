use nn::prelude::*;

network! {
    pub struct Head: [512, 3, 3] {
        flatten,
        linear(25088 => 4096), relu,
    }
}

fn main() {}
