//! Stage 2: the shape checker. Walks the layers in order, infers each one's input from the
//! previous output, resolves it with the rules of the layer catalogue (`layers.rs`), and
//! verifies what the source states (explicit in-features, `=> [..]`, residual shapes).
//!
//! Errors are collected, not returned at the first one, so one compile shows every mistake.
//! After an error the rest of the network is still checked where its input is known (the
//! layer's own output, or its annotation); the layers before the first error are kept so that
//! `generate` can still emit a usable item and no follow-on errors appear.

use std::collections::HashSet;

use proc_macro2::TokenStream;
use syn::{Attribute, Ident, Visibility};

use crate::errors::{self, Source};
use crate::layers::{self, Activation, LayerKind};
use crate::parse::{Item, Layer, Network, Residual};

/// A layer whose shapes are all known.
#[derive(Clone)]
pub struct CheckedLayer {
    /// Its path inside the network that holds it (PyTorch's local name): `3`, `features.0`,
    /// `conv1`. Parameter names are built from these at run time.
    pub path: String,
    /// Its path from the top-level network, for the summary: `layer1.0.conv1`.
    pub full_path: String,
    /// The Rust field holding it, e.g. `features_0`.
    pub field: Ident,
    pub kind: Kind,
    pub input: Vec<usize>,
    pub output: Vec<usize>,
    pub params: usize,
    pub macs: usize,
    /// The layer as the summary shows it, e.g. `linear(784 => 512)`.
    pub display: String,
    /// A remark for the summary, e.g. PyTorch's floor dropping a row.
    pub note: String,
    /// Whether the note is also a compile-time warning (not acknowledged by an annotation).
    pub warn: bool,
    /// The call's tokens, so generated code can be spanned at it.
    pub tokens: TokenStream,
}

#[derive(Clone)]
pub enum Kind {
    Layer(LayerKind),
    Residual(ResidualBlock),
}

/// `y = body(x) + shortcut(x)`, then an optional activation.
#[derive(Clone)]
pub struct ResidualBlock {
    pub body: Vec<CheckedLayer>,
    /// None: the identity.
    pub shortcut: Option<Vec<CheckedLayer>>,
    pub activation: Option<Activation>,
}

/// A checked network: everything `generate` needs.
pub struct Checked {
    pub name: Ident,
    pub vis: Visibility,
    pub attrs: Vec<Attribute>,
    pub input: Vec<usize>,
    pub layers: Vec<CheckedLayer>,
    pub output: Vec<usize>,
}

/// Checks the network; returns what could be checked and the errors found.
pub fn check(network: &Network) -> (Checked, Vec<syn::Error>) {
    let mut errors = Vec::new();
    let mut walk = Walk::new(network.input.dims.clone(), String::new());
    walk.items(&network.items, "", &mut errors);
    if let Some(error) = vocabulary_check(&network.input.dims, &walk) {
        errors.push(error);
    }
    duplicate_names(&mut walk.kept, &mut HashSet::new(), &mut errors);
    let checked = Checked {
        name: network.name.clone(),
        vis: network.vis.clone(),
        attrs: network.attrs.clone(),
        input: network.input.dims.clone(),
        output: walk.kept_output.clone(),
        layers: walk.kept,
    };
    (checked, errors)
}

/// Every parameter name must be unique (two layers under one name would save and load as
/// one tensor), and so must the Rust fields of one network. A clashing field is renamed after
/// the error, so that the generated code stays valid and adds no errors of its own.
fn duplicate_names(
    layers: &mut [CheckedLayer],
    names: &mut HashSet<String>,
    errors: &mut Vec<syn::Error>,
) {
    let mut fields = HashSet::new();
    for (index, layer) in layers.iter_mut().enumerate() {
        let mut reported = false;
        match &mut layer.kind {
            Kind::Residual(block) => {
                duplicate_names(&mut block.body, names, errors);
                let shortcut = block.shortcut.as_deref_mut().unwrap_or_default();
                duplicate_names(shortcut, names, errors);
            }
            Kind::Layer(_) if layer.params > 0 && !names.insert(layer.full_path.clone()) => {
                errors.push(errors::duplicate_name(&layer.tokens, &layer.full_path));
                reported = true;
            }
            Kind::Layer(_) => {}
        }
        if !fields.insert(layer.field.to_string()) {
            if !reported {
                errors.push(errors::duplicate_field(
                    &layer.tokens,
                    &layer.field.to_string(),
                ));
            }
            layer.field = quote::format_ident!("{}_{index}", layer.field);
            fields.insert(layer.field.to_string());
        }
    }
}

