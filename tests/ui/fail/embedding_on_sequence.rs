use nn::prelude::*;

network! {
    pub struct Wrong: [64, 8] {
        embedding(65, 32),
    }
}

fn main() {}
