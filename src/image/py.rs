//! The image area's Python functions.

use numpy::{IntoPyArray, PyArray3};
use pyo3::prelude::*;

use super::imageset::{image_sizes_py, preprocess_images_py};
use super::preprocess::{preprocess_file, Params};
use crate::error::Error;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(preprocess_image_py, m)?)?;
    m.add_function(wrap_pyfunction!(preprocess_images_py, m)?)?;
    m.add_function(wrap_pyfunction!(image_sizes_py, m)?)?;
    Ok(())
}

/// `preprocess_image(path, *, resize=256, crop=224, mean=..., std=...) -> numpy.ndarray`
#[pyfunction(name = "preprocess_image")]
#[pyo3(signature = (path, *, resize = 256, crop = 224, mean = (0.485, 0.456, 0.406), std = (0.229, 0.224, 0.225)))]
pub fn preprocess_image_py(
    py: Python<'_>,
    path: std::path::PathBuf,
    resize: u32,
    crop: u32,
    mean: (f32, f32, f32),
    std: (f32, f32, f32),
) -> PyResult<Bound<'_, PyArray3<f32>>> {
    let params = Params {
        resize,
        crop,
        mean: [mean.0, mean.1, mean.2],
        std: [std.0, std.1, std.2],
    };
    let data = py.detach(|| preprocess_file(&path, &params))?;
    let side = crop as usize;
    let array = ndarray::Array3::from_shape_vec((3, side, side), data)
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok(array.into_pyarray(py))
}
