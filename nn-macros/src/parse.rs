//! Stage 1: tokens → syntax tree. Only the grammar is checked here; shapes are `check`'s job.
//!
//! ```text
//! network    := attr* vis "struct" Ident ":" shape "{" items "}"
//! items      := (item ("," item)* ","?)?
//! item       := label ":" "{" items "}"            a named group (PyTorch nn.Sequential)
//!             | label? "repeat" "(" int ")" "{" items "}"
//!                                                   n copies of a group, named 0, 1, ..
//!             | (label ":")? layer ("=>" shape)?   a layer, optionally named, with an optional
//!                                                   checked output shape
//!             | (label ":")? "residual" ("(" Ident ")")? "{" items "}" ("shortcut" "{" items "}")?
//!                                                   y = body(x) + shortcut(x), then the optional
//!                                                   activation; the shortcut is the identity
//!                                                   unless given (a projection)
//! label      := "_" | segment ("." segment)*       a PyTorch attribute path; keywords are fine
//!                                                   (`attention.self`); `_` adds no name
//! segment    := Ident | int
//! layer      := Ident ("(" arg ("," arg)* ","? ")")?
//! arg        := int | float | int "=>" int | Ident "=" (int | float | label) | Ident
//! shape      := "[" int ("," int)* ","? "]"
//! ```

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{
    braced, bracketed, parenthesized, Attribute, Ident, LitFloat, LitInt, Token, Visibility,
};

use crate::errors;

/// A whole `network!` invocation.
pub struct Network {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub input: ShapeLit,
    pub items: Vec<Item>,
}

/// A shape written in the source, e.g. `[3, 224, 224]`.
#[derive(Clone)]
pub struct ShapeLit {
    pub dims: Vec<usize>,
    pub span: Span,
}

#[derive(Clone)]
pub enum Item {
    Group { name: Label, items: Vec<Item> },
    Layer(Layer),
    Residual(Residual),
}

/// The name of a layer, group or block: the path of PyTorch attribute names it stands for,
/// e.g. `conv1`, `features`, `attention.output.LayerNorm`; empty for `_`.
#[derive(Clone)]
pub struct Label {
    pub text: String,
}

/// `residual(relu) { body } shortcut { projection }`.
#[derive(Clone)]
pub struct Residual {
    pub name: Option<Label>,
    /// The activation applied after the addition, inside the block (as in ResNet's blocks).
    pub activation: Option<Ident>,
    pub body: Vec<Item>,
    pub shortcut: Option<Vec<Item>>,
    pub annotation: Option<ShapeLit>,
    /// The `residual` keyword (and its argument), for error spans.
    pub tokens: TokenStream,
}

/// One layer call, e.g. `conv1: conv2d(64, kernel = 3, padding = 1) => [64, 224, 224]`.
#[derive(Clone)]
pub struct Layer {
    /// The name given to the layer (its PyTorch attribute name), if any.
    pub label: Option<Label>,
    pub name: Ident,
    pub args: Vec<Arg>,
    /// The expected output shape, when written.
    pub annotation: Option<ShapeLit>,
    /// All tokens of the call (without the annotation), for error spans.
    pub tokens: TokenStream,
}

#[derive(Clone)]
pub enum Arg {
    /// `64`
    Int(LitInt),
    /// `0.5`
    Float(LitFloat),
    /// `784 => 512`
    Mapping(LitInt, LitInt),
    /// `name = value`
    Named(Ident, ArgValue),
    /// `causal`
    Flag(Ident),
}

#[derive(Clone)]
pub enum ArgValue {
    Int(LitInt),
    Float(LitFloat),
    /// Another layer's name, e.g. `tied = transformer.wte`.
    Name(Label),
}

impl Arg {
    pub fn span(&self) -> Span {
        match self {
            Arg::Int(lit) => lit.span(),
            Arg::Float(lit) => lit.span(),
            Arg::Mapping(a, b) => a.span().join(b.span()).unwrap_or_else(|| a.span()),
            Arg::Named(name, _) => name.span(),
            Arg::Flag(name) => name.span(),
        }
    }
}

impl Parse for Network {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>()?;
        let name: Ident = input.parse()?;
        if !input.peek(Token![:]) {
            return Err(errors::missing_input_shape(&name));
        }
        input.parse::<Token![:]>()?;
        let shape: ShapeLit = input.parse()?;
        let body;
        braced!(body in input);
        let items = parse_items(&body)?;
        if !input.is_empty() {
            return Err(input.error(
                "unexpected tokens after the network's body; declare one network per `network!`",
            ));
        }
        Ok(Network {
            attrs,
            vis,
            name,
            input: shape,
            items,
        })
    }
}

