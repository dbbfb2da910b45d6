use nn::prelude::*;

network! {
    pub struct Features: [3, 32, 32] {
        conv2d(1 => 16, kernel = 3, padding = 1), relu,
        batch_norm2d(32),
    }
}

fn main() {}
