//! Fork-join over both cores with one persistent worker thread and no allocation per call.
//!
//! General thread pools allocate when work is injected from outside them (rayon's queue
//! grows in blocks), and a training step must not allocate; this machine has two cores, so a
//! single helper thread is all a product needs. `join(a, b)` runs `a` on the calling thread
//! and `b` on the worker, and returns when both are done. If the worker is already in use
//! (a nested or concurrent `join`), or the machine has one core, both run on the caller.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long either side spins before sleeping: jobs arrive in bursts during a training step,
/// and waking a sleeping thread costs several microseconds. The serial stretches between the
/// parallel products of a small CNN last 50-200 µs: spinning 50 µs let the worker fall asleep
/// between most of them, and 200 µs took LeNet's training step (W3) from 9-10 to 7-7.5 ms.
const SPIN: Duration = Duration::from_micros(200);

/// Elementwise and row passes of the layers (activations, layer norm, residual sums, bias
/// gradients, cross-entropy) over at least this many values split their work between the
/// cores: one threshold for all of them.
pub const PARALLEL_VALUES: usize = 1 << 15;

/// A job handed to the worker: a type- and lifetime-erased `&mut dyn FnMut()`.
struct JobPtr(*mut (dyn FnMut() + Send + 'static));

// SAFETY: the pointee is `Send` (required by `join`), and the pointer is only dereferenced by
// the worker between `join` publishing it and `join` observing completion (see `join`).
unsafe impl Send for JobPtr {}

#[derive(Default)]
struct Slot {
    job: Option<JobPtr>,
    done: bool,
    panic: Option<Box<dyn std::any::Any + Send>>,
    /// Whether the worker, or the caller of `join`, sleeps on its condition variable. The
    /// other side wakes it only then, after releasing the lock: a notification is a system
    /// call, and one made while holding the lock kept the spinning side waiting for the lock.
    worker_asleep: bool,
    caller_asleep: bool,
}

struct Worker {
    slot: Mutex<Slot>,
    wake: Condvar,
    finished: Condvar,
    /// Set while a job waits in the slot or runs, so both sides can spin without the lock.
    pending: AtomicBool,
    complete: AtomicBool,
    /// Held by the `join` that uses the worker.
    busy: AtomicBool,
}

fn worker() -> Option<&'static Worker> {
    static WORKER: OnceLock<Option<&'static Worker>> = OnceLock::new();
    *WORKER.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 {
            return None;
        }
        let worker: &'static Worker = Box::leak(Box::new(Worker {
            slot: Mutex::new(Slot::default()),
            wake: Condvar::new(),
            finished: Condvar::new(),
            pending: AtomicBool::new(false),
            complete: AtomicBool::new(false),
            busy: AtomicBool::new(false),
        }));
        std::thread::Builder::new()
            .name("nn-worker".into())
            .spawn(move || worker.run())
            .ok()?;
        Some(worker)
    })
}

impl Worker {
    fn run(&self) {
        loop {
            let spin_until = Instant::now() + SPIN;
            while !self.pending.load(Ordering::Acquire) && Instant::now() < spin_until {
                std::hint::spin_loop();
            }
            let job = {
                let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(job) = slot.job.take() {
                        break job;
                    }
                    slot.worker_asleep = true;
                    slot = self.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
                    slot.worker_asleep = false;
                }
            };
            // SAFETY: `join` keeps the closure alive and does not touch it until it has seen
            // `done`, which is set below, after the last use of the pointer.
            let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)() }));
            let caller_asleep = {
                let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
                slot.done = true;
                slot.panic = result.err();
                self.pending.store(false, Ordering::Release);
                self.complete.store(true, Ordering::Release);
                slot.caller_asleep
            };
            if caller_asleep {
                self.finished.notify_one();
            }
        }
    }

    /// Blocks until the published job has finished; returns its panic, if any.
    fn wait(&self) -> Option<Box<dyn std::any::Any + Send>> {
        let spin_until = Instant::now() + SPIN;
        while !self.complete.load(Ordering::Acquire) && Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        while !slot.done {
            slot.caller_asleep = true;
            slot = self.finished.wait(slot).unwrap_or_else(|e| e.into_inner());
            slot.caller_asleep = false;
        }
        slot.done = false;
        slot.panic.take()
    }
}

/// Whether a `join` called now would run its halves on two cores: there is a worker and no
/// other `join` holds it (so not inside one). A hint, for work whose split costs something
/// even when both halves then run on the caller.
pub fn second_core_idle() -> bool {
    worker().is_some_and(|worker| !worker.busy.load(Ordering::Relaxed))
}

