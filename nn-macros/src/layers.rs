//! The layer catalogue: for every layer `network!` knows, how its arguments are written, what
//! shape it outputs for a given input, its parameters and multiply-adds, and how the summary
//! shows it. `check` walks the network with these rules; `generate` maps each kind to its
//! `nn-core` type.

use crate::errors::{self, Source};
use crate::parse::{Arg, ArgValue, Layer};

/// The layers `network!` knows, for "did you mean".
pub const LAYER_NAMES: &[&str] = &[
    "linear",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "flatten",
    "dropout",
    "batch_norm2d",
    "embedding",
    "rnn",
    "lstm",
    "gru",
    "last",
    "residual",
    "layer_norm",
    "gelu",
    "gelu_tanh",
    "multi_head_attention",
    "learned_positions",
    "sinusoidal_positions",
    "token_type_embedding",
];

/// What a layer computes, with its arguments resolved (0 for a size left to inference).
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// `nn.Linear(inputs, outputs)`, on a vector or at every step of a sequence; or, when
    /// `tied` names an embedding of the same network, a head without bias whose weight is that
    /// embedding's table.
    Linear {
        inputs: usize,
        outputs: usize,
        tied: Option<String>,
    },
    Activation(Activation),
    Softmax,
    Conv2d {
        inputs: usize,
        outputs: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    MaxPool2d {
        kernel: usize,
        stride: usize,
    },
    AvgPool2d {
        kernel: usize,
        stride: usize,
    },
    AdaptiveAvgPool2d {
        height: usize,
        width: usize,
    },
    Flatten,
    /// Dropout probability in parts per million (const generics cannot be floats).
    Dropout {
        per_million: u32,
    },
    BatchNorm2d {
        channels: usize,
    },
    Embedding {
        vocab: usize,
        dim: usize,
    },
    Recurrent {
        cell: Cell,
        inputs: usize,
        hidden: usize,
    },
    Last,
    /// Layer norm over the last dimension; epsilon in units of 1e-12.
    LayerNorm {
        eps_e12: u64,
    },
    MultiHeadAttention {
        heads: usize,
        causal: bool,
        /// Hugging Face BERT's separate `self.query`, ..., `output.dense` names instead of
        /// PyTorch's packed `in_proj_weight`.
        bert_names: bool,
    },
    /// A learned position table of `rows` positions (0: as many as the sequence has steps).
    LearnedPositions {
        rows: usize,
    },
    /// BERT's token-type table of `types` rows; row 0 is added at every step.
    TokenTypeEmbedding {
        types: usize,
    },
    SinusoidalPositions,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    Sigmoid,
    Tanh,
    Gelu,
    GeluTanh,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell {
    Rnn,
    Lstm,
    Gru,
}

impl Cell {
    /// Stacked gates per hidden unit.
    pub fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cell::Rnn => "rnn",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }
}

/// Reads a layer's arguments: positional sizes first, then `name = value` pairs.
struct Args<'a> {
    layer: &'a Layer,
    name: String,
    used: Vec<bool>,
}

impl<'a> Args<'a> {
    fn new(layer: &'a Layer) -> Self {
        Self {
            layer,
            name: layer.name.to_string(),
            used: vec![false; layer.args.len()],
        }
    }

