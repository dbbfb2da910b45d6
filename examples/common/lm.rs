//! Helpers of the character-level language models (`char_rnn`, `tiny_gpt`), included with
//! `#[path = "common/lm.rs"] mod lm;`: drawing from the seeded generator, sampling the next
//! character, the prompt of the final sample, one training update and the bookkeeping of an
//! epoch's losses, the error that stops training and the plot of the loss curves (which needs `#[path = "common/plot.rs"] mod plot;` beside this module).

// Each example uses only part of this file.
#![allow(dead_code)]

use std::error::Error;
use std::path::Path;
use std::process::ExitCode;

use indicatif::ProgressBar;
use nn::data::text::{self, Vocabulary};
use nn::init::Rng;
use nn::optim::clip_grad_norm;
use nn::prelude::*;
use nn::train::TrainError;

/// The process's exit code for the result of an example's `run`, printing its error.
pub fn exit_code(result: Result<(), Box<dyn Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// An index drawn with probability `softmax(logits / temperature)`.
pub fn sample_softmax(logits: &[f32], temperature: f32, rng: &mut Rng) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - max) / temperature) as f64).exp())
        .collect();
    let mut u = uniform01(rng) * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    // Rounding left `u` just past the end: the last character that can occur.
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

/// A draw from U(0, 1).
pub fn uniform01(rng: &mut Rng) -> f64 {
    let mut u = [0.0f64];
    nn::init::uniform(rng, &mut u, 0.5);
    u[0] + 0.5
}

/// A whole number drawn uniformly from `0..n`.
pub fn random_below(rng: &mut Rng, n: usize) -> usize {
    ((uniform01(rng) * n as f64) as usize).min(n.saturating_sub(1))
}

/// The default prompt of the final sample: the last at most 1024 characters of `text` up to
/// and including its last blank line (two `newline` ids in a row), or up to its end if it has
/// none.
pub fn prime_before_blank_line(text: &[usize], newline: usize) -> Vec<usize> {
    let end = text
        .windows(2)
        .rposition(|pair| pair == [newline, newline])
        .map_or(text.len(), |at| at + 2);
    text[end.saturating_sub(1024)..end].to_vec()
}

/// The error that stops training at a NaN or infinite loss, naming the update.
pub fn stopped(epoch: usize, update: usize, source: nn::LossError) -> String {
    let error = TrainError::Loss { update, source };
    format!("training stopped in epoch {epoch}: {error}")
}

/// One update of a language model on the batch `x` with its next-character `targets`:
/// forward, mean cross-entropy, backward, the gradient's norm clipped to `max_norm`, an optimizer
/// step, gradients cleared. Returns the loss and whether the gradient was clipped. A NaN or
/// infinite loss or gradient norm stops training with an error naming `(epoch, update)`.
pub fn update<M: Module<f32>>(
    net: &mut M,
    ws: &mut Workspace<M>,
    optimizer: &mut impl Optimizer<f32>,
    x: &Tensor<M::Input>,
    targets: &[usize],
    max_norm: f32,
    (epoch, update): (usize, usize),
) -> Result<(f32, bool), String> {
    ws.forward(net, x);
    let loss = ws
        .loss(|y, dy| softmax_cross_entropy(y, targets, Some(dy)))
        .map_err(|source| stopped(epoch, update, source))?;
    ws.backward(net);
    let norm = clip_grad_norm(net, ws.grads_mut(), max_norm);
    if !norm.is_finite() {
        return Err(format!(
            "training stopped in epoch {epoch}: update {update}: the gradient norm is {norm} \
             (the loss was {loss})"
        ));
    }
    optimizer.step(net, ws.grads());
    ws.zero_grads();
    Ok((loss, norm > max_norm))
}

/// The training losses of one epoch: their mean for the epoch's line, the mean of every 10
/// for the loss curve and the progress bar, and how many updates were clipped.
pub struct EpochLosses {
    epoch: usize,
    updates: usize,
    total: f32,
    recent: f32,
    recent_count: usize,
    pub clipped: usize,
}

impl EpochLosses {
    pub fn new(epoch: usize, updates: usize) -> Self {
        Self {
            epoch,
            updates,
            total: 0.0,
            recent: 0.0,
            recent_count: 0,
            clipped: 0,
        }
    }

    /// Adds the loss of update `update` (counted from 0 in the epoch); every 10 updates and at
    /// the epoch's end their mean goes onto `curve`, at the fractional epoch, and onto `bar`.
    pub fn add(
        &mut self,
        (loss, clipped): (f32, bool),
        update: usize,
        curve: &mut Vec<(f32, f32)>,
        bar: &ProgressBar,
    ) {
        self.total += loss;
        self.clipped += usize::from(clipped);
        (self.recent, self.recent_count) = (self.recent + loss, self.recent_count + 1);
        if self.recent_count == 10 || update + 1 == self.updates {
            let mean = self.recent / self.recent_count as f32;
            let at = (self.epoch - 1) as f32 + (update + 1) as f32 / self.updates as f32;
            curve.push((at, mean));
            bar.set_message(format!("loss {mean:.3}"));
            (self.recent, self.recent_count) = (0.0, 0);
        }
        bar.inc(1);
    }

