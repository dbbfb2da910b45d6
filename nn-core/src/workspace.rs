//! The buffers of a training step, allocated once.

use crate::{Float, Module, Tensor};

/// Everything one training step of a module `M` needs besides the parameters: the input and
/// output activations, the output gradient, the input gradient, the module's cache and the
/// parameter gradients. Allocated once for a maximum batch; steps with that batch or a smaller
/// one do not allocate.
///
/// ```text
/// let logits = ws.forward(&mut net, &x);            // training forward, fills the cache
/// let loss = ws.loss(|y, dy| softmax_cross_entropy(y, &labels, Some(dy)))?;
/// ws.backward(&net);                                // parameter gradients accumulate
/// optimizer.step(&mut net, ws.grads());
/// ws.zero_grads();
/// ```
pub struct Workspace<M: Module<E>, E: Float = f32> {
    input: Tensor<M::Input, E>,
    output: Tensor<M::Output, E>,
    output_grad: Tensor<M::Output, E>,
    input_grad: Tensor<M::Input, E>,
    cache: M::Cache,
    grads: M::Grads,
    max_batch: usize,
}

impl<M: Module<E>, E: Float> Workspace<M, E> {
    /// Buffers for batches of up to `max_batch` samples through `module`.
    pub fn new(module: &M, max_batch: usize) -> Self {
        Self {
            input: Tensor::zeros(max_batch),
            output: Tensor::zeros(max_batch),
            output_grad: Tensor::zeros(max_batch),
            input_grad: Tensor::zeros(max_batch),
            cache: module.new_cache(max_batch),
            grads: module.new_grads(),
            max_batch,
        }
    }

    /// The largest batch these buffers hold.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Inference (no cache kept for backward), reusing the buffers.
    pub fn infer(&mut self, module: &M, x: &Tensor<M::Input, E>) -> &Tensor<M::Output, E> {
        module.forward(x, &mut self.output, &mut self.cache);
        &self.output
    }

    /// Training forward: keeps a copy of `x` and what backward needs, returns the output.
    pub fn forward(&mut self, module: &mut M, x: &Tensor<M::Input, E>) -> &Tensor<M::Output, E> {
        self.input.copy_from(x);
        module.forward_train(&self.input, &mut self.output, &mut self.cache);
        &self.output
    }

    /// Computes a loss from the last output, letting it write `dL/dy` into the output gradient.
    pub fn loss<R>(
        &mut self,
        loss: impl FnOnce(&Tensor<M::Output, E>, &mut Tensor<M::Output, E>) -> R,
    ) -> R {
        loss(&self.output, &mut self.output_grad)
    }

    /// The output of the last forward.
    pub fn output(&self) -> &Tensor<M::Output, E> {
        &self.output
    }

    /// `dL/dy` for the next backward; set it directly when the loss is computed elsewhere.
    pub fn output_grad_mut(&mut self) -> &mut Tensor<M::Output, E> {
        &mut self.output_grad
    }

    /// Back-propagates the output gradient into the parameter gradients (they accumulate).
    /// The input gradient is not computed: use `backward_to_input` when it is needed.
    pub fn backward(&mut self, module: &M) {
        module.backward(
            &self.input,
            &self.output,
            &self.output_grad,
            None,
            &mut self.cache,
            &mut self.grads,
        );
    }

    /// Like `backward`, and also returns `dL/dx`.
    pub fn backward_to_input(&mut self, module: &M) -> &Tensor<M::Input, E> {
        module.backward(
            &self.input,
            &self.output,
            &self.output_grad,
            Some(&mut self.input_grad),
            &mut self.cache,
            &mut self.grads,
        );
        &self.input_grad
    }

    /// Makes the next forward start from the recurrent state the last one reached after
    /// `steps` steps, cut from the gradient (truncated BPTT).
    pub fn carry_over(&mut self, module: &M, steps: usize) {
        module.carry_over(&mut self.cache, &self.output, steps);
    }

    /// Makes the next forward start from the zero state.
    pub fn clear_state(&mut self, module: &M) {
        module.clear_state(&mut self.cache);
    }

    /// Sets the key-padding mask of the attention layers for the next forwards: sample `b`
    /// of the batch is `lengths[b]` steps long and the steps after are padding (`None`: no
    /// padding). See [`Module::set_padding`].
    pub fn set_padding(
        &mut self,
        module: &M,
        lengths: Option<&[usize]>,
    ) -> Result<(), crate::layers::LengthsError> {
        module.set_padding(&mut self.cache, lengths)
    }

    /// The accumulated parameter gradients.
    pub fn grads(&self) -> &M::Grads {
        &self.grads
    }

    pub fn grads_mut(&mut self) -> &mut M::Grads {
        &mut self.grads
    }

    /// Sets the parameter gradients to zero (after an optimizer step).
    pub fn zero_grads(&mut self) {
        M::zero_grads(&mut self.grads);
    }
}
