//! Why a data file could not be loaded.

use std::path::PathBuf;

use thiserror::Error;

/// A data file that could not be read, or whose contents are not what the loader expects.
/// Every variant names the file and, for bad contents, where (the line of a CSV file, the
/// item of an IDX file) and what was wrong.
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
    #[error("cannot decompress data file {} (truncated or corrupt gzip stream?): {source}", .path.display())]
    Decompress {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data file {} is not an IDX file of {}: its magic number is {found:#010x} ({}), expected {expected:#010x} ({})",
        .path.display(),
        super::idx::describe_contents(*.expected),
        super::idx::describe_magic(*.found),
        super::idx::describe_magic(*.expected)
    )]
    IdxMagic {
        path: PathBuf,
        /// The first four bytes, big-endian.
        found: u32,
        expected: u32,
    },
    #[error("data file {} ends inside its IDX header: the header needs {expected} bytes, the file holds {found}", .path.display())]
    IdxHeaderTruncated {
        path: PathBuf,
        /// Bytes of the header (magic number and dimensions).
        expected: usize,
        /// Decompressed bytes in the file.
        found: usize,
    },
    #[error(
        "data file {} holds images of {}x{} pixels, expected {}x{}",
        .path.display(),
        .dims.get(1).copied().unwrap_or(0),
        .dims.get(2).copied().unwrap_or(0),
        .expected_rows,
        .expected_cols
    )]
    IdxImageSize {
        path: PathBuf,
        /// The dimensions of the header: `[images, rows, columns]`.
        dims: Vec<usize>,
        expected_rows: usize,
        expected_cols: usize,
    },
    #[error(
        "data file {} is truncated: its IDX header promises {} ({expected} bytes of data), but only {found} bytes follow",
        .path.display(),
        super::idx::describe_dims(.dims)
    )]
    IdxTruncated {
        path: PathBuf,
        /// The dimensions of the header.
        dims: Vec<usize>,
        /// Bytes of data the dimensions promise.
        expected: u128,
        /// Bytes of data after the header.
        found: usize,
    },
    #[error(
        "data file {} has {extra} bytes of trailing garbage after the {expected} bytes of data its IDX header promises ({})",
        .path.display(),
        super::idx::describe_dims(.dims)
    )]
    IdxTrailingBytes {
        path: PathBuf,
        /// The dimensions of the header.
        dims: Vec<usize>,
        /// Bytes of data the dimensions promise.
        expected: usize,
        /// Bytes after them.
        extra: u64,
    },
    #[error("data file {}, label {index} (counting from 0): value {value} is outside 0..={}", .path.display(), .classes.saturating_sub(1))]
    IdxLabelOutOfRange {
        path: PathBuf,
        /// 0-based position of the label in the file.
        index: usize,
        value: u8,
        classes: usize,
    },
    #[error(
        "the image file {} holds {images} images but the label file {} holds {labels} labels",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },
}
