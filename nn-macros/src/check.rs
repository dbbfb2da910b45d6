//! Stage 2: the shape checker. Walks the layers in order, infers each one's input from the
//! previous output, resolves its arguments, computes its output shape, parameter count and
//! multiply-adds, and verifies what the source states (explicit in-features, `=> [..]`).
//!
//! Errors are collected, not returned at the first one, so one compile shows every mistake.
//! After an error the rest of the network is still checked where its input is known (the
//! layer's own output, or its annotation); the layers before the first error are kept so that
//! `generate` can still emit a usable item and no follow-on errors appear.

use proc_macro2::TokenStream;
use syn::Ident;

use crate::errors::{self, Source};
use crate::parse::{Arg, Item, Layer, Network};

/// The layers `network!` knows, for "did you mean".
pub const LAYER_NAMES: &[&str] = &["linear", "relu", "sigmoid", "tanh", "softmax"];

/// What a layer computes, with its arguments resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// `nn.Linear(inputs, outputs)`.
    Linear {
        inputs: usize,
        outputs: usize,
    },
    /// A pointwise activation; the name is the core's function type.
    Activation(Activation),
    Softmax,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    Sigmoid,
    Tanh,
}

/// A layer whose shapes are all known.
pub struct CheckedLayer {
    /// PyTorch's module path, e.g. `classifier.3`.
    pub path: String,
    /// The Rust field holding it, e.g. `classifier_3`.
    pub field: Ident,
    pub kind: LayerKind,
    pub input: Vec<usize>,
    pub output: Vec<usize>,
    pub params: usize,
    pub macs: usize,
    /// The layer as the summary shows it, e.g. `linear(784 => 512)`.
    pub display: String,
    pub note: String,
    /// The call's tokens, so generated code can be spanned at it.
    pub tokens: TokenStream,
}

/// The checked network: everything `generate` needs.
pub struct Checked<'a> {
    pub network: &'a Network,
    pub layers: Vec<CheckedLayer>,
    pub output: Vec<usize>,
}

impl Checked<'_> {
    pub fn params(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }
}

/// Checks the network; returns what could be checked and the errors found.
pub fn check(network: &Network) -> (Checked<'_>, Vec<syn::Error>) {
    let mut checker = Checker {
        shape: Some(network.input.dims.clone()),
        source: Source::NetworkInput,
        layers: Vec::new(),
        errors: Vec::new(),
        output: network.input.dims.clone(),
    };
    checker.items(&network.items, "");
    let Checker {
        layers,
        errors,
        output,
        ..
    } = checker;
    (
        Checked {
            network,
            layers,
            output,
        },
        errors,
    )
}

struct Checker {
    /// The current shape, or None where an error left it unknown.
    shape: Option<Vec<usize>>,
    source: Source,
    /// The layers checked before the first error.
    layers: Vec<CheckedLayer>,
    errors: Vec<syn::Error>,
    /// The output shape of the last layer kept.
    output: Vec<usize>,
}

