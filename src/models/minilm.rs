//! all-MiniLM-L6-v2 (Wang et al., 2020, "MiniLM: Deep Self-Attention Distillation for
//! Task-Agnostic Compression of Pre-Trained Transformers"; sentence-transformers' fine-tuned
//! sentence encoder): a 6-layer BERT, hidden size 384, 12 heads, feed-forward 1536, GELU,
//! post-LN, vocabulary 30522.
//!
//! [`MiniLm`] declares it with `network!` under Hugging Face's `BertModel` names, so its
//! `model.safetensors` loads without renaming ([`MiniLm::load`]). [`MiniLm::embed`] turns
//! token ids into sentence embeddings the way sentence-transformers does: mean over the real
//! tokens (the attention mask), then L2 normalisation. Tokenising text into ids is left to a
//! WordPiece tokenizer reading the model's `tokenizer.json` (the `minilm` example uses the
//! `tokenizers` crate).

use std::path::Path;

use thiserror::Error;

use crate::io::WeightsError;
use crate::layers::LengthsError;
use crate::{network, Tensor, Workspace};

network! {
    /// all-MiniLM-L6-v2's BERT encoder on 128 token ids (the model's tokenizer pads and
    /// truncates to 128), giving the last hidden state of every token, `[128, 384]`.
    ///
    /// Each encoder layer is post-LN: `h = LN(x + Attention(x))`, `y = LN(h + FFN(h))`. The
    /// `_:` residuals add no name, so the layers inside keep BERT's names
    /// (`encoder.layer.0.attention.self.query.weight`, ..., `encoder.layer.0.output.LayerNorm.bias`).
    pub struct MiniLm: [128] {
        embeddings: {
            word_embeddings: embedding(30522, 384),
            position_embeddings: learned_positions(512),
            token_type_embeddings: token_type_embedding(2),
            LayerNorm: layer_norm(eps = 1e-12),
        },
        encoder.layer: repeat(6) {
            _: residual { attention: multi_head_attention(heads = 12, bert_names) },
            attention.output.LayerNorm: layer_norm(eps = 1e-12),
            _: residual { intermediate.dense: linear(1536), gelu, output.dense: linear(384) },
            output.LayerNorm: layer_norm(eps = 1e-12),
        },
    }
}

const _: () = assert!(MiniLm::<f32>::PARAMS == 22_565_376);

/// The longest input, in tokens ([CLS] and [SEP] included).
pub const MAX_TOKENS: usize = MiniLm::<f32>::INPUT[0];
/// The width of a sentence embedding.
pub const EMBEDDING: usize = MiniLm::<f32>::OUTPUT[1];
/// The vocabulary of the WordPiece tokenizer.
pub const VOCABULARY: usize = 30522;

/// Tensors of `model.safetensors` that a sentence encoder does not use: BERT's pooler (a
/// dense layer on [CLS] that sentence-transformers ignores) and the position ids `0..512`
/// (a constant buffer).
pub const UNUSED_TENSORS: [&str; 3] = [
    "embeddings.position_ids",
    "pooler.dense.weight",
    "pooler.dense.bias",
];

/// Why token ids cannot be embedded.
#[derive(Debug, Error, PartialEq)]
pub enum EmbedError {
    #[error("sentence {sentence} has no tokens (a tokenizer gives at least [CLS] and [SEP])")]
    Empty { sentence: usize },
    #[error("sentence {sentence} has {tokens} tokens, more than the model's {MAX_TOKENS}: truncate it when tokenising")]
    TooLong { sentence: usize, tokens: usize },
    #[error("sentence {sentence} has token id {id} at position {position}, outside the vocabulary of {VOCABULARY}")]
    UnknownId {
        sentence: usize,
        position: usize,
        id: usize,
    },
    #[error("{sentences} sentences in one call, but the workspace holds at most {max_batch}")]
    TooMany { sentences: usize, max_batch: usize },
    #[error(transparent)]
    Lengths(#[from] LengthsError),
}

impl MiniLm<f32> {
    /// Loads `model.safetensors` of all-MiniLM-L6-v2 (any BERT of this shape with Hugging
    /// Face's names), ignoring only the [`UNUSED_TENSORS`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let mut model = Self::new(0);
        crate::io::load_ignoring(&mut model, path, &UNUSED_TENSORS)?;
        Ok(model)
    }

    /// Sentence embeddings of tokenised sentences (`[CLS] ... [SEP]`, at most 128 ids each, no
    /// padding), as sentence-transformers computes them: the model's last hidden states
    /// averaged over each sentence's tokens, then scaled to unit length. The sentences run as
    /// one batch, padded to 128 steps with a key-padding mask, so padding changes nothing.
    pub fn embed(
        &self,
        workspace: &mut Workspace<Self, f32>,
        sentences: &[Vec<usize>],
    ) -> Result<Vec<[f32; EMBEDDING]>, EmbedError> {
        let lengths = check_tokens(sentences, workspace.max_batch())?;
        let mut ids = vec![0.0f32; sentences.len() * MAX_TOKENS];
        for (row, sentence) in ids.chunks_exact_mut(MAX_TOKENS).zip(sentences) {
            for (slot, id) in row.iter_mut().zip(sentence) {
                *slot = *id as f32;
            }
        }
        let x = Tensor::from_vec(ids).expect("whole sequences");
        workspace.set_padding(self, Some(&lengths))?;
        let hidden = workspace.infer(self, &x);
        Ok(mean_pool_normalised(hidden.as_slice(), &lengths))
    }
}