    /// The `index`-th positional argument.
    fn positional(&mut self, index: usize) -> Option<&'a Arg> {
        let (i, arg) = self
            .layer
            .args
            .iter()
            .enumerate()
            .filter(|(_, a)| !matches!(a, Arg::Named(..)))
            .nth(index)?;
        self.used[i] = true;
        Some(arg)
    }

    /// Whether the bare word `key` is among the arguments.
    fn flag(&mut self, key: &str) -> bool {
        let found = self
            .layer
            .args
            .iter()
            .position(|a| matches!(a, Arg::Flag(name) if name == key));
        if let Some(i) = found {
            self.used[i] = true;
        }
        found.is_some()
    }

    fn named(&mut self, key: &str) -> Option<&'a ArgValue> {
        let (i, value) = self
            .layer
            .args
            .iter()
            .enumerate()
            .find_map(|(i, a)| match a {
                Arg::Named(name, value) if name == key => Some((i, value)),
                _ => None,
            })?;
        self.used[i] = true;
        Some(value)
    }

    /// A positive size given positionally at `index` or as `key = n`.
    fn size(&mut self, index: Option<usize>, key: &str) -> syn::Result<Option<usize>> {
        if let Some(value) = self.named(key) {
            return match value {
                ArgValue::Int(lit) => positive(lit, &self.name).map(Some),
                _ => Err(syn::Error::new(
                    self.layer.name.span(),
                    format!("`{key}` of `{}` must be a whole number", self.name),
                )),
            };
        }
        match index.and_then(|i| self.positional(i)) {
            None => Ok(None),
            Some(Arg::Int(lit)) => positive(lit, &self.name).map(Some),
            Some(other) => Err(errors::unexpected_argument(
                other.span(),
                &self.name,
                usage(&self.name),
            )),
        }
    }

    /// Errors on any argument not read.
    fn finish(self) -> syn::Result<()> {
        match self.used.iter().position(|u| !u) {
            Some(i) if self.layer.args.is_empty() => {
                unreachable!("no arguments, none unused ({i})")
            }
            Some(i) => {
                let span = self.layer.args[i].span();
                if usage(&self.name) == self.name {
                    Err(errors::takes_no_arguments(span, &self.name))
                } else {
                    Err(errors::unexpected_argument(
                        span,
                        &self.name,
                        usage(&self.name),
                    ))
                }
            }
            None => Ok(()),
        }
    }
}

fn positive(lit: &syn::LitInt, layer: &str) -> syn::Result<usize> {
    let value: usize = lit.base10_parse()?;
    if value == 0 {
        return Err(errors::zero_size(lit.span(), layer));
    }
    Ok(value)
}

/// How each layer is written, for messages.
pub fn usage(name: &str) -> &'static str {
    match name {
        "linear" => "linear(out_features)` or `linear(in_features => out_features)` or `linear(vocabulary, tied = embedding_name)",
        "conv2d" => "conv2d(out_channels, kernel = 3, stride = 1, padding = 1)` or `conv2d(in_channels => out_channels, kernel = 3)",
        "max_pool2d" => "max_pool2d(kernel)` or `max_pool2d(kernel, stride = 2)",
        "avg_pool2d" => "avg_pool2d(kernel)` or `avg_pool2d(kernel, stride = 2)",
        "adaptive_avg_pool2d" => "adaptive_avg_pool2d(7)` or `adaptive_avg_pool2d(7, 7)",
        "dropout" => "dropout(0.5)",
        "batch_norm2d" => "batch_norm2d` or `batch_norm2d(channels)",
        "embedding" => "embedding(vocabulary, dimension)",
        "rnn" => "rnn(hidden)` or `rnn(inputs => hidden)",
        "lstm" => "lstm(hidden)` or `lstm(inputs => hidden)",
        "gru" => "gru(hidden)` or `gru(inputs => hidden)",
        "layer_norm" => "layer_norm` or `layer_norm(eps = 1e-12)",
        "multi_head_attention" => "multi_head_attention(heads = 4)` or `multi_head_attention(heads = 4, causal)` or `multi_head_attention(heads = 12, bert_names)",
        "gelu" => "gelu",
        "gelu_tanh" => "gelu_tanh",
        "learned_positions" => "learned_positions` or `learned_positions(512)",
        "token_type_embedding" => "token_type_embedding(2)",
        "sinusoidal_positions" => "sinusoidal_positions",
        "relu" => "relu",
        "sigmoid" => "sigmoid",
        "tanh" => "tanh",
        "softmax" => "softmax",
        "flatten" => "flatten",
        "last" => "last",
        _ => "",
    }
}

/// `n` or `in => n`, the way linear, conv2d and the recurrent layers take their sizes.
fn mapping(args: &mut Args<'_>, what: &str, example: &str) -> syn::Result<(usize, usize)> {
    match args.positional(0) {
        None => Err(errors::missing_argument(
            &args.layer.tokens,
            &args.name,
            what,
            example,
        )),
        Some(Arg::Int(out)) => Ok((0, positive(out, &args.name)?)),
        Some(Arg::Mapping(i, o)) => Ok((positive(i, &args.name)?, positive(o, &args.name)?)),
        Some(other) => Err(errors::unexpected_argument(
            other.span(),
            &args.name,
            usage(&args.name),
        )),
    }
}

