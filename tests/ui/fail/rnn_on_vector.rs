use nn::prelude::*;

network! {
    pub struct Wrong: [128] {
        linear(64), relu,
        gru(32),
    }
}

fn main() {}
