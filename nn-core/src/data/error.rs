//! Why a data file could not be loaded.

use std::path::PathBuf;

use thiserror::Error;

/// A data file that could not be read, or whose contents are not what the loader expects.
/// Every variant names the file and, for bad contents, the line (1-based) and what was wrong.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("cannot open data file {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data file {} is not gzip-compressed (it does not start with the gzip magic bytes 1f 8b)", .path.display())]
    NotGzip { path: PathBuf },
    #[error("cannot read data file {} at line {line} (truncated or corrupt?): {source}", .path.display())]
    Read {
        path: PathBuf,
        line: usize,
        source: std::io::Error,
    },
    #[error("data file {}, line {line}: expected {expected} comma-separated fields, found {found}", .path.display())]
    FieldCount {
        path: PathBuf,
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("data file {}, line {line}, field {field}: {text:?} is not an integer", .path.display())]
    NotAnInteger {
        path: PathBuf,
        line: usize,
        /// 1-based.
        field: usize,
        /// The field as found (shortened if long).
        text: String,
    },
    #[error("data file {}, line {line}, field {field}: pixel value {value} is outside 0..={max}", .path.display())]
    PixelOutOfRange {
        path: PathBuf,
        line: usize,
        /// 1-based.
        field: usize,
        value: i64,
        max: i64,
    },
    #[error("data file {}, line {line}: label {value} is outside 0..={}", .path.display(), .classes.saturating_sub(1))]
    LabelOutOfRange {
        path: PathBuf,
        line: usize,
        value: i64,
        classes: usize,
    },
    #[error("data file {} holds no samples", .path.display())]
    Empty { path: PathBuf },
}