fn parse_items(input: ParseStream) -> syn::Result<Vec<Item>> {
    let parsed: Punctuated<Parsed, Token![,]> = Punctuated::parse_terminated(input)?;
    let mut items = Vec::new();
    for item in parsed {
        match item {
            Parsed::Item(item) => items.push(item),
            // Each copy is named by its position among the items, like any unnamed item.
            Parsed::Repeat { count, body } => {
                for _ in 0..count {
                    let name = Label {
                        text: items.len().to_string(),
                    };
                    items.push(Item::Group {
                        name,
                        items: body.clone(),
                    });
                }
            }
        }
    }
    Ok(items)
}

/// An item as written: `repeat` stands for several items until `parse_items` expands it.
enum Parsed {
    Item(Item),
    Repeat { count: usize, body: Vec<Item> },
}

/// Whether the input starts with `label :` (and not a path like `a::b`).
fn peek_label(input: ParseStream) -> bool {
    let fork = input.fork();
    fork.parse::<Label>().is_ok() && fork.peek(Token![:]) && !fork.peek(Token![::])
}

impl Parse for Label {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Token![_]) {
            input.parse::<Token![_]>()?;
            return Ok(Label {
                text: String::new(),
            });
        }
        let mut text = segment(input)?;
        while input.peek(Token![.]) {
            input.parse::<Token![.]>()?;
            text.push('.');
            text.push_str(&segment(input)?);
        }
        Ok(Label { text })
    }
}

/// One segment of a label: a name (keywords included: BERT has `attention.self`) or an index.
/// `a.0.1` arrives as `a`, `.`, `0.1`: a float literal stands for two indices.
fn segment(input: ParseStream) -> syn::Result<String> {
    if input.peek(LitInt) {
        return Ok(input.parse::<LitInt>()?.base10_digits().to_string());
    }
    if input.peek(LitFloat) {
        let lit: LitFloat = input.parse()?;
        let text = lit.to_string();
        if text
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        {
            return Ok(text);
        }
        return Err(syn::Error::new(lit.span(), "expected a name or an index"));
    }
    Ok(input.call(Ident::parse_any)?.to_string())
}

/// `repeat(n) { items }`, after an optional label.
fn parse_repeat(input: ParseStream) -> syn::Result<(usize, Vec<Item>)> {
    let keyword: Ident = input.parse()?;
    let inner;
    parenthesized!(inner in input);
    let count: LitInt = inner.parse()?;
    let count: usize = count.base10_parse()?;
    if count == 0 {
        return Err(syn::Error::new(
            keyword.span(),
            "`repeat(0)` repeats nothing; write at least `repeat(1)`",
        ));
    }
    let body;
    braced!(body in input);
    Ok((count, parse_items(&body)?))
}

/// Whether the input starts with `repeat(..) {`.
fn is_repeat(input: ParseStream) -> bool {
    let fork = input.fork();
    fork.parse::<Ident>().is_ok_and(|i| i == "repeat")
        && fork.peek(syn::token::Paren)
        && fork.parse::<proc_macro2::TokenTree>().is_ok()
        && fork.peek(syn::token::Brace)
}

impl Parse for Parsed {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut label = None;
        if peek_label(input) {
            let name: Label = input.parse()?;
            input.parse::<Token![:]>()?;
            if input.peek(syn::token::Brace) {
                let body;
                braced!(body in input);
                return Ok(Parsed::Item(Item::Group {
                    name,
                    items: parse_items(&body)?,
                }));
            }
            label = Some(name);
        }
        if is_repeat(input) {
            let (count, body) = parse_repeat(input)?;
            let Some(name) = label else {
                return Ok(Parsed::Repeat { count, body });
            };
            let items = (0..count)
                .map(|index| Item::Group {
                    name: Label {
                        text: index.to_string(),
                    },
                    items: body.clone(),
                })
                .collect();
            return Ok(Parsed::Item(Item::Group { name, items }));
        }
        let fork = input.fork();
        let is_residual = fork.parse::<Ident>().is_ok_and(|i| i == "residual")
            && (fork.peek(syn::token::Brace) || fork.peek(syn::token::Paren));
        if is_residual {
            return Ok(Parsed::Item(Item::Residual(parse_residual(input, label)?)));
        }
        let mut layer: Layer = input.parse()?;
        layer.label = label;
        Ok(Parsed::Item(Item::Layer(layer)))
    }
}

