//! Character-level text: a vocabulary of the distinct characters of a text, the encoding of
//! text into token ids and back, and the unigram entropy of a token stream.
//!
//! ```text
//! let text = text::load("data/tinyshakespeare/input.txt")?;   // the whole file, UTF-8
//! let vocabulary = Vocabulary::from_text(&text);                // 65 characters, sorted
//! vocabulary.expect_len(65)?;                                   // the network's embedding
//! let ids = vocabulary.encode(&text)?;                          // '\n' → 0, ' ' → 1, ...
//! ```
//!
//! The ids follow the characters' order (by Unicode scalar value, so by byte value for ASCII),
//! as in Karpathy's char-rnn and nanoGPT: the same text always gives the same ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A text that could not be loaded, encoded or decoded.
#[derive(Debug, Error)]
pub enum TextError {
    #[error("cannot read text file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("text file {} is not UTF-8: invalid bytes at line {line}, column {column} (byte {offset})", .path.display())]
    NotUtf8 {
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        /// 0-based byte offset of the first invalid byte.
        offset: usize,
    },
    #[error("text file {} is empty", .path.display())]
    Empty { path: PathBuf },
    #[error("character {character:?} at line {line}, column {column} is not in the vocabulary of {vocabulary} characters")]
    UnknownCharacter {
        character: char,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        vocabulary: usize,
    },
    #[error(
        "token id {id} at position {position} is outside the vocabulary of {vocabulary} characters"
    )]
    UnknownId {
        id: usize,
        position: usize,
        vocabulary: usize,
    },
    #[error("the text has {found} distinct characters ({characters:?}), but {expected} are expected: declare the network's vocabulary (embedding and output layer) as {found}")]
    WrongSize {
        found: usize,
        expected: usize,
        /// The vocabulary, as one string in id order.
        characters: String,
    },
}

/// Reads the UTF-8 text file at `path`, whole.
pub fn load(path: impl AsRef<Path>) -> Result<String, TextError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| TextError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(TextError::Empty {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|error| {
        let offset = error.utf8_error().valid_up_to();
        // The valid prefix locates the bad bytes.
        let valid = std::str::from_utf8(&error.as_bytes()[..offset]).unwrap_or_default();
        let (line, column) = line_and_column(valid, valid.chars().count());
        TextError::NotUtf8 {
            path: path.to_path_buf(),
            line,
            column,
            offset,
        }
    })
}

/// The 1-based line and column of the character at index `position` (counted in characters)
/// of `text`; one past the end for `position == text.chars().count()`.
fn line_and_column(text: &str, position: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for c in text.chars().take(position) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// The distinct characters of a text, sorted; a character's id is its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocabulary {
    characters: Vec<char>,
    ids: HashMap<char, usize>,
}

impl Vocabulary {
    /// The distinct characters of `text`, sorted by Unicode scalar value.
    pub fn from_text(text: &str) -> Self {
        let mut characters: Vec<char> = text.chars().collect();
        characters.sort_unstable();
        characters.dedup();
        let ids = characters
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i))
            .collect();
        Self { characters, ids }
    }

    /// The number of characters.
    pub fn len(&self) -> usize {
        self.characters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.characters.is_empty()
    }

    /// The characters in id order.
    pub fn characters(&self) -> &[char] {
        &self.characters
    }

    /// The id of `character`, if it is in the vocabulary.
    pub fn id(&self, character: char) -> Option<usize> {
        self.ids.get(&character).copied()
    }

    /// The character of `id`, if it is in the vocabulary.
    pub fn character(&self, id: usize) -> Option<char> {
        self.characters.get(id).copied()
    }

    /// Checks that the vocabulary has the `expected` size a network was declared with.
    pub fn expect_len(&self, expected: usize) -> Result<(), TextError> {
        if self.len() == expected {
            Ok(())
        } else {
            Err(TextError::WrongSize {
                found: self.len(),
                expected,
                characters: self.characters.iter().collect(),
            })
        }
    }

    /// The id of every character of `text`; a character outside the vocabulary is an error
    /// naming it and its line and column.
    pub fn encode(&self, text: &str) -> Result<Vec<usize>, TextError> {
        let mut ids = Vec::with_capacity(text.len());
        for (position, c) in text.chars().enumerate() {
            match self.id(c) {
                Some(id) => ids.push(id),
                None => {
                    let (line, column) = line_and_column(text, position);
                    return Err(TextError::UnknownCharacter {
                        character: c,
                        line,
                        column,
                        vocabulary: self.len(),
                    });
                }
            }
        }
        Ok(ids)
    }

    /// The text of token ids; an id outside the vocabulary is an error naming it.
    pub fn decode(&self, ids: &[usize]) -> Result<String, TextError> {
        ids.iter()
            .enumerate()
            .map(|(position, &id)| {
                self.character(id).ok_or(TextError::UnknownId {
                    id,
                    position,
                    vocabulary: self.len(),
                })
            })
            .collect()
    }
}

/// How often each id `0..vocabulary` occurs in `ids` (ids beyond are not counted).
pub fn counts(ids: &[usize], vocabulary: usize) -> Vec<usize> {
    let mut counts = vec![0; vocabulary];
    for &id in ids {
        if let Some(count) = counts.get_mut(id) {
            *count += 1;
        }
    }
    counts
}

