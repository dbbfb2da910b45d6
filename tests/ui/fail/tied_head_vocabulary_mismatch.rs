use nn::prelude::*;

network! {
    pub struct Gpt: [64] {
        tok: embedding(65, 128),
        pos: learned_positions,
        residual { layer_norm, multi_head_attention(heads = 4, causal) },
        ln: layer_norm,
        head: linear(256, tied = tok),
    }
}

fn main() {}
