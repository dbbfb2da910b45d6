//! MNIST: 70,000 handwritten digits of 28x28 pixels (LeCun, Cortes & Burges), 60,000 for
//! training and 10,000 for testing, as the four gzip'd IDX files of the original release.
//!
//! The repository bundles them in `data/mnist/` under their standard names ([`TRAIN_IMAGES`],
//! [`TRAIN_LABELS`], [`TEST_IMAGES`], [`TEST_LABELS`]), with their provenance, checksums and
//! license in `data/mnist/README.md`. The format is read by [`super::idx`].
//!
//! ```no_run
//! use nn_core::data::{Dataset, Mnist};
//! use nn_core::{Rank3, Tensor};
//!
//! let train = Mnist::load_train("data/mnist")?;
//! let mut x = Tensor::<Rank3<1, 28, 28>>::zeros(64);
//! let mut labels = Vec::with_capacity(64);
//! // Pixels scaled to [0, 1]; `train.standardized()` gives them mean 0 and deviation 1.
//! train.fill_batch(&[0, 1, 2], &mut x, &mut labels);
//! assert_eq!(labels, [5, 0, 4]);
//! # Ok::<(), nn_core::data::DataError>(())
//! ```

use std::path::Path;

use super::{idx, DataError, Dataset};
use crate::Float;

/// Width and height of an image.
pub const SIDE: usize = 28;
/// Pixels of an image.
pub const PIXELS: usize = SIDE * SIDE;
/// The largest pixel value (full ink).
pub const MAX_PIXEL: u8 = 255;
/// The number of classes: the digits 0 to 9.
pub const CLASSES: usize = 10;
/// The mean of all training pixels scaled to `[0, 1]` (0.130660..., rounded as usual).
pub const MEAN: f64 = 0.1307;
/// The standard deviation of all training pixels scaled to `[0, 1]` (0.308107..., rounded).
pub const STD: f64 = 0.3081;

/// The training images, in the data directory.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
/// The training labels, in the data directory.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";
/// The test images, in the data directory.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";
/// The test labels, in the data directory.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte.gz";

/// One part of MNIST (the training or the test images): images and their labels, in file
/// order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mnist {
    /// Each image row-major (pixel `28 * row + column`), `0` background to `255` ink.
    pub images: Vec<[u8; PIXELS]>,
    /// The digit each image shows, `0..=9`.
    pub labels: Vec<usize>,
}

impl Mnist {
    /// Loads the 60,000 training images from `dir` ([`TRAIN_IMAGES`] and [`TRAIN_LABELS`]).
    pub fn load_train(dir: impl AsRef<Path>) -> Result<Self, DataError> {
        let dir = dir.as_ref();
        Self::load(dir.join(TRAIN_IMAGES), dir.join(TRAIN_LABELS))
    }

    /// Loads the 10,000 test images from `dir` ([`TEST_IMAGES`] and [`TEST_LABELS`]).
    pub fn load_test(dir: impl AsRef<Path>) -> Result<Self, DataError> {
        let dir = dir.as_ref();
        Self::load(dir.join(TEST_IMAGES), dir.join(TEST_LABELS))
    }