/// A language model (token ids in, one prediction per step out) must predict its own
/// vocabulary.
fn vocabulary_check(input: &[usize], walk: &Walk) -> Option<syn::Error> {
    let (vocab, (tokens, display, output)) = (walk.vocabulary?, walk.last.as_ref()?);
    // Only a linear output head predicts tokens (an encoder ends with hidden states), and a
    // tied head is checked against its own embedding.
    let untied_head = display.starts_with("linear") && !display.contains("tied");
    match (input, output.as_slice()) {
        ([_], [_, classes]) if *classes != vocab && untied_head => Some(
            errors::vocabulary_mismatch(tokens, display, *classes, vocab),
        ),
        _ => None,
    }
}

/// The walk over one sequence of layers (a network, a residual body or a shortcut).
struct Walk {
    /// The current shape, or None where an error left it unknown.
    shape: Option<Vec<usize>>,
    source: Source,
    /// The full path of the network holding these layers ("" at the top level).
    prefix: String,
    /// The layers checked before the first error anywhere.
    kept: Vec<CheckedLayer>,
    kept_output: Vec<usize>,
    /// The vocabulary of the first embedding, for the output-head check.
    vocabulary: Option<usize>,
    /// The embeddings of this network by local path: (vocabulary, width), for tied heads.
    embeddings: Vec<(String, usize, usize)>,
    /// The last layer seen: tokens, display and output.
    last: Option<(TokenStream, String, Vec<usize>)>,
}

fn join(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{name}"),
    }
}

/// The Rust field of a layer: `layer_3` at the top level, `features_3` inside a group, or the
/// layer's own name in snake case (`attention.output.LayerNorm` is
/// `attention_output_layernorm`); a keyword gets a trailing `_`.
fn field_name(path: &str) -> String {
    let flat = path.replace('.', "_").to_lowercase();
    if path.starts_with(|c: char| c.is_ascii_digit()) {
        format!("layer_{flat}")
    } else if syn::parse_str::<Ident>(&flat).is_err() {
        format!("{flat}_")
    } else {
        flat
    }
}

impl Walk {
    fn new(input: Vec<usize>, prefix: String) -> Self {
        Self {
            shape: Some(input.clone()),
            source: Source::NetworkInput,
            prefix,
            kept: Vec::new(),
            kept_output: input,
            vocabulary: None,
            embeddings: Vec::new(),
            last: None,
        }
    }

    fn items(&mut self, items: &[Item], group: &str, errors: &mut Vec<syn::Error>) {
        for (index, item) in items.iter().enumerate() {
            // An unnamed item is named by its position; `_` adds no name, so its field is
            // named by position instead.
            let label = match item {
                Item::Group { name, items } => {
                    self.items(items, &join(group, &name.text), errors);
                    continue;
                }
                Item::Layer(layer) => layer.label.as_ref(),
                Item::Residual(residual) => residual.name.as_ref(),
            };
            let local = join(group, &label.map_or(index.to_string(), |l| l.text.clone()));
            let field = match label {
                Some(l) if l.text.is_empty() => join(group, &format!("unnamed_{index}")),
                _ => local.clone(),
            };
            match item {
                Item::Layer(layer) => self.layer(layer, local, &field, errors),
                Item::Residual(residual) => self.residual(residual, local, &field, errors),
                Item::Group { .. } => unreachable!("handled above"),
            }
        }
    }