/// Resolves a layer's name and arguments into its kind.
pub fn resolve(layer: &Layer) -> syn::Result<LayerKind> {
    let mut args = Args::new(layer);
    let kind = match args.name.clone().as_str() {
        "linear" => {
            let (inputs, outputs) = mapping(
                &mut args,
                "its number of output features",
                "linear(10)` or `linear(64 => 10)",
            )?;
            let tied = match args.named("tied") {
                None => None,
                Some(ArgValue::Name(label)) if !label.text.is_empty() => Some(label.text.clone()),
                Some(_) => {
                    return Err(syn::Error::new(
                        layer.name.span(),
                        "`tied` of `linear` names an embedding of this network, like `linear(256, tied = tok)`",
                    ))
                }
            };
            LayerKind::Linear {
                inputs,
                outputs,
                tied,
            }
        }
        "relu" => LayerKind::Activation(Activation::Relu),
        "sigmoid" => LayerKind::Activation(Activation::Sigmoid),
        "tanh" => LayerKind::Activation(Activation::Tanh),
        "softmax" => LayerKind::Softmax,
        "gelu" => LayerKind::Activation(Activation::Gelu),
        "gelu_tanh" => LayerKind::Activation(Activation::GeluTanh),
        "learned_positions" => LayerKind::LearnedPositions {
            rows: args.size(Some(0), "positions")?.unwrap_or(0),
        },
        "token_type_embedding" => {
            let Some(types) = args.size(Some(0), "types")? else {
                return Err(errors::missing_argument(
                    &layer.tokens,
                    "token_type_embedding",
                    "its number of token types",
                    "token_type_embedding(2)",
                ));
            };
            LayerKind::TokenTypeEmbedding { types }
        }
        "sinusoidal_positions" => LayerKind::SinusoidalPositions,
        "layer_norm" => {
            let eps = match args.named("eps") {
                None => 1e-5,
                Some(ArgValue::Float(lit)) => lit.base10_parse::<f64>()?,
                Some(ArgValue::Int(lit)) => lit.base10_parse::<f64>()?,
                Some(ArgValue::Name(_)) => {
                    return Err(syn::Error::new(
                        layer.name.span(),
                        "`eps` of `layer_norm` must be a number, like `eps = 1e-12`",
                    ))
                }
            };
            let eps_e12 = (eps * 1e12).round();
            if !(1.0..=1e12).contains(&eps_e12) {
                return Err(syn::Error::new(
                    layer.name.span(),
                    format!("`layer_norm`: eps must be between 1e-12 and 1, not {eps}"),
                ));
            }
            LayerKind::LayerNorm {
                eps_e12: eps_e12 as u64,
            }
        }
        "multi_head_attention" => {
            let Some(heads) = args.size(None, "heads")? else {
                return Err(errors::missing_argument(
                    &layer.tokens,
                    "multi_head_attention",
                    "its number of heads",
                    "multi_head_attention(heads = 4, causal)",
                ));
            };
            LayerKind::MultiHeadAttention {
                heads,
                causal: args.flag("causal"),
                bert_names: args.flag("bert_names"),
            }
        }
        "flatten" => LayerKind::Flatten,
        "last" => LayerKind::Last,
        "conv2d" => {
            let (inputs, outputs) = mapping(
                &mut args,
                "its number of output channels and a kernel size",
                "conv2d(64, kernel = 3, padding = 1)",
            )?;
            let Some(kernel) = args.size(Some(1), "kernel")? else {
                return Err(errors::missing_argument(
                    &layer.tokens,
                    "conv2d",
                    "a kernel size",
                    "conv2d(64, kernel = 3, padding = 1)",
                ));
            };
            let stride = args.size(None, "stride")?.unwrap_or(1);
            let padding = match args.named("padding") {
                None => 0,
                Some(ArgValue::Int(lit)) => lit.base10_parse()?,
                Some(_) => {
                    return Err(syn::Error::new(
                        layer.name.span(),
                        "`padding` of `conv2d` must be a whole number",
                    ))
                }
            };
            LayerKind::Conv2d {
                inputs,
                outputs,
                kernel,
                stride,
                padding,
            }
        }
        name @ ("max_pool2d" | "avg_pool2d") => {
            let Some(kernel) = args.size(Some(0), "kernel")? else {
                return Err(errors::missing_argument(
                    &layer.tokens,
                    name,
                    "a kernel size",
                    &format!("{name}(2)"),
                ));
            };
            let stride = args.size(Some(1), "stride")?.unwrap_or(kernel);
            if name == "max_pool2d" {
                LayerKind::MaxPool2d { kernel, stride }
            } else {
                LayerKind::AvgPool2d { kernel, stride }
            }
        }
        "adaptive_avg_pool2d" => {
            let Some(height) = args.size(Some(0), "height")? else {
                return Err(errors::missing_argument(
                    &layer.tokens,
                    "adaptive_avg_pool2d",
                    "its output size",
                    "adaptive_avg_pool2d(7)",
                ));
            };
            let width = args.size(Some(1), "width")?.unwrap_or(height);
            LayerKind::AdaptiveAvgPool2d { height, width }
        }
        "dropout" => {
            let value = match (args.positional(0), args.named("p")) {
                (Some(Arg::Float(lit)), None) | (None, Some(ArgValue::Float(lit))) => Some(lit),
                _ => None,
            };
            let Some(lit) = value else {
                return Err(errors::missing_argument(
                    &layer.tokens,
                    "dropout",
                    "its drop probability",
                    "dropout(0.5)",
                ));
            };
            let p: f64 = lit.base10_parse()?;
            if !(0.0..1.0).contains(&p) {
                return Err(errors::bad_probability(lit.span(), p));
            }
            LayerKind::Dropout {
                per_million: (p * 1e6).round() as u32,
            }
        }
        "batch_norm2d" => LayerKind::BatchNorm2d {
            channels: args.size(Some(0), "channels")?.unwrap_or(0),
        },
        "embedding" => {
            let (Some(vocab), Some(dim)) = (
                args.size(Some(0), "vocabulary")?,
                args.size(Some(1), "dimension")?,
            ) else {
                return Err(errors::missing_argument(
                    &layer.tokens,
                    "embedding",
                    "its vocabulary size and dimension",
                    "embedding(65, 128)",
                ));
            };
            LayerKind::Embedding { vocab, dim }
        }
        name @ ("rnn" | "lstm" | "gru") => {
            let cell = match name {
                "rnn" => Cell::Rnn,
                "lstm" => Cell::Lstm,
                _ => Cell::Gru,
            };
            let (inputs, hidden) = mapping(&mut args, "its hidden size", &format!("{name}(128)"))?;
            LayerKind::Recurrent {
                cell,
                inputs,
                hidden,
            }
        }
        name => {
            return Err(errors::unknown_layer(
                &layer.name,
                errors::closest(name, LAYER_NAMES),
                LAYER_NAMES,
            ))
        }
    };
    args.finish()?;
    Ok(kind)
}

