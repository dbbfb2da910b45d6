//! Errors of the core crate, worded for the person who has to fix the input.

use thiserror::Error;

use crate::shape::format_dims;

/// Data that does not fit a tensor's shape.
#[derive(Debug, Error, PartialEq)]
pub enum ShapeError {
    #[error("{len} values do not form whole samples of shape {} ({numel} values each)", format_dims(.dims))]
    NotAWholeBatch {
        len: usize,
        dims: &'static [usize],
        numel: usize,
    },
    #[error("sample {index} has {len} values, but shape {} needs {numel}", format_dims(.dims))]
    WrongSampleLength {
        index: usize,
        len: usize,
        dims: &'static [usize],
        numel: usize,
    },
}

/// A loss that cannot be computed from its inputs, or whose value is not a number.
#[derive(Debug, Error, PartialEq)]
pub enum LossError {
    #[error("the batch has {samples} samples but {targets} targets")]
    BatchMismatch { samples: usize, targets: usize },
    #[error(
        "target class {class} of sample {sample} is out of range: the output has {classes} classes"
    )]
    ClassOutOfRange {
        sample: usize,
        class: usize,
        classes: usize,
    },
    #[error("the loss is {value} (not finite): the inputs or the parameters hold NaN or infinity, or training diverged (try a smaller learning rate)")]
    NotFinite { value: f64 },
    #[error("the batch is empty")]
    EmptyBatch,
}