/// Runs `a` and `b` in parallel (when a core is free) and returns when both have finished.
pub fn join(a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    let Some(worker) = worker() else {
        a();
        b();
        return;
    };
    if worker
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        a();
        b();
        return;
    }
    let mut b = Some(b);
    let mut run_b = move || {
        if let Some(b) = b.take() {
            b()
        }
    };
    let job: &mut (dyn FnMut() + Send + '_) = &mut run_b;
    // SAFETY: only the lifetime is erased. The worker dereferences the pointer only until it
    // sets `done`, and this function does not return (or unwind) before `worker.wait()` has
    // observed `done`: `a`'s panic is caught and re-raised after the wait. So the closure on
    // this stack frame outlives every use of the pointer.
    let job: *mut (dyn FnMut() + Send + 'static) = unsafe { std::mem::transmute(job) };
    let worker_asleep = {
        let mut slot = worker.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.job = Some(JobPtr(job));
        worker.complete.store(false, Ordering::Release);
        worker.pending.store(true, Ordering::Release);
        slot.worker_asleep
    };
    if worker_asleep {
        worker.wake.notify_one();
    }
    let result_a = catch_unwind(AssertUnwindSafe(a));
    let panic_b = worker.wait();
    worker.busy.store(false, Ordering::Release);
    if let Err(panic) = result_a {
        resume_unwind(panic);
    }
    if let Some(panic) = panic_b {
        resume_unwind(panic);
    }
}

/// Runs `work(i, piece)` for the pieces `0..count` of `all`, on both cores: this one takes
/// pieces from the front, the worker from the back, one at a time, until they meet. Where
/// fixed halves would leave the faster core waiting, the faster core here takes more pieces;
/// and each core still walks through memory in one direction. `split(p, n)` cuts `p`, which
/// holds some consecutive pieces, after its first `n` (a slice by `split_at_mut`, a matrix
/// view by rows, or a tuple of either).
pub fn meet<P: Send>(
    count: usize,
    all: P,
    split: impl Fn(P, usize) -> (P, P) + Sync,
    work: impl Fn(usize, P) + Sync,
) {
    if count == 0 {
        return;
    }
    // The pieces no core has taken yet, and the index of the first of them.
    let untaken = Mutex::new(Some((all, 0, count)));
    let take = |from_front: bool| loop {
        let (index, piece) = {
            let mut untaken = untaken.lock().unwrap_or_else(|e| e.into_inner());
            let Some((rest, first, end)) = untaken.take() else {
                return;
            };
            if from_front {
                let (piece, rest) = split(rest, 1);
                if first + 1 < end {
                    *untaken = Some((rest, first + 1, end));
                }
                (first, piece)
            } else {
                let (rest, piece) = split(rest, end - first - 1);
                if first < end - 1 {
                    *untaken = Some((rest, first, end - 1));
                }
                (end - 1, piece)
            }
        };
        work(index, piece);
    };
    join(|| take(true), || take(false));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn both_halves_run_and_see_borrowed_data() {
        let mut left = vec![0u64; 1000];
        let mut right = vec![0u64; 1000];
        for round in 0..200u64 {
            join(
                || left.iter_mut().for_each(|v| *v += round),
                || right.iter_mut().for_each(|v| *v += 2 * round),
            );
        }
        let total: u64 = (0..200).sum();
        assert!(left.iter().all(|v| *v == total));
        assert!(right.iter().all(|v| *v == 2 * total));
    }

    #[test]
    fn nested_and_concurrent_joins_fall_back_to_the_caller() {
        let count = AtomicUsize::new(0);
        let bump = || {
            count.fetch_add(1, Ordering::Relaxed);
        };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        join(|| join(bump, bump), bump);
                    }
                });
            }
        });
        assert_eq!(count.load(Ordering::Relaxed), 4 * 100 * 3);
    }

    #[test]
    fn a_sleeping_worker_and_a_sleeping_caller_are_woken() {
        for _ in 0..3 {
            // Past the spin: the worker has gone to sleep when the job arrives.
            std::thread::sleep(SPIN * 5);
            let mut ran = false;
            join(|| (), || ran = true);
            assert!(ran);
            // A long job on the worker: the caller sleeps until it ends.
            let mut slept = false;
            join(
                || (),
                || {
                    std::thread::sleep(SPIN * 5);
                    slept = true;
                },
            );
            assert!(slept);
        }
    }

    #[test]
    fn meet_hands_every_piece_to_exactly_one_core() {
        // Pieces of 3 values; each piece is given its own index. Alone and nested in a join
        // (one core then takes every piece), for no piece, one, two and many.
        for nested in [false, true] {
            for count in [0, 1, 2, 7, 100] {
                let mut values = vec![usize::MAX; 3 * count];
                let visits = AtomicUsize::new(0);
                let mut run = || {
                    meet(
                        count,
                        &mut values[..],
                        |piece, n| piece.split_at_mut(3 * n),
                        |i, piece: &mut [usize]| {
                            assert_eq!(piece.len(), 3);
                            piece.fill(i);
                            visits.fetch_add(1, Ordering::Relaxed);
                        },
                    )
                };
                if nested {
                    join(run, || ());
                } else {
                    run();
                }
                assert_eq!(visits.load(Ordering::Relaxed), count, "{count} pieces");
                for (at, value) in values.iter().enumerate() {
                    assert_eq!(*value, at / 3, "{count} pieces, nested {nested}");
                }
            }
        }
    }

    #[test]
    fn a_panic_on_the_worker_reaches_the_caller() {
        let result = catch_unwind(|| join(|| (), || panic!("worker side")));
        assert!(result.is_err());
        // The worker is usable afterwards.
        let mut hit = false;
        join(|| (), || hit = true);
        assert!(hit);
    }
}
