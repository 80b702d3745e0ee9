//! The image area's Python functions.

use std::path::PathBuf;

use numpy::{IntoPyArray, PyArray3};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::convert::{Layout, Pixels, Target};
use super::fit::Fit;
use super::imageset::{header_size, prepare};
use super::preprocess::{preprocess_file, Params};
use crate::error::{Error, Result};
use crate::protocol::tensor::DataType;

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

/// `count` new bytes objects of `len` bytes each, filled by `fill` (given their contents as
/// writable slices, without the GIL). The contents start unwritten, so their pages are faulted in
/// by the threads that fill them rather than serially under the GIL, and no tensor is copied.
fn new_bytes_filled_by(
    py: Python<'_>,
    count: usize,
    len: usize,
    fill: impl Send + FnOnce(Vec<&mut [u8]>) -> Result<()>,
) -> PyResult<Vec<Bound<'_, PyBytes>>> {
    let size = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| Error::InvalidArgument(format!("a {len}-byte tensor is too large")))?;
    let mut objects = Vec::with_capacity(count);
    for _ in 0..count {
        // SAFETY: a NULL source asks CPython for an uninitialised buffer of `size` bytes; a NULL
        // result means an exception is set, which `from_owned_ptr_or_err` returns.
        let object = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size),
            )?
        };
        objects.push(object.cast_into::<PyBytes>()?);
    }
    let buffers = objects
        .iter()
        // SAFETY: each object is new and only ours until returned, so nothing reads or hashes
        // its contents while they are written; each buffer is `len` bytes and the slices do not
        // outlive `objects`, which are held until `fill` returns.
        .map(|object| unsafe {
            std::slice::from_raw_parts_mut(
                pyo3::ffi::PyBytes_AsString(object.as_ptr()).cast::<u8>(),
                len,
            )
        })
        .collect();
    py.detach(|| fill(buffers))?;
    Ok(objects)
}

fn parse_layout(layout: &str) -> Result<Layout> {
    match layout {
        "nchw" => Ok(Layout::Chw),
        "nhwc" => Ok(Layout::Hwc),
        other => Err(Error::InvalidArgument(format!(
            "layout must be nchw or nhwc, not {other:?}"
        ))),
    }
}

fn parse_fit(fit: &str, resize: u32, width: u32, height: u32) -> Result<Fit> {
    match fit {
        "shortside" => Ok(Fit::ShortSide {
            resize,
            width,
            height,
        }),
        "stretch" => Ok(Fit::Stretch { width, height }),
        "letterbox" => Ok(Fit::Letterbox { width, height }),
        other => Err(Error::InvalidArgument(format!(
            "fit must be shortside, stretch or letterbox, not {other:?}"
        ))),
    }
}

/// `preprocess_images(paths, *, fit, width, height, resize=0, layout="nchw", datatype="FP32",
/// scale=255.0, mean=(0,0,0), std=(1,1,1), pad=114, threads=0, progress=False) -> list[bytes]`
#[pyfunction(name = "preprocess_images")]
#[allow(clippy::too_many_arguments)] // the keyword arguments of the Python signature
#[pyo3(signature = (paths, *, fit, width, height, resize = 0, layout = "nchw", datatype = "FP32",
    scale = 255.0, mean = (0.0, 0.0, 0.0), std = (1.0, 1.0, 1.0), pad = 114, threads = 0, progress = false))]
pub fn preprocess_images_py<'py>(
    py: Python<'py>,
    paths: Vec<PathBuf>,
    fit: &str,
    width: u32,
    height: u32,
    resize: u32,
    layout: &str,
    datatype: &str,
    scale: f32,
    mean: (f32, f32, f32),
    std: (f32, f32, f32),
    pad: u8,
    threads: usize,
    progress: bool,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let fit = parse_fit(fit, resize, width, height)?;
    let datatype = DataType::parse(datatype)
        .map_err(|_| Error::InvalidArgument(format!("unknown datatype {datatype:?}")))?;
    let target = Target {
        width: width as usize,
        height: height as usize,
        pad,
        layout: parse_layout(layout)?,
        datatype,
        pixels: Pixels {
            scale,
            mean: [mean.0, mean.1, mean.2],
            std: [std.0, std.1, std.2],
        },
    };
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    } else {
        threads
    };
    target.pixels.validate()?; // before the set's memory is allocated, not after
    new_bytes_filled_by(py, paths.len(), target.bytes(), |buffers| {
        prepare(&paths, fit, &target, threads, progress, buffers)
    })
}

/// `image_sizes(paths) -> list[tuple[int, int, int] | None]`: each image's width, height and the bytes a
/// pixel takes decoded (0 for a JPEG), read from its header without decoding it, for the memory
/// estimate made before [`preprocess_images_py`] decodes the set.
#[pyfunction(name = "image_sizes")]
pub fn image_sizes_py(py: Python<'_>, paths: Vec<PathBuf>) -> Vec<Option<(u32, u32, u16)>> {
    py.detach(|| paths.iter().map(|p| header_size(p)).collect())
}
