use nn::prelude::*;

network! {
    pub struct Gpt: [1024] {
        tok: embedding(256, 64),
        pos: learned_positions(512),
        residual { layer_norm, multi_head_attention(heads = 4, causal) },
        head: linear(256),
    }
}

fn main() {}
