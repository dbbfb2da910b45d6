use nn::prelude::*;

network! {
    pub struct Encoder: [16, 32] {
        _: residual { attention: multi_head_attention(heads = 4) },
        norm: layer_norm,
        _: residual { dense: linear(64), gelu, dense: linear(32) },
        norm: layer_norm,
    }
}

fn main() {}
