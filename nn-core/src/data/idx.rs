//! Gzip'd IDX files, the format of MNIST (<http://yann.lecun.com/exdb/mnist/>).
//!
//! An IDX file is a big-endian `u32` magic number `0x0000TTDD` (two zero bytes, the type
//! code `TT`, the number of dimensions `DD`), then `DD` big-endian `u32` dimensions, then the
//! values, the last dimension varying fastest. MNIST uses type `0x08` (unsigned bytes):
//! images are `0x00000803` with dimensions `[count, rows, columns]`, labels `0x00000801`
//! with dimensions `[count]`.
//!
//! [`read_images`] and [`read_labels`] read such a file compressed with gzip and check it
//! completely: anything else than the promised header and exactly the promised number of
//! bytes is a [`DataError`] naming the file; nothing panics, and a header that promises more
//! than the file holds does not make the reader allocate it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::DataError;

/// The magic number of an IDX file of unsigned bytes in three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// The magic number of an IDX file of unsigned bytes in one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// At most this many bytes are reserved before the data arrives (a header may lie).
const MAX_RESERVE: usize = 1 << 26;

/// Images of one gzip'd IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// The number of images.
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    /// `count * rows * cols` pixels: image-major, then row-major.
    pub pixels: Vec<u8>,
}

/// Reads the gzip'd IDX file of images at `path`, which must hold images of `rows` x `cols`
/// bytes (magic number [`IMAGES_MAGIC`]).
///
/// # Errors
/// [`DataError::Open`] if the file cannot be opened, [`DataError::NotGzip`] if it is not
/// gzip-compressed, [`DataError::Decompress`] if the gzip stream is corrupt or cut short (or
/// followed by bytes that are not gzip), [`DataError::IdxMagic`] if the magic number is not
/// `0x00000803` (for example a label file), [`DataError::IdxHeaderTruncated`] if the file
/// ends within the header, [`DataError::IdxImageSize`] if the images are not `rows` x
/// `cols`, [`DataError::IdxTruncated`] if fewer bytes follow than the header promises and
/// [`DataError::IdxTrailingBytes`] if more do.
pub fn read_images(
    path: impl AsRef<Path>,
    rows: usize,
    cols: usize,
) -> Result<IdxImages, DataError> {
    let file = IdxFile::open(path.as_ref(), IMAGES_MAGIC)?;
    let dims = file.dims.clone();
    if dims[1] != rows || dims[2] != cols {
        return Err(DataError::IdxImageSize {
            path: file.path,
            dims,
            expected_rows: rows,
            expected_cols: cols,
        });
    }
    let pixels = file.read_data()?;
    Ok(IdxImages {
        count: dims[0],
        rows,
        cols,
        pixels,
    })
}

/// Reads the gzip'd IDX file of labels at `path` (magic number [`LABELS_MAGIC`]), each of
/// which must be a class below `classes`.
///
/// # Errors
/// As [`read_images`] (an image file is a [`DataError::IdxMagic`]), and
/// [`DataError::IdxLabelOutOfRange`] for the first label that is `classes` or more.
pub fn read_labels(path: impl AsRef<Path>, classes: usize) -> Result<Vec<u8>, DataError> {
    let file = IdxFile::open(path.as_ref(), LABELS_MAGIC)?;
    let path = file.path.clone();
    let labels = file.read_data()?;
    if let Some((index, &value)) = labels
        .iter()
        .enumerate()
        .find(|(_, &label)| usize::from(label) >= classes)
    {
        return Err(DataError::IdxLabelOutOfRange {
            path,
            index,
            value,
            classes,
        });
    }
    Ok(labels)
}

/// What a magic number announces, for error messages: `"u8 values in 3 dimensions"`.
pub fn describe_magic(magic: u32) -> String {
    if magic >> 16 != 0 {
        return "not an IDX magic number, whose first two bytes are zero".to_string();
    }
    let values = match (magic >> 8) & 0xff {
        0x08 => "u8 values".to_string(),
        0x09 => "i8 values".to_string(),
        0x0b => "i16 values".to_string(),
        0x0c => "i32 values".to_string(),
        0x0d => "f32 values".to_string(),
        0x0e => "f64 values".to_string(),
        code => format!("values of the unknown type code {code:#04x}"),
    };
    let dims = magic & 0xff;
    format!(
        "{values} in {dims} dimension{}",
        if dims == 1 { "" } else { "s" }
    )
}