    /// Loads the gzip'd IDX files `images` (28x28 images) and `labels` (`0..=9`).
    ///
    /// # Errors
    /// Every error of [`idx::read_images`] and [`idx::read_labels`], naming the file;
    /// [`DataError::CountMismatch`] if the files hold different numbers of images and labels;
    /// [`DataError::Empty`] if they hold none.
    pub fn load(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Self, DataError> {
        let (images_path, labels_path) = (images.as_ref(), labels.as_ref());
        let images = idx::read_images(images_path, SIDE, SIDE)?;
        let labels = idx::read_labels(labels_path, CLASSES)?;
        if images.count != labels.len() {
            return Err(DataError::CountMismatch {
                images_path: images_path.to_path_buf(),
                images: images.count,
                labels_path: labels_path.to_path_buf(),
                labels: labels.len(),
            });
        }
        if labels.is_empty() {
            return Err(DataError::Empty {
                path: images_path.to_path_buf(),
            });
        }
        let images = images
            .pixels
            .chunks_exact(PIXELS)
            .map(|pixels| {
                let mut image = [0; PIXELS];
                image.copy_from_slice(pixels);
                image
            })
            .collect();
        let labels = labels.into_iter().map(usize::from).collect();
        Ok(Self { images, labels })
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The same images as a network sees them standardised: `(pixel / 255 - MEAN) / STD`,
    /// MNIST's usual normalisation (mean about 0 and deviation about 1 over the training set).
    pub fn standardized(&self) -> Standardized<'_> {
        Standardized(self)
    }
}

/// A network sees an image as 784 values in `[0, 1]`: the pixels divided by 255, not
/// normalised (see [`Mnist::standardized`] for that). Any shape of 784 elements takes a batch,
/// `Rank1<784>` as `Rank3<1, 28, 28>`.
impl Dataset for Mnist {
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

/// MNIST standardised with its training mean and deviation, made by [`Mnist::standardized`]:
/// sample values are `(pixel / 255 - 0.1307) / 0.3081`, from -0.4242 (background) to 2.8215
/// (full ink), as PyTorch's `Normalize((0.1307,), (0.3081,))` makes them.
#[derive(Clone, Copy, Debug)]
pub struct Standardized<'a>(pub &'a Mnist);

impl Dataset for Standardized<'_> {
    const FEATURES: usize = PIXELS;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn label(&self, index: usize) -> usize {
        self.0.labels[index]
    }

