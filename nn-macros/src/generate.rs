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

use crate::check::{Activation, Checked, CheckedLayer, LayerKind};

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

/// The core's module type implementing a checked layer.
fn layer_type(layer: &CheckedLayer) -> TokenStream {
    let span = layer.tokens.span();
    match &layer.kind {
        LayerKind::Linear { outputs, .. } => {
            let inputs = Literal::usize_unsuffixed(layer.input[0]);
            let outputs = Literal::usize_unsuffixed(*outputs);
            quote_spanned!(span=> ::nn::layers::Linear<#inputs, #outputs, E>)
        }
        LayerKind::Activation(activation) => {
            let shape = shape_type(&layer.input);
            let function = match activation {
                Activation::Relu => quote!(ReluFn),
                Activation::Sigmoid => quote!(SigmoidFn),
                Activation::Tanh => quote!(TanhFn),
            };
            quote_spanned!(span=> ::nn::layers::Activation<::nn::layers::#function, #shape>)
        }
        LayerKind::Softmax => {
            let shape = shape_type(&layer.input);
            quote_spanned!(span=> ::nn::layers::Softmax<#shape>)
        }
    }
}

fn usize_array(dims: &[usize]) -> TokenStream {
    let lits = dims.iter().map(|d| Literal::usize_unsuffixed(*d));
    quote!([#(#lits),*])
}

pub fn generate(checked: &Checked<'_>) -> TokenStream {
    let network = checked.network;
    let name = &network.name;
    let vis = &network.vis;
    let attrs = &network.attrs;
    let cache_name = format_ident!("{}Cache", name);
    let grads_name = format_ident!("{}Grads", name);
    let layers = &checked.layers;
    let n = layers.len();

    let input_shape = shape_type(&network.input.dims);
    let output_shape = shape_type(&checked.output);
    let input_dims = usize_array(&network.input.dims);
    let output_dims = usize_array(&checked.output);
    let input_rank = network.input.dims.len();
    let output_rank = checked.output.len();
    let params = Literal::usize_unsuffixed(checked.params());

    let fields: Vec<_> = layers.iter().map(|l| l.field.clone()).collect();
    let types: Vec<_> = layers.iter().map(layer_type).collect();
    let paths: Vec<_> = layers.iter().map(|l| l.path.clone()).collect();

    // Activations a_i (output of layer i) and their gradients g_i, for every layer but the
    // last, whose output is the caller's `y`.
    let inner = n.saturating_sub(1);
    let activation_fields: Vec<_> = (0..inner).map(|i| format_ident!("a_{}", i)).collect();
    let gradient_fields: Vec<_> = (0..inner).map(|i| format_ident!("g_{}", i)).collect();
    let cache_fields: Vec<_> = (0..n).map(|i| format_ident!("c_{}", i)).collect();
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
            quote!(<#ty as ::nn::Module<E>>::forward(&self.#field, #x, #y, &mut cache.#c);)
        })
        .collect();
    let forward_train_calls: Vec<_> = (0..n)
        .map(|i| {
            let (field, ty, c) = (&fields[i], &types[i], &cache_fields[i]);
            let (x, y) = (input_of(i), output_of(i));
            quote!(<#ty as ::nn::Module<E>>::forward_train(&mut self.#field, #x, #y, &mut cache.#c);)
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
        let call = quote!(<#ty as ::nn::Module<E>>::backward(&self.#field, #x, #y, #dy, #dx, &mut cache.#c, &mut grads.#field););
        if i >= first_parametric {
            backward_always.push(call);
        } else {
            backward_for_input.push(call);
        }
    }

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

    let summary_rows = layers.iter().map(|l| {
        let (path, display, note) = (&l.path, &l.display, &l.note);
        let output = usize_array(&l.output);
        let params = Literal::usize_unsuffixed(l.params);
        let macs = Literal::usize_unsuffixed(l.macs);
        quote!(::nn::SummaryRow { name: #path, layer: #display, output: &#output, params: #params, macs: #macs, note: #note })
    });
    let name_text = name.to_string();
    let cache_doc = format!("The training buffers of [`{name}`]: activations between layers, their gradients and each layer's cache.");
    let grads_doc = format!(
        "The parameter gradients of [`{name}`], one field per layer, laid out like its parameters."
    );

    quote! {
        #(#attrs)*
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
                const ROWS: &[::nn::SummaryRow] = &[#(#summary_rows),*];
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
                #cache_name {
                    #(#activation_fields: ::nn::Tensor::zeros(max_batch),)*
                    #(#gradient_fields: ::nn::Tensor::zeros(max_batch),)*
                    #(#cache_fields: <#types as ::nn::Module<E>>::new_cache(&self.#fields, max_batch),)*
                    element: ::core::marker::PhantomData,
                }
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

            fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(::nn::Buffer<'_, E>)) {
                #(<#types as ::nn::Module<E>>::visit_buffers(&self.#fields, &::nn::join_name(prefix, #paths), f);)*
                let _ = (prefix, f);
            }

            fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(::nn::BufferMut<'_, E>)) {
                #(<#types as ::nn::Module<E>>::visit_buffers_mut(&mut self.#fields, &::nn::join_name(prefix, #paths), f);)*
                let _ = (prefix, f);
            }

            fn visit_params_and_grads(&mut self, grads: &#grads_name<E>, f: &mut dyn FnMut(&mut [E], &[E])) {
                #(<#types as ::nn::Module<E>>::visit_params_and_grads(&mut self.#fields, &grads.#fields, f);)*
                let _ = (grads, f);
            }
        }
    }
}
