//! The one interface every layer and every generated network implements.
//!
//! A training step is `forward_train` through every module (each keeps what its backward
//! needs in its `Cache`), then `backward` in reverse order. The caller owns the activations
//! between modules, so a module's backward is given its own input `x` and output `y` again;
//! the cache holds only what cannot be recomputed cheaply from them (dropout masks, pooling
//! indices, gate values). Caches and gradients are allocated once, for the largest batch, and
//! reused: a training step does not allocate.

use crate::init::Rng;
use crate::layers::LengthsError;
use crate::{Float, Shape, Tensor};

/// A named parameter tensor, as the visitors hand it out.
pub struct Param<'a, E> {
    /// PyTorch's name for it, e.g. `classifier.3.bias`.
    pub name: &'a str,
    /// PyTorch's shape for it, e.g. `[out, in]` for a linear weight.
    pub shape: &'a [usize],
    pub values: &'a [E],
}

/// A named parameter tensor to be written (loading weights).
pub struct ParamMut<'a, E> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub values: &'a mut [E],
}

/// A state tensor that is not trained but belongs to the model's state (PyTorch's buffers,
/// e.g. batch norm's `running_mean`): saved and loaded with the weights.
pub struct Buffer<'a, E> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub values: BufferValues<'a, E>,
}

/// The values of a buffer: floating point, or a count stored as int64 like PyTorch's
/// `num_batches_tracked` (shape `[]`).
pub enum BufferValues<'a, E> {
    Float(&'a [E]),
    Int64(&'a [i64]),
}

/// A buffer to be written (loading weights).
pub struct BufferMut<'a, E> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub values: BufferValuesMut<'a, E>,
}

