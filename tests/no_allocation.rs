//! A training step does not touch the heap.
//!
//! `Workspace`, the layers' caches and the optimizers' state are allocated once (on creation
//! or on the first step); every later step, including one with a smaller batch than the
//! largest seen, must run without a single allocation. This file installs a counting global
//! allocator and checks that over several steps of real networks.
//!
//! The counter is global, not per thread: the large products go to the `gemm` crate and to
//! rayon's worker threads, and an allocation there counts as much as one on the test thread.
//! That is only sound while nothing else runs, so this file holds exactly one `#[test]`,
//! nothing inside the measured regions prints or formats, and the one other thread of the
//! process, the test harness's main thread, is left out of the count.
//!
//! When a step does allocate, the failure message lists every case's counts and, for each
//! failing case, the call sites (with sizes) of its first allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use nn::prelude::*;

network! {
    /// W2: PyTorch's `Sequential(Linear(64, 32), Sigmoid(), Linear(32, 10))`.
    pub struct Small: [64] {
        linear(32), sigmoid,
        linear(10),
    }
}

network! {
    /// W1: `Sequential(Linear(784, 512), ReLU(), Linear(512, 512), ReLU(), Linear(512, 10))`.
    pub struct Large: [784] {
        linear(512), relu,
        linear(512), relu,
        linear(10),
    }
}

/// `System`, counting the allocations made (on any thread) while `COUNTING` is set.
struct CountingAllocator;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static DEALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// How many of the first counted allocations are described in the failure message.
const RECORDED: usize = 64;
/// Their sizes.
static SIZES: [AtomicUsize; RECORDED] = [const { AtomicUsize::new(0) }; RECORDED];
/// Where they came from.
static BACKTRACES: [Mutex<Option<Backtrace>>; RECORDED] = [const { Mutex::new(None) }; RECORDED];