    fn write_features<E: Float>(&self, index: usize, out: &mut [E]) {
        let scale = 1.0 / f64::from(MAX_PIXEL);
        for (out, &pixel) in out.iter_mut().zip(&self.0.images[index]) {
            *out = E::from_f64((f64::from(pixel) * scale - MEAN) / STD);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::idx::tests::{idx, images, labels, TempPath};
    use super::idx::{IMAGES_MAGIC, LABELS_MAGIC};
    use super::*;
    use crate::{Rank1, Rank3, Tensor};

    const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist");

    /// The bundled sets, loaded once for all tests.
    fn bundled() -> &'static (Mnist, Mnist) {
        static SETS: OnceLock<(Mnist, Mnist)> = OnceLock::new();
        SETS.get_or_init(|| {
            (
                Mnist::load_train(BUNDLED).unwrap(),
                Mnist::load_test(BUNDLED).unwrap(),
            )
        })
    }

    fn label_counts(set: &Mnist) -> [usize; CLASSES] {
        let mut counts = [0; CLASSES];
        for &label in &set.labels {
            counts[label] += 1;
        }
        counts
    }

    /// Mean and (population) standard deviation of all pixels scaled by 1/255, exactly from
    /// integer sums.
    fn pixel_statistics(set: &Mnist) -> (f64, f64) {
        let (mut sum, mut squares) = (0u64, 0u64);
        for &pixel in set.images.iter().flatten() {
            sum += u64::from(pixel);
            squares += u64::from(pixel) * u64::from(pixel);
        }
        let n = (set.len() * PIXELS) as f64;
        let mean = sum as f64 / n / 255.0;
        let variance = squares as f64 / n / (255.0 * 255.0) - mean * mean;
        (mean, variance.sqrt())
    }

    #[test]
    fn the_bundled_files_match_their_readme() {
        let (train, test) = bundled();
        assert_eq!((train.len(), train.images.len()), (60_000, 60_000));
        assert_eq!((test.len(), test.images.len()), (10_000, 10_000));
        assert_eq!(
            label_counts(train),
            [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
        );
        assert_eq!(
            label_counts(test),
            [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
        );
        assert_eq!(train.labels[..10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
        assert_eq!(test.labels[..10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);

        let (mean, std) = pixel_statistics(train);
        assert!((mean - 0.130_660_476_273_842_9).abs() < 1e-12, "{mean}");
        assert!((std - 0.308_107_8).abs() < 1e-7, "{std}");
        let (mean, std) = pixel_statistics(test);
        assert!((mean - 0.132_514_6).abs() < 1e-7, "{mean}");
        assert!((std - 0.310_480_2).abs() < 1e-7, "{std}");
        assert!((MEAN - 0.130_660_476).abs() < 5e-5 && (STD - 0.308_107_8).abs() < 5e-5);

        // Pixels span 0..=255, and the first training image (a 5) has ink in the middle.
        let pixels = train.images.iter().flatten();
        assert_eq!(pixels.clone().min(), Some(&0));
        assert_eq!(pixels.max(), Some(&255));
        assert_eq!(train.images[0][0], 0);
        assert!(train.images[0][14 * SIDE + 10..14 * SIDE + 18]
            .iter()
            .any(|&p| p > 0));
    }

    #[test]
    fn features_are_pixels_divided_by_255() {
        let (train, _) = bundled();
        let mut x = Tensor::<Rank3<1, SIDE, SIDE>, f32>::zeros(3);
        let mut batch_labels = Vec::new();
        train.fill_batch(&[0, 1, 59_999], &mut x, &mut batch_labels);
        assert_eq!(batch_labels, [5, 0, train.labels[59_999]]);
        for (value, &pixel) in x.sample(1).iter().zip(&train.images[1]) {
            assert_eq!(*value, (f64::from(pixel) / 255.0) as f32);
        }
        assert!(x.as_slice().iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(x.as_slice().contains(&1.0));
    }

    #[test]
    fn standardized_features_have_mean_0_and_deviation_1() {
        let (train, _) = bundled();
        let standardized = train.standardized();
        assert_eq!(Dataset::len(&standardized), 60_000);
        assert_eq!(standardized.label(0), 5);
        // Over all images, a batch at a time (every tenth image alone is darker than most).
        let (low, high) = ((0.0 - MEAN) / STD, (1.0 - MEAN) / STD);
        let mut x = Tensor::<Rank1<PIXELS>, f64>::zeros(1000);
        let mut batch_labels = Vec::new();
        let (mut sum, mut squares) = (0.0, 0.0);
        let indices: Vec<usize> = (0..train.len()).collect();
        for batch in indices.chunks(1000) {
            standardized.fill_batch(batch, &mut x, &mut batch_labels);
            assert!(x.as_slice().iter().all(|v| (low..=high).contains(v)));
            sum += x.as_slice().iter().sum::<f64>();
            squares += x.as_slice().iter().map(|v| v * v).sum::<f64>();
        }
        let n = (train.len() * PIXELS) as f64;
        let mean = sum / n;
        let std = (squares / n - mean * mean).sqrt();
        assert!(mean.abs() < 0.001, "{mean}");
        assert!((std - 1.0).abs() < 0.001, "{std}");
        assert!((low - -0.424_212_9).abs() < 1e-6 && (high - 2.821_486_5).abs() < 1e-6);
    }

    /// A data directory holding `train_images` and `train_labels` under the standard names.
    fn directory(train_images: &[u8], train_labels: &[u8]) -> TempPath {
        let dir = TempPath::dir("mnist");
        dir.put_gzip(TRAIN_IMAGES, train_images);
        dir.put_gzip(TRAIN_LABELS, train_labels);
        dir
    }

    #[test]
    fn small_files_load_under_the_standard_names() {
        let dir = directory(&images(3, 28, 28), &labels(&[7, 0, 9]));
        let mnist = Mnist::load_train(&dir.0).unwrap();
        assert_eq!(mnist.labels, [7, 0, 9]);
        assert_eq!(mnist.images.len(), 3);
        assert_eq!(mnist.images[1][0], (PIXELS % 256) as u8);
        assert_eq!(mnist.images[2][783], ((3 * PIXELS - 1) % 256) as u8);
        dir.put_gzip(TEST_IMAGES, &images(1, 28, 28));
        dir.put_gzip(TEST_LABELS, &labels(&[4]));
        assert_eq!(Mnist::load_test(&dir.0).unwrap().labels, [4]);
    }

    #[test]
    fn image_and_label_counts_must_agree() {
        let dir = directory(&images(3, 28, 28), &labels(&[7, 0]));
        let err = Mnist::load_train(&dir.0).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::CountMismatch {
                    images: 3,
                    labels: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        let images_path = dir.0.join(TRAIN_IMAGES).display().to_string();
        let labels_path = dir.0.join(TRAIN_LABELS).display().to_string();
        assert_eq!(
            message,
            format!(
                "the image file {images_path} holds 3 images but the label file {labels_path} \
                 holds 2 labels"
            )
        );
    }

    #[test]
    fn every_bad_file_is_an_error_naming_it() {
        let good_images = images(2, 28, 28);
        let good_labels = labels(&[1, 2]);
        let mut trailing = good_images.clone();
        trailing.push(0);
        let cases: [(&str, Vec<u8>, Vec<u8>, &str); 7] = [
            (
                "swapped files",
                good_labels.clone(),
                good_images.clone(),
                "is not an IDX file of images: its magic number is 0x00000801",
            ),
            (
                "labels for images",
                good_images.clone(),
                good_images.clone(),
                "is not an IDX file of labels: its magic number is 0x00000803 (u8 values in 3 dimensions), expected 0x00000801",
            ),
            (
                "32x32 images",
                images(2, 32, 32),
                good_labels.clone(),
                "holds images of 32x32 pixels, expected 28x28",
            ),
            (
                "truncated images",
                good_images[..good_images.len() - 100].to_vec(),
                good_labels.clone(),
                "but only 1468 bytes follow",
            ),
            (
                "trailing garbage",
                trailing,
                good_labels.clone(),
                "has 1 bytes of trailing garbage",
            ),
            (
                "a label of 12",
                good_images.clone(),
                labels(&[1, 12]),
                "label 1 (counting from 0): value 12 is outside 0..=9",
            ),
            (
                "a header only",
                idx(IMAGES_MAGIC, &[0, 28, 28], &[]),
                idx(LABELS_MAGIC, &[0], &[]),
                "holds no samples",
            ),
        ];
        for (case, image_bytes, label_bytes, expected) in cases {
            let dir = directory(&image_bytes, &label_bytes);
            let message = Mnist::load_train(&dir.0).unwrap_err().to_string();
            assert!(message.contains(expected), "{case}: {message}");
            assert!(
                message.contains(&dir.0.display().to_string()),
                "{case}: the message should name the file: {message}"
            );
        }
    }

    #[test]
    fn a_missing_directory_or_file_is_an_error() {
        let dir = TempPath::dir("empty-mnist");
        let err = Mnist::load_test(&dir.0).unwrap_err();
        assert!(matches!(err, DataError::Open { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&format!(
                "cannot open data file {}",
                dir.0.join(TEST_IMAGES).display()
            )),
            "{message}"
        );

        let err = Mnist::load_train(dir.0.join("no-such-directory")).unwrap_err();
        assert!(matches!(err, DataError::Open { .. }), "{err:?}");

        dir.put_gzip(TEST_IMAGES, &images(1, 28, 28));
        let err = Mnist::load_test(&dir.0).unwrap_err();
        assert!(
            err.to_string()
                .contains(&dir.0.join(TEST_LABELS).display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_plain_idx_file_is_not_gzip() {
        let dir = directory(&images(1, 28, 28), &labels(&[1]));
        std::fs::write(dir.0.join(TRAIN_LABELS), labels(&[1])).unwrap();
        let err = Mnist::load_train(&dir.0).unwrap_err();
        assert!(matches!(err, DataError::NotGzip { .. }), "{err:?}");
    }
}
