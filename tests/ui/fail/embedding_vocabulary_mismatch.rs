use nn::prelude::*;

network! {
    pub struct CharModel: [64] {
        embedding(65, 32),
        rnn(128),
        linear(64),
    }
}

fn main() {}
