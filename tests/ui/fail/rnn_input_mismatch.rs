use nn::prelude::*;

network! {
    pub struct Tagger: [32, 16] {
        lstm(24 => 64),
        linear(10),
    }
}

fn main() {}