pub enum BufferValuesMut<'a, E> {
    Float(&'a mut [E]),
    Int64(&'a mut [i64]),
}

/// A layer or a whole network: a differentiable map from `Input` to `Output` samples.
pub trait Module<E: Float>: Sized + Send + Sync {
    /// The shape of one input sample.
    type Input: Shape;
    /// The shape of one output sample.
    type Output: Shape;
    /// What a training forward keeps for the backward pass, sized for a maximum batch.
    type Cache: Send;
    /// The gradients of the parameters. Parametric layers use their own type, so a gradient has
    /// exactly the layout (and the names) of the parameters it belongs to.
    type Grads: Send;

    /// The number of trainable parameters.
    const PARAMS: usize;

    /// Whether the module passes its input through unchanged (`y = x`, `dx = dy`): a residual
    /// block then adds its input to the body's output itself instead of copying it through
    /// the shortcut and back.
    const IDENTITY: bool = false;

    /// PyTorch's default initialisation, drawn from `rng`.
    fn init(rng: &mut Rng) -> Self;

    /// A cache able to hold a training forward of up to `max_batch` samples.
    fn new_cache(&self, max_batch: usize) -> Self::Cache;

    /// Zero gradients.
    fn new_grads(&self) -> Self::Grads;

    /// Sets every gradient to zero.
    fn zero_grads(grads: &mut Self::Grads);

    /// Inference: `y = f(x)` (dropout off, normalisation with running statistics). The cache
    /// serves as scratch space for intermediate activations.
    fn forward(
        &self,
        x: &Tensor<Self::Input, E>,
        y: &mut Tensor<Self::Output, E>,
        cache: &mut Self::Cache,
    );

    /// Training forward: `y = f(x)`, keeping in `cache` what `backward` needs.
    fn forward_train(
        &mut self,
        x: &Tensor<Self::Input, E>,
        y: &mut Tensor<Self::Output, E>,
        cache: &mut Self::Cache,
    );

    /// Back-propagates `dy = dL/dy`: adds the parameter gradients to `grads` (gradients
    /// accumulate, as in PyTorch) and, when `dx` is given, writes `dL/dx` into it.
    /// `x` and `y` are the input and output of the matching `forward_train`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: &Tensor<Self::Input, E>,
        y: &Tensor<Self::Output, E>,
        dy: &Tensor<Self::Output, E>,
        dx: Option<&mut Tensor<Self::Input, E>>,
        cache: &mut Self::Cache,
        grads: &mut Self::Grads,
    );

    /// Calls `f` on every parameter with its full name (`prefix` + PyTorch's local name).
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(Param<'_, E>));

    /// Calls `f` on every parameter, mutably, with its full name.
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(ParamMut<'_, E>));

    /// Layers that draw random numbers in training (dropout): restarts their generator from
    /// `seed`. Generated networks give each such layer its own seed, derived from its position.
    fn reseed(&self, _cache: &mut Self::Cache, _seed: u64) {}

    /// Recurrent layers: makes the next forward start from the state reached after `steps` steps
    /// of the last forward, carried over but cut from the gradient (truncated BPTT). Other
    /// modules have no state and do nothing.
    /// `output` is the output of that forward.
    fn carry_over(
        &self,
        _cache: &mut Self::Cache,
        _output: &Tensor<Self::Output, E>,
        _steps: usize,
    ) {
    }

    /// Recurrent layers: makes the next forward start from the zero state.
    fn clear_state(&self, _cache: &mut Self::Cache) {}

    /// Attention layers: sets the key-padding mask of the next forwards, one length per
    /// sample (`None`: no padding, every step is real). Sample `b` attends only to its steps
    /// `0..lengths[b]`; see [`crate::layers::MultiHeadAttention::set_lengths`]. Generated
    /// networks pass it to every layer; layers without a mask ignore it. On error nothing
    /// changes.
    fn set_padding(
        &self,
        _cache: &mut Self::Cache,
        _lengths: Option<&[usize]>,
    ) -> Result<(), LengthsError> {
        Ok(())
    }

    /// Calls `f` on every buffer (non-trained state saved with the weights) with its full name.
    /// Most layers have none.
    fn visit_buffers(&self, _prefix: &str, _f: &mut dyn FnMut(Buffer<'_, E>)) {}

    /// Calls `f` on every buffer, mutably.
    fn visit_buffers_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(BufferMut<'_, E>)) {}

    /// Calls `f` on every gradient tensor, mutably, in the order of `visit_params` (gradient
    /// clipping). Modules with parameters must override it; `tests` check that they do.
    fn visit_grads_mut(&self, _grads: &mut Self::Grads, _f: &mut dyn FnMut(&mut [E])) {}

    /// Calls `f` on every (parameter, gradient) pair, in the order of `visit_params`.
    /// This is the optimizers' path: it builds no names and does not allocate.
    fn visit_params_and_grads(&mut self, grads: &Self::Grads, f: &mut dyn FnMut(&mut [E], &[E]));
}

/// Joins a parameter prefix and a local name the way PyTorch's state_dict does.
/// An empty `name` (a layer that shares its parent's name, like a residual block's addition)
/// adds nothing.
pub fn join_name(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{name}"),
    }
}

/// The four parameter visitors of a layer (`visit_params`, `visit_params_mut`,
/// `visit_params_and_grads`, `visit_grads_mut`), for use inside `impl Module<E> for ..`:
/// `parameters!(weight: "weight" => Self::WEIGHT_SHAPE, bias: "bias" => Self::BIAS_SHAPE);`
/// lists each parameter's field (in the layer and in its gradient type), its PyTorch name and
/// its shape, in PyTorch's order.
#[macro_export]
#[doc(hidden)]
macro_rules! parameters {
    ($($field:ident: $name:literal => $shape:expr),+ $(,)?) => {
        fn visit_params(&self, prefix: &str, f: &mut dyn FnMut($crate::Param<'_, E>)) {
            $(f($crate::Param { name: &$crate::join_name(prefix, $name), shape: &$shape, values: &self.$field });)+
        }

        fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut($crate::ParamMut<'_, E>)) {
            $(f($crate::ParamMut { name: &$crate::join_name(prefix, $name), shape: &$shape, values: &mut self.$field });)+
        }

        fn visit_params_and_grads(&mut self, grads: &Self::Grads, f: &mut dyn FnMut(&mut [E], &[E])) {
            $(f(&mut self.$field, &grads.$field);)+
        }

        fn visit_grads_mut(&self, grads: &mut Self::Grads, f: &mut dyn FnMut(&mut [E])) {
            $(f(&mut grads.$field);)+
        }
    };
}