    /// Records a checked layer (if no error came before) and moves on to its output.
    #[allow(clippy::too_many_arguments)]
    fn advance(
        &mut self,
        errors: &[syn::Error],
        (local, field): (String, &str),
        kind: Option<Kind>,
        output: Option<Vec<usize>>,
        annotation: Option<&crate::parse::ShapeLit>,
        display: String,
        (note, warn): (String, bool),
        tokens: &TokenStream,
    ) {
        let full_path = join(&self.prefix, &local);
        let input_shape = self.shape.clone();
        if errors.is_empty() {
            if let (Some(kind), Some(input), Some(output)) = (kind, &self.shape, &output) {
                let (params, macs) = match &kind {
                    Kind::Layer(layer) => layers::cost(layer, input, output),
                    Kind::Residual(block) => {
                        let all = block.body.iter().chain(block.shortcut.iter().flatten());
                        all.fold((0, 0), |(p, m), l| (p + l.params, m + l.macs))
                    }
                };
                self.kept.push(CheckedLayer {
                    field: Ident::new(&field_name(field), proc_macro2::Span::call_site()),
                    path: local.clone(),
                    full_path: full_path.clone(),
                    kind,
                    input: input.clone(),
                    output: output.clone(),
                    params,
                    macs,
                    display: display.clone(),
                    note,
                    warn,
                    tokens: tokens.clone(),
                });
                self.kept_output = output.clone();
            }
        }
        // The next layer's input: what this layer outputs, or else what its annotation states.
        self.shape = output.or_else(|| annotation.map(|a| a.dims.clone()));
        if let Some(shape) = &self.shape {
            self.last = Some((tokens.clone(), display.clone(), shape.clone()));
        }
        let flattened = if display == "flatten" {
            input_shape
        } else {
            None
        };
        self.source = Source::Layer {
            path: full_path,
            display,
            flattened,
        };
    }

    fn layer(&mut self, layer: &Layer, local: String, field: &str, errors: &mut Vec<syn::Error>) {
        let kind = layers::resolve(layer).map_err(|e| errors.push(e)).ok();
        let mut note = String::new();
        let output = match (&kind, &self.shape) {
            (Some(kind), Some(input)) => match layers::output(kind, layer, input, &self.source) {
                Ok(out) => {
                    note = out.note;
                    Some(out.shape)
                }
                Err(e) => {
                    errors.push(e);
                    // A linear's own output size is still known; go on from it.
                    match (kind, input.as_slice()) {
                        (LayerKind::Linear { outputs, .. }, [_, ..]) if input.len() <= 2 => {
                            let mut shape = input.clone();
                            *shape.last_mut().expect("rank >= 1") = *outputs;
                            Some(shape)
                        }
                        _ => None,
                    }
                }
            },
            _ => None,
        };
        let display = kind
            .as_ref()
            .map(|k| layers::display(k, self.shape.as_deref()))
            .unwrap_or_default();
        // Writing the output shape acknowledges a floored stride: the summary still says it,
        // but no warning.
        let acknowledged =
            matches!((&layer.annotation, &output), (Some(a), Some(out)) if a.dims == *out);
        let warn = !note.is_empty() && !acknowledged;
        if let (Some(annotation), Some(actual)) = (&layer.annotation, &output) {
            if annotation.dims != *actual {
                let input = self.shape.clone().unwrap_or_default();
                let fix = kind
                    .as_ref()
                    .and_then(|k| layers::fix_for_output(k, &input, &annotation.dims));
                errors.push(errors::annotation_mismatch(
                    annotation.span,
                    &display,
                    actual,
                    &annotation.dims,
                    fix,
                ));
            }
        }
        if let Some(LayerKind::Embedding { vocab, dim }) = &kind {
            self.vocabulary.get_or_insert(*vocab);
            self.embeddings.push((local.clone(), *vocab, *dim));
        }
        if let (
            Some(LayerKind::Linear {
                outputs,
                tied: Some(name),
                ..
            }),
            Some(input),
            Some(_),
        ) = (&kind, &self.shape, &output)
        {
            let features = *input.last().expect("rank >= 1");
            if let Err(e) = self.check_tie(&layer.tokens, &display, name, *outputs, features) {
                errors.push(e);
            }
        }
        let kind = kind.map(Kind::Layer);
        self.advance(
            errors,
            (local, field),
            kind,
            output,
            layer.annotation.as_ref(),
            display,
            (note, warn),
            &layer.tokens,
        );
    }