/// What a file with the magic number `expected` holds in MNIST, for error messages.
pub fn describe_contents(expected: u32) -> &'static str {
    match expected {
        IMAGES_MAGIC => "images",
        LABELS_MAGIC => "labels",
        _ => "the expected kind",
    }
}

/// Dimensions for error messages: `"dimensions 60000 x 28 x 28"`.
pub fn describe_dims(dims: &[usize]) -> String {
    let list: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!(
        "dimension{} {}",
        if dims.len() == 1 { "" } else { "s" },
        list.join(" x ")
    )
}

/// An open gzip'd IDX file whose header has been read and checked.
struct IdxFile {
    path: PathBuf,
    decoder: MultiGzDecoder<File>,
    dims: Vec<usize>,
}

impl IdxFile {
    fn open(path: &Path, expected_magic: u32) -> Result<Self, DataError> {
        let open_error = |source| DataError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(open_error)?;
        let mut gzip_magic = Vec::with_capacity(2);
        (&mut file)
            .take(2)
            .read_to_end(&mut gzip_magic)
            .map_err(open_error)?;
        if gzip_magic != [0x1f, 0x8b] {
            return Err(DataError::NotGzip {
                path: path.to_path_buf(),
            });
        }
        file.seek(SeekFrom::Start(0)).map_err(open_error)?;
        let mut file = Self {
            path: path.to_path_buf(),
            decoder: MultiGzDecoder::new(file),
            dims: Vec::new(),
        };

        let mut magic = [0; 4];
        let read = file.read_up_to(&mut magic)?;
        if read < magic.len() {
            return Err(DataError::IdxHeaderTruncated {
                path: file.path,
                expected: magic.len(),
                found: read,
            });
        }
        let magic = u32::from_be_bytes(magic);
        if magic != expected_magic {
            return Err(DataError::IdxMagic {
                path: file.path,
                found: magic,
                expected: expected_magic,
            });
        }

        let rank = (magic & 0xff) as usize;
        let mut dims = vec![0; 4 * rank];
        let read = file.read_up_to(&mut dims)?;
        if read < dims.len() {
            return Err(DataError::IdxHeaderTruncated {
                path: file.path,
                expected: 4 + dims.len(),
                found: 4 + read,
            });
        }
        file.dims = dims
            .chunks_exact(4)
            .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
            .collect();
        Ok(file)
    }

