//! Residual connections: `y = body(x) + shortcut(x)`, and the identity shortcut.

use std::marker::PhantomData;

use crate::init::{mix_seed, Rng};
use crate::kernels::parallel::{join, PARALLEL_VALUES};
use crate::layers::LengthsError;
use crate::module::{Buffer, BufferMut, Module, Param, ParamMut};
use crate::{join_name, Float, Shape, Tensor};

/// `y = x`: the shortcut of a residual block that keeps the shape. No parameters.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct Identity<S: Shape> {
    shape: PhantomData<S>,
}

impl<S: Shape, E: Float> Module<E> for Identity<S> {
    type Input = S;
    type Output = S;
    type Cache = ();
    type Grads = ();

    const PARAMS: usize = 0;
    const IDENTITY: bool = true;

    fn init(_rng: &mut Rng) -> Self {
        Self::default()
    }

    fn new_cache(&self, _max_batch: usize) {}

    fn new_grads(&self) {}

    fn zero_grads(_grads: &mut ()) {}

    fn forward(&self, x: &Tensor<S, E>, y: &mut Tensor<S, E>, _cache: &mut ()) {
        y.copy_from(x);
    }

    fn forward_train(&mut self, x: &Tensor<S, E>, y: &mut Tensor<S, E>, cache: &mut ()) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        _x: &Tensor<S, E>,
        _y: &Tensor<S, E>,
        dy: &Tensor<S, E>,
        dx: Option<&mut Tensor<S, E>>,
        _cache: &mut (),
        _grads: &mut (),
    ) {
        if let Some(dx) = dx {
            dx.copy_from(dy);
        }
    }

    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(Param<'_, E>)) {}

    fn visit_params_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(ParamMut<'_, E>)) {}

    fn visit_params_and_grads(&mut self, _grads: &(), _f: &mut dyn FnMut(&mut [E], &[E])) {}
}

/// A residual block: `y = body(x) + shortcut(x)`, where both branches map the same input
/// shape to the same output shape (the shortcut is `Identity` or a projection, e.g. a 1 x 1
/// strided convolution followed by batch norm).
///
/// Backward: both branches receive `dy`; `dx = dx_body + dx_shortcut`. Both branches always
/// add their parameter gradients; their input gradients are computed only when `dx` is asked.
///
/// Parameter names follow torchvision's `BasicBlock`: the body's parameters keep the block's
/// prefix (the body names its own layers, e.g. `layer1.0.conv1.weight`), the shortcut's are
/// under `downsample` (`layer1.0.downsample.0.weight`). An `Identity` shortcut has none.
#[derive(Clone, Debug, PartialEq)]
pub struct Residual<B, Sc> {
    pub body: B,
    pub shortcut: Sc,
}

/// The gradients of a residual block's two branches.
#[derive(Clone, Debug, PartialEq)]
pub struct ResidualGrads<B, Sc> {
    pub body: B,
    pub shortcut: Sc,
}

/// What a residual block's backward needs: both branches' outputs (the branches are handed
/// them again), the shortcut's input gradient (the body's goes straight into `dx`) and both
/// branches' caches. All allocated by `new_cache`.
pub struct ResidualCache<E: Float, B: Module<E>, Sc: Module<E>> {
    body_out: Tensor<B::Output, E>,
    shortcut_out: Tensor<Sc::Output, E>,
    shortcut_dx: Tensor<Sc::Input, E>,
    pub body: B::Cache,
    pub shortcut: Sc::Cache,
}

/// The shortcut's parameter prefix.
const SHORTCUT: &str = "downsample";

impl<E, B, Sc> Module<E> for Residual<B, Sc>
where
    E: Float,
    B: Module<E>,
    Sc: Module<E, Input = B::Input, Output = B::Output>,
{
    type Input = B::Input;
    type Output = B::Output;
    type Cache = ResidualCache<E, B, Sc>;
    type Grads = ResidualGrads<B::Grads, Sc::Grads>;

    const PARAMS: usize = B::PARAMS + Sc::PARAMS;

    fn init(rng: &mut Rng) -> Self {
        let body = B::init(rng);
        let shortcut = Sc::init(rng);
        Self { body, shortcut }
    }

    fn new_cache(&self, max_batch: usize) -> Self::Cache {
        // An identity shortcut's output and input gradient are never stored.
        let shortcut_batch = if Sc::IDENTITY { 0 } else { max_batch };
        ResidualCache {
            body_out: Tensor::zeros(max_batch),
            shortcut_out: Tensor::zeros(shortcut_batch),
            shortcut_dx: Tensor::zeros(shortcut_batch),
            body: self.body.new_cache(max_batch),
            shortcut: self.shortcut.new_cache(max_batch),
        }
    }

    fn new_grads(&self) -> Self::Grads {
        ResidualGrads {
            body: self.body.new_grads(),
            shortcut: self.shortcut.new_grads(),
        }
    }

    fn zero_grads(grads: &mut Self::Grads) {
        B::zero_grads(&mut grads.body);
        Sc::zero_grads(&mut grads.shortcut);
    }

    fn reseed(&self, cache: &mut Self::Cache, seed: u64) {
        self.body.reseed(&mut cache.body, mix_seed(seed, 0));
        self.shortcut.reseed(&mut cache.shortcut, mix_seed(seed, 1));
    }

    fn carry_over(&self, cache: &mut Self::Cache, output: &Tensor<Self::Output, E>, steps: usize) {
        // Each branch is handed its own output, which the cache keeps.
        self.body
            .carry_over(&mut cache.body, &cache.body_out, steps);
        self.shortcut
            .carry_over(&mut cache.shortcut, &cache.shortcut_out, steps);
        let _ = output;
    }

    fn clear_state(&self, cache: &mut Self::Cache) {
        self.body.clear_state(&mut cache.body);
        self.shortcut.clear_state(&mut cache.shortcut);
    }

    fn set_padding(
        &self,
        cache: &mut Self::Cache,
        lengths: Option<&[usize]>,
    ) -> Result<(), LengthsError> {
        self.body.set_padding(&mut cache.body, lengths)?;
        self.shortcut.set_padding(&mut cache.shortcut, lengths)
    }

    fn forward(
        &self,
        x: &Tensor<B::Input, E>,
        y: &mut Tensor<B::Output, E>,
        cache: &mut Self::Cache,
    ) {
        self.body.forward(x, &mut cache.body_out, &mut cache.body);
        Self::add_shortcut(x, y, cache, |x, out, c| self.shortcut.forward(x, out, c));
    }

    fn forward_train(
        &mut self,
        x: &Tensor<B::Input, E>,
        y: &mut Tensor<B::Output, E>,
        cache: &mut Self::Cache,
    ) {
        self.body
            .forward_train(x, &mut cache.body_out, &mut cache.body);
        let shortcut = &mut self.shortcut;
        Self::add_shortcut(x, y, cache, |x, out, c| shortcut.forward_train(x, out, c));
    }

    fn backward(
        &self,
        x: &Tensor<B::Input, E>,
        _y: &Tensor<B::Output, E>,
        dy: &Tensor<B::Output, E>,
        dx: Option<&mut Tensor<B::Input, E>>,
        cache: &mut Self::Cache,
        grads: &mut Self::Grads,
    ) {
        let wants_dx = dx.is_some();
        if !Sc::IDENTITY {
            self.shortcut.backward(
                x,
                &cache.shortcut_out,
                dy,
                wants_dx.then_some(&mut cache.shortcut_dx),
                &mut cache.shortcut,
                &mut grads.shortcut,
            );
        }
        match dx {
            Some(dx) => {
                self.body.backward(
                    x,
                    &cache.body_out,
                    dy,
                    Some(&mut *dx),
                    &mut cache.body,
                    &mut grads.body,
                );
                // dx += the shortcut's input gradient (dy itself through an identity).
                let shortcut_dx = if Sc::IDENTITY {
                    dy.as_slice()
                } else {
                    cache.shortcut_dx.as_slice()
                };
                add_into(dx.as_mut_slice(), shortcut_dx);
            }
            None => self.body.backward(
                x,
                &cache.body_out,
                dy,
                None,
                &mut cache.body,
                &mut grads.body,
            ),
        }
    }

    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(Param<'_, E>)) {
        self.body.visit_params(prefix, f);
        self.shortcut.visit_params(&join_name(prefix, SHORTCUT), f);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(ParamMut<'_, E>)) {
        self.body.visit_params_mut(prefix, f);
        self.shortcut
            .visit_params_mut(&join_name(prefix, SHORTCUT), f);
    }

    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(Buffer<'_, E>)) {
        self.body.visit_buffers(prefix, f);
        self.shortcut.visit_buffers(&join_name(prefix, SHORTCUT), f);
    }

    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(BufferMut<'_, E>)) {
        self.body.visit_buffers_mut(prefix, f);
        self.shortcut
            .visit_buffers_mut(&join_name(prefix, SHORTCUT), f);
    }

    fn visit_params_and_grads(&mut self, grads: &Self::Grads, f: &mut dyn FnMut(&mut [E], &[E])) {
        self.body.visit_params_and_grads(&grads.body, f);
        self.shortcut.visit_params_and_grads(&grads.shortcut, f);
    }

    fn visit_grads_mut(&self, grads: &mut Self::Grads, f: &mut dyn FnMut(&mut [E])) {
        self.body.visit_grads_mut(&mut grads.body, f);
        self.shortcut.visit_grads_mut(&mut grads.shortcut, f);
    }
}

/// `y = a + b`, taking `a`'s batch.
impl<B, Sc> Residual<B, Sc> {
    /// `y = body(x) + shortcut(x)`, with the body's output already in the cache and
    /// `shortcut` running the shortcut's forward. An identity shortcut is not run: `x` itself
    /// is added, with no copy through the shortcut.
    fn add_shortcut<E>(
        x: &Tensor<B::Input, E>,
        y: &mut Tensor<B::Output, E>,
        cache: &mut ResidualCache<E, B, Sc>,
        shortcut: impl FnOnce(&Tensor<B::Input, E>, &mut Tensor<B::Output, E>, &mut Sc::Cache),
    ) where
        E: Float,
        B: Module<E>,
        Sc: Module<E, Input = B::Input, Output = B::Output>,
    {
        y.set_batch(x.batch());
        let shortcut_out = if Sc::IDENTITY {
            x.as_slice()
        } else {
            shortcut(x, &mut cache.shortcut_out, &mut cache.shortcut);
            cache.shortcut_out.as_slice()
        };
        add(cache.body_out.as_slice(), shortcut_out, y.as_mut_slice());
    }
}

/// `y = a + b`, element by element.
fn add<E: Float>(a: &[E], b: &[E], y: &mut [E]) {
    assert!(a.len() == b.len() && y.len() == a.len());
    let serial = |a: &[E], b: &[E], y: &mut [E]| {
        for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
            *y = *a + *b;
        }
    };
    if y.len() < PARALLEL_VALUES {
        return serial(a, b, y);
    }
    let half = y.len() / 2;
    let ((a0, a1), (b0, b1)) = (a.split_at(half), b.split_at(half));
    let (y0, y1) = y.split_at_mut(half);
    join(|| serial(a0, b0, y0), || serial(a1, b1, y1));
}

/// `y += a`, element by element.
fn add_into<E: Float>(y: &mut [E], a: &[E]) {
    assert_eq!(y.len(), a.len());
    let serial = |y: &mut [E], a: &[E]| {
        for (y, a) in y.iter_mut().zip(a) {
            *y += *a;
        }
    };
    if y.len() < PARALLEL_VALUES {
        return serial(y, a);
    }
    let half = y.len() / 2;
    let (a0, a1) = a.split_at(half);
    let (y0, y1) = y.split_at_mut(half);
    join(|| serial(y0, a0), || serial(y1, a1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_module;
    use crate::layers::{BatchNorm2d, Conv2d, Linear, Relu};
    use crate::{Rank1, Rank3};

    #[test]
    fn output_is_body_plus_input_with_an_identity_shortcut() {
        let block = Residual {
            body: Linear::<2, 2, f64> {
                weight: vec![1.0, 2.0, 3.0, 4.0],
                bias: vec![0.0, 1.0],
            },
            shortcut: Identity::<Rank1<2>>::default(),
        };
        let x = Tensor::from_vec(vec![1.0, -1.0]).unwrap();
        let mut y = Tensor::zeros(0);
        let mut cache = block.new_cache(1);
        block.forward(&x, &mut y, &mut cache);
        assert_eq!(y.as_slice(), &[-1.0 + 1.0, 0.0 - 1.0]);
    }

    #[test]
    fn large_blocks_split_their_sums_over_the_cores_and_stay_exact() {
        // 3 samples of 20 000 values: above PARALLEL_VALUES, in halves that cut a sample.
        const N: usize = 20_000;
        const { assert!(3 * N >= PARALLEL_VALUES) };
        let block = Residual {
            body: Relu::<Rank1<N>>::default(),
            shortcut: Identity::<Rank1<N>>::default(),
        };
        let values = |seed: f64| -> Vec<f64> {
            (0..3 * N)
                .map(|i| ((i as f64 + seed) * 0.37).sin())
                .collect()
        };
        let x = Tensor::<Rank1<N>, f64>::from_vec(values(1.0)).unwrap();
        let dy = Tensor::<Rank1<N>, f64>::from_vec(values(2.0)).unwrap();
        let (mut y, mut dx) = (Tensor::zeros(3), Tensor::zeros(3));
        let mut cache = block.new_cache(3);
        block.forward(&x, &mut y, &mut cache);
        let mut grads = Module::<f64>::new_grads(&block);
        block.backward(&x, &y, &dy, Some(&mut dx), &mut cache, &mut grads);
        for i in 0..3 * N {
            let (x, dy) = (x.as_slice()[i], dy.as_slice()[i]);
            assert_eq!(y.as_slice()[i], x.max(0.0) + x, "y at {i}");
            let through_relu = if x > 0.0 { dy } else { 0.0 };
            assert_eq!(dx.as_slice()[i], through_relu + dy, "dx at {i}");
        }
    }

    /// A body made of two layers, as `network!` would generate it (simplified).
    #[derive(Clone, Debug, PartialEq)]
    struct ConvRelu<const C: usize, const D: usize> {
        conv: Conv2d<C, D, 3, 1, 1, 4, 4, 4, 4, f64>,
        relu: Relu<Rank3<D, 4, 4>>,
    }

    struct ConvReluCache {
        mid: Tensor<Rank3<3, 4, 4>, f64>,
        dmid: Tensor<Rank3<3, 4, 4>, f64>,
        conv: crate::layers::conv::ConvCache<f64>,
    }

    impl Module<f64> for ConvRelu<2, 3> {
        type Input = Rank3<2, 4, 4>;
        type Output = Rank3<3, 4, 4>;
        type Cache = ConvReluCache;
        type Grads = Conv2d<2, 3, 3, 1, 1, 4, 4, 4, 4, f64>;
        const PARAMS: usize = 2 * 3 * 9 + 3;
        fn init(rng: &mut Rng) -> Self {
            Self {
                conv: Module::<f64>::init(rng),
                relu: Default::default(),
            }
        }
        fn new_cache(&self, max_batch: usize) -> ConvReluCache {
            ConvReluCache {
                mid: Tensor::zeros(max_batch),
                dmid: Tensor::zeros(max_batch),
                conv: self.conv.new_cache(max_batch),
            }
        }
        fn new_grads(&self) -> Self::Grads {
            self.conv.new_grads()
        }
        fn zero_grads(grads: &mut Self::Grads) {
            <Conv2d<2, 3, 3, 1, 1, 4, 4, 4, 4, f64> as Module<f64>>::zero_grads(grads);
        }
        fn forward(
            &self,
            x: &Tensor<Self::Input, f64>,
            y: &mut Tensor<Self::Output, f64>,
            cache: &mut ConvReluCache,
        ) {
            self.conv.forward(x, &mut cache.mid, &mut cache.conv);
            self.relu.forward(&cache.mid, y, &mut ());
        }
        fn forward_train(
            &mut self,
            x: &Tensor<Self::Input, f64>,
            y: &mut Tensor<Self::Output, f64>,
            cache: &mut ConvReluCache,
        ) {
            self.forward(x, y, cache);
        }
        fn backward(
            &self,
            x: &Tensor<Self::Input, f64>,
            y: &Tensor<Self::Output, f64>,
            dy: &Tensor<Self::Output, f64>,
            dx: Option<&mut Tensor<Self::Input, f64>>,
            cache: &mut ConvReluCache,
            grads: &mut Self::Grads,
        ) {
            self.relu
                .backward(&cache.mid, y, dy, Some(&mut cache.dmid), &mut (), &mut ());
            self.conv
                .backward(x, &cache.mid, &cache.dmid, dx, &mut cache.conv, grads);
        }
        fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(Param<'_, f64>)) {
            self.conv.visit_params(&join_name(prefix, "conv1"), f);
        }
        fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(ParamMut<'_, f64>)) {
            self.conv.visit_params_mut(&join_name(prefix, "conv1"), f);
        }
        fn visit_params_and_grads(
            &mut self,
            grads: &Self::Grads,
            f: &mut dyn FnMut(&mut [f64], &[f64]),
        ) {
            self.conv.visit_params_and_grads(grads, f);
        }
    }

    type Projection = Residual<
        ConvRelu<2, 3>,
        Residual<Conv2d<2, 3, 1, 1, 0, 4, 4, 4, 4, f64>, Conv2d<2, 3, 3, 1, 1, 4, 4, 4, 4, f64>>,
    >;

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<Residual<Linear<4, 4, f64>, Identity<Rank1<4>>>>(3, 71);
        check_module::<Residual<Conv2d<2, 2, 3, 1, 1, 4, 4, 4, 4, f64>, Identity<Rank3<2, 4, 4>>>>(
            2, 72,
        );
        check_module::<
            Residual<
                Conv2d<2, 3, 3, 2, 1, 5, 5, 3, 3, f64>,
                Conv2d<2, 3, 1, 2, 0, 5, 5, 3, 3, f64>,
            >,
        >(2, 73);
        check_module::<Residual<BatchNorm2d<2, 3, 3, f64>, BatchNorm2d<2, 3, 3, f64>>>(3, 74);
        check_module::<Projection>(2, 75);
    }

    #[test]
    fn the_shortcut_is_named_downsample_and_the_body_keeps_the_prefix() {
        let block: Projection = Module::<f64>::init(&mut crate::init::rng(1));
        let mut names = Vec::new();
        block.visit_params("layer1.0", &mut |p| names.push(p.name.to_string()));
        assert_eq!(
            names,
            [
                "layer1.0.conv1.weight",
                "layer1.0.conv1.bias",
                "layer1.0.downsample.weight",
                "layer1.0.downsample.bias",
                "layer1.0.downsample.downsample.weight",
                "layer1.0.downsample.downsample.bias",
            ]
        );
        let identity: Residual<Linear<2, 2, f64>, Identity<Rank1<2>>> =
            Module::<f64>::init(&mut crate::init::rng(1));
        let mut names = Vec::new();
        identity.visit_params("", &mut |p| names.push(p.name.to_string()));
        assert_eq!(names, ["weight", "bias"]);
    }

    #[test]
    fn the_body_gets_parameter_gradients_without_an_input_gradient() {
        type Block = Residual<Linear<3, 3, f64>, Linear<3, 3, f64>>;
        let mut block: Block = Module::<f64>::init(&mut crate::init::rng(2));
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0]).unwrap();
        let mut y = Tensor::zeros(1);
        let mut cache = block.new_cache(1);
        block.forward_train(&x, &mut y, &mut cache);
        let dy = Tensor::from_vec(vec![1.0, -1.0, 0.5]).unwrap();
        let mut with_dx = block.new_grads();
        let mut dx = Tensor::zeros(1);
        block.backward(&x, &y, &dy, Some(&mut dx), &mut cache, &mut with_dx);
        let mut without_dx = block.new_grads();
        block.backward(&x, &y, &dy, None, &mut cache, &mut without_dx);
        assert_eq!(with_dx, without_dx);
        assert!(with_dx.body.weight.iter().any(|g| *g != 0.0));
    }
}
