//! Stage 3: code generation. Every type written here carries only literal const-generic
//! arguments computed by `check`, so the core never does shape arithmetic in a type.
//!
//! For `pub struct Mlp: [64] { linear(32), sigmoid, linear(10) }` this emits
//! - `struct Mlp<E>`, one public field per layer (`layer_0`, or `features_3` inside a group);
//! - `MlpCache<E>`: the activations between layers, their gradients and each layer's cache;
//! - `MlpGrads<E>`: one gradient per parametric layer, laid out like its parameters;
//! - `impl Module<E> for Mlp<E>`: init, forward, training forward, backward, visitors;
//! - inherent `INPUT`, `OUTPUT`, `PARAMS`, `new(seed)`, `summary()`, `workspace()`, `predict()`.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use syn::Ident;

use crate::check::{Checked, CheckedLayer, Kind, ResidualBlock};
use crate::layers::{Activation, Cell, LayerKind};

/// The core's shape type for a list of dimensions.
fn shape_type(dims: &[usize]) -> TokenStream {
    let lits = dims.iter().map(|d| Literal::usize_unsuffixed(*d));
    match dims.len() {
        1 => quote!(::nn::Rank1<#(#lits),*>),
        2 => quote!(::nn::Rank2<#(#lits),*>),
        3 => quote!(::nn::Rank3<#(#lits),*>),
        n => unreachable!("check only produces shapes of rank 1 to 3, not {n}"),
    }
}

fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

/// The core's module type implementing a checked layer; nested networks (residual bodies and
/// shortcuts) are generated into `extra`.
fn layer_type(layer: &CheckedLayer, owner: &Ident, extra: &mut Vec<TokenStream>) -> TokenStream {
    let span = layer.tokens.span();
    let input = &layer.input;
    let output = &layer.output;
    let in_shape = shape_type(input);
    match &layer.kind {
        Kind::Residual(block) => residual_type(layer, block, owner, extra),
        Kind::Layer(kind) => match *kind {
            LayerKind::Linear {
                outputs,
                tied: Some(_),
                ..
            } => {
                let (d, v) = (lit(*input.last().expect("rank >= 1")), lit(outputs));
                quote_spanned!(span=> ::nn::layers::TiedLinear<#d, #v>)
            }
            LayerKind::Linear { outputs, .. } if input.len() == 2 => {
                let (t, i, o) = (lit(input[0]), lit(input[1]), lit(outputs));
                quote_spanned!(span=> ::nn::layers::SequenceLinear<#t, #i, #o, E>)
            }
            LayerKind::Linear { outputs, .. } => {
                let (i, o) = (lit(input[0]), lit(outputs));
                quote_spanned!(span=> ::nn::layers::Linear<#i, #o, E>)
            }
            LayerKind::Activation(activation) => {
                let function = activation_function(activation);
                quote_spanned!(span=> ::nn::layers::Activation<::nn::layers::#function, #in_shape>)
            }
            LayerKind::Softmax => quote_spanned!(span=> ::nn::layers::Softmax<#in_shape>),
            LayerKind::Flatten => {
                let n = lit(output[0]);
                quote_spanned!(span=> ::nn::layers::Flatten<#in_shape, #n>)
            }
            LayerKind::Dropout { per_million } => {
                let p = Literal::u32_unsuffixed(per_million);
                quote_spanned!(span=> ::nn::layers::Dropout<#in_shape, #p>)
            }
            LayerKind::Conv2d {
                outputs,
                kernel,
                stride,
                padding,
                ..
            } => {
                let (ci, co, k, s, p) = (
                    lit(input[0]),
                    lit(outputs),
                    lit(kernel),
                    lit(stride),
                    lit(padding),
                );
                let (h, w, oh, ow) = (lit(input[1]), lit(input[2]), lit(output[1]), lit(output[2]));
                quote_spanned!(span=> ::nn::layers::Conv2d<#ci, #co, #k, #s, #p, #h, #w, #oh, #ow, E>)
            }
            LayerKind::MaxPool2d { kernel, stride } | LayerKind::AvgPool2d { kernel, stride } => {
                let pool = if matches!(kind, LayerKind::MaxPool2d { .. }) {
                    quote!(MaxPool2d)
                } else {
                    quote!(AvgPool2d)
                };
                let (c, k, s) = (lit(input[0]), lit(kernel), lit(stride));
                let (h, w, oh, ow) = (lit(input[1]), lit(input[2]), lit(output[1]), lit(output[2]));
                quote_spanned!(span=> ::nn::layers::#pool<#c, #k, #s, #h, #w, #oh, #ow>)
            }
            LayerKind::AdaptiveAvgPool2d { .. } => {
                let (c, h, w, oh, ow) = (
                    lit(input[0]),
                    lit(input[1]),
                    lit(input[2]),
                    lit(output[1]),
                    lit(output[2]),
                );
                quote_spanned!(span=> ::nn::layers::AdaptiveAvgPool2d<#c, #h, #w, #oh, #ow>)
            }
            LayerKind::BatchNorm2d { .. } => {
                let (c, h, w) = (lit(input[0]), lit(input[1]), lit(input[2]));
                quote_spanned!(span=> ::nn::layers::BatchNorm2d<#c, #h, #w, E>)
            }
            LayerKind::Embedding { vocab, dim } => {
                let (v, d, t) = (lit(vocab), lit(dim), lit(input[0]));
                quote_spanned!(span=> ::nn::layers::Embedding<#v, #d, #t, E>)
            }
            LayerKind::Recurrent { cell, hidden, .. } => {
                let (t, d, h) = (lit(input[0]), lit(input[1]), lit(hidden));
                let cell = match cell {
                    Cell::Rnn => quote!(Rnn),
                    Cell::Lstm => quote!(Lstm),
                    Cell::Gru => quote!(Gru),
                };
                quote_spanned!(span=> ::nn::layers::#cell<#t, #d, #h, E>)
            }
            LayerKind::LayerNorm { eps_e12 } => {
                let eps = Literal::u64_unsuffixed(eps_e12);
                quote_spanned!(span=> ::nn::layers::LayerNorm<#in_shape, #eps, E>)
            }
            LayerKind::MultiHeadAttention {
                heads,
                causal,
                bert_names,
            } => {
                let (t, d, h) = (lit(input[0]), lit(input[1]), lit(heads));
                let names = if bert_names {
                    quote!(BertNames)
                } else {
                    quote!(PackedNames)
                };
                quote_spanned!(span=> ::nn::layers::MultiHeadAttention<#t, #d, #h, #causal, E, ::nn::layers::#names>)
            }
            LayerKind::LearnedPositions { rows } => {
                let (t, d) = (lit(input[0]), lit(input[1]));
                let rows = lit(if rows == 0 { input[0] } else { rows });
                quote_spanned!(span=> ::nn::layers::LearnedPositions<#t, #d, #rows, E>)
            }
            LayerKind::TokenTypeEmbedding { types } => {
                let (t, d, n) = (lit(input[0]), lit(input[1]), lit(types));
                quote_spanned!(span=> ::nn::layers::TokenTypeEmbedding<#t, #d, #n, E>)
            }
            LayerKind::SinusoidalPositions => {
                let (t, d) = (lit(input[0]), lit(input[1]));
                quote_spanned!(span=> ::nn::layers::SinusoidalPositions<#t, #d>)
            }
            LayerKind::Last => {
                let (t, h) = (lit(input[0]), lit(input[1]));
                quote_spanned!(span=> ::nn::layers::LastStep<#t, #h>)
            }
        },
    }
}

fn activation_function(activation: Activation) -> TokenStream {
    match activation {
        Activation::Relu => quote!(ReluFn),
        Activation::Sigmoid => quote!(SigmoidFn),
        Activation::Tanh => quote!(TanhFn),
        Activation::Gelu => quote!(GeluFn),
        Activation::GeluTanh => quote!(GeluTanhFn),
    }
}

/// `Residual<Body, Shortcut>`, with body and shortcut generated as networks of their own,
/// wrapped with its activation in a two-layer network when it has one.
fn residual_type(
    layer: &CheckedLayer,
    block: &ResidualBlock,
    owner: &Ident,
    extra: &mut Vec<TokenStream>,
) -> TokenStream {
    let base = format!("{owner}_{}", layer.field);
    let sub = |suffix: &str, layers: &[CheckedLayer], extra: &mut Vec<TokenStream>| {
        let name = format_ident!("{}{}", base, suffix);
        let output = layers
            .last()
            .map_or(layer.input.clone(), |l| l.output.clone());
        let net = Net {
            name: name.clone(),
            vis: quote!(pub),
            attrs: quote!(#[doc(hidden)]),
            input: &layer.input,
            layers,
            output,
        };
        extra.push(generate_network(&net));
        quote!(#name<E>)
    };
    if block.activation.is_none() {
        let body = sub("Body", &block.body, extra);
        let shortcut = match &block.shortcut {
            Some(layers) => sub("Shortcut", layers, extra),
            None => {
                let shape = shape_type(&layer.input);
                quote!(::nn::layers::Identity<#shape>)
            }
        };
        return quote!(::nn::layers::Residual<#body, #shortcut>);
    }
    let activation = block.activation.expect("handled above");
    // `residual(relu)`: the addition and its activation share the block's name, as in
    // torchvision's BasicBlock, so both sit at path "" inside a two-layer network.
    let inner = CheckedLayer {
        path: String::new(),
        field: format_ident!("residual"),
        kind: Kind::Residual(ResidualBlock {
            body: block.body.clone(),
            shortcut: block.shortcut.clone(),
            activation: None,
        }),
        ..layer.clone()
    };
    let after = CheckedLayer {
        path: String::new(),
        field: format_ident!("activation"),
        kind: Kind::Layer(LayerKind::Activation(activation)),
        input: layer.output.clone(),
        params: 0,
        macs: 0,
        ..layer.clone()
    };
    let name = format_ident!("{}Block", base);
    let layers = [inner, after];
    let net = Net {
        name: name.clone(),
        vis: quote!(pub),
        attrs: quote!(#[doc(hidden)]),
        input: &layer.input,
        layers: &layers,
        output: layer.output.clone(),
    };
    extra.push(generate_network(&net));
    quote!(#name<E>)
}

fn usize_array(dims: &[usize]) -> TokenStream {
    let lits = dims.iter().map(|d| Literal::usize_unsuffixed(*d));
    quote!([#(#lits),*])
}

/// One network to emit: the top-level one, or a residual body, shortcut or block.
struct Net<'a> {
    name: Ident,
    vis: TokenStream,
    attrs: TokenStream,
    input: &'a [usize],
    layers: &'a [CheckedLayer],
    output: Vec<usize>,
}

pub fn generate(checked: &Checked) -> TokenStream {
    let vis = &checked.vis;
    let attrs = &checked.attrs;
    generate_network(&Net {
        name: checked.name.clone(),
        vis: quote!(#vis),
        attrs: quote!(#(#attrs)*),
        input: &checked.input,
        layers: &checked.layers,
        output: checked.output.clone(),
    })
}

/// The summary rows of some layers, nested ones (residual bodies) included.
fn summary_rows(layers: &[CheckedLayer], rows: &mut Vec<TokenStream>) {
    for l in layers {
        let mut params = l.params;
        let mut macs = l.macs;
        if let Kind::Residual(block) = &l.kind {
            summary_rows(&block.body, rows);
            if let Some(shortcut) = &block.shortcut {
                summary_rows(shortcut, rows);
            }
            // The rows above carry the block's parameters.
            (params, macs) = (0, 0);
        }
        let (path, display, note) = (&l.full_path, &l.display, &l.note);
        let output = usize_array(&l.output);
        let (params, macs) = (lit(params), lit(macs));
        rows.push(quote!(::nn::SummaryRow { name: #path, layer: #display, output: &#output, params: #params, macs: #macs, note: #note }));
    }
}

/// A compile-time warning at the layer's tokens for every note (e.g. a floored stride).
fn note_warnings(layers: &[CheckedLayer], out: &mut Vec<TokenStream>) {
    for l in layers {
        if let Kind::Residual(block) = &l.kind {
            note_warnings(&block.body, out);
            note_warnings(block.shortcut.as_deref().unwrap_or_default(), out);
        }
        if l.warn {
            let note = format!("{}: {}", l.display, l.note);
            let span = l.tokens.span();
            let used = quote_spanned!(span=> stride_floors_the_output);
            out.push(quote! {
                const _: () = {
                    #[deprecated(note = #note)]
                    #[allow(non_upper_case_globals)]
                    const stride_floors_the_output: () = ();
                    #used
                };
            });
        }
    }
}

/// The items of `all` whose layer is a field of the network (not a tied head).
fn only_modules<T: Clone>(all: &[T], is_module: &[bool]) -> Vec<T> {
    all.iter()
        .zip(is_module)
        .filter(|(_, keep)| **keep)
        .map(|(item, _)| item.clone())
        .collect()
}

fn generate_network(net: &Net<'_>) -> TokenStream {
    let name = &net.name;
    let vis = &net.vis;
    let attrs = &net.attrs;
    let cache_name = format_ident!("{}Cache", name);
    let grads_name = format_ident!("{}Grads", name);
    let layers = net.layers;
    let n = layers.len();
    let mut extra = Vec::new();

    let input_shape = shape_type(net.input);
    let output_shape = shape_type(&net.output);
    let input_dims = usize_array(net.input);
    let output_dims = usize_array(&net.output);
    let input_rank = net.input.len();
    let output_rank = net.output.len();
    let params = lit(layers.iter().map(|l| l.params).sum());

    // Every layer is a field of the network, except tied heads: they own no tensor and are
    // called with their embedding's table instead.
    let tie = |l: &CheckedLayer| match &l.kind {
        Kind::Layer(LayerKind::Linear {
            tied: Some(embedding),
            ..
        }) => layers.iter().find(|e| e.path == *embedding),
        _ => None,
    };
    let fields: Vec<_> = layers.iter().map(|l| l.field.clone()).collect();
    let types: Vec<_> = layers
        .iter()
        .map(|l| layer_type(l, name, &mut extra))
        .collect();
    let is_module: Vec<bool> = layers.iter().map(|l| tie(l).is_none()).collect();

    // Activations a_i (output of layer i) and their gradients g_i, for every layer but the
    // last, whose output is the caller's `y`.
    let inner = n.saturating_sub(1);
    let activation_fields: Vec<_> = (0..inner).map(|i| format_ident!("a_{}", i)).collect();
    let gradient_fields: Vec<_> = (0..inner).map(|i| format_ident!("g_{}", i)).collect();
    let cache_fields: Vec<_> = (0..n).map(|i| format_ident!("c_{}", i)).collect();
    let carry_outputs: Vec<_> = (0..n)
        .map(|i| {
            if i + 1 == n {
                quote!(output)
            } else {
                let a = &activation_fields[i];
                quote!(&cache.#a)
            }
        })
        .collect();
    let layer_indices: Vec<_> = (0..n as u64).map(Literal::u64_unsuffixed).collect();
    let activation_types: Vec<_> = layers[..inner]
        .iter()
        .map(|l| shape_type(&l.output))
        .collect();

    let input_of = |i: usize| {
        if i == 0 {
            quote!(x)
        } else {
            let a = &activation_fields[i - 1];
            quote!(&cache.#a)
        }
    };
    let output_of = |i: usize| {
        if i + 1 == n {
            quote!(y)
        } else {
            let a = &activation_fields[i];
            quote!(&mut cache.#a)
        }
    };
    let output_ref = |i: usize| {
        if i + 1 == n {
            quote!(y)
        } else {
            let a = &activation_fields[i];
            quote!(&cache.#a)
        }
    };
    let output_grad = |i: usize| {
        if i + 1 == n {
            quote!(dy)
        } else {
            let g = &gradient_fields[i];
            quote!(&cache.#g)
        }
    };

    let forward_calls: Vec<_> = (0..n)
        .map(|i| {
            let (field, ty, c) = (&fields[i], &types[i], &cache_fields[i]);
            let (x, y) = (input_of(i), output_of(i));
            match tie(&layers[i]) {
                Some(embedding) => {
                    let table = &embedding.field;
                    quote!(<#ty>::forward(&self.#table.weight, #x, #y);)
                }
                None => {
                    quote!(<#ty as ::nn::Module<E>>::forward(&self.#field, #x, #y, &mut cache.#c);)
                }
            }
        })
        .collect();
    let forward_train_calls: Vec<_> = (0..n)
        .map(|i| {
            let (field, ty, c) = (&fields[i], &types[i], &cache_fields[i]);
            let (x, y) = (input_of(i), output_of(i));
            match tie(&layers[i]) {
                Some(embedding) => {
                    let table = &embedding.field;
                    quote!(<#ty>::forward(&self.#table.weight, #x, #y);)
                }
                None => {
                    quote!(<#ty as ::nn::Module<E>>::forward_train(&mut self.#field, #x, #y, &mut cache.#c);)
                }
            }
        })
        .collect();

    // Backward in reverse. Layers before the first parametric one only matter when the
    // caller wants the input gradient, so they run only then.
    let first_parametric = layers.iter().position(|l| l.params > 0).unwrap_or(n);
    let mut backward_always = Vec::new();
    let mut backward_for_input = Vec::new();
    for i in (0..n).rev() {
        let (field, ty, c) = (&fields[i], &types[i], &cache_fields[i]);
        let (x, y, dy) = (input_of(i), output_ref(i), output_grad(i));
        let dx = if i == 0 {
            quote!(dx)
        } else {
            let g = &gradient_fields[i - 1];
            if i > first_parametric {
                quote!(::core::option::Option::Some(&mut cache.#g))
            } else {
                quote!(if need_input_grad { ::core::option::Option::Some(&mut cache.#g) } else { ::core::option::Option::None })
            }
        };
        let call = match tie(&layers[i]) {
            Some(embedding) => {
                let table = &embedding.field;
                let _ = y;
                quote!(<#ty>::backward(&self.#table.weight, #x, #dy, #dx, &mut grads.#table.weight);)
            }
            None => {
                quote!(<#ty as ::nn::Module<E>>::backward(&self.#field, #x, #y, #dy, #dx, &mut cache.#c, &mut grads.#field);)
            }
        };
        if i >= first_parametric {
            backward_always.push(call);
        } else {
            backward_for_input.push(call);
        }
    }

    // From here on, only the layers that are fields.
    let fields = only_modules(&fields, &is_module);
    let types = only_modules(&types, &is_module);
    let paths = only_modules(
        &layers.iter().map(|l| l.path.clone()).collect::<Vec<_>>(),
        &is_module,
    );
    let cache_fields = only_modules(&cache_fields, &is_module);
    let carry_outputs = only_modules(&carry_outputs, &is_module);
    let layer_indices = only_modules(&layer_indices, &is_module);

    let (forward_body, forward_train_body, backward_body) = if n == 0 {
        (
            quote!(y.copy_from(x);),
            quote!(y.copy_from(x);),
            quote!(if let ::core::option::Option::Some(dx) = dx {
                dx.copy_from(dy);
            }),
        )
    } else {
        (
            quote!(#(#forward_calls)*),
            quote!(#(#forward_train_calls)*),
            quote! {
                let need_input_grad = dx.is_some();
                #(#backward_always)*
                if need_input_grad {
                    #(#backward_for_input)*
                }
            },
        )
    };

    let mut rows = Vec::new();
    summary_rows(layers, &mut rows);
    let mut warnings = Vec::new();
    note_warnings(layers, &mut warnings);
    let name_text = name.to_string();
    let cache_doc = format!("The training buffers of [`{name}`]: activations between layers, their gradients and each layer's cache.");
    let grads_doc = format!(
        "The parameter gradients of [`{name}`], one field per layer, laid out like its parameters."
    );

    quote! {
        #(#extra)*
        #(#warnings)*

        #attrs
        #[derive(Clone, Debug, PartialEq)]
        #vis struct #name<E: ::nn::Float = f32> {
            #(pub #fields: #types,)*
            element: ::core::marker::PhantomData<E>,
        }

        #[doc = #cache_doc]
        #[allow(dead_code)]
        #vis struct #cache_name<E: ::nn::Float = f32> {
            #(#activation_fields: ::nn::Tensor<#activation_types, E>,)*
            #(#gradient_fields: ::nn::Tensor<#activation_types, E>,)*
            #(#cache_fields: <#types as ::nn::Module<E>>::Cache,)*
            element: ::core::marker::PhantomData<E>,
        }

        #[doc = #grads_doc]
        #vis struct #grads_name<E: ::nn::Float = f32> {
            #(pub #fields: <#types as ::nn::Module<E>>::Grads,)*
            element: ::core::marker::PhantomData<E>,
        }

        impl<E: ::nn::Float> #name<E> {
            /// The shape of one input sample.
            pub const INPUT: [usize; #input_rank] = #input_dims;
            /// The shape of one output sample.
            pub const OUTPUT: [usize; #output_rank] = #output_dims;
            /// The number of trainable parameters, computed by `network!`.
            pub const PARAMS: usize = #params;

            /// A network initialised like PyTorch's defaults, from a seeded generator.
            pub fn new(seed: u64) -> Self {
                <Self as ::nn::Module<E>>::init(&mut ::nn::init::rng(seed))
            }

            /// Every layer with its output shape, parameters and multiply-adds.
            pub fn summary() -> ::nn::Summary {
                const ROWS: &[::nn::SummaryRow] = &[#(#rows),*];
                ::nn::Summary { network: #name_text, input: &#input_dims, rows: ROWS }
            }

            /// Training buffers for batches of up to `max_batch` samples.
            pub fn workspace(&self, max_batch: usize) -> ::nn::Workspace<Self, E> {
                ::nn::Workspace::new(self, max_batch)
            }

            /// Inference on a batch, allocating its buffers; reuse a `workspace` in loops.
            pub fn predict(&self, x: &::nn::Tensor<#input_shape, E>) -> ::nn::Tensor<#output_shape, E> {
                let mut cache = <Self as ::nn::Module<E>>::new_cache(self, x.batch());
                let mut y = ::nn::Tensor::zeros(x.batch());
                <Self as ::nn::Module<E>>::forward(self, x, &mut y, &mut cache);
                y
            }
        }

        // The macro's count and the layer types' count must agree.
        const _: () = ::core::assert!(<#name<f32> as ::nn::Module<f32>>::PARAMS == #params);

        impl<E: ::nn::Float> ::nn::Module<E> for #name<E> {
            type Input = #input_shape;
            type Output = #output_shape;
            type Cache = #cache_name<E>;
            type Grads = #grads_name<E>;

            const PARAMS: usize = 0 #(+ <#types as ::nn::Module<E>>::PARAMS)*;

            fn init(rng: &mut ::nn::init::Rng) -> Self {
                #name {
                    #(#fields: <#types as ::nn::Module<E>>::init(rng),)*
                    element: ::core::marker::PhantomData,
                }
            }

            fn new_cache(&self, max_batch: usize) -> #cache_name<E> {
                let mut cache = #cache_name {
                    #(#activation_fields: ::nn::Tensor::zeros(max_batch),)*
                    #(#gradient_fields: ::nn::Tensor::zeros(max_batch),)*
                    #(#cache_fields: <#types as ::nn::Module<E>>::new_cache(&self.#fields, max_batch),)*
                    element: ::core::marker::PhantomData,
                };
                <Self as ::nn::Module<E>>::reseed(self, &mut cache, 0);
                cache
            }

            fn reseed(&self, cache: &mut #cache_name<E>, seed: u64) {
                // Each layer draws from its own sequence: mix its position into the seed.
                #(<#types as ::nn::Module<E>>::reseed(&self.#fields, &mut cache.#cache_fields, ::nn::init::mix_seed(seed, #layer_indices));)*
                let _ = (cache, seed);
            }

            fn new_grads(&self) -> #grads_name<E> {
                #grads_name {
                    #(#fields: <#types as ::nn::Module<E>>::new_grads(&self.#fields),)*
                    element: ::core::marker::PhantomData,
                }
            }

            fn zero_grads(grads: &mut #grads_name<E>) {
                #(<#types as ::nn::Module<E>>::zero_grads(&mut grads.#fields);)*
                let _ = grads;
            }

            fn forward(&self, x: &::nn::Tensor<#input_shape, E>, y: &mut ::nn::Tensor<#output_shape, E>, cache: &mut #cache_name<E>) {
                let _ = &cache;
                #forward_body
            }

            fn forward_train(&mut self, x: &::nn::Tensor<#input_shape, E>, y: &mut ::nn::Tensor<#output_shape, E>, cache: &mut #cache_name<E>) {
                let _ = &cache;
                #forward_train_body
            }

            fn backward(
                &self,
                x: &::nn::Tensor<#input_shape, E>,
                y: &::nn::Tensor<#output_shape, E>,
                dy: &::nn::Tensor<#output_shape, E>,
                dx: ::core::option::Option<&mut ::nn::Tensor<#input_shape, E>>,
                cache: &mut #cache_name<E>,
                grads: &mut #grads_name<E>,
            ) {
                let _ = (&x, &y, &cache, &grads);
                #backward_body
            }

            fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(::nn::Param<'_, E>)) {
                #(<#types as ::nn::Module<E>>::visit_params(&self.#fields, &::nn::join_name(prefix, #paths), f);)*
                let _ = (prefix, f);
            }

            fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(::nn::ParamMut<'_, E>)) {
                #(<#types as ::nn::Module<E>>::visit_params_mut(&mut self.#fields, &::nn::join_name(prefix, #paths), f);)*
                let _ = (prefix, f);
            }

            fn carry_over(&self, cache: &mut #cache_name<E>, output: &::nn::Tensor<#output_shape, E>, steps: usize) {
                #(<#types as ::nn::Module<E>>::carry_over(&self.#fields, &mut cache.#cache_fields, #carry_outputs, steps);)*
                let _ = (cache, output, steps);
            }

            fn clear_state(&self, cache: &mut #cache_name<E>) {
                #(<#types as ::nn::Module<E>>::clear_state(&self.#fields, &mut cache.#cache_fields);)*
                let _ = cache;
            }

            fn set_padding(&self, cache: &mut #cache_name<E>, lengths: ::core::option::Option<&[usize]>) -> ::core::result::Result<(), ::nn::layers::LengthsError> {
                #(<#types as ::nn::Module<E>>::set_padding(&self.#fields, &mut cache.#cache_fields, lengths)?;)*
                let _ = (cache, lengths);
                ::core::result::Result::Ok(())
            }

            fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(::nn::Buffer<'_, E>)) {
                #(<#types as ::nn::Module<E>>::visit_buffers(&self.#fields, &::nn::join_name(prefix, #paths), f);)*
                let _ = (prefix, f);
            }

            fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(::nn::BufferMut<'_, E>)) {
                #(<#types as ::nn::Module<E>>::visit_buffers_mut(&mut self.#fields, &::nn::join_name(prefix, #paths), f);)*
                let _ = (prefix, f);
            }

            fn visit_grads_mut(&self, grads: &mut #grads_name<E>, f: &mut dyn FnMut(&mut [E])) {
                #(<#types as ::nn::Module<E>>::visit_grads_mut(&self.#fields, &mut grads.#fields, f);)*
                let _ = (grads, f);
            }

            fn visit_params_and_grads(&mut self, grads: &#grads_name<E>, f: &mut dyn FnMut(&mut [E], &[E])) {
                #(<#types as ::nn::Module<E>>::visit_params_and_grads(&mut self.#fields, &grads.#fields, f);)*
                let _ = (grads, f);
            }
        }
    }
}