thread_local! {
    /// Set while this thread captures a backtrace, whose own allocations are not counted.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is the process's main thread: the test harness's. It never runs
/// the code under test (libtest runs each test on a thread of its own, checked by the test),
/// but it allocates its bookkeeping for the test it has just started at a moment that can fall
/// inside a measured region.
#[cfg(target_os = "linux")]
fn on_main_thread() -> bool {
    unsafe extern "C" {
        fn gettid() -> i32;
        fn getpid() -> i32;
    }
    // SAFETY: both only return an id; the main thread's id is the process id.
    unsafe { gettid() == getpid() }
}

#[cfg(not(target_os = "linux"))]
fn on_main_thread() -> bool {
    false
}

/// Whether an allocation now is one of those being counted.
fn counted() -> bool {
    COUNTING.load(Ordering::SeqCst)
        && !CAPTURING.try_with(Cell::get).unwrap_or(false)
        && !on_main_thread()
}

impl CountingAllocator {
    fn record(&self, size: usize) {
        if !counted() {
            return;
        }
        let index = ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        if index < RECORDED {
            SIZES[index].store(size, Ordering::SeqCst);
            if CAPTURING.try_with(|c| c.set(true)).is_ok() {
                let backtrace = Backtrace::force_capture();
                if let Ok(mut slot) = BACKTRACES[index].lock() {
                    *slot = Some(backtrace);
                }
                CAPTURING.with(|c| c.set(false));
            }
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping around it only
// touches atomics, a const thread-local flag and (for the first few counted allocations) a
// backtrace whose own allocations go through this allocator with counting suppressed.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.record(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.record(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.record(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            DEALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// What the allocator saw during one measured region.
struct Measurement {
    case: String,
    steps: usize,
    allocations: usize,
    deallocations: usize,
    /// Size and backtrace of each of the first `RECORDED` allocations.
    first: Vec<(usize, Option<Backtrace>)>,
}

/// The frames of an allocation's backtrace, one per line, from the caller of the allocator
/// up to the first frame of this file (the standard library's frames are left out).
fn call_site(backtrace: &Backtrace) -> String {
    let text = backtrace.to_string();
    // (function, location) of every frame, outermost last.
    let mut frames: Vec<(&str, &str)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(location) = line.strip_prefix("at ") {
            if let Some(frame) = frames.last_mut() {
                // Paths into the registry are long: keep `crate-version/src/file.rs:line:col`.
                frame.1 = location
                    .rfind("/index.crates.io-")
                    .and_then(|i| location[i + 1..].split_once('/'))
                    .map_or(location, |(_, rest)| rest);
            }
        } else if let Some((_, function)) = line.split_once(": ") {
            frames.push((function, ""));
        }
    }
    let allocator = frames
        .iter()
        .position(|(f, _)| f.contains("__rust_alloc") || f.contains("__rust_realloc"))
        .map_or(0, |i| i + 1);
    let mut site: Vec<String> = Vec::new();
    let mut rayon_frames = 0;
    for (function, location) in &frames[allocator..] {
        let ours = function.contains("no_allocation::");
        let standard = [
            "alloc::", "<alloc::", "core::", "<core::", "std::", "<std::",
        ]
        .iter()
        .any(|p| function.starts_with(p));
        // Runs of rayon's frames (the thread pool's plumbing) are shown as one line.
        if function.starts_with("rayon") || function.starts_with("<rayon") {
            rayon_frames += 1;
            continue;
        }
        if !standard || ours {
            if rayon_frames > 0 {
                site.push(format!("[{rayon_frames} frames of rayon]"));
                rayon_frames = 0;
            }
            site.push(format!("{function} ({location})"));
        }
        if ours || function.contains("nn_core::layers::") {
            break;
        }
    }
    site.join("\n      ")
}

impl Measurement {
    fn describe(&self) -> String {
        let mut text = format!(
            "{}: {} allocations and {} deallocations in {} steps. Call sites of the first {}:",
            self.case,
            self.allocations,
            self.deallocations,
            self.steps,
            self.first.len()
        );
        // Distinct call sites, in order of first appearance, with the sizes seen there.
        let mut sites: Vec<(String, Vec<usize>)> = Vec::new();
        for (size, backtrace) in &self.first {
            let site = backtrace
                .as_ref()
                .map_or("(no backtrace)".to_string(), call_site);
            match sites.iter_mut().find(|(s, _)| *s == site) {
                Some((_, sizes)) => sizes.push(*size),
                None => sites.push((site, vec![*size])),
            }
        }
        for (site, sizes) in &sites {
            text += &format!(
                "\n  {} allocation(s) of {sizes:?} bytes from\n      {site}",
                sizes.len()
            );
        }
        text
    }
}

/// Runs `f` (`steps` training steps) with the counter on, and collects what it saw.
fn measure(case: String, steps: usize, f: impl FnOnce()) -> Measurement {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    DEALLOCATIONS.store(0, Ordering::SeqCst);
    for (size, backtrace) in SIZES.iter().zip(&BACKTRACES) {
        size.store(0, Ordering::SeqCst);
        *backtrace.lock().unwrap() = None;
    }

    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);

    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    Measurement {
        case,
        steps,
        allocations,
        deallocations: DEALLOCATIONS.load(Ordering::SeqCst),
        first: SIZES
            .iter()
            .zip(&BACKTRACES)
            .take(allocations)
            .map(|(size, backtrace)| {
                (
                    size.load(Ordering::SeqCst),
                    backtrace.lock().unwrap().take(),
                )
            })
            .collect(),
    }
}

/// A batch of inputs and class labels, filled deterministically.
struct Batch<M: Module<f32>> {
    x: Tensor<M::Input, f32>,
    labels: Vec<usize>,
}

impl<M: Module<f32>> Batch<M> {
    fn new(batch: usize, seed: u64) -> Self {
        let numel = <M::Input as Shape>::NUMEL;
        let classes = <M::Output as Shape>::NUMEL;
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let values = (0..batch * numel)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let labels = (0..batch).map(|_| next() as usize % classes).collect();
        Self {
            x: Tensor::from_vec(values).unwrap(),
            labels,
        }
    }
}

/// One full training step: forward, loss and its gradient, backward, update, zero gradients.
fn step<M: Module<f32>, O: Optimizer<f32>>(
    model: &mut M,
    ws: &mut Workspace<M, f32>,
    optimizer: &mut O,
    batch: &Batch<M>,
) -> f32 {
    ws.forward(model, black_box(&batch.x));
    let loss = ws
        .loss(|y, dy| softmax_cross_entropy(y, black_box(&batch.labels), Some(dy)))
        .expect("the loss is finite");
    ws.backward(model);
    optimizer.step(model, ws.grads());
    ws.zero_grads();
    black_box(loss)
}

/// Warms up with one step on the largest batch, then counts the allocations of one step on
/// each batch of `schedule` (indices into `batches`, whose first entry is the largest).
fn measure_training<M: Module<f32>, O: Optimizer<f32>>(
    case: String,
    seed: u64,
    mut optimizer: O,
    batches: &[Batch<M>],
    schedule: &[usize],
) -> Measurement {
    let mut model = M::init(&mut rng(seed));
    let mut ws = Workspace::new(&model, batches[0].x.batch());
    step(&mut model, &mut ws, &mut optimizer, &batches[0]);
    let mut losses = [0.0; 32];
    let measurement = measure(case, schedule.len(), || {
        for (loss, &b) in losses.iter_mut().zip(schedule) {
            *loss = step(&mut model, &mut ws, &mut optimizer, &batches[b]);
        }
    });
    assert!(schedule.len() <= losses.len());
    for loss in &losses[..schedule.len()] {
        assert!(
            loss.is_finite() && *loss > 0.0,
            "{}: loss {loss}",
            measurement.case
        );
    }
    black_box(&model);
    measurement
}

/// Inference through a workspace, after one warm-up call.
fn measure_inference<M: Module<f32>>(case: String, batches: &[Batch<M>]) -> Measurement {
    let model = M::init(&mut rng(3));
    let mut ws = Workspace::new(&model, batches[0].x.batch());
    ws.infer(&model, &batches[0].x);
    let steps = 10;
    measure(case, steps, || {
        for i in 0..steps {
            let batch = &batches[i % batches.len()];
            black_box(ws.infer(&model, black_box(&batch.x)));
        }
    })
}

/// Ten steps on the largest batch.
const FULL: [usize; 10] = [0; 10];
/// Steps alternating the largest batch and a smaller one (an epoch's last, partial batch):
/// shrinking and regrowing within the workspace's capacity must not allocate either.
const WITH_SMALLER_LAST_BATCH: [usize; 6] = [0, 1, 0, 1, 1, 0];

fn training_cases<M: Module<f32>>(
    network: &str,
    max_batch: usize,
    small_batch: usize,
) -> Vec<Measurement> {
    let batches = [
        Batch::<M>::new(max_batch, 1),
        Batch::<M>::new(small_batch, 2),
    ];
    let sgd = || Sgd::new(0.01).momentum(0.9).weight_decay(1e-4);
    let adam = || Adam::new(1e-3).weight_decay(1e-4);
    let mut cases = vec![
        measure_training(
            format!("{network}, batch {max_batch}, SGD with momentum"),
            1,
            sgd(),
            &batches,
            &FULL,
        ),
        measure_training(
            format!("{network}, batch {max_batch}, Adam"),
            2,
            adam(),
            &batches,
            &FULL,
        ),
    ];
    if small_batch != max_batch {
        cases.push(measure_training(
            format!("{network}, batches {max_batch} and {small_batch} mixed, SGD with momentum"),
            3,
            sgd(),
            &batches,
            &WITH_SMALLER_LAST_BATCH,
        ));
        cases.push(measure_training(
            format!("{network}, batches {max_batch} and {small_batch} mixed, Adam"),
            4,
            adam(),
            &batches,
            &WITH_SMALLER_LAST_BATCH,
        ));
    }
    cases.push(measure_inference(
        format!("{network}, inference, batches {max_batch} and {small_batch}"),
        &batches,
    ));
    cases
}

#[test]
fn training_steps_do_not_allocate() {
    assert!(
        !on_main_thread(),
        "the test must not run on the main thread, whose allocations are not counted"
    );
    let mut cases = Vec::new();
    cases.extend(training_cases::<Small>(
        "W2 [64] -> 32 sigmoid -> 10",
        32,
        20,
    ));
    // Small enough that every product takes the hand-written loops, not the `gemm` crate.
    cases.extend(training_cases::<Small>(
        "W2 [64] -> 32 sigmoid -> 10",
        16,
        5,
    ));
    cases.extend(training_cases::<Small>("W2 [64] -> 32 sigmoid -> 10", 1, 1));
    cases.extend(training_cases::<Large>(
        "W1 [784] -> 512 relu -> 512 relu -> 10",
        64,
        20,
    ));

    let failures: Vec<String> = cases
        .iter()
        .filter(|m| m.allocations > 0 || m.deallocations > 0)
        .map(Measurement::describe)
        .collect();
    let summary: Vec<String> = cases
        .iter()
        .map(|m| {
            format!(
                "  {}: {} allocations, {} deallocations in {} steps",
                m.case, m.allocations, m.deallocations, m.steps
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "training steps allocated:\n{}\n\n{}",
        summary.join("\n"),
        failures.join("\n\n")
    );
}
