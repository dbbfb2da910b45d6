//! Reading and writing weights.

pub mod safetensors;

pub use self::safetensors::{
    load, load_bytes, load_bytes_ignoring, load_ignoring, save, to_bytes, WeightsError,
};
