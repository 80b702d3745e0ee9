//! A set of images preprocessed once, at start, in parallel: each file decoded, resampled and
//! converted into the model's tensor. The first file that fails (in the given order) stops the
//! whole set with its name, so nothing is sent from a half-prepared set.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::convert::{self, Target};
use super::fit::Fit;
use super::resample;
use crate::error::{Error, Result};

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

/// Width, height and the bytes a pixel takes decoded (0 for a JPEG, decoded row by row), from the
/// header of the image at `path` alone (`None` when the header cannot be read: preprocessing the file
/// says why).
pub(crate) fn header_size(path: &std::path::Path) -> Option<(u32, u32, u16)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::convert::{Layout, Pixels};
    use crate::protocol::tensor::DataType;

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
