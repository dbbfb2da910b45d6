//! Every message `network!` can print, in one place, so they read alike: what is wrong, at
//! which layer, with which shapes and numbers, and how to fix it.

use proc_macro2::{Span, TokenStream};
use syn::Ident;

/// Formats a shape as written in `network!`: `[512, 7, 7]`.
pub fn dims(shape: &[usize]) -> String {
    let inner: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", inner.join(", "))
}

/// `4608 (512 x 3 x 3)` for a flattened volume, `32` for a vector.
fn size_with_arithmetic(shape: &[usize]) -> String {
    let total: usize = shape.iter().product();
    if shape.len() > 1 {
        let factors: Vec<String> = shape.iter().map(usize::to_string).collect();
        format!("{total} ({})", factors.join(" x "))
    } else {
        total.to_string()
    }
}

/// Where a layer's input comes from, for messages: "the network input" or "`0: linear(64 => 32)`".
#[derive(Clone)]
pub enum Source {
    NetworkInput,
    Layer {
        path: String,
        display: String,
        /// For `flatten`: the shape it flattened, to show the arithmetic.
        flattened: Option<Vec<usize>>,
    },
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::NetworkInput => "the network input".to_string(),
            Source::Layer { path, display, .. } => format!("`{path}: {display}`"),
        }
    }
}

pub fn missing_input_shape(name: &Ident) -> syn::Error {
    syn::Error::new(
        name.span(),
        format!(
            "the network `{name}` needs its input shape after its name\n\
             help: write the shape of one sample, e.g. `struct {name}: [784] {{ ... }}` or `struct {name}: [3, 224, 224] {{ ... }}`"
        ),
    )
}

pub fn unknown_layer(name: &Ident, suggestion: Option<&str>, known: &[&str]) -> syn::Error {
    let hint = match suggestion {
        Some(s) => format!("help: did you mean `{s}`?"),
        None => format!("help: the layers are: {}", known.join(", ")),
    };
    syn::Error::new(name.span(), format!("unknown layer `{name}`\n{hint}"))
}

pub fn missing_argument(layer: &TokenStream, name: &str, what: &str, example: &str) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!("`{name}` needs {what}\nhelp: write e.g. `{example}`"),
    )
}

pub fn unexpected_argument(span: Span, name: &str, usage: &str) -> syn::Error {
    syn::Error::new(
        span,
        format!("unexpected argument to `{name}`\nhelp: `{name}` is written `{usage}`"),
    )
}

pub fn takes_no_arguments(span: Span, name: &str) -> syn::Error {
    syn::Error::new(
        span,
        format!("`{name}` takes no arguments\nhelp: write `{name}`"),
    )
}

pub fn zero_size(span: Span, name: &str) -> syn::Error {
    syn::Error::new(span, format!("`{name}` sizes must be at least 1"))
}

pub fn in_features_mismatch(
    layer: &TokenStream,
    display: &str,
    declared: usize,
    input: &[usize],
    source: &Source,
    fix: &str,
) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}` expects {declared} input features, but gets {} from {}\n\
             help: write `{fix}`, or leave the input size out to infer it",
            match (source, input) {
                (
                    Source::Layer {
                        flattened: Some(volume),
                        ..
                    },
                    _,
                ) => size_with_arithmetic(volume),
                (_, [steps, features]) => format!("{features} per step (of {steps} steps)"),
                _ => size_with_arithmetic(input),
            },
            source.describe()
        ),
    )
}

pub fn needs_vector(
    layer: &TokenStream,
    display: &str,
    input: &[usize],
    source: &Source,
) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}` takes a vector of features (or a sequence of them), but gets {} from {}\n\
             help: put `flatten` before it to feed it {} features",
            dims(input),
            source.describe(),
            size_with_arithmetic(input)
        ),
    )
}