/// Output size of a sliding window, and how many input rows it leaves unused (PyTorch floors).
fn window(size: usize, kernel: usize, stride: usize, padding: usize) -> Option<(usize, usize)> {
    let padded = size + 2 * padding;
    if kernel > padded {
        return None;
    }
    Some(((padded - kernel) / stride + 1, (padded - kernel) % stride))
}

/// What a layer outputs for `input`: the shape, and a note for the summary.
pub struct Output {
    pub shape: Vec<usize>,
    /// E.g. PyTorch's floor dropped the last row: said in the summary and as a warning.
    pub note: String,
}

/// The output shape of a layer for a given input, or why the input does not fit.
pub fn output(
    kind: &LayerKind,
    layer: &Layer,
    input: &[usize],
    source: &Source,
) -> syn::Result<Output> {
    let shown = display(kind, Some(input));
    let plain = |shape: Vec<usize>| {
        Ok(Output {
            shape,
            note: String::new(),
        })
    };
    match *kind {
        LayerKind::Linear {
            inputs,
            outputs,
            ref tied,
        } => {
            let (steps, features) = match input {
                [features] => (None, *features),
                [steps, features] => (Some(*steps), *features),
                _ => return Err(errors::needs_vector(&layer.tokens, &shown, input, source)),
            };
            if inputs != 0 && inputs != features {
                let tie = tied
                    .as_ref()
                    .map_or(String::new(), |t| format!(", tied = {t}"));
                let fix = format!("linear({features} => {outputs}{tie})");
                return Err(errors::in_features_mismatch(
                    &layer.tokens,
                    &shown,
                    inputs,
                    input,
                    source,
                    &fix,
                ));
            }
            plain(steps.map_or(vec![outputs], |t| vec![t, outputs]))
        }
        LayerKind::Activation(_) | LayerKind::Softmax => plain(input.to_vec()),
        LayerKind::Flatten => plain(vec![input.iter().product()]),
        LayerKind::Dropout { .. } => plain(input.to_vec()),
        LayerKind::Conv2d {
            inputs,
            outputs,
            kernel,
            stride,
            padding,
        } => {
            let [channels, height, width] = *input else {
                return Err(errors::needs_volume(&layer.tokens, &shown, input, source));
            };
            if inputs != 0 && inputs != channels {
                let fix = display(
                    &LayerKind::Conv2d {
                        inputs: channels,
                        outputs,
                        kernel,
                        stride,
                        padding,
                    },
                    None,
                );
                return Err(errors::channels_mismatch(
                    &layer.tokens,
                    &shown,
                    inputs,
                    channels,
                    source,
                    &fix,
                ));
            }
            sliding(
                layer, &shown, input, source, outputs, kernel, stride, padding, height, width,
            )
        }
        LayerKind::MaxPool2d { kernel, stride } | LayerKind::AvgPool2d { kernel, stride } => {
            let [channels, height, width] = *input else {
                return Err(errors::needs_volume(&layer.tokens, &shown, input, source));
            };
            sliding(
                layer, &shown, input, source, channels, kernel, stride, 0, height, width,
            )
        }
        LayerKind::AdaptiveAvgPool2d { height, width } => {
            let [channels, _, _] = *input else {
                return Err(errors::needs_volume(&layer.tokens, &shown, input, source));
            };
            plain(vec![channels, height, width])
        }
        LayerKind::BatchNorm2d { channels } => {
            let [c, _, _] = *input else {
                return Err(errors::needs_volume(&layer.tokens, &shown, input, source));
            };
            if channels != 0 && channels != c {
                return Err(errors::channels_mismatch(
                    &layer.tokens,
                    &shown,
                    channels,
                    c,
                    source,
                    "batch_norm2d",
                ));
            }
            plain(input.to_vec())
        }
        LayerKind::Embedding { dim, .. } => match input {
            [steps] => plain(vec![*steps, dim]),
            _ => Err(errors::needs_tokens(&layer.tokens, &shown, input, source)),
        },
        LayerKind::Recurrent {
            cell,
            inputs,
            hidden,
        } => match input {
            [steps, features] => {
                if inputs != 0 && inputs != *features {
                    let fix = format!("{}({features} => {hidden})", cell.name());
                    return Err(errors::in_features_mismatch(
                        &layer.tokens,
                        &shown,
                        inputs,
                        input,
                        source,
                        &fix,
                    ));
                }
                plain(vec![*steps, hidden])
            }
            _ => Err(errors::needs_sequence(&layer.tokens, &shown, input, source)),
        },
        LayerKind::Last => match input {
            [_, features] => plain(vec![*features]),
            _ => Err(errors::needs_sequence(&layer.tokens, &shown, input, source)),
        },
        LayerKind::LayerNorm { .. } => plain(input.to_vec()),
        LayerKind::LearnedPositions { rows } => {
            match input {
                [steps, _] if rows != 0 && *steps > rows => Err(
                    errors::sequence_longer_than_table(&layer.tokens, &shown, *steps, rows),
                ),
                [_, _] => plain(input.to_vec()),
                _ => Err(errors::needs_sequence(&layer.tokens, &shown, input, source)),
            }
        }
        LayerKind::SinusoidalPositions | LayerKind::TokenTypeEmbedding { .. } => match input {
            [_, _] => plain(input.to_vec()),
            _ => Err(errors::needs_sequence(&layer.tokens, &shown, input, source)),
        },
        LayerKind::MultiHeadAttention { heads, .. } => match input {
            [_, model] if model % heads != 0 => Err(errors::heads_do_not_divide(
                &layer.tokens,
                &shown,
                *model,
                heads,
            )),
            [_, _] => plain(input.to_vec()),
            _ => Err(errors::needs_sequence(&layer.tokens, &shown, input, source)),
        },
    }
}

