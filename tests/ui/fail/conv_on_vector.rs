use nn::prelude::*;

network! {
    pub struct Wrong: [784] {
        conv2d(6, kernel = 5),
        dropout(1.5),
    }
}

fn main() {}
