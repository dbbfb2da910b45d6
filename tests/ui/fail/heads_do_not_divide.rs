use nn::prelude::*;

network! {
    pub struct Block: [64, 130] {
        residual { layer_norm, multi_head_attention(heads = 4, causal) },
    }
}

fn main() {}