/// Output of a convolution or pooling window over `[_, height, width]`.
#[allow(clippy::too_many_arguments)]
fn sliding(
    layer: &Layer,
    shown: &str,
    input: &[usize],
    source: &Source,
    channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    height: usize,
    width: usize,
) -> syn::Result<Output> {
    let (Some((out_h, rest_h)), Some((out_w, rest_w))) = (
        window(height, kernel, stride, padding),
        window(width, kernel, stride, padding),
    ) else {
        return Err(errors::kernel_too_large(
            &layer.tokens,
            shown,
            kernel,
            input,
            padding,
            source,
        ));
    };
    let note = if rest_h + rest_w > 0 {
        format!(
            "stride {stride} does not divide the padded input {} x {} minus the kernel {kernel}: like PyTorch, the output is floored to {out_h} x {out_w} and the last {rest_h} row(s) and {rest_w} column(s) are not used; write `=> [{channels}, {out_h}, {out_w}]` after the layer to acknowledge it",
            height + 2 * padding,
            width + 2 * padding
        )
    } else {
        String::new()
    };
    Ok(Output {
        shape: vec![channels, out_h, out_w],
        note,
    })
}

/// How to change the layer so that it outputs `wanted`, where there is an obvious way.
pub fn fix_for_output(kind: &LayerKind, input: &[usize], wanted: &[usize]) -> Option<String> {
    match (kind, wanted) {
        (LayerKind::Linear { inputs: 0, .. }, [.., out]) => {
            Some(format!("change the layer to `linear({out})`"))
        }
        (LayerKind::Linear { inputs, .. }, [.., out]) => {
            Some(format!("change the layer to `linear({inputs} => {out})`"))
        }
        (
            &LayerKind::Conv2d {
                kernel,
                stride,
                padding,
                ..
            },
            [_, want_h, _],
        ) if input.len() == 3 => {
            // Solve (H + 2P - K) / S + 1 = wanted for P.
            let needed = (want_h - 1) * stride + kernel;
            let height = input[1];
            if needed >= height
                && (needed - height).is_multiple_of(2)
                && (needed - height) / 2 != padding
            {
                let p = (needed - height) / 2;
                let keeps = if *want_h == height {
                    format!(" keeps {height}")
                } else {
                    format!(" gives {want_h}")
                };
                Some(format!("use `padding = {p}` (padding = {p}{keeps})"))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The layer as the summary shows it, with inferred sizes filled in.
pub fn display(kind: &LayerKind, input: Option<&[usize]>) -> String {
    // Only a vector or a sequence has a feature count to show.
    let last = input
        .filter(|i| i.len() <= 2)
        .and_then(|i| i.last().copied());
    let first = input
        .filter(|i| i.len() == 3)
        .and_then(|i| i.first().copied());
    let with_inputs =
        |given: usize, inferred: Option<usize>| if given != 0 { Some(given) } else { inferred };
    match *kind {
        LayerKind::Linear {
            inputs,
            outputs,
            ref tied,
        } => {
            let tie = tied
                .as_ref()
                .map_or(String::new(), |t| format!(", tied = {t}"));
            match with_inputs(inputs, last) {
                Some(i) => format!("linear({i} => {outputs}{tie})"),
                None => format!("linear({outputs}{tie})"),
            }
        }
        LayerKind::Activation(Activation::Relu) => "relu".into(),
        LayerKind::Activation(Activation::Sigmoid) => "sigmoid".into(),
        LayerKind::Activation(Activation::Tanh) => "tanh".into(),
        LayerKind::Activation(Activation::Gelu) => "gelu".into(),
        LayerKind::Activation(Activation::GeluTanh) => "gelu_tanh".into(),
        LayerKind::LayerNorm {
            eps_e12: 10_000_000,
        } => "layer_norm".into(),
        LayerKind::LayerNorm { eps_e12 } => {
            format!("layer_norm(eps = {:e})", eps_e12 as f64 * 1e-12)
        }
        LayerKind::MultiHeadAttention {
            heads,
            causal,
            bert_names,
        } => {
            let mut text = format!("multi_head_attention(heads = {heads}");
            if causal {
                text.push_str(", causal");
            }
            if bert_names {
                text.push_str(", bert_names");
            }
            text + ")"
        }
        LayerKind::LearnedPositions { rows: 0 } => "learned_positions".into(),
        LayerKind::LearnedPositions { rows } => format!("learned_positions({rows})"),
        LayerKind::TokenTypeEmbedding { types } => format!("token_type_embedding({types})"),
        LayerKind::SinusoidalPositions => "sinusoidal_positions".into(),
        LayerKind::Softmax => "softmax".into(),
        LayerKind::Flatten => "flatten".into(),
        LayerKind::Last => "last".into(),
        LayerKind::Conv2d {
            inputs,
            outputs,
            kernel,
            stride,
            padding,
        } => {
            let channels = match with_inputs(inputs, first) {
                Some(i) => format!("{i} => {outputs}"),
                None => outputs.to_string(),
            };
            let mut text = format!("conv2d({channels}, kernel = {kernel}");
            if stride != 1 {
                text.push_str(&format!(", stride = {stride}"));
            }
            if padding != 0 {
                text.push_str(&format!(", padding = {padding}"));
            }
            text + ")"
        }
        LayerKind::MaxPool2d { kernel, stride } if stride == kernel => {
            format!("max_pool2d({kernel})")
        }
        LayerKind::MaxPool2d { kernel, stride } => {
            format!("max_pool2d({kernel}, stride = {stride})")
        }
        LayerKind::AvgPool2d { kernel, stride } if stride == kernel => {
            format!("avg_pool2d({kernel})")
        }
        LayerKind::AvgPool2d { kernel, stride } => {
            format!("avg_pool2d({kernel}, stride = {stride})")
        }
        LayerKind::AdaptiveAvgPool2d { height, width } => {
            format!("adaptive_avg_pool2d({height}, {width})")
        }
        LayerKind::Dropout { per_million } => format!("dropout({})", f64::from(per_million) / 1e6),
        LayerKind::BatchNorm2d { channels } => match with_inputs(channels, first) {
            Some(c) => format!("batch_norm2d({c})"),
            None => "batch_norm2d".into(),
        },
        LayerKind::Embedding { vocab, dim } => format!("embedding({vocab}, {dim})"),
        LayerKind::Recurrent {
            cell,
            inputs,
            hidden,
        } => match with_inputs(inputs, last) {
            Some(i) => format!("{}({i} => {hidden})", cell.name()),
            None => format!("{}({hidden})", cell.name()),
        },
    }
}

/// (parameters, multiply-adds per sample) of a layer from its input and output shapes.
pub fn cost(kind: &LayerKind, input: &[usize], output: &[usize]) -> (usize, usize) {
    let numel = |s: &[usize]| s.iter().product::<usize>();
    match *kind {
        LayerKind::Linear {
            outputs, ref tied, ..
        } => {
            let features = *input.last().expect("checked rank");
            let steps = numel(input) / features;
            // A tied head's weight is counted with its embedding.
            let params = if tied.is_some() {
                0
            } else {
                features * outputs + outputs
            };
            (params, steps * features * outputs)
        }
        LayerKind::Conv2d {
            outputs, kernel, ..
        } => {
            let weights = outputs * input[0] * kernel * kernel;
            (weights + outputs, weights * output[1] * output[2])
        }
        LayerKind::BatchNorm2d { .. } => (2 * input[0], 0),
        LayerKind::Embedding { vocab, dim } => (vocab * dim, 0),
        LayerKind::Recurrent { cell, hidden, .. } => {
            let (steps, features) = (input[0], input[1]);
            let g = cell.gates() * hidden;
            (
                g * features + g * hidden + 2 * g,
                steps * (g * features + g * hidden),
            )
        }
        LayerKind::LayerNorm { .. } => (2 * input.last().expect("rank >= 1"), 0),
        LayerKind::LearnedPositions { rows: 0 } => (numel(input), 0),
        LayerKind::LearnedPositions { rows } => (rows * input[1], 0),
        LayerKind::TokenTypeEmbedding { types } => (types * input[1], 0),
        LayerKind::MultiHeadAttention { .. } => {
            let (steps, model) = (input[0], input[1]);
            (
                4 * model * model + 4 * model,
                steps * 4 * model * model + 2 * steps * steps * model,
            )
        }
        LayerKind::SinusoidalPositions
        | LayerKind::Activation(_)
        | LayerKind::Softmax
        | LayerKind::Flatten
        | LayerKind::Dropout { .. }
        | LayerKind::MaxPool2d { .. }
        | LayerKind::AvgPool2d { .. }
        | LayerKind::AdaptiveAvgPool2d { .. }
        | LayerKind::Last => (0, 0),
    }
}
