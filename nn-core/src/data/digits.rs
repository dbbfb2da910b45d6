//! The 8x8 handwritten digits that scikit-learn ships (`load_digits`): the test part of the
//! UCI "Optical Recognition of Handwritten Digits" set, 1797 images of 13 writers.
//!
//! The file is a gzip'd CSV without a header, one image per line: 64 pixel counts `0..=16`
//! (the 8x8 image, row-major) and then the label `0..=9`. The repository bundles it as
//! `data/digits/digits.csv.gz`, with its provenance in `data/digits/README.md`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::{DataError, Dataset};
use crate::Float;

/// Width and height of an image.
pub const SIDE: usize = 8;
/// Pixels of an image.
pub const PIXELS: usize = SIDE * SIDE;
/// The largest pixel value (a pixel counts the "on" bits of a 4x4 block of the original
/// 32x32 bitmap).
pub const MAX_PIXEL: u8 = 16;
/// The number of classes: the digits 0 to 9.
pub const CLASSES: usize = 10;

/// Fields of a line: the pixels, then the label.
const FIELDS: usize = PIXELS + 1;

/// The digits data set: images and their labels, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digits {
    /// Each image row-major (pixel `8 * row + column`), values `0..=16`.
    pub images: Vec<[u8; PIXELS]>,
    /// The digit each image shows, `0..=9`.
    pub labels: Vec<usize>,
}

impl Digits {
    /// Loads the gzip'd CSV at `path` (see [`load`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, DataError> {
        load(path)
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A network sees an image as 64 values in `[0, 1]`: the pixel counts divided by 16.
impl Dataset for Digits {
    const FEATURES: usize = PIXELS;

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn label(&self, index: usize) -> usize {
        self.labels[index]
    }

