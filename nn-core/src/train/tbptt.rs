//! Truncated backpropagation through time over a token stream longer than the network.
//!
//! A language model declared over `[T]` token ids unrolls `T` steps. Training it on a long
//! stream with TBPTT(k1, k2) (Williams & Peng, 1990) means: every `k1` new tokens, update the
//! parameters with gradients back-propagated through the last `k2` steps. Here `k2 = T` (the
//! network's unroll) and each update runs the network on a window of `k2` tokens that starts
//! `k1` tokens after the previous window, from the recurrent state the previous forward reached
//! at that point (carried over, its gradient cut):
//!
//! ```text
//! stream   t0 t1 t2 t3 t4 t5 t6 t7 t8 t9 ...            k1 = 2, k2 = T = 4
//! update 1 [t0 t1 t2 t3]        loss on all 4 steps, backprop 4 steps
//! update 2       [t2 t3 t4 t5]  loss on t4 t5 (new), backprop 4 steps, state after t1 carried
//! update 3             [t4 t5 t6 t7]  loss on t6 t7, state after t3 carried
//! ```
//!
//! With `k1 = k2` the windows do not overlap (every step is trained once, backprop within each
//! chunk), and with `k1 = k2 = T` over a stream of `T + 1` tokens this is exactly full BPTT.
//! `k1 < k2` gives each new step more history in its gradient at the cost of re-running
//! `k2 - k1` steps per update.

use thiserror::Error;

use crate::error::LossError;
use crate::loss::{softmax_cross_entropy, IGNORE};
use crate::optim::{clip_grad_norm, Optimizer};
use crate::{Float, Module, Rank1, Rank2, Tensor, Workspace};

/// The (k1, k2) of truncated BPTT, checked against the network's unroll length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tbptt {
    k1: usize,
    k2: usize,
    /// The global gradient norm an update may not exceed, if any.
    max_grad_norm: Option<f64>,
}

/// An invalid (k1, k2) for a network unrolling `steps` steps.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TbpttError {
    #[error("truncated BPTT needs 1 <= k1 <= k2, but k1 = {k1} and k2 = {k2}: each update must back-propagate through at least the k1 steps it trains")]
    K1OutOfRange { k1: usize, k2: usize },
    #[error("truncated BPTT back-propagates k2 = {k2} steps, but the network unrolls {steps}: declare the network over [{k2}] tokens, or use k2 = {steps}")]
    K2NotUnroll { k2: usize, steps: usize },
}

/// A training run that could not go on.
#[derive(Debug, Error, PartialEq)]
pub enum TrainError {
    #[error("update {update}: {source}")]
    Loss { update: usize, source: LossError },
    #[error("the stream has {tokens} tokens, too few for {streams} parallel streams of one window of {window} steps plus its targets")]
    StreamTooShort {
        tokens: usize,
        streams: usize,
        window: usize,
    },
    #[error("token {token} at position {position} is outside the vocabulary of {vocabulary}")]
    TokenOutOfRange {
        token: usize,
        position: usize,
        vocabulary: usize,
    },
}

impl Tbptt {
    /// Checks (k1, k2) at run time against a network unrolling `steps` steps.
    pub fn new(k1: usize, k2: usize, steps: usize) -> Result<Self, TbpttError> {
        if k1 == 0 || k1 > k2 {
            return Err(TbpttError::K1OutOfRange { k1, k2 });
        }
        if k2 != steps {
            return Err(TbpttError::K2NotUnroll { k2, steps });
        }
        Ok(Self {
            k1,
            k2,
            max_grad_norm: None,
        })
    }

    /// (k1, k2) as compile-time constants, checked when the program is built: `K1 > K2`, or a
    /// `K2` other than the network's unroll `T`, is a build error.
    pub const fn fixed<const K1: usize, const K2: usize, const T: usize>() -> Self {
        const {
            assert!(K1 >= 1 && K1 <= K2, "truncated BPTT needs 1 <= k1 <= k2");
            assert!(
                K2 == T,
                "truncated BPTT: k2 must equal the number of steps the network unrolls"
            );
        }
        Self {
            k1: K1,
            k2: K2,
            max_grad_norm: None,
        }
    }

    /// Clips every update's gradients to a global L2 norm of at most `max_norm` before the
    /// optimizer step ([`crate::optim::clip_grad_norm`], PyTorch's `clip_grad_norm_`), the
    /// usual guard against exploding gradients in recurrent networks.
    pub const fn with_max_grad_norm(mut self, max_norm: f64) -> Self {
        self.max_grad_norm = Some(max_norm);
        self
    }

    pub fn k1(&self) -> usize {
        self.k1
    }

    pub fn k2(&self) -> usize {
        self.k2
    }

    /// One pass over `tokens` with `streams` parallel streams (the text is cut into `streams`
    /// contiguous parts, one per sample of the batch). After each update `on_update` gets its
    /// number and mean loss; the mean loss of the pass is returned. A NaN or infinite loss stops
    /// the pass with the update number. Gradients are clipped first when
    /// [`Self::with_max_grad_norm`] set a bound.
    #[allow(clippy::too_many_arguments)]
    pub fn train_pass<E, M, O, const T: usize, const V: usize>(
        &self,
        model: &mut M,
        workspace: &mut Workspace<M, E>,
        optimizer: &mut O,
        tokens: &[usize],
        streams: usize,
        mut on_update: impl FnMut(usize, f64),
    ) -> Result<f64, TrainError>
    where
        E: Float,
        M: Module<E, Input = Rank1<T>, Output = Rank2<T, V>>,
        O: Optimizer<E>,
    {
        let (k1, k2) = (self.k1, self.k2);
        let part = tokens.len() / streams.max(1);
        if streams == 0 || part < k2 + 1 {
            return Err(TrainError::StreamTooShort {
                tokens: tokens.len(),
                streams,
                window: k2,
            });
        }
        if let Some((position, &token)) = tokens.iter().enumerate().find(|(_, &t)| t >= V) {
            return Err(TrainError::TokenOutOfRange {
                token,
                position,
                vocabulary: V,
            });
        }
        let updates = 1 + (part - 1 - k2) / k1;
        let mut x = Tensor::<Rank1<T>, E>::zeros(streams);
        let mut targets = vec![IGNORE; streams * T];
        let mut total = 0.0;
        for update in 0..updates {
            let start = update * k1;
            // The first window trains all its steps; later ones only the k1 new ones.
            let first_trained = if update == 0 { 0 } else { k2 - k1 };
            for s in 0..streams {
                let stream = &tokens[s * part..(s + 1) * part];
                for (value, &token) in x.sample_mut(s).iter_mut().zip(&stream[start..start + k2]) {
                    *value = E::from_f64(token as f64);
                }
                for step in 0..k2 {
                    targets[s * T + step] = if step >= first_trained {
                        stream[start + step + 1]
                    } else {
                        IGNORE
                    };
                }
            }
            workspace.forward(model, &x);
            let loss = workspace
                .loss(|y, dy| softmax_cross_entropy(y, &targets, Some(dy)))
                .map_err(|source| TrainError::Loss { update, source })?;
            workspace.backward(model);
            if let Some(max_norm) = self.max_grad_norm {
                clip_grad_norm(model, workspace.grads_mut(), E::from_f64(max_norm));
            }
            optimizer.step(model, workspace.grads());
            workspace.zero_grads();
            // The next window starts k1 steps into this one.
            workspace.carry_over(model, k1);
            total += loss.to_f64();
            on_update(update, loss.to_f64());
        }
        workspace.clear_state(model);
        Ok(total / updates as f64)
    }
}