fn parse_residual(input: ParseStream, name: Option<Label>) -> syn::Result<Residual> {
    let keyword: Ident = input.parse()?;
    let mut tokens = keyword.to_token_stream();
    let mut activation = None;
    if input.peek(syn::token::Paren) {
        let inner;
        let paren = parenthesized!(inner in input);
        activation = Some(inner.parse::<Ident>()?);
        let mut group =
            proc_macro2::Group::new(proc_macro2::Delimiter::Parenthesis, TokenStream::new());
        group.set_span(paren.span.join());
        tokens.extend(std::iter::once(proc_macro2::TokenTree::Group(group)));
    }
    let body;
    braced!(body in input);
    let body = parse_items(&body)?;
    let shortcut =
        if input.peek(Ident) && input.fork().parse::<Ident>().is_ok_and(|i| i == "shortcut") {
            input.parse::<Ident>()?;
            let inner;
            braced!(inner in input);
            Some(parse_items(&inner)?)
        } else {
            None
        };
    let annotation = if input.peek(Token![=>]) {
        input.parse::<Token![=>]>()?;
        Some(input.parse()?)
    } else {
        None
    };
    Ok(Residual {
        name,
        activation,
        body,
        shortcut,
        annotation,
        tokens,
    })
}

impl Parse for Layer {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: Ident = input.parse()?;
        let mut tokens = name.to_token_stream();
        let mut args = Vec::new();
        if input.peek(syn::token::Paren) {
            let inner;
            let paren = parenthesized!(inner in input);
            let parsed: Punctuated<Arg, Token![,]> = Punctuated::parse_terminated(&inner)?;
            args = parsed.into_iter().collect();
            // Extend the span to the closing parenthesis so errors underline the whole call.
            let mut group =
                proc_macro2::Group::new(proc_macro2::Delimiter::Parenthesis, TokenStream::new());
            group.set_span(paren.span.join());
            tokens.extend(std::iter::once(proc_macro2::TokenTree::Group(group)));
        }
        let annotation = if input.peek(Token![=>]) {
            input.parse::<Token![=>]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(Layer {
            label: None,
            name,
            args,
            annotation,
            tokens,
        })
    }
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Ident) {
            let name: Ident = input.parse()?;
            if !input.peek(Token![=]) {
                return Ok(Arg::Flag(name));
            }
            input.parse::<Token![=]>()?;
            let value = if input.peek(LitInt) {
                ArgValue::Int(input.parse()?)
            } else if input.peek(LitFloat) {
                ArgValue::Float(input.parse()?)
            } else if input.peek(Ident::peek_any) {
                ArgValue::Name(input.parse()?)
            } else {
                return Err(input.error(format!(
                    "expected a number or a layer's name for `{name}`, like `{name} = 1`"
                )));
            };
            return Ok(Arg::Named(name, value));
        }
        if input.peek(LitInt) {
            let first: LitInt = input.parse()?;
            if input.peek(Token![=>]) {
                input.parse::<Token![=>]>()?;
                let second: LitInt = input.parse()?;
                return Ok(Arg::Mapping(first, second));
            }
            return Ok(Arg::Int(first));
        }
        if input.peek(LitFloat) {
            return Ok(Arg::Float(input.parse()?));
        }
        Err(input
            .error("expected a layer argument: a size like `128`, `784 => 128`, or `name = value`"))
    }
}

impl Parse for ShapeLit {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if !input.peek(syn::token::Bracket) {
            return Err(
                input.error("expected a shape in brackets, like `[784]` or `[3, 224, 224]`")
            );
        }
        let inner;
        let bracket = bracketed!(inner in input);
        let lits: Punctuated<LitInt, Token![,]> = Punctuated::parse_terminated(&inner)?;
        let span = bracket.span.join();
        if lits.is_empty() {
            return Err(syn::Error::new(
                span,
                "a shape needs at least one dimension, like `[784]`",
            ));
        }
        let mut dims = Vec::new();
        for lit in &lits {
            let value: usize = lit.base10_parse()?;
            if value == 0 {
                return Err(syn::Error::new(
                    lit.span(),
                    "a dimension must be at least 1",
                ));
            }
            dims.push(value);
        }
        Ok(ShapeLit { dims, span })
    }
}
