//! VGG16 (configuration D), declared with `network!` and checked at compile time: prints its
//! summary, then times forward passes at batch 1 on a 224 x 224 image.
//!
//! ```sh
//! cargo run --release --example vgg16
//! cargo run --release --example vgg16 -- --weights vgg16.safetensors --runs 5
//! ```
//!
//! Its parameter names are torchvision's `vgg16().state_dict()` keys, so weights exported from
//! PyTorch load without renaming:
//!
//! ```python
//! import torchvision, safetensors.torch
//! safetensors.torch.save_file(torchvision.models.vgg16(weights="DEFAULT").state_dict(), "vgg16.safetensors")
//! ```

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use nn::models::Vgg16;
use nn::prelude::*;

// The shape arithmetic is done by the macro: these are checked when this file compiles.
const _: () = assert!(Vgg16::<f32>::PARAMS == 138_357_544);
const _: () = assert!(Vgg16::<f32>::OUTPUT[0] == 1000);

/// Time VGG16's forward pass.
#[derive(Parser)]
struct Args {
    /// Weights saved from torchvision as safetensors (random PyTorch-style init otherwise).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Timed forward passes after one warm-up.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    println!("{}", Vgg16::<f32>::summary());

    let started = Instant::now();
    let mut net = Vgg16::<f32>::new(0);
    if let Some(path) = &args.weights {
        nn::io::load(&mut net, path).map_err(|e| e.to_string())?;
        println!("loaded {}", path.display());
    }
    println!(
        "initialised {} parameters in {:.2} s",
        Vgg16::<f32>::PARAMS,
        started.elapsed().as_secs_f64()
    );

    // A deterministic image with values in [-1, 1].
    let pixels: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i * 7919 % 2001) as f32 / 1000.0) - 1.0)
        .collect();
    let image = Tensor::<Rank3<3, 224, 224>>::from_vec(pixels)?;
    let mut ws = net.workspace(1);
    ws.infer(&net, &image); // warm-up: scratch buffers grow once
    let mut times = Vec::new();
    for _ in 0..args.runs.max(1) {
        let start = Instant::now();
        let logits = ws.infer(&net, &image);
        times.push(start.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(logits);
    }
    times.sort_by(f64::total_cmp);
    let logits = ws.infer(&net, &image);
    let class = logits.argmax()[0];
    let flops = 2.0 * Vgg16::<f32>::summary().total_macs() as f64;
    let median = times[times.len() / 2];
    println!("predicted class {class}");
    println!(
        "forward pass, batch 1, 224 x 224: median {median:.1} ms over {} runs \
         ({:.1} GFLOP/s counted as direct convolutions; Winograd's do fewer)",
        times.len(),
        flops / median / 1e6
    );
    Ok(())
}
