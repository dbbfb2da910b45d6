//! Trains a perceptron on scikit-learn's 8x8 handwritten digits (1797 images, bundled in
//! `data/digits`) and plots its training loss and test accuracy.
//!
//! ```sh
//! cargo run --release --example digits_mlp
//! cargo run --release --example digits_mlp -- --epochs 50 --seed 7 --out digits.png
//! ```

#[path = "common/plot.rs"]
mod plot;

use std::error::Error;
use std::f32::consts::PI;
use std::path::PathBuf;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use nn::data::{train_test_split, Dataset, Digits};
use nn::init::shuffle;
use nn::prelude::*;

network! {
    /// A two-hidden-layer perceptron for 8x8 digits.
    pub struct DigitsMlp: [64] {
        linear(128), relu,
        linear(64), relu,
        linear(10),
    }
}

const BATCH: usize = 32;
const LEARNING_RATE: f32 = 0.1;

/// Train a perceptron on the 8x8 digits.
#[derive(Parser)]
struct Args {
    /// The digits as a gzip'd CSV (64 pixels 0..=16 and a label per line).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits/digits.csv.gz"))]
    data: PathBuf,
    /// Passes over the training images.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Seeds the initial weights, the train/test split and the shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the plot of the loss and accuracy curves.
    #[arg(long, default_value = "digits_mlp.png")]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    println!("{}", DigitsMlp::<f32>::summary());

    // `main` prints an error with `{:?}`: turn it into its message, which names the file.
    let data = Digits::load(&args.data).map_err(|e| e.to_string())?;
    let (mut train, test) = train_test_split(data.len(), 0.2, args.seed);
    println!("{} training and {} test images\n", train.len(), test.len());

    let mut net: DigitsMlp = DigitsMlp::new(args.seed);
    let mut ws = net.workspace(BATCH);
    let mut optimizer = Sgd::new(LEARNING_RATE).momentum(0.9);
    let mut rng = rng(args.seed);
    let mut x = Tensor::<Rank1<64>>::zeros(BATCH);
    let mut labels = Vec::with_capacity(BATCH);
    let style = ProgressStyle::with_template("epoch {prefix:>3} [{bar:30}] {pos}/{len} {msg}")?;
    let (mut losses, mut accuracies) = (Vec::new(), Vec::new());

    for epoch in 1..=args.epochs {
        shuffle(&mut rng, &mut train);
        // Cosine decay: large steps first, then smaller and smaller ones to settle.
        let progress = (epoch - 1) as f32 / args.epochs as f32;
        optimizer.learning_rate = LEARNING_RATE * 0.5 * (1.0 + (PI * progress).cos());
        let steps = train.len().div_ceil(BATCH);
        let bar = ProgressBar::new(steps as u64)
            .with_style(style.clone())
            .with_prefix(epoch.to_string());
        let mut total = 0.0;
        for (step, batch) in train.chunks(BATCH).enumerate() {
            data.fill_batch(batch, &mut x, &mut labels);
            ws.forward(&mut net, &x);
            let loss = ws
                .loss(|y, dy| softmax_cross_entropy(y, &labels, Some(dy)))
                .map_err(|e| {
                    format!("training stopped at epoch {epoch}, step {}: {e}", step + 1)
                })?;
            ws.backward(&net);
            optimizer.step(&mut net, ws.grads());
            ws.zero_grads();
            total += loss;
            bar.set_message(format!("loss {:.4}", total / (step + 1) as f32));
            bar.inc(1);
        }
        bar.finish_and_clear();
        losses.push(total / steps as f32);
        accuracies.push(100.0 * accuracy(&net, &mut ws, &data, &test));
        println!(
            "epoch {epoch:>3}: train loss {:.4}, test accuracy {:.2}%",
            losses[epoch - 1],
            accuracies[epoch - 1]
        );
    }

    plot::plot_loss_and_accuracy(&args.out, &losses, &accuracies)?;
    println!("\nwrote {}", args.out.display());
    let final_accuracy = 100.0 * accuracy(&net, &mut ws, &data, &test);
    println!("test accuracy: {final_accuracy:.2}%");
    Ok(())
}

/// The fraction of the samples `indices` that `net` classifies correctly.
fn accuracy(
    net: &DigitsMlp,
    ws: &mut Workspace<DigitsMlp>,
    data: &Digits,
    indices: &[usize],
) -> f32 {
    let mut x = Tensor::<Rank1<64>>::zeros(BATCH);
    let mut labels = Vec::with_capacity(BATCH);
    let mut correct = 0;
    for batch in indices.chunks(BATCH) {
        data.fill_batch(batch, &mut x, &mut labels);
        let predicted = ws.infer(net, &x).argmax();
        correct += predicted
            .iter()
            .zip(&labels)
            .filter(|(p, l)| p == l)
            .count();
    }
    correct as f32 / indices.len().max(1) as f32
}
