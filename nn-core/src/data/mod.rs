//! Data sets and batching.
//!
//! A data set loads into memory ([`digits::load`], [`Mnist::load_train`]), [`train_test_split`]
//! shuffles its indices into training and test samples with a seed, and
//! [`Dataset::fill_batch`] copies the samples of a mini-batch into a tensor that is reused from
//! batch to batch. [`idx`] reads the gzip'd IDX files MNIST comes in.

pub mod batch;
pub mod digits;
pub mod error;
pub mod idx;
pub mod mnist;
pub mod split;
pub mod text;

pub use batch::Dataset;
pub use digits::Digits;
pub use error::DataError;
pub use mnist::Mnist;
pub use split::train_test_split;
