use nn::prelude::*;

network! {
    pub struct Tiny: [1, 8, 8] {
        conv2d(4, kernel = 5), relu, max_pool2d(2),
        conv2d(8, kernel = 3), relu,
    }
}

fn main() {}