    /// Reads the data the dimensions promise (a byte each), and checks that nothing follows.
    fn read_data(mut self) -> Result<Vec<u8>, DataError> {
        // Up to 2^96: a lying header cannot overflow this.
        let expected: u128 = self.dims.iter().map(|&d| d as u128).product();
        let mut data = Vec::with_capacity(expected.min(MAX_RESERVE as u128) as usize);
        let limit = u64::try_from(expected).unwrap_or(u64::MAX);
        (&mut self.decoder)
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|source| self.decompress_error(source))?;
        if (data.len() as u128) < expected {
            return Err(DataError::IdxTruncated {
                path: self.path,
                dims: self.dims,
                expected,
                found: data.len(),
            });
        }
        let extra = io::copy(&mut self.decoder, &mut io::sink())
            .map_err(|source| self.decompress_error(source))?;
        if extra > 0 {
            return Err(DataError::IdxTrailingBytes {
                path: self.path,
                dims: self.dims,
                expected: data.len(),
                extra,
            });
        }
        Ok(data)
    }

    /// Fills as much of `buf` as the file holds; returns how much that is.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, DataError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.decoder.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(self.decompress_error(source)),
            }
        }
        Ok(filled)
    }

    fn decompress_error(&self, source: io::Error) -> DataError {
        DataError::Decompress {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    /// A file (or directory) in the temporary directory, removed when dropped.
    pub(crate) struct TempPath(pub(crate) PathBuf);

    impl TempPath {
        fn unique(name: &str) -> PathBuf {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            std::env::temp_dir().join(format!(
                "nn-idx-test-{}-{}-{name}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ))
        }

        /// A file holding `contents` as they are.
        pub(crate) fn raw(name: &str, contents: &[u8]) -> Self {
            let path = Self::unique(name);
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }

        /// A file holding `contents` gzip-compressed.
        pub(crate) fn gzip(name: &str, contents: &[u8]) -> Self {
            Self::raw(name, &gzip(contents))
        }

        /// An empty directory.
        pub(crate) fn dir(name: &str) -> Self {
            let path = Self::unique(name);
            std::fs::create_dir(&path).unwrap();
            Self(path)
        }

        /// Writes `contents` gzip-compressed to `name` inside this directory.
        pub(crate) fn put_gzip(&self, name: &str, contents: &[u8]) {
            std::fs::write(self.0.join(name), gzip(contents)).unwrap();
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            if self.0.is_dir() {
                let _ = std::fs::remove_dir_all(&self.0);
            } else {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// An IDX file: `magic`, `dims`, then `data` (whatever its length).
    pub(crate) fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = magic.to_be_bytes().to_vec();
        for d in dims {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(data);
        bytes
    }

    /// `count` images of `rows` x `cols` whose pixel `i` (counting over the file) is `i % 256`.
    pub(crate) fn images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
        let data: Vec<u8> = (0..count * rows * cols).map(|i| i as u8).collect();
        idx(IMAGES_MAGIC, &[count, rows, cols], &data)
    }

    pub(crate) fn labels(values: &[u8]) -> Vec<u8> {
        idx(LABELS_MAGIC, &[values.len() as u32], values)
    }

    /// The error of reading `contents` (gzip'd) as images of 4x3, and its message, checking
    /// that the message names the file.
    fn image_error(contents: &[u8]) -> (DataError, String) {
        let file = TempPath::gzip("images.gz", contents);
        named(read_images(&file.0, 4, 3).unwrap_err(), &file)
    }

    /// As [`image_error`], for labels.
    fn label_error(contents: &[u8]) -> (DataError, String) {
        let file = TempPath::gzip("labels.gz", contents);
        named(read_labels(&file.0, 10).unwrap_err(), &file)
    }

    fn named(err: DataError, file: &TempPath) -> (DataError, String) {
        let message = err.to_string();
        assert!(
            message.contains(&file.0.display().to_string()),
            "the message should name the file: {message}"
        );
        (err, message)
    }

    #[test]
    fn well_formed_files_read_back() {
        let file = TempPath::gzip("images.gz", &images(2, 4, 3));
        let read = read_images(&file.0, 4, 3).unwrap();
        assert_eq!((read.count, read.rows, read.cols), (2, 4, 3));
        assert_eq!(read.pixels, (0..24).collect::<Vec<u8>>());

        let file = TempPath::gzip("labels.gz", &labels(&[3, 0, 9, 9]));
        assert_eq!(read_labels(&file.0, 10).unwrap(), [3, 0, 9, 9]);

        let file = TempPath::gzip("empty.gz", &labels(&[]));
        assert!(read_labels(&file.0, 10).unwrap().is_empty());
    }

    #[test]
    fn concatenated_gzip_members_are_one_file() {
        let bytes = images(2, 4, 3);
        let mut two = gzip(&bytes[..20]);
        two.extend(gzip(&bytes[20..]));
        let file = TempPath::raw("two-members.gz", &two);
        assert_eq!(read_images(&file.0, 4, 3).unwrap().pixels.len(), 24);
    }

    #[test]
    fn a_bad_magic_number_says_what_was_found_and_expected() {
        let mut bytes = images(2, 4, 3);
        bytes[..4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        let (err, message) = image_error(&bytes);
        assert!(
            matches!(
                err,
                DataError::IdxMagic {
                    found: 0x1234_5678,
                    expected: IMAGES_MAGIC,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            message.contains("is not an IDX file of images: its magic number is 0x12345678 (not an IDX magic number"),
            "{message}"
        );
        assert!(
            message.contains("expected 0x00000803 (u8 values in 3 dimensions)"),
            "{message}"
        );

        // Another type of values: f32 images.
        bytes[..4].copy_from_slice(&0x0000_0d03u32.to_be_bytes());
        let (_, message) = image_error(&bytes);
        assert!(
            message.contains("0x00000d03 (f32 values in 3 dimensions)"),
            "{message}"
        );
        bytes[..4].copy_from_slice(&0x0000_0703u32.to_be_bytes());
        let (_, message) = image_error(&bytes);
        assert!(
            message.contains("(values of the unknown type code 0x07 in 3 dimensions)"),
            "{message}"
        );
    }

    #[test]
    fn an_image_file_is_not_a_label_file_and_the_reverse() {
        let (err, message) = label_error(&images(2, 4, 3));
        assert!(
            matches!(
                err,
                DataError::IdxMagic {
                    found: IMAGES_MAGIC,
                    expected: LABELS_MAGIC,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            message.contains(
                "is not an IDX file of labels: its magic number is 0x00000803 (u8 values in 3 \
                 dimensions), expected 0x00000801 (u8 values in 1 dimension)"
            ),
            "{message}"
        );

        let (err, message) = image_error(&labels(&[1, 2, 3]));
        assert!(
            matches!(
                err,
                DataError::IdxMagic {
                    found: LABELS_MAGIC,
                    expected: IMAGES_MAGIC,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(message.contains("not an IDX file of images"), "{message}");
    }

    #[test]
    fn images_of_another_size_are_an_error() {
        let (err, message) = image_error(&images(2, 3, 4));
        assert!(
            matches!(
                &err,
                DataError::IdxImageSize {
                    dims,
                    expected_rows: 4,
                    expected_cols: 3,
                    ..
                } if dims == &[2, 3, 4]
            ),
            "{err:?}"
        );
        assert!(
            message.contains("holds images of 3x4 pixels, expected 4x3"),
            "{message}"
        );
    }

    #[test]
    fn a_file_that_ends_in_its_header_is_an_error() {
        let bytes = images(2, 4, 3);
        for (cut, expected, found) in [(0, 4, 0), (3, 4, 3), (4, 16, 4), (15, 16, 15)] {
            let (err, message) = image_error(&bytes[..cut]);
            assert!(
                matches!(err, DataError::IdxHeaderTruncated { expected: e, found: f, .. } if e == expected && f == found),
                "cut at {cut}: {err:?}"
            );
            assert!(
                message.contains(&format!(
                    "ends inside its IDX header: the header needs {expected} bytes, the file holds {found}"
                )),
                "{message}"
            );
        }
        let (err, _) = label_error(&labels(&[1, 2])[..6]);
        assert!(
            matches!(
                err,
                DataError::IdxHeaderTruncated {
                    expected: 8,
                    found: 6,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn fewer_bytes_than_the_dimensions_promise_are_an_error() {
        let bytes = images(2, 4, 3);
        let (err, message) = image_error(&bytes[..bytes.len() - 1]);
        assert!(
            matches!(&err, DataError::IdxTruncated { expected: 24, found: 23, dims, .. } if dims == &[2, 4, 3]),
            "{err:?}"
        );
        assert!(
            message.contains(
                "is truncated: its IDX header promises dimensions 2 x 4 x 3 (24 bytes of data), \
                 but only 23 bytes follow"
            ),
            "{message}"
        );

        let (err, message) = label_error(&idx(LABELS_MAGIC, &[5], &[1, 2, 3]));
        assert!(
            matches!(
                err,
                DataError::IdxTruncated {
                    expected: 5,
                    found: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            message.contains("promises dimension 5 (5 bytes of data), but only 3 bytes follow"),
            "{message}"
        );
    }

    #[test]
    fn a_header_promising_terabytes_is_truncated_not_allocated() {
        let bytes = idx(IMAGES_MAGIC, &[u32::MAX, 4, 3], &[0; 100]);
        let (err, _) = image_error(&bytes);
        assert!(
            matches!(err, DataError::IdxTruncated { expected, found: 100, .. } if expected == u32::MAX as u128 * 12),
            "{err:?}"
        );
        let file = TempPath::gzip("huge.gz", &idx(0x0000_0803, &[u32::MAX; 3], &[]));
        let err = read_images(&file.0, u32::MAX as usize, u32::MAX as usize).unwrap_err();
        assert!(
            matches!(err, DataError::IdxTruncated { expected, found: 0, .. } if expected == (u32::MAX as u128).pow(3)),
            "{err:?}"
        );
    }

    #[test]
    fn bytes_after_the_promised_data_are_an_error() {
        let mut bytes = images(2, 4, 3);
        bytes.extend([0; 7]);
        let (err, message) = image_error(&bytes);
        assert!(
            matches!(
                err,
                DataError::IdxTrailingBytes {
                    expected: 24,
                    extra: 7,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            message.contains(
                "has 7 bytes of trailing garbage after the 24 bytes of data its IDX header \
                 promises (dimensions 2 x 4 x 3)"
            ),
            "{message}"
        );

        let (err, _) = label_error(&idx(LABELS_MAGIC, &[2], &[1, 2, 3]));
        assert!(
            matches!(
                err,
                DataError::IdxTrailingBytes {
                    expected: 2,
                    extra: 1,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn garbage_after_the_gzip_stream_is_an_error() {
        let mut bytes = gzip(&labels(&[1, 2]));
        bytes.extend(b"garbage!");
        let file = TempPath::raw("garbage.gz", &bytes);
        let (err, message) = named(read_labels(&file.0, 10).unwrap_err(), &file);
        assert!(matches!(err, DataError::Decompress { .. }), "{err:?}");
        assert!(message.contains("cannot decompress data file"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_gzip_is_an_error() {
        for (name, contents) in [
            ("plain-idx", images(2, 4, 3)),
            ("one-byte", vec![0x1f]),
            ("empty", vec![]),
        ] {
            let file = TempPath::raw(name, &contents);
            let (err, message) = named(read_images(&file.0, 4, 3).unwrap_err(), &file);
            assert!(matches!(err, DataError::NotGzip { .. }), "{err:?}");
            assert!(message.contains("is not gzip-compressed"), "{message}");
        }
    }

    #[test]
    fn a_cut_or_corrupt_gzip_stream_is_an_error() {
        // Incompressible pixels, so that the cut lands inside the deflate data.
        let mut state = 1u32;
        let noise: Vec<u8> = (0..4000)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let bytes = gzip(&idx(IMAGES_MAGIC, &[1000, 4, 1], &noise));
        for contents in [
            bytes[..bytes.len() / 2].to_vec(),
            bytes[..bytes.len() - 4].to_vec(),
            {
                let mut corrupt = bytes.clone();
                let middle = corrupt.len() / 2;
                corrupt[middle..middle + 16].fill(0xff);
                corrupt
            },
        ] {
            let file = TempPath::raw("cut.gz", &contents);
            let (err, message) = named(read_images(&file.0, 4, 1).unwrap_err(), &file);
            assert!(matches!(err, DataError::Decompress { .. }), "{err:?}");
            assert!(
                message.contains("truncated or corrupt gzip stream"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_label_out_of_range_is_an_error() {
        let (err, message) = label_error(&labels(&[0, 9, 3, 10, 200]));
        assert!(
            matches!(
                err,
                DataError::IdxLabelOutOfRange {
                    index: 3,
                    value: 10,
                    classes: 10,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            message.contains("label 3 (counting from 0): value 10 is outside 0..=9"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_file_or_a_directory_is_an_error_naming_it() {
        let path = std::env::temp_dir().join("nn-idx-test-there-is-no-such-file.gz");
        let err = read_labels(&path, 10).unwrap_err();
        assert!(matches!(err, DataError::Open { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("cannot open data file {}", path.display())),
            "{err}"
        );
        let dir = TempPath::dir("a-directory");
        let err = read_images(&dir.0, 28, 28).unwrap_err();
        assert!(matches!(err, DataError::Open { .. }), "{err:?}");
    }

    #[test]
    fn descriptions() {
        assert_eq!(describe_magic(IMAGES_MAGIC), "u8 values in 3 dimensions");
        assert_eq!(describe_magic(LABELS_MAGIC), "u8 values in 1 dimension");
        assert_eq!(describe_magic(0x0000_0e00), "f64 values in 0 dimensions");
        assert_eq!(
            describe_dims(&[60000, 28, 28]),
            "dimensions 60000 x 28 x 28"
        );
        assert_eq!(describe_dims(&[10]), "dimension 10");
    }
}
