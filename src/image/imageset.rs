//! A set of images preprocessed once, at start, in parallel: each file decoded, resampled and
//! converted into the model's tensor. The first file that fails (in the given order) stops the
//! whole set with its name, so nothing is sent from a half-prepared set.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::convert::{self, Layout, Pixels, Target};
use super::fit::Fit;
use super::resample;
use crate::error::{Error, Result};

use crate::protocol::tensor::DataType;

/// Sets at least this large report their progress on stderr.
const PROGRESS_FROM: usize = 200;

/// Every image's tensor written into `outputs` (one buffer of `target.bytes()` per path, in the
/// order of `paths`), using up to `threads` threads.
pub fn prepare(
    paths: &[PathBuf],
    fit: Fit,
    target: &Target,
    threads: usize,
    progress: bool,
    outputs: Vec<&mut [u8]>,
) -> Result<()> {
    target.pixels.validate()?;
    if outputs.len() != paths.len() {
        return Err(Error::Runtime(format!(
            "{} buffers for {} images",
            outputs.len(),
            paths.len()
        )));
    }
    // each image's buffer is written by exactly one thread; the lock only hands it over
    let outputs: Vec<Mutex<&mut [u8]>> = outputs.into_iter().map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    // each image's outcome (`None` until tried) and how many are done; progress is printed under
    // the lock, so in order
    let results: Mutex<(Vec<Option<Result<()>>>, usize)> =
        Mutex::new(((0..paths.len()).map(|_| None).collect(), 0));
    let report = progress && paths.len() >= PROGRESS_FROM;
    let step = (paths.len() / 10).max(1);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, paths.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= paths.len() || failed.load(Ordering::Relaxed) {
                    break;
                }
                let result = resample::window_file(&paths[i], fit).and_then(|window| {
                    let mut out = outputs[i].lock().unwrap_or_else(PoisonError::into_inner);
                    convert::to_tensor_into(&window, target, &mut out)
                });
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                let mut guard = results.lock().unwrap_or_else(PoisonError::into_inner);
                let (slots, done) = &mut *guard;
                slots[i] = Some(result);
                *done += 1;
                if report && (*done % step == 0 || *done == paths.len()) {
                    eprintln!(
                        "locust-inference: preprocessed {done}/{} images",
                        paths.len()
                    );
                }
            });
        }
    });
    let (results, _) = results.into_inner().unwrap_or_else(PoisonError::into_inner);
    // the first failure in file order; files after it may not have been tried
    for result in results {
        result.unwrap_or_else(|| Err(Error::Runtime("an image was skipped".into())))?;
    }
    Ok(())
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

/// Width, height and the bytes a pixel takes decoded (0 for a JPEG, decoded row by row), from the
/// header of the image at `path` alone (`None` when the header cannot be read: preprocessing the file
/// says why).
fn header_size(path: &std::path::Path) -> Option<(u32, u32, u16)> {
    use image::ImageDecoder as _;
    let reader = image::ImageReader::open(path)
        .ok()?
        .with_guessed_format()
        .ok()?;
    let jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let decoder = reader.into_decoder().ok()?;
    let (width, height) = decoder.dimensions();
    let bytes = if jpeg {
        0
    } else {
        decoder.color_type().bytes_per_pixel()
    };
    Some((width, height, bytes.into()))
}

/// `image_sizes(paths) -> list[tuple[int, int, int] | None]`: each image's width, height and the bytes a
/// pixel takes decoded (0 for a JPEG), read from its header without decoding it, for the memory
/// estimate made before [`preprocess_images_py`] decodes the set.
#[pyfunction(name = "image_sizes")]
pub fn image_sizes_py(py: Python<'_>, paths: Vec<PathBuf>) -> Vec<Option<(u32, u32, u16)>> {
    py.detach(|| paths.iter().map(|p| header_size(p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            width: 4,
            height: 4,
            pad: 114,
            layout: Layout::Chw,
            datatype: DataType::Uint8,
            pixels: Pixels {
                scale: 1.0,
                mean: [0.0; 3],
                std: [1.0; 3],
            },
        }
    }

    fn png(dir: &std::path::Path, name: &str, value: u8) -> PathBuf {
        let path = dir.join(name);
        image::RgbImage::from_pixel(8, 6, image::Rgb([value, value, value]))
            .save(&path)
            .unwrap();
        path
    }

    #[test]
    fn sizes_come_from_the_headers() {
        let dir = std::env::temp_dir().join(format!("imageset-sizes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = png(&dir, "a.png", 7);
        let bad = dir.join("b.png");
        std::fs::write(&bad, b"not an image").unwrap();
        let sizes: Vec<_> = [&good, &bad].iter().map(|p| header_size(p)).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(sizes, vec![Some((8, 6, 3)), None]);
    }

    #[test]
    fn keeps_the_order_and_names_the_first_bad_file() {
        let dir = std::env::temp_dir().join(format!("imageset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths: Vec<PathBuf> = (0..9)
            .map(|i| png(&dir, &format!("{i}.png"), i * 20))
            .collect();
        let fit = Fit::Stretch {
            width: 4,
            height: 4,
        };
        let mut tensors = vec![vec![0u8; 48]; paths.len()];
        let buffers = tensors.iter_mut().map(Vec::as_mut_slice).collect();
        prepare(&paths, fit, &target(), 3, false, buffers).unwrap();
        for (i, t) in tensors.iter().enumerate() {
            assert_eq!(t, &vec![i as u8 * 20; 48], "image {i}");
        }
        let bad = dir.join("bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\n not really").unwrap();
        let mut with_bad = paths.clone();
        with_bad.insert(4, bad.clone());
        let mut tensors = vec![vec![0u8; 48]; with_bad.len()];
        let buffers = tensors.iter_mut().map(Vec::as_mut_slice).collect();
        let err = prepare(&with_bad, fit, &target(), 3, false, buffers).unwrap_err();
        assert!(
            err.to_string().contains(&bad.display().to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