/// The entropy of the ids' frequencies, `-Σ p log p` in nats per token: the cross-entropy of
/// the best model that ignores context, the baseline a sequence model must beat. Zero for an
/// empty stream.
pub fn unigram_entropy(ids: &[usize], vocabulary: usize) -> f64 {
    let total = ids.len() as f64;
    counts(ids, vocabulary)
        .into_iter()
        .filter(|&n| n > 0)
        .map(|n| {
            let p = n as f64 / total;
            -p * p.ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_is_the_sorted_distinct_characters() {
        let vocabulary = Vocabulary::from_text("hello, world\n");
        assert_eq!(
            vocabulary.characters(),
            &['\n', ' ', ',', 'd', 'e', 'h', 'l', 'o', 'r', 'w']
        );
        assert_eq!(vocabulary.len(), 10);
        assert_eq!(vocabulary.id('\n'), Some(0));
        assert_eq!(vocabulary.id('w'), Some(9));
        assert_eq!(vocabulary.id('x'), None);
        assert_eq!(vocabulary.character(5), Some('h'));
        assert_eq!(vocabulary.character(10), None);
        assert!(Vocabulary::from_text("").is_empty());
        // Not only ASCII: characters, not bytes.
        let accents = Vocabulary::from_text("éaé");
        assert_eq!(accents.characters(), &['a', 'é']);
    }

    #[test]
    fn encode_and_decode_are_inverse() {
        let text = "To be, or not to be:\nthat is the question.";
        let vocabulary = Vocabulary::from_text(text);
        let ids = vocabulary.encode(text).unwrap();
        assert_eq!(ids.len(), text.len());
        assert_eq!(
            ids[..3],
            [vocabulary.id('T').unwrap(), vocabulary.id('o').unwrap(), 1]
        );
        assert_eq!(vocabulary.decode(&ids).unwrap(), text);
        assert!(ids.iter().all(|&id| id < vocabulary.len()));
    }

    #[test]
    fn unknown_characters_and_ids_are_errors_that_say_where() {
        let vocabulary = Vocabulary::from_text("ab\n");
        let error = vocabulary.encode("ab\nbaz").unwrap_err();
        assert!(matches!(
            error,
            TextError::UnknownCharacter {
                character: 'z',
                line: 2,
                column: 3,
                vocabulary: 3
            }
        ));
        assert_eq!(
            error.to_string(),
            "character 'z' at line 2, column 3 is not in the vocabulary of 3 characters"
        );
        let error = vocabulary.decode(&[0, 1, 3]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "token id 3 at position 2 is outside the vocabulary of 3 characters"
        );
    }

    #[test]
    fn a_vocabulary_of_the_wrong_size_is_an_error_listing_it() {
        let vocabulary = Vocabulary::from_text("ba\n");
        assert!(vocabulary.expect_len(3).is_ok());
        let error = vocabulary.expect_len(65).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the text has 3 distinct characters (\"\\nab\"), but 65 are expected: declare the \
             network's vocabulary (embedding and output layer) as 3"
        );
    }

    #[test]
    fn unigram_entropy_is_that_of_the_frequencies() {
        assert_eq!(unigram_entropy(&[], 4), 0.0);
        assert_eq!(unigram_entropy(&[2, 2, 2], 4), 0.0);
        // Uniform over 4 ids: ln 4.
        let uniform = unigram_entropy(&[0, 1, 2, 3, 3, 2, 1, 0], 4);
        assert!((uniform - 4f64.ln()).abs() < 1e-12);
        // p = (3/4, 1/4).
        let skewed = unigram_entropy(&[0, 0, 1, 0], 2);
        let expected = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((skewed - expected).abs() < 1e-12);
        assert_eq!(counts(&[0, 0, 1, 7], 2), vec![2, 1]);
    }

    #[test]
    fn load_reads_utf8_and_rejects_other_bytes() {
        let dir = std::env::temp_dir().join(format!("nn-text-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.txt");
        std::fs::write(&good, "First Citizen:\nBefore we proceed\n").unwrap();
        assert_eq!(load(&good).unwrap(), "First Citizen:\nBefore we proceed\n");

        let bad = dir.join("bad.txt");
        std::fs::write(&bad, b"ab\ncd\xffe").unwrap();
        let error = load(&bad).unwrap_err();
        assert!(
            matches!(
                error,
                TextError::NotUtf8 {
                    line: 2,
                    column: 3,
                    offset: 5,
                    ..
                }
            ),
            "{error:?}"
        );

        let empty = dir.join("empty.txt");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(load(&empty), Err(TextError::Empty { .. })));
        let missing = dir.join("missing.txt");
        let error = load(&missing).unwrap_err();
        assert!(error.to_string().starts_with("cannot read text file "));
        assert!(error.to_string().contains("missing.txt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bundled_tiny_shakespeare_has_65_characters() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/tinyshakespeare/input.txt"
        );
        let text = load(path).unwrap();
        assert_eq!(text.chars().count(), 1_115_394);
        assert!(text.starts_with("First Citizen:\nBefore we proceed any further, hear me speak.\n"));
        let vocabulary = Vocabulary::from_text(&text);
        let expected = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        assert_eq!(vocabulary.characters().iter().collect::<String>(), expected);
        assert!(vocabulary.expect_len(65).is_ok());
        assert_eq!(
            (vocabulary.id('\n'), vocabulary.id(' '), vocabulary.id('z')),
            (Some(0), Some(1), Some(64))
        );
        // The customary training part, the first 90%: its characters' entropy (computed
        // independently in Python: 3.309084275...).
        let ids = vocabulary.encode(&text).unwrap();
        let train = &ids[..ids.len() * 9 / 10];
        assert_eq!(train.len(), 1_003_854);
        let entropy = unigram_entropy(train, vocabulary.len());
        assert!((entropy - 3.309_084_275).abs() < 1e-8, "{entropy}");
    }
}
