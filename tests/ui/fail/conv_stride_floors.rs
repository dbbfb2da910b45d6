// A stride that does not divide the input evenly follows PyTorch's floor; the macro says so
// with a warning at the layer (denied here to show it), silenced by writing the output shape.
#![deny(deprecated)]
use nn::prelude::*;

network! {
    pub struct Stem: [3, 224, 224] {
        conv2d(64, kernel = 7, stride = 2, padding = 3), relu,
        max_pool2d(3, stride = 2) => [64, 55, 55],
    }
}

fn main() {}
