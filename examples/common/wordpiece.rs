//! Text to BERT token ids with the model's own `tokenizer.json` (Hugging Face's `tokenizers`
//! crate), for the `minilm` example and its test.

use std::error::Error;
use std::path::Path;

use tokenizers::Tokenizer;

/// The tokenizer of a model directory, truncating to `max_tokens` and not padding: the
/// network pads with a mask itself.
pub fn load(model_dir: &Path, max_tokens: usize) -> Result<Tokenizer, Box<dyn Error>> {
    let path = model_dir.join("tokenizer.json");
    let mut tokenizer = Tokenizer::from_file(&path)
        .map_err(|e| format!("cannot read the tokenizer {}: {e}", path.display()))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: max_tokens,
            ..Default::default()
        }))
        .map_err(|e| format!("cannot truncate to {max_tokens} tokens: {e}"))?;
    Ok(tokenizer)
}

/// `[CLS] wordpieces [SEP]` of every sentence.
pub fn token_ids(
    tokenizer: &Tokenizer,
    sentences: &[impl AsRef<str>],
) -> Result<Vec<Vec<usize>>, Box<dyn Error>> {
    sentences
        .iter()
        .map(|sentence| {
            let encoding = tokenizer
                .encode(sentence.as_ref(), true)
                .map_err(|e| format!("cannot tokenise {:?}: {e}", sentence.as_ref()))?;
            Ok(encoding.get_ids().iter().map(|&id| id as usize).collect())
        })
        .collect()
}
