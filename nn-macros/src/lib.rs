//! The `network!` macro: a small compiler from a network declaration to monomorphized Rust.
//!
//! `parse` turns tokens into a syntax tree, `check` infers and verifies every layer's shape,
//! `generate` emits the types and code; every message lives in `errors`.

mod check;
mod errors;
mod generate;
mod layers;
mod parse;

use proc_macro::TokenStream;

/// Declares a network whose layer shapes are checked at compile time.
///
/// ```ignore
/// network! {
///     /// A perceptron for 8x8 digits.
///     pub struct DigitsMlp: [64] {
///         linear(128), relu,
///         linear(10) => [10],
///     }
/// }
/// ```
///
/// See the `nn` crate's documentation for the language and what is generated.
#[proc_macro]
pub fn network(input: TokenStream) -> TokenStream {
    let network = match syn::parse::<parse::Network>(input) {
        Ok(network) => network,
        Err(error) => return error.to_compile_error().into(),
    };
    let (checked, errors) = check::check(&network);
    // Even with errors, emit the network built from the layers that checked, so that code
    // using it does not pile follow-on errors on top of the real ones.
    let mut output = generate::generate(&checked);
    if let Some(error) = errors::combine(errors) {
        output.extend(error.to_compile_error());
    }
    output.into()
}
