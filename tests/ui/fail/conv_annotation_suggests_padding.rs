use nn::prelude::*;

network! {
    pub struct Features: [3, 224, 224] {
        conv2d(64, kernel = 3) => [64, 224, 224], relu,
    }
}

fn main() {}
