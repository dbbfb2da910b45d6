use nn::prelude::*;

network! {
    pub struct Block: [64, 56, 56] {
        residual(relu) {
            conv2d(128, kernel = 3, stride = 2, padding = 1), batch_norm2d, relu,
            conv2d(128, kernel = 3, padding = 1), batch_norm2d,
        },
    }
}

fn main() {}
