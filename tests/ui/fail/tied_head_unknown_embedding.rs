use nn::prelude::*;

network! {
    pub struct Gpt: [64] {
        wte: embedding(65, 128),
        residual { layer_norm, multi_head_attention(heads = 4, causal) },
        lm_head: linear(65, tied = tok),
    }
}

fn main() {}