impl Checker {
    fn items(&mut self, items: &[Item], prefix: &str) {
        for (index, item) in items.iter().enumerate() {
            let path = if prefix.is_empty() {
                index.to_string()
            } else {
                format!("{prefix}.{index}")
            };
            match item {
                Item::Group { name, items } => {
                    let group = if prefix.is_empty() {
                        name.to_string()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    self.items(items, &group);
                }
                Item::Layer(layer) => self.layer(layer, path),
            }
        }
    }

    fn fail(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    fn layer(&mut self, layer: &Layer, path: String) {
        let kind = match resolve(layer) {
            Ok(kind) => Some(kind),
            Err(e) => {
                self.fail(e);
                None
            }
        };
        let output = match (&kind, &self.shape) {
            (Some(kind), Some(input)) => match output_shape(kind, layer, input, &self.source) {
                Ok(output) => Some(output),
                Err(e) => {
                    self.fail(e);
                    // The layer's own output size is still known for a linear; go on from it.
                    match kind {
                        LayerKind::Linear { outputs, .. } => Some(vec![*outputs]),
                        _ => None,
                    }
                }
            },
            _ => None,
        };
        let display = kind
            .as_ref()
            .map(|k| display(k, self.shape.as_deref()))
            .unwrap_or_default();
        if let (Some(annotation), Some(actual)) = (&layer.annotation, &output) {
            if annotation.dims != *actual {
                let fix = kind
                    .as_ref()
                    .and_then(|k| fix_for_output(k, &annotation.dims));
                self.fail(errors::annotation_mismatch(
                    annotation.span,
                    &display,
                    actual,
                    &annotation.dims,
                    fix,
                ));
            }
        }
        if self.errors.is_empty() {
            if let (Some(kind), Some(input), Some(output)) = (kind, &self.shape, &output) {
                let (params, macs) = cost(&kind, input, output);
                self.layers.push(CheckedLayer {
                    field: Ident::new(&field_name(&path), layer.name.span()),
                    path: path.clone(),
                    kind,
                    input: input.clone(),
                    output: output.clone(),
                    params,
                    macs,
                    display: display.clone(),
                    note: String::new(),
                    tokens: layer.tokens.clone(),
                });
                self.output = output.clone();
            }
        }
        // The next layer's input: what this layer outputs, or else what its annotation states.
        self.shape = output.or_else(|| layer.annotation.as_ref().map(|a| a.dims.clone()));
        self.source = Source::Layer { path, display };
    }
}

/// The Rust field of a layer: `layer_3` at the top level, `features_3` inside a group.
fn field_name(path: &str) -> String {
    let flat = path.replace('.', "_");
    if path.starts_with(|c: char| c.is_ascii_digit()) {
        format!("layer_{flat}")
    } else {
        flat
    }
}

/// Resolves a layer's name and arguments into its kind.
fn resolve(layer: &Layer) -> syn::Result<LayerKind> {
    let name = layer.name.to_string();
    match name.as_str() {
        "linear" => resolve_linear(layer),
        "relu" | "sigmoid" | "tanh" | "softmax" => {
            if let Some(arg) = layer.args.first() {
                return Err(errors::takes_no_arguments(arg.span(), &name));
            }
            Ok(match name.as_str() {
                "relu" => LayerKind::Activation(Activation::Relu),
                "sigmoid" => LayerKind::Activation(Activation::Sigmoid),
                "tanh" => LayerKind::Activation(Activation::Tanh),
                _ => LayerKind::Softmax,
            })
        }
        _ => Err(errors::unknown_layer(
            &layer.name,
            errors::closest(&name, LAYER_NAMES),
            LAYER_NAMES,
        )),
    }
}

fn positive(lit: &syn::LitInt, layer: &str) -> syn::Result<usize> {
    let value: usize = lit.base10_parse()?;
    if value == 0 {
        return Err(errors::zero_size(lit.span(), layer));
    }
    Ok(value)
}

const LINEAR_USAGE: &str = "linear(out_features)` or `linear(in_features => out_features)";

fn resolve_linear(layer: &Layer) -> syn::Result<LayerKind> {
    let (inputs, outputs) = match layer.args.as_slice() {
        [] => {
            return Err(errors::missing_argument(
                &layer.tokens,
                "linear",
                "its number of output features",
                "linear(10)` or `linear(64 => 10)",
            ))
        }
        [Arg::Int(out)] => (0, positive(out, "linear")?),
        [Arg::Mapping(i, o)] => (positive(i, "linear")?, positive(o, "linear")?),
        [first @ (Arg::Named(..) | Arg::Float(_)), ..] => {
            return Err(errors::unexpected_argument(
                first.span(),
                "linear",
                LINEAR_USAGE,
            ))
        }
        [_, extra, ..] => {
            return Err(errors::unexpected_argument(
                extra.span(),
                "linear",
                LINEAR_USAGE,
            ))
        }
    };
    Ok(LayerKind::Linear { inputs, outputs })
}

/// The output shape of a layer for a given input, or the error that the input does not fit.
fn output_shape(
    kind: &LayerKind,
    layer: &Layer,
    input: &[usize],
    source: &Source,
) -> syn::Result<Vec<usize>> {
    match kind {
        LayerKind::Linear { inputs, outputs } => {
            let shown = display(kind, Some(input));
            if input.len() != 1 {
                return Err(errors::needs_vector(&layer.tokens, &shown, input, source));
            }
            if *inputs != 0 && *inputs != input[0] {
                let fix = format!("linear({} => {outputs})", input[0]);
                return Err(errors::in_features_mismatch(
                    &layer.tokens,
                    &shown,
                    *inputs,
                    input,
                    source,
                    &fix,
                ));
            }
            Ok(vec![*outputs])
        }
        LayerKind::Activation(_) | LayerKind::Softmax => Ok(input.to_vec()),
    }
}

/// How to change the layer so it outputs `wanted`, where there is an obvious way.
fn fix_for_output(kind: &LayerKind, wanted: &[usize]) -> Option<String> {
    match (kind, wanted) {
        (LayerKind::Linear { inputs: 0, .. }, [out]) => {
            Some(format!("change the layer to `linear({out})`"))
        }
        (LayerKind::Linear { inputs, .. }, [out]) => {
            Some(format!("change the layer to `linear({inputs} => {out})`"))
        }
        _ => None,
    }
}

/// The layer as the summary shows it, with inferred sizes filled in.
fn display(kind: &LayerKind, input: Option<&[usize]>) -> String {
    match kind {
        LayerKind::Linear { inputs, outputs } => {
            let inputs = match (inputs, input) {
                (0, Some([n])) => *n,
                (0, _) => return format!("linear({outputs})"),
                (n, _) => *n,
            };
            format!("linear({inputs} => {outputs})")
        }
        LayerKind::Activation(Activation::Relu) => "relu".into(),
        LayerKind::Activation(Activation::Sigmoid) => "sigmoid".into(),
        LayerKind::Activation(Activation::Tanh) => "tanh".into(),
        LayerKind::Softmax => "softmax".into(),
    }
}

/// (parameters, multiply-adds per sample).
fn cost(kind: &LayerKind, input: &[usize], _output: &[usize]) -> (usize, usize) {
    match kind {
        LayerKind::Linear { outputs, .. } => (input[0] * outputs + outputs, input[0] * outputs),
        LayerKind::Activation(_) | LayerKind::Softmax => (0, 0),
    }
}
