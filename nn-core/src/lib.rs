//! The core of `nn`: const-generic shapes and heap tensors, layers with forward and backward
//! side by side, losses, optimizers, seeded initialisation, safetensors weights and data sets.
//!
//! Networks are normally declared with the `network!` macro of the `nn` crate, which does all
//! shape arithmetic at compile time and instantiates these layers with literal dimensions.

pub mod data;
pub mod error;
pub mod float;
pub mod gradcheck;
pub mod init;
pub mod io;
pub mod kernels;
pub mod layers;
pub mod loss;
pub mod module;
pub mod optim;
pub mod shape;
pub mod summary;
pub mod tensor;
pub mod train;
pub mod workspace;

pub use error::{LossError, ShapeError};
pub use float::Float;
pub use module::{
    join_name, Buffer, BufferMut, BufferValues, BufferValuesMut, Module, Param, ParamMut,
};
pub use shape::{Rank1, Rank2, Rank3, Shape};
pub use summary::{Summary, SummaryRow};
pub use tensor::Tensor;
pub use workspace::Workspace;