pub fn needs_volume(
    layer: &TokenStream,
    display: &str,
    input: &[usize],
    source: &Source,
) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}` takes a volume [channels, height, width], but gets {} from {}\n\
             help: declare an image input like `[3, 224, 224]`, or move the layer before `flatten`",
            dims(input),
            source.describe()
        ),
    )
}

pub fn needs_sequence(
    layer: &TokenStream,
    display: &str,
    input: &[usize],
    source: &Source,
) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}` takes a sequence [steps, features], but gets {} from {}\n\
             help: declare a sequence input like `[64, 32]`, or put `embedding(vocabulary, dimension)` before it to embed token ids",
            dims(input),
            source.describe()
        ),
    )
}

pub fn needs_tokens(
    layer: &TokenStream,
    display: &str,
    input: &[usize],
    source: &Source,
) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}` takes a sequence of token ids [steps], but gets {} from {}\n\
             help: an embedding comes first, on an input like `[64]` (64 token ids)",
            dims(input),
            source.describe()
        ),
    )
}

pub fn channels_mismatch(
    layer: &TokenStream,
    display: &str,
    declared: usize,
    actual: usize,
    source: &Source,
    fix: &str,
) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}` expects {declared} input channels, but gets {actual} from {}\n\
             help: write `{fix}`, or leave the input channels out to infer them",
            source.describe()
        ),
    )
}

pub fn kernel_too_large(
    layer: &TokenStream,
    display: &str,
    kernel: usize,
    input: &[usize],
    padding: usize,
    source: &Source,
) -> syn::Error {
    let (h, w) = (input[1] + 2 * padding, input[2] + 2 * padding);
    let padded = if padding > 0 {
        format!(" ({} x {} padded by {padding})", input[1], input[2])
    } else {
        String::new()
    };
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}`: the {kernel} x {kernel} kernel is larger than its {h} x {w} input{padded} from {}\n\
             help: use a smaller kernel, add padding, or remove a downsampling layer before it",
            source.describe()
        ),
    )
}

pub fn heads_do_not_divide(
    layer: &TokenStream,
    display: &str,
    model: usize,
    heads: usize,
) -> syn::Error {
    let divisors: Vec<String> = (1..=model.min(64))
        .filter(|h| model.is_multiple_of(*h))
        .map(|h| h.to_string())
        .collect();
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}`: the model dimension {model} is not divisible by {heads} heads, so the heads cannot split it evenly\n\
             help: use a number of heads that divides {model} (e.g. {}), or change the model dimension",
            divisors.join(", ")
        ),
    )
}

pub fn sequence_longer_than_table(
    layer: &TokenStream,
    display: &str,
    steps: usize,
    rows: usize,
) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}`: the sequence has {steps} steps, but the position table holds only {rows} positions\n\
             help: write `learned_positions({steps})` (or more rows), or shorten the sequence to at most {rows} steps"
        ),
    )
}

pub fn duplicate_name(layer: &TokenStream, path: &str) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!(
            "a second layer with parameters is named `{path}`: both would save and load their tensors as `{path}.*`\n\
             help: give one of them another name"
        ),
    )
}

pub fn duplicate_field(layer: &TokenStream, field: &str) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!(
            "two layers of this network get the Rust field `{field}` (names are joined with `_` and lower-cased)\n\
             help: give one of them another name"
        ),
    )
}

pub fn tied_to_unknown(
    layer: &TokenStream,
    display: &str,
    name: &str,
    embeddings: &[&str],
) -> syn::Error {
    let help = match embeddings {
        [] => "help: declare a named embedding before the head in the same network, like `tok: embedding(256, 128)`".to_string(),
        known => format!(
            "help: the embeddings declared before it here are {}",
            known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        ),
    };
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}`: there is no embedding named `{name}` before this head in the same network (a head inside a residual block cannot reach one outside it)\n{help}"
        ),
    )
}

