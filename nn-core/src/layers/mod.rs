//! Layers: each one's forward and backward side by side, with the formula in its doc comment
//! and a finite-difference gradient check beside it.

pub mod activation;
pub mod attention;
pub mod batch_norm;
pub mod conv;
pub mod dropout;
pub mod embedding;
pub mod flatten;
pub mod gru;
pub mod layer_norm;
pub mod linear;
pub mod lstm;
pub mod pool;
pub mod position;
pub mod residual;
pub mod rnn;
pub mod sequence;
pub mod softmax;
pub mod tied;

pub use activation::{
    Activation, Gelu, GeluFn, GeluTanh, GeluTanhFn, Pointwise, Relu, ReluFn, Sigmoid, SigmoidFn,
    Tanh, TanhFn,
};
pub use attention::{
    scaled_dot_product_attention, scaled_dot_product_attention_backward, AttentionCache,
    AttentionMask, BertNames, LengthsError, MultiHeadAttention, PackedNames, ProjectionNames,
};
pub use batch_norm::{BatchNorm2d, BatchNorm2dGrads, BatchNormCache};
pub use conv::{Conv2d, ConvCache};
pub use dropout::{Dropout, DropoutCache};
pub use embedding::{Embedding, TokenError};
pub use flatten::Flatten;
pub use gru::{Gru, GruCache};
pub use layer_norm::{LayerNorm, LayerNormCache};
pub use linear::Linear;
pub use lstm::{Lstm, LstmCache};
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, MaxPoolCache};
pub use position::{
    AddedTable, LearnedPositions, SinusoidalCache, SinusoidalPositions, TokenTypeEmbedding,
};
pub use residual::{Identity, Residual, ResidualCache, ResidualGrads};
pub use rnn::{Rnn, RnnCache};
pub use sequence::{LastStep, Recurrent, SequenceLinear};
pub use softmax::Softmax;
pub use tied::TiedLinear;