    /// A tied head must name an embedding declared before it in the same network, predict its
    /// vocabulary and read vectors of its width.
    fn check_tie(
        &self,
        tokens: &TokenStream,
        display: &str,
        name: &str,
        outputs: usize,
        features: usize,
    ) -> syn::Result<()> {
        let Some((_, vocab, dim)) = self.embeddings.iter().find(|(path, ..)| path == name) else {
            let known: Vec<&str> = self.embeddings.iter().map(|(p, ..)| p.as_str()).collect();
            return Err(errors::tied_to_unknown(tokens, display, name, &known));
        };
        if outputs != *vocab {
            return Err(errors::tied_vocabulary_mismatch(
                tokens, display, name, *vocab, outputs,
            ));
        }
        if features != *dim {
            return Err(errors::tied_width_mismatch(
                tokens, display, name, *dim, features,
            ));
        }
        Ok(())
    }

    fn residual(
        &mut self,
        residual: &Residual,
        local: String,
        field: &str,
        errors: &mut Vec<syn::Error>,
    ) {
        let activation = match &residual.activation {
            None => None,
            Some(name) if name == "relu" => Some(Activation::Relu),
            Some(name) if name == "tanh" => Some(Activation::Tanh),
            Some(name) if name == "sigmoid" => Some(Activation::Sigmoid),
            Some(name) => {
                errors.push(syn::Error::new(
                    name.span(),
                    format!("`residual({name})`: the activation after the addition must be `relu`, `tanh` or `sigmoid`"),
                ));
                None
            }
        };
        let full_path = join(&self.prefix, &local);
        let Some(input) = self.shape.clone() else {
            self.advance(
                errors,
                (local, field),
                None,
                None,
                residual.annotation.as_ref(),
                "residual".into(),
                (String::new(), false),
                &residual.tokens,
            );
            return;
        };
        let errors_before = errors.len();
        let mut body = Walk::new(input.clone(), full_path.clone());
        body.items(&residual.body, "", errors);
        let mut shortcut = residual.shortcut.as_ref().map(|items| {
            let mut walk = Walk::new(input.clone(), join(&full_path, "downsample"));
            walk.items(items, "", errors);
            walk
        });
        let body_output = body.shape.clone();
        let output = match (&body_output, &mut shortcut) {
            (Some(out), None) if *out != input => {
                errors.push(errors::residual_changes_shape(
                    &residual.tokens,
                    &input,
                    out,
                ));
                Some(out.clone())
            }
            (Some(out), Some(walk)) => match &walk.shape {
                Some(projected) if projected != out => {
                    errors.push(errors::shortcut_mismatch(&residual.tokens, out, projected));
                    Some(out.clone())
                }
                _ => Some(out.clone()),
            },
            (out, _) => out.clone(),
        };
        let display = match activation {
            Some(_) => format!(
                "residual add + {}",
                residual.activation.as_ref().expect("given")
            ),
            None => "residual add".to_string(),
        };
        if let (Some(annotation), Some(actual)) = (&residual.annotation, &output) {
            if annotation.dims != *actual {
                errors.push(errors::annotation_mismatch(
                    annotation.span,
                    &display,
                    actual,
                    &annotation.dims,
                    None,
                ));
            }
        }
        let kind = (errors.len() == errors_before).then(|| {
            Kind::Residual(ResidualBlock {
                body: body.kept,
                shortcut: shortcut.map(|w| w.kept),
                activation,
            })
        });
        self.advance(
            errors,
            (local, field),
            kind,
            output,
            residual.annotation.as_ref(),
            display,
            (String::new(), false),
            &residual.tokens,
        );
    }
}
