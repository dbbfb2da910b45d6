//! Trains a LeNet-5-style convolutional network on MNIST (60,000 training and 10,000 test
//! images of 28x28 pixels, bundled in `data/mnist`) and plots its training loss and test
//! accuracy.
//!
//! ```sh
//! cargo run --release --example mnist_lenet
//! cargo run --release --example mnist_lenet -- --epochs 6 --seed 7 --out lenet.png
//! ```

#[path = "common/plot.rs"]
mod plot;

use std::error::Error;
use std::f32::consts::PI;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use nn::data::mnist::Standardized;
use nn::data::{Dataset, Mnist};
use nn::init::shuffle;
use nn::prelude::*;

network! {
    /// LeNet-5 with ReLU and max pooling: two convolutions, three fully connected layers.
    pub struct LeNet: [1, 28, 28] {
        conv2d(6, kernel = 5, padding = 2), relu, max_pool2d(2),
        conv2d(16, kernel = 5), relu, max_pool2d(2),
        flatten => [400],
        linear(120), relu,
        linear(84), relu,
        linear(10),
    }
}

/// Train LeNet-5 on MNIST.
#[derive(Parser)]
struct Args {
    /// The directory of the four gzip'd IDX files (train-images-idx3-ubyte.gz, ...).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))]
    data: PathBuf,
    /// Passes over the 60,000 training images.
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Seeds the initial weights and the shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the plot of the loss and accuracy curves.
    #[arg(long, default_value = "mnist_lenet.png")]
    out: PathBuf,
    /// Images per training step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Adam's initial learning rate (decayed to 0 along a cosine over the epochs).
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    if args.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    println!("{}", LeNet::<f32>::summary());

    let start = Instant::now();
    if !args.data.is_dir() {
        return Err(format!(
            "the MNIST directory {} does not exist (it should hold train-images-idx3-ubyte.gz, \
             train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz; \
             see data/mnist/README.md)",
            args.data.display()
        )
        .into());
    }
    // `main` prints an error with `{:?}`: turn it into its message, which names the file.
    let train_set = Mnist::load_train(&args.data).map_err(|e| e.to_string())?;
    let test_set = Mnist::load_test(&args.data).map_err(|e| e.to_string())?;
    // Inputs standardised with MNIST's mean and deviation (0.1307, 0.3081).
    let (train, test) = (train_set.standardized(), test_set.standardized());
    println!(
        "{} training and {} test images, loaded in {:.2} s\n",
        train.len(),
        test.len(),
        start.elapsed().as_secs_f32()
    );

    let mut net: LeNet = LeNet::new(args.seed);
    let mut ws = net.workspace(args.batch);
    let mut optimizer = Adam::new(args.lr);
    let mut rng = rng(args.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut x = Tensor::<Rank3<1, 28, 28>>::zeros(args.batch);
    let mut labels = Vec::with_capacity(args.batch);
    let style =
        ProgressStyle::with_template("epoch {prefix:>2} [{bar:30}] {pos}/{len} {msg} ({eta})")?;
    let (mut losses, mut accuracies) = (Vec::new(), Vec::new());
    let steps = train.len().div_ceil(args.batch);
    let total_steps = (args.epochs * steps) as f32;

    for epoch in 1..=args.epochs {
        let epoch_start = Instant::now();
        shuffle(&mut rng, &mut order);
        let bar = ProgressBar::new(steps as u64)
            .with_style(style.clone())
            .with_prefix(epoch.to_string());
        let mut total = 0.0;
        for (step, batch) in order.chunks(args.batch).enumerate() {
            // Cosine decay per step: large steps first, then smaller ones to settle.
            let progress = ((epoch - 1) * steps + step) as f32 / total_steps;
            optimizer.learning_rate = args.lr * 0.5 * (1.0 + (PI * progress).cos());
            train.fill_batch(batch, &mut x, &mut labels);
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
            if step % 16 == 0 || step + 1 == steps {
                bar.set_message(format!("loss {:.4}", total / (step + 1) as f32));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let train_time = epoch_start.elapsed().as_secs_f32();
        losses.push(total / steps as f32);
        accuracies.push(100.0 * accuracy(&net, &mut ws, &test, args.batch));
        println!(
            "epoch {epoch:>2}: train loss {:.4}, test accuracy {:.2}% ({train_time:.1} s training, \
             {:.1} s with the test)",
            losses[epoch - 1],
            accuracies[epoch - 1],
            epoch_start.elapsed().as_secs_f32()
        );
    }

    plot::plot_loss_and_accuracy(&args.out, &losses, &accuracies)?;
    println!("\nwrote {}", args.out.display());
    let final_accuracy = match accuracies.last() {
        Some(&accuracy) => accuracy,
        None => 100.0 * accuracy(&net, &mut ws, &test, args.batch),
    };
    println!("test accuracy: {final_accuracy:.2}%");
    Ok(())
}

/// The fraction of `data` that `net` classifies correctly, inferred `batch` images at a time.
fn accuracy(net: &LeNet, ws: &mut Workspace<LeNet>, data: &Standardized<'_>, batch: usize) -> f32 {
    let mut x = Tensor::<Rank3<1, 28, 28>>::zeros(batch);
    let mut labels = Vec::with_capacity(batch);
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut correct = 0;
    for chunk in indices.chunks(batch) {
        data.fill_batch(chunk, &mut x, &mut labels);
        let predicted = ws.infer(net, &x).argmax();
        correct += predicted
            .iter()
            .zip(&labels)
            .filter(|(p, l)| p == l)
            .count();
    }
    correct as f32 / data.len().max(1) as f32
}
