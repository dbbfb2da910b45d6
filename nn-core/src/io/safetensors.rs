//! Weights as safetensors, with PyTorch's tensor names and layouts.
//!
//! A network saved here loads in PyTorch with `model.load_state_dict(safetensors.torch.load_file(..))`
//! and a file PyTorch saved for the same architecture loads here unchanged.
//!
//! Loading checks the whole file against the model before writing anything: on any error
//! the model is left as it was.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use thiserror::Error;

use crate::module::{BufferValues, BufferValuesMut};
use crate::shape::format_dims;
use crate::{Float, Module};

/// Why weights could not be read or written.
#[derive(Debug, Error)]
pub enum WeightsError {
    #[error("cannot read weights file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write weights file {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a valid safetensors file (truncated or corrupt?): {reason}")]
    Corrupt { reason: String },
    #[error("tensor `{name}` {} is missing from the weights file", format_dims(.expected))]
    Missing { name: String, expected: Vec<usize> },
    #[error("the weights file has tensor `{name}` {} that the model does not have", format_dims(.found))]
    Unexpected { name: String, found: Vec<usize> },
    #[error("tensor `{name}` has shape {} in the weights file, but the model needs {}", format_dims(.found), format_dims(.expected))]
    WrongShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}` is {found:?} in the weights file, but the model is {expected:?}")]
    WrongDtype {
        name: String,
        expected: Dtype,
        found: Dtype,
    },
}

/// Loads the weights in `path` into `model`; on error `model` is unchanged.
pub fn load<E: Float, M: Module<E>>(
    model: &mut M,
    path: impl AsRef<Path>,
) -> Result<(), WeightsError> {
    load_ignoring(model, path, &[])
}

/// Loads the weights in `path` into `model`, skipping the tensors named in `ignored` that
/// the model does not use (e.g. BERT's `pooler.dense.weight` in a sentence encoder, like
/// PyTorch's `load_state_dict(strict=False)` but only for the names given). Any other
/// unexpected tensor is still an error; on error `model` is unchanged.
pub fn load_ignoring<E: Float, M: Module<E>>(
    model: &mut M,
    path: impl AsRef<Path>,
    ignored: &[&str],
) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_bytes_ignoring(model, &bytes, ignored)
}

/// Loads weights from the bytes of a safetensors file; on error `model` is unchanged.
pub fn load_bytes<E: Float, M: Module<E>>(model: &mut M, bytes: &[u8]) -> Result<(), WeightsError> {
    load_bytes_ignoring(model, bytes, &[])
}

/// [`load_bytes`], skipping the tensors named in `ignored` (see [`load_ignoring`]).
pub fn load_bytes_ignoring<E: Float, M: Module<E>>(
    model: &mut M,
    bytes: &[u8],
    ignored: &[&str],
) -> Result<(), WeightsError> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Corrupt {
        reason: e.to_string(),
    })?;
    let mut in_file: BTreeMap<String, safetensors::tensor::TensorView<'_>> =
        file.tensors().into_iter().collect();

    // Check everything first, so that a bad file changes nothing.
    let mut views = HashMap::new();
    for (name, shape, dtype) in expected_tensors(model) {
        let Some(view) = in_file.remove(&name) else {
            return Err(WeightsError::Missing {
                name,
                expected: shape,
            });
        };
        if view.shape() != shape.as_slice() {
            return Err(WeightsError::WrongShape {
                name,
                expected: shape,
                found: view.shape().to_vec(),
            });
        }
        if view.dtype() != dtype {
            return Err(WeightsError::WrongDtype {
                name,
                expected: dtype,
                found: view.dtype(),
            });
        }
        views.insert(name, view);
    }
    if let Some((name, view)) = in_file
        .into_iter()
        .find(|(name, _)| !ignored.contains(&name.as_str()))
    {
        return Err(WeightsError::Unexpected {
            name,
            found: view.shape().to_vec(),
        });
    }

    model.visit_params_mut("", &mut |p| read_values(views[p.name].data(), p.values));
    model.visit_buffers_mut("", &mut |b| match b.values {
        BufferValuesMut::Float(values) => read_values(views[b.name].data(), values),
        BufferValuesMut::Int64(values) => {
            for (value, bytes) in values.iter_mut().zip(views[b.name].data().chunks_exact(8)) {
                *value = i64::from_le_bytes(bytes.try_into().expect("chunks of 8 bytes"));
            }
        }
    });
    Ok(())
}

/// Every tensor the model's state holds: (name, shape, dtype), parameters then buffers.
fn expected_tensors<E: Float, M: Module<E>>(model: &M) -> Vec<(String, Vec<usize>, Dtype)> {
    let mut expected = Vec::new();
    model.visit_params("", &mut |p| {
        expected.push((p.name.to_string(), p.shape.to_vec(), E::DTYPE))
    });
    model.visit_buffers("", &mut |b| {
        let dtype = match b.values {
            BufferValues::Float(_) => E::DTYPE,
            BufferValues::Int64(_) => Dtype::I64,
        };
        expected.push((b.name.to_string(), b.shape.to_vec(), dtype));
    });
    expected
}

fn read_values<E: Float>(bytes: &[u8], values: &mut [E]) {
    for (value, bytes) in values.iter_mut().zip(bytes.chunks_exact(E::BYTES)) {
        *value = E::read_le(bytes);
    }
}

fn encode_floats<E: Float>(values: &[E]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(values.len() * E::BYTES);
    for v in values {
        v.write_le(&mut bytes);
    }
    bytes
}

/// One parameter tensor, serialised.
struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The model's parameters as the bytes of a safetensors file.
pub fn to_bytes<E: Float, M: Module<E>>(model: &M) -> Result<Vec<u8>, WeightsError> {
    let mut tensors: Vec<(String, Encoded)> = Vec::new();
    model.visit_params("", &mut |p| {
        let (dtype, shape, bytes) = (E::DTYPE, p.shape.to_vec(), encode_floats(p.values));
        tensors.push((
            p.name.to_string(),
            Encoded {
                dtype,
                shape,
                bytes,
            },
        ));
    });
    model.visit_buffers("", &mut |b| {
        let (dtype, bytes) = match b.values {
            BufferValues::Float(values) => (E::DTYPE, encode_floats(values)),
            BufferValues::Int64(values) => (
                Dtype::I64,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        };
        tensors.push((
            b.name.to_string(),
            Encoded {
                dtype,
                shape: b.shape.to_vec(),
                bytes,
            },
        ));
    });
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    safetensors::serialize(tensors.iter().map(|(name, t)| (name.as_str(), t)), metadata).map_err(
        |e| WeightsError::Corrupt {
            reason: e.to_string(),
        },
    )
}

/// Saves the model's parameters to `path`.
pub fn save<E: Float, M: Module<E>>(model: &M, path: impl AsRef<Path>) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let bytes = to_bytes(model)?;
    std::fs::write(path, bytes).map_err(|source| WeightsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::rng;
    use crate::layers::Linear;

    #[test]
    fn a_saved_layer_loads_back_identically() {
        let layer = Linear::<3, 2, f32>::init(&mut rng(1));
        let bytes = to_bytes(&layer).unwrap();
        let mut other = Linear::<3, 2, f32>::zeros();
        load_bytes(&mut other, &bytes).unwrap();
        assert_eq!(layer, other);
    }

    #[test]
    fn only_the_tensors_named_as_ignored_may_be_left_over() {
        let layer = Linear::<3, 2, f32>::init(&mut rng(1));
        let mut tensors = Vec::new();
        layer.visit_params("", &mut |p| {
            tensors.push((
                p.name.to_string(),
                p.shape.to_vec(),
                encode_floats(p.values),
            ))
        });
        tensors.push((
            "pooler.dense.bias".into(),
            vec![2],
            encode_floats(&[1f32, 2.0]),
        ));
        let views: Vec<_> = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes);
                (name.clone(), view.unwrap())
            })
            .collect();
        let bytes = safetensors::serialize(views, None).unwrap();

        let mut model = Linear::<3, 2, f32>::zeros();
        let error = load_bytes(&mut model, &bytes).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the weights file has tensor `pooler.dense.bias` [2] that the model does not have"
        );
        assert_eq!(model, Linear::zeros());
        load_bytes_ignoring(&mut model, &bytes, &["pooler.dense.bias"]).unwrap();
        assert_eq!(model, layer);
    }

    #[test]
    fn every_kind_of_bad_file_is_a_typed_error_and_leaves_the_model_untouched() {
        let bytes = to_bytes(&Linear::<3, 2, f32>::init(&mut rng(1))).unwrap();
        let mut model = Linear::<3, 2, f32>::init(&mut rng(2));
        let before = model.clone();

        let wrong_shape = load_bytes(
            &mut model,
            &to_bytes(&Linear::<4, 2, f32>::zeros()).unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            wrong_shape.to_string(),
            "tensor `weight` has shape [2, 4] in the weights file, but the model needs [2, 3]"
        );
        let wrong_dtype = load_bytes(
            &mut model,
            &to_bytes(&Linear::<3, 2, f64>::zeros()).unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(
                wrong_dtype,
                WeightsError::WrongDtype {
                    found: Dtype::F64,
                    ..
                }
            ),
            "{wrong_dtype}"
        );
        let truncated = load_bytes(&mut model, &bytes[..bytes.len() - 3]).unwrap_err();
        assert!(
            matches!(truncated, WeightsError::Corrupt { .. }),
            "{truncated}"
        );
        let garbage = load_bytes(&mut model, b"definitely not safetensors").unwrap_err();
        assert!(matches!(garbage, WeightsError::Corrupt { .. }), "{garbage}");
        let missing = load_bytes(
            &mut model,
            &to_bytes::<f32, _>(&crate::layers::Relu::<crate::Rank1<3>>::default()).unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "tensor `weight` [2, 3] is missing from the weights file"
        );
        let unreadable = load(&mut model, "/nonexistent/weights.safetensors").unwrap_err();
        assert!(unreadable
            .to_string()
            .contains("/nonexistent/weights.safetensors"));
        assert_eq!(model, before);
    }
}