    /// The mean training loss of the epoch.
    pub fn mean(&self) -> f32 {
        self.total / self.updates as f32
    }
}

/// Draws the training loss (means of 10 updates), the validation loss after each epoch and the
/// unigram entropy against the epoch, as a PNG at `path`.
pub fn plot_losses(
    path: &Path,
    title: &str,
    train: &[(f32, f32)],
    validation: &[(f32, f32)],
    unigram: f64,
    epochs: usize,
) -> Result<(), Box<dyn Error>> {
    let baseline = [(0.0, unigram as f32), (epochs as f32, unigram as f32)];
    crate::plot::plot_curves(
        path,
        title,
        "epoch",
        "cross-entropy (nats/char)",
        &[
            crate::plot::Curve {
                name: "train (mean of 10 updates)",
                points: train,
                markers: false,
            },
            crate::plot::Curve {
                name: "validation",
                points: validation,
                markers: true,
            },
            crate::plot::Curve {
                name: "unigram entropy",
                points: &baseline,
                markers: false,
            },
        ],
    )
}

/// The fraction of the text that trains; the rest validates (the customary 90/10 split, the
/// same for every language-model example so that their losses compare).
pub const TRAIN_FRACTION: f64 = 0.9;

/// A character text as ids, split into its training and validation parts.
pub struct Corpus {
    pub vocabulary: Vocabulary,
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    /// The unigram entropy of the training part, in nats per character.
    pub unigram: f64,
}

/// Loads the text at `path`, checks that it has the `vocabulary` characters the network
/// `model` (declared in `example`) was written for, splits it and prints what it found.
pub fn load_corpus(
    path: &Path,
    vocabulary: usize,
    model: &str,
    example: &str,
) -> Result<Corpus, Box<dyn Error>> {
    let start = std::time::Instant::now();
    let text = text::load(path)?;
    let characters = Vocabulary::from_text(&text);
    characters.expect_len(vocabulary).map_err(|e| {
        format!(
            "{}: {e} ({model} in {example} is declared with embedding({vocabulary}, ..) and \
             linear({vocabulary}))",
            path.display()
        )
    })?;
    let ids = characters.encode(&text)?;
    let split = (ids.len() as f64 * TRAIN_FRACTION) as usize;
    let (train, validation) = ids.split_at(split);
    let unigram = text::unigram_entropy(train, vocabulary);
    println!(
        "{} characters ({} distinct): {} train, {} validate; loaded in {:.2} s",
        ids.len(),
        characters.len(),
        train.len(),
        validation.len(),
        start.elapsed().as_secs_f32()
    );
    println!("unigram entropy of the training part: {unigram:.3} nats/char");
    Ok(Corpus {
        vocabulary: characters,
        train: train.to_vec(),
        validation: validation.to_vec(),
        unigram,
    })
}

/// The command-line options of the sample a language-model example ends with.
#[derive(clap::Args)]
pub struct SampleArgs {
    /// Characters to generate at the end.
    #[arg(long, default_value_t = 300)]
    pub sample: usize,
    /// The sampling temperature: below 1 more conservative, above 1 more random.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// The text the sample continues [default: the validation text up to its last blank
    /// line].
    #[arg(long)]
    pub prime: Option<String>,
}

impl SampleArgs {
    /// Rejects a temperature that is not a positive number.
    pub fn check(&self) -> Result<(), Box<dyn Error>> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err("--temperature must be positive".into());
        }
        Ok(())
    }

    /// The ids the sample continues: `--prime`, or the validation text up to its last blank
    /// line (a network that has read some text starts better than the zero state).
    pub fn prime_ids(
        &self,
        vocabulary: &Vocabulary,
        validation: &[usize],
    ) -> Result<Vec<usize>, Box<dyn Error>> {
        Ok(match &self.prime {
            Some(prime) => vocabulary
                .encode(prime)
                .map_err(|e| format!("--prime: {e}"))?,
            None => prime_before_blank_line(validation, vocabulary.id('\n').unwrap_or(0)),
        })
    }

    /// What the sample continued, for its heading: `used` characters of the prime.
    pub fn continuing(&self, used: usize) -> String {
        match self.prime {
            Some(_) => "--prime".to_string(),
            None => {
                format!("the last {used} characters before a blank line of the validation text")
            }
        }
    }
}
