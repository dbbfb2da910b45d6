//! Embeds sentences with sentence-transformers' all-MiniLM-L6-v2, declared with `network!`
//! (`nn::models::MiniLm`) and loaded from its published `model.safetensors` without renaming,
//! and prints their pairwise cosine similarities.
//!
//! ```sh
//! export NN_MINILM_DIR=...   # see the README's MiniLM section
//! cargo run --release --example minilm -- "The cat sits on the mat." "A kitten rests on a rug." "Markets fell."
//! ```
//!
//! `--model DIR` overrides `NN_MINILM_DIR`. The directory must hold `model.safetensors` and
//! `tokenizer.json`. tests/minilm.rs checks these embeddings against sentence-transformers'
//! (largest deviation 2.8e-7).

#[path = "common/wordpiece.rs"]
mod wordpiece;

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use nn::models::minilm::{self, MiniLm};

/// Sentence embeddings and their cosine similarities with all-MiniLM-L6-v2.
#[derive(Parser)]
struct Args {
    /// The model directory (model.safetensors, tokenizer.json); default: $NN_MINILM_DIR.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The sentences to compare.
    #[arg(required = true)]
    sentences: Vec<String>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let dir = args
        .model
        .or_else(|| std::env::var_os("NN_MINILM_DIR").map(PathBuf::from))
        .ok_or("no model directory: pass --model DIR or set NN_MINILM_DIR (see the README)")?;
    let start = Instant::now();
    let model = MiniLm::load(dir.join("model.safetensors"))?;
    let tokenizer = wordpiece::load(&dir, minilm::MAX_TOKENS)?;
    println!(
        "loaded all-MiniLM-L6-v2 ({} parameters) from {} in {:.2} s",
        MiniLm::<f32>::PARAMS,
        dir.display(),
        start.elapsed().as_secs_f64()
    );

    let ids = wordpiece::token_ids(&tokenizer, &args.sentences)?;
    let batch = 8;
    let mut workspace = model.workspace(batch.min(ids.len()));
    let start = Instant::now();
    let mut embeddings = Vec::new();
    for chunk in ids.chunks(batch) {
        embeddings.extend(model.embed(&mut workspace, chunk)?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "embedded {} sentences in {:.1} ms ({:.1} ms per sentence)\n",
        ids.len(),
        elapsed * 1e3,
        elapsed * 1e3 / ids.len() as f64
    );
    for (i, (sentence, tokens)) in args.sentences.iter().zip(&ids).enumerate() {
        println!("[{i}] {sentence:?} ({} tokens)", tokens.len());
    }
    println!("\ncosine similarities:");
    for i in 0..embeddings.len() {
        for j in i + 1..embeddings.len() {
            let similarity = minilm::cosine(&embeddings[i], &embeddings[j]);
            println!("  [{i}] vs [{j}]: {similarity:.4}");
        }
    }
    Ok(())
}