    fn write_features<E: Float>(&self, index: usize, out: &mut [E]) {
        let scale = 1.0 / f64::from(MAX_PIXEL);
        for (out, &pixel) in out.iter_mut().zip(&self.images[index]) {
            *out = E::from_f64(f64::from(pixel) * scale);
        }
    }
}

/// Loads the digits from the gzip'd CSV at `path`.
///
/// Every line must hold 65 integers: 64 pixels in `0..=16`, then a label in `0..=9`. Anything
/// else — a missing or unreadable file, a file that is not gzip, a truncated archive, a line
/// with the wrong number of fields, a field that is not an integer or a value out of range —
/// is a [`DataError`] naming the file and the line; nothing panics.
pub fn load(path: impl AsRef<Path>) -> Result<Digits, DataError> {
    let path = path.as_ref();
    let open_error = |source| DataError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open_error)?;
    let mut magic = Vec::with_capacity(2);
    (&mut file)
        .take(2)
        .read_to_end(&mut magic)
        .map_err(open_error)?;
    if magic != [0x1f, 0x8b] {
        return Err(DataError::NotGzip {
            path: path.to_path_buf(),
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(open_error)?;
    parse(BufReader::new(MultiGzDecoder::new(file)), path)
}

/// Parses the decompressed CSV; `path` is only for error messages.
fn parse(mut reader: impl BufRead, path: &Path) -> Result<Digits, DataError> {
    let mut digits = Digits::default();
    let mut bytes = Vec::new();
    for line in 1.. {
        bytes.clear();
        let read = reader
            .read_until(b'\n', &mut bytes)
            .map_err(|source| DataError::Read {
                path: path.to_path_buf(),
                line,
                source,
            })?;
        if read == 0 {
            break;
        }
        let (image, label) = parse_line(&bytes, path, line)?;
        digits.images.push(image);
        digits.labels.push(label);
    }
    if digits.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(digits)
}

/// One line (with or without its `\n` or `\r\n`): 64 pixels and a label.
fn parse_line(bytes: &[u8], path: &Path, line: usize) -> Result<([u8; PIXELS], usize), DataError> {
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let fields = || text.split(|&b| b == b',');
    let found = if text.trim_ascii().is_empty() {
        0
    } else {
        fields().count()
    };
    if found != FIELDS {
        return Err(DataError::FieldCount {
            path: path.to_path_buf(),
            line,
            expected: FIELDS,
            found,
        });
    }
    let mut image = [0; PIXELS];
    let mut label = 0;
    for (index, field) in fields().enumerate() {
        let value = parse_integer(field).ok_or_else(|| DataError::NotAnInteger {
            path: path.to_path_buf(),
            line,
            field: index + 1,
            text: shorten(field),
        })?;
        if index < PIXELS {
            if !(0..=i64::from(MAX_PIXEL)).contains(&value) {
                return Err(DataError::PixelOutOfRange {
                    path: path.to_path_buf(),
                    line,
                    field: index + 1,
                    value,
                    max: MAX_PIXEL.into(),
                });
            }
            image[index] = value as u8;
        } else {
            if !(0..CLASSES as i64).contains(&value) {
                return Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    line,
                    value,
                    classes: CLASSES,
                });
            }
            label = value as usize;
        }
    }
    Ok((image, label))
}

/// A decimal integer, allowing spaces around it.
fn parse_integer(field: &[u8]) -> Option<i64> {
    std::str::from_utf8(field.trim_ascii()).ok()?.parse().ok()
}

/// A field for an error message: at most 40 characters of it.
fn shorten(field: &[u8]) -> String {
    const MAX: usize = 40;
    let text = String::from_utf8_lossy(field);
    if text.chars().count() <= MAX {
        text.into_owned()
    } else {
        text.chars().take(MAX).chain(['…']).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;
    use crate::{Rank1, Tensor};

    const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/digits/digits.csv.gz");

    /// A file in the temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "nn-digits-test-{}-{}-{name}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }

        /// `csv`, gzip-compressed.
        fn gzip(name: &str, csv: &str) -> Self {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
            encoder.write_all(csv.as_bytes()).unwrap();
            Self::new(name, &encoder.finish().unwrap())
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A valid line: pixel `i` is `i % 17`, then `label`.
    fn line(label: usize) -> String {
        let mut fields: Vec<String> = (0..PIXELS).map(|i| (i % 17).to_string()).collect();
        fields.push(label.to_string());
        fields.join(",")
    }

    /// Loads `csv` gzip'd and returns the error with its message, checking that the message
    /// names the file.
    fn error_of(csv: &str) -> (DataError, String) {
        let file = TempFile::gzip("bad.csv.gz", csv);
        let err = load(&file.0).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&file.0.display().to_string()),
            "the message should name the file: {message}"
        );
        (err, message)
    }

    #[test]
    fn the_bundled_file_matches_its_readme() {
        let digits = load(BUNDLED).unwrap();
        assert_eq!(digits.len(), 1797);
        assert_eq!(digits.images.len(), 1797);
        let mut counts = [0; CLASSES];
        for &label in &digits.labels {
            counts[label] += 1;
        }
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
        assert_eq!(digits.labels[..10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let first_row: [u8; PIXELS] = [
            0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4,
            12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10,
            12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0,
        ];
        assert_eq!(digits.images[0], first_row);
        let pixels = digits.images.iter().flatten();
        assert_eq!(pixels.clone().min(), Some(&0));
        assert_eq!(pixels.max(), Some(&16));
        assert_eq!(Digits::load(BUNDLED).unwrap(), digits);
    }

    #[test]
    fn features_are_pixels_divided_by_16() {
        let digits = load(BUNDLED).unwrap();
        let mut x = Tensor::<Rank1<64>, f32>::zeros(2);
        let mut labels = Vec::new();
        digits.fill_batch(&[0, 1], &mut x, &mut labels);
        assert_eq!(labels, [0, 1]);
        assert_eq!(x.sample(0)[2], 5.0 / 16.0);
        assert_eq!(x.sample(0)[10], 13.0 / 16.0);
        assert!(x.as_slice().iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(x.as_slice().contains(&1.0));
    }

    #[test]
    fn well_formed_lines_parse_with_any_line_ending() {
        let csv = format!(
            "{}\r\n{}\n {} ",
            line(3),
            line(9),
            line(0).replace(',', " , ")
        );
        let file = TempFile::gzip("ok.csv.gz", &csv);
        let digits = load(&file.0).unwrap();
        assert_eq!(digits.labels, [3, 9, 0]);
        assert_eq!(digits.images[2][16], 16);
        assert_eq!(digits.images[2][17], 0);
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let path = std::env::temp_dir().join("nn-digits-test-there-is-no-such-file.csv.gz");
        let err = load(&path).unwrap_err();
        assert!(matches!(err, DataError::Open { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("cannot open data file"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn a_directory_is_an_error() {
        let err = load(std::env::temp_dir()).unwrap_err();
        assert!(matches!(err, DataError::Open { .. }), "{err:?}");
    }

    #[test]
    fn a_file_that_is_not_gzip_is_an_error() {
        for (name, contents) in [("plain.csv", line(1).into_bytes()), ("empty", Vec::new())] {
            let file = TempFile::new(name, &contents);
            let err = load(&file.0).unwrap_err();
            assert!(matches!(err, DataError::NotGzip { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains("not gzip-compressed"), "{message}");
            assert!(message.contains(&file.0.display().to_string()), "{message}");
        }
    }

    #[test]
    fn a_truncated_archive_is_a_read_error() {
        let csv: String = (0..200).map(|i| line(i % 10) + "\n").collect();
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(csv.as_bytes()).unwrap();
        let bytes = encoder.finish().unwrap();
        let file = TempFile::new("truncated.csv.gz", &bytes[..bytes.len() / 2]);
        let err = load(&file.0).unwrap_err();
        assert!(
            matches!(err, DataError::Read { line, .. } if line > 1),
            "{err:?}"
        );
        assert!(err.to_string().contains("truncated or corrupt"), "{err}");
    }

    #[test]
    fn an_archive_without_lines_is_an_error() {
        let (err, message) = error_of("");
        assert!(matches!(err, DataError::Empty { .. }), "{err:?}");
        assert!(message.contains("holds no samples"), "{message}");
    }

    #[test]
    fn a_line_with_the_wrong_number_of_fields_is_an_error() {
        let short = line(1).rsplit_once(',').unwrap().0.to_string();
        let (err, message) = error_of(&format!("{}\n{short}\n", line(0)));
        assert!(
            matches!(
                err,
                DataError::FieldCount {
                    line: 2,
                    expected: 65,
                    found: 64,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            message.contains("line 2: expected 65 comma-separated fields, found 64"),
            "{message}"
        );

        let long = format!("{},7", line(1));
        let (err, _) = error_of(&long);
        assert!(
            matches!(
                err,
                DataError::FieldCount {
                    line: 1,
                    found: 66,
                    ..
                }
            ),
            "{err:?}"
        );

        let (err, _) = error_of(&format!("{}\n\n{}\n", line(0), line(1)));
        assert!(
            matches!(
                err,
                DataError::FieldCount {
                    line: 2,
                    found: 0,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_field_that_is_not_an_integer_is_an_error() {
        let bad = line(4).replacen("2,", "2.5,", 1);
        let (err, message) = error_of(&format!("{}\n{}\n{bad}\n", line(0), line(1)));
        assert!(
            matches!(&err, DataError::NotAnInteger { line: 3, field: 3, text, .. } if text == "2.5"),
            "{err:?}"
        );
        assert!(
            message.contains("line 3, field 3: \"2.5\" is not an integer"),
            "{message}"
        );

        let (err, _) = error_of(&line(4).replacen("0,", ",", 1));
        assert!(
            matches!(err, DataError::NotAnInteger { field: 1, .. }),
            "{err:?}"
        );

        let garbage = format!("{}{}", "x".repeat(100), &line(4)[1..]);
        let (err, message) = error_of(&garbage);
        assert!(
            matches!(err, DataError::NotAnInteger { field: 1, .. }),
            "{err:?}"
        );
        assert!(
            message.contains(&format!("\"{}…\"", "x".repeat(40))),
            "{message}"
        );
    }

    #[test]
    fn a_pixel_out_of_range_is_an_error() {
        let bad = line(4).replacen("16,", "17,", 1);
        let (err, message) = error_of(&format!("{}\n{bad}\n", line(0)));
        assert!(
            matches!(
                err,
                DataError::PixelOutOfRange {
                    line: 2,
                    field: 17,
                    value: 17,
                    max: 16,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            message.contains("line 2, field 17: pixel value 17 is outside 0..=16"),
            "{message}"
        );

        let (err, _) = error_of(&line(4).replacen("0,", "-1,", 1));
        assert!(
            matches!(
                err,
                DataError::PixelOutOfRange {
                    field: 1,
                    value: -1,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_label_out_of_range_is_an_error() {
        let (err, message) = error_of(&format!("{}\n{}\n", line(9), line(10)));
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    line: 2,
                    value: 10,
                    classes: 10,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            message.contains("line 2: label 10 is outside 0..=9"),
            "{message}"
        );

        let negative = format!("{}-1", line(0).strip_suffix('0').unwrap());
        let (err, _) = error_of(&negative);
        assert!(
            matches!(err, DataError::LabelOutOfRange { value: -1, .. }),
            "{err:?}"
        );
    }
}