pub fn tied_vocabulary_mismatch(
    layer: &TokenStream,
    display: &str,
    name: &str,
    vocab: usize,
    outputs: usize,
) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}` shares the table of `{name}`, which has a vocabulary of {vocab}, but predicts {outputs} classes\n\
             help: a tied head predicts the embedding's vocabulary: write `linear({vocab}, tied = {name})`"
        ),
    )
}

pub fn tied_width_mismatch(
    layer: &TokenStream,
    display: &str,
    name: &str,
    dim: usize,
    features: usize,
) -> syn::Error {
    syn::Error::new_spanned(
        layer,
        format!(
            "`{display}` shares the table of `{name}`, whose vectors have {dim} features, but its input has {features}\n\
             help: a tied head reads vectors as wide as the embedding's: bring the input to {dim} features first, e.g. `linear({dim})`"
        ),
    )
}

pub fn bad_probability(span: Span, p: f64) -> syn::Error {
    syn::Error::new(
        span,
        format!(
            "a dropout probability must be in [0, 1), not {p}\nhelp: write e.g. `dropout(0.5)`"
        ),
    )
}

pub fn residual_changes_shape(
    residual: &TokenStream,
    input: &[usize],
    output: &[usize],
) -> syn::Error {
    let suggestion = match (input, output) {
        ([ci, hi, _], [co, ho, _]) if hi % ho == 0 => {
            let stride = hi / ho;
            let stride = if stride > 1 {
                format!(", stride = {stride}")
            } else {
                String::new()
            };
            format!("`shortcut {{ conv2d({ci} => {co}, kernel = 1{stride}), batch_norm2d }}`")
        }
        _ => "a `shortcut { ... }` that maps the input to the body's output shape".to_string(),
    };
    syn::Error::new_spanned(
        residual,
        format!(
            "this residual block's body changes the shape from {} to {}, so its input cannot be added to its output\n\
             help: add a projection after the body: {suggestion}",
            dims(input),
            dims(output)
        ),
    )
}

pub fn shortcut_mismatch(residual: &TokenStream, body: &[usize], shortcut: &[usize]) -> syn::Error {
    syn::Error::new_spanned(
        residual,
        format!(
            "this residual block's body outputs {} but its shortcut outputs {}; the two are added, so they must agree",
            dims(body),
            dims(shortcut)
        ),
    )
}

pub fn vocabulary_mismatch(
    head: &TokenStream,
    display: &str,
    classes: usize,
    vocab: usize,
) -> syn::Error {
    syn::Error::new_spanned(
        head,
        format!(
            "the output head `{display}` predicts {classes} classes per step, but the network's `embedding` has a vocabulary of {vocab}\n\
             help: a language model predicts its next token: write `linear({vocab})`"
        ),
    )
}

pub fn annotation_mismatch(
    annotation: Span,
    display: &str,
    actual: &[usize],
    written: &[usize],
    fix: Option<String>,
) -> syn::Error {
    let mut message = format!(
        "`{display}` outputs {}, but the annotation says {}\nhelp: write `=> {}`",
        dims(actual),
        dims(written),
        dims(actual)
    );
    if let Some(fix) = fix {
        message.push_str(&format!(", or {fix}"));
    }
    syn::Error::new(annotation, message)
}

/// Joins several errors so that one compile reports them all.
pub fn combine(errors: Vec<syn::Error>) -> Option<syn::Error> {
    let mut iter = errors.into_iter();
    let mut first = iter.next()?;
    for e in iter {
        first.combine(e);
    }
    Some(first)
}

/// The closest known name, for "did you mean" (edit distance at most 2, or a shared prefix).
pub fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2 || (name.len() >= 3 && k.starts_with(name)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_pick_the_nearest_layer_name() {
        let known = ["linear", "relu", "sigmoid", "tanh", "softmax"];
        assert_eq!(closest("lineer", &known), Some("linear"));
        assert_eq!(closest("sigmod", &known), Some("sigmoid"));
        assert_eq!(closest("softm", &known), Some("softmax"));
        assert_eq!(closest("convolution", &known), None);
        assert_eq!(size_with_arithmetic(&[512, 3, 3]), "4608 (512 x 3 x 3)");
    }
}
