//! Reading and writing weights.

pub mod safetensors;

pub use self::safetensors::{load, load_bytes, save, to_bytes, WeightsError};