/// The length of every sentence, after checking it can be embedded.
fn check_tokens(sentences: &[Vec<usize>], max_batch: usize) -> Result<Vec<usize>, EmbedError> {
    if sentences.len() > max_batch {
        return Err(EmbedError::TooMany {
            sentences: sentences.len(),
            max_batch,
        });
    }
    sentences
        .iter()
        .enumerate()
        .map(|(sentence, ids)| {
            if ids.is_empty() {
                return Err(EmbedError::Empty { sentence });
            }
            if ids.len() > MAX_TOKENS {
                return Err(EmbedError::TooLong {
                    sentence,
                    tokens: ids.len(),
                });
            }
            if let Some((position, &id)) = ids.iter().enumerate().find(|(_, &id)| id >= VOCABULARY)
            {
                return Err(EmbedError::UnknownId {
                    sentence,
                    position,
                    id,
                });
            }
            Ok(ids.len())
        })
        .collect()
}

/// The mean of the first `lengths[b]` rows of each sample's `[128, 384]` states, normalised to
/// unit length (sentence-transformers' `Pooling(mean)` then `Normalize`, whose epsilon 1e-12
/// guards a zero vector).
fn mean_pool_normalised(hidden: &[f32], lengths: &[usize]) -> Vec<[f32; EMBEDDING]> {
    hidden
        .chunks_exact(MAX_TOKENS * EMBEDDING)
        .zip(lengths)
        .map(|(states, &length)| {
            let mut sum = [0f64; EMBEDDING];
            for row in states.chunks_exact(EMBEDDING).take(length) {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += f64::from(*v);
                }
            }
            let norm = sum.iter().map(|s| s * s).sum::<f64>().sqrt() / length as f64;
            let scale = 1.0 / (length as f64 * norm.max(1e-12));
            sum.map(|s| (s * scale) as f32)
        })
        .collect()
}

/// The cosine similarity of two unit vectors: their dot product.
pub fn cosine(a: &[f32; EMBEDDING], b: &[f32; EMBEDDING]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Module;

    #[test]
    fn parameter_names_are_bert_model_keys() {
        let mut names = Vec::new();
        <MiniLm as Module<f32>>::visit_params(&MiniLm::new(0), "", &mut |p| {
            names.push((p.name.to_string(), p.shape.to_vec()))
        });
        assert_eq!(names.len(), 5 + 6 * 16);
        let expected_first = [
            ("embeddings.word_embeddings.weight", vec![30522, 384]),
            ("embeddings.position_embeddings.weight", vec![512, 384]),
            ("embeddings.token_type_embeddings.weight", vec![2, 384]),
            ("embeddings.LayerNorm.weight", vec![384]),
            ("embeddings.LayerNorm.bias", vec![384]),
            (
                "encoder.layer.0.attention.self.query.weight",
                vec![384, 384],
            ),
            ("encoder.layer.0.attention.self.query.bias", vec![384]),
            ("encoder.layer.0.attention.self.key.weight", vec![384, 384]),
            ("encoder.layer.0.attention.self.key.bias", vec![384]),
            (
                "encoder.layer.0.attention.self.value.weight",
                vec![384, 384],
            ),
            ("encoder.layer.0.attention.self.value.bias", vec![384]),
            (
                "encoder.layer.0.attention.output.dense.weight",
                vec![384, 384],
            ),
            ("encoder.layer.0.attention.output.dense.bias", vec![384]),
            (
                "encoder.layer.0.attention.output.LayerNorm.weight",
                vec![384],
            ),
            ("encoder.layer.0.attention.output.LayerNorm.bias", vec![384]),
            ("encoder.layer.0.intermediate.dense.weight", vec![1536, 384]),
            ("encoder.layer.0.intermediate.dense.bias", vec![1536]),
            ("encoder.layer.0.output.dense.weight", vec![384, 1536]),
            ("encoder.layer.0.output.dense.bias", vec![384]),
            ("encoder.layer.0.output.LayerNorm.weight", vec![384]),
            ("encoder.layer.0.output.LayerNorm.bias", vec![384]),
        ];
        let expected_first: Vec<_> = expected_first
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect();
        assert_eq!(names[..expected_first.len()], expected_first[..]);
        assert_eq!(
            names.last().unwrap().0,
            "encoder.layer.5.output.LayerNorm.bias"
        );
    }

    #[test]
    fn bad_token_ids_are_errors_naming_the_sentence() {
        let max = 4;
        assert_eq!(
            check_tokens(&[vec![101, 102], vec![]], max),
            Err(EmbedError::Empty { sentence: 1 })
        );
        assert_eq!(
            check_tokens(&[vec![101; 129]], max),
            Err(EmbedError::TooLong {
                sentence: 0,
                tokens: 129
            })
        );
        assert_eq!(
            check_tokens(&[vec![101, 30522, 102]], max),
            Err(EmbedError::UnknownId {
                sentence: 0,
                position: 1,
                id: 30522
            })
        );
        assert_eq!(
            check_tokens(&vec![vec![101]; 5], max),
            Err(EmbedError::TooMany {
                sentences: 5,
                max_batch: 4
            })
        );
        assert_eq!(check_tokens(&[vec![101, 7592, 102]], max), Ok(vec![3]));
    }

    #[test]
    fn pooling_averages_the_real_tokens_and_normalises() {
        let mut hidden = vec![0f32; MAX_TOKENS * EMBEDDING];
        hidden[0] = 3.0; // token 0
        hidden[EMBEDDING + 1] = 4.0; // token 1
        hidden[2 * EMBEDDING] = 100.0; // token 2: padding, ignored
        let pooled = mean_pool_normalised(&hidden, &[2]);
        assert!((pooled[0][0] - 0.6).abs() < 1e-7 && (pooled[0][1] - 0.8).abs() < 1e-7);
        assert!((cosine(&pooled[0], &pooled[0]) - 1.0).abs() < 1e-6);
    }
}
