//! ResNet-style image preprocessing that reproduces torchvision on Pillow:
//! `Resize(resize)` (antialiased bilinear, Pillow's fixed-point arithmetic), `CenterCrop(crop)`,
//! `ToTensor()` and `Normalize(mean, std)`, producing a CHW float32 tensor.
//!
//! Only the part of the resized image that survives the crop is computed: every output pixel of
//! Pillow's two-pass resampler depends only on its own filter window, so this is exact.
//!
//! JPEG is decoded by libjpeg-turbo's code (through `mozjpeg`) with Pillow's settings (integer IDCT,
//! fancy upsampling), which makes the decoded pixels identical to Pillow's; other formats use the
//! `image` crate, whose PNG, WebP, GIF, BMP and TIFF decoders are exact.

use std::io::{BufReader, Read};
use std::path::Path;

use image::{ImageReader, RgbImage};
use numpy::{PyArray3, ToPyArray};
use pyo3::prelude::*;

use crate::error::{Error, Result};

/// Pillow refuses images above this many pixels (`Image.MAX_IMAGE_PIXELS * 2`) as decompression bombs.
const MAX_PIXELS: u64 = 2 * 89_478_485;

/// Pillow's `PRECISION_BITS` for 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// What to do to the image; the defaults are the ImageNet ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub resize: u32,
    pub crop: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Params {
    fn default() -> Self {
        Params {
            resize: 256,
            crop: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

impl Params {
    fn validate(&self) -> Result<()> {
        if self.resize == 0 || self.crop == 0 {
            return Err(Error::InvalidArgument(
                "resize and crop must be positive".into(),
            ));
        }
        if self.crop > self.resize {
            return Err(Error::InvalidArgument(format!(
                "crop ({}) must not exceed resize ({})",
                self.crop, self.resize
            )));
        }
        if self.std.iter().any(|s| *s == 0.0 || !s.is_finite())
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(Error::InvalidArgument(
                "mean must be finite and std finite and non-zero".into(),
            ));
        }
        Ok(())
    }
}

/// Reads, decodes and preprocesses an image file into a `3 × crop × crop` CHW tensor.
pub fn preprocess_file(path: &Path, params: &Params) -> Result<Vec<f32>> {
    params.validate()?;
    let image = decode_rgb(path)?;
    Ok(preprocess_rgb(&image, params))
}

/// Preprocesses an already decoded RGB image (see [`preprocess_file`]).
pub fn preprocess_rgb(image: &RgbImage, params: &Params) -> Vec<f32> {
    let (width, height) = image.dimensions();
    let (out_w, out_h) = resized_size(width, height, params.resize);
    let crop = params.crop;
    let left = center_crop_offset(out_w, crop);
    let top = center_crop_offset(out_h, crop);
    let cropped = resample_window(image, out_w, out_h, left, top, crop, crop);
    normalize_chw(&cropped, crop as usize, crop as usize, params)
}

/// Decodes any supported format into 8-bit RGB the way Pillow's `convert("RGB")` would.
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    let fail = |reason: String| Error::Image {
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    BufReader::new(file)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    let reader = ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(fail(
            "not a recognised image format (JPEG, PNG, WebP, GIF, BMP, TIFF)".into(),
        ));
    };
    if format == image::ImageFormat::Jpeg {
        if !jpeg_is_complete(&bytes) {
            return Err(fail(
                "the JPEG data is truncated (no end-of-image marker after the scan)".into(),
            ));
        }
        return decode_jpeg(&bytes).map_err(fail);
    }
    let name = format!("{format:?}").to_uppercase();
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| fail(format!("{name} header: {e}")))?;
    check_size(width as usize, height as usize).map_err(fail)?;
    let reader = ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    let decoded = reader
        .decode()
        .map_err(|e| fail(format!("{name} decoding failed: {e}")))?;
    Ok(decoded.to_rgb8())
}

fn check_size(width: usize, height: usize) -> std::result::Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("the image is {width}x{height} pixels"));
    }
    if (width as u64) * (height as u64) > MAX_PIXELS {
        return Err(format!(
            "{width}x{height} pixels is more than {MAX_PIXELS}, a possible decompression bomb"
        ));
    }
    Ok(())
}

/// Decodes a JPEG exactly as Pillow does: RGB from YCbCr or grayscale; CMYK and YCCK through Pillow's
/// `CMYK -> RGB` conversion, with Adobe-inverted CMYK undone first.
fn decode_jpeg(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let decode = || -> std::io::Result<std::result::Result<RgbImage, String>> {
        let decompress = mozjpeg::Decompress::new_mem(bytes)?;
        let (width, height) = decompress.size();
        if let Err(reason) = check_size(width, height) {
            return Ok(Err(reason));
        }
        let cmyk = matches!(
            decompress.color_space(),
            mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK
        );
        let rgb = if cmyk {
            let inverted = has_adobe_marker(bytes);
            let mut started = decompress.to_colorspace(mozjpeg::ColorSpace::JCS_CMYK)?;
            let pixels: Vec<u8> = started.read_scanlines()?;
            started.finish()?;
            pixels
                .chunks_exact(4)
                .flat_map(|p| cmyk_to_rgb(p, inverted))
                .collect()
        } else {
            let mut started = decompress.rgb()?;
            let pixels: Vec<u8> = started.read_scanlines()?;
            started.finish()?;
            pixels
        };
        Ok(RgbImage::from_raw(width as u32, height as u32, rgb)
            .ok_or_else(|| "the JPEG decoder returned too few pixels".to_string()))
    };
    match std::panic::catch_unwind(decode) {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(format!("JPEG decoding failed: {e}")),
        // libjpeg reports fatal errors by unwinding with its message
        Err(payload) => Err(payload.downcast_ref::<String>().map_or_else(
            || "JPEG decoding failed".to_string(),
            |m| format!("JPEG decoding failed: {m}"),
        )),
    }
}

/// Pillow's `cmyk2rgb` (`Convert.c`), after its `CMYK;I` unpacking of Adobe files.
fn cmyk_to_rgb(p: &[u8], inverted: bool) -> [u8; 3] {
    let v = |x: u8| i32::from(if inverted { 255 - x } else { x });
    let nk = 255 - v(p[3]);
    let channel = |x: i32| {
        let tmp = x * nk + 128;
        let scaled = ((tmp >> 8) + tmp) >> 8;
        (nk - scaled).clamp(0, 255) as u8
    };
    [channel(v(p[0])), channel(v(p[1])), channel(v(p[2]))]
}

/// Whether the JPEG carries an Adobe APP14 segment before its first scan.
fn has_adobe_marker(bytes: &[u8]) -> bool {
    let header_end = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .unwrap_or(bytes.len());
    bytes[..header_end]
        .windows(9)
        .any(|w| w[..2] == [0xFF, 0xEE] && &w[4..] == b"Adobe")
}

/// A JPEG is complete when an end-of-image marker follows its last start-of-scan marker.
/// Decoders fill a truncated scan with grey instead of failing; Pillow refuses such files.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| {
        bytes
            .windows(2)
            .rposition(|w| w[0] == 0xFF && w[1] == marker)
    };
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

/// torchvision's output size for `Resize(size)` with an int: the short side becomes `size`, the long
/// side `int(size * long / short)`.
pub fn resized_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (f64::from(size) * f64::from(long) / f64::from(short)) as u32;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision's `CenterCrop` offset: `int(round((size - crop) / 2.0))`, with Python's
/// round-half-to-even.
pub fn center_crop_offset(size: u32, crop: u32) -> u32 {
    let diff = i64::from(size) - i64::from(crop);
    let offset = if diff % 2 == 0 {
        diff / 2
    } else {
        // diff / 2 is x.5: round to the even neighbour
        let down = diff.div_euclid(2);
        if down % 2 == 0 {
            down
        } else {
            down + 1
        }
    };
    offset.max(0) as u32
}

/// Pillow's filter weights for one axis: for each output index, the first input index and the
/// fixed-point weights. Mirrors `precompute_coeffs` + `normalize_coeffs_8bpc` in `Resample.c`.
#[derive(Debug)]
struct Coeffs {
    starts: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

fn bilinear_coeffs(in_size: u32, out_size: u32) -> Coeffs {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filterscale = scale.max(1.0);
    let support = filterscale; // the bilinear filter's support is 1.0
    let mut starts = Vec::with_capacity(out_size as usize);
    let mut weights = Vec::with_capacity(out_size as usize);
    for xx in 0..out_size {
        let center = (f64::from(xx) + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
        let mut ks: Vec<f64> = (xmin..xmax)
            .map(|x| {
                let t = ((x as f64) - center + 0.5) * ss;
                let t = t.abs();
                if t < 1.0 {
                    1.0 - t
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = ks.iter().sum();
        if total != 0.0 {
            for k in &mut ks {
                *k /= total;
            }
        }
        let fixed = ks
            .iter()
            .map(|&k| {
                let scaled = k * f64::from(1u32 << PRECISION_BITS);
                if k < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                }
            })
            .collect();
        starts.push(xmin as usize);
        weights.push(fixed);
    }
    Coeffs { starts, weights }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    if acc >= (1 << PRECISION_BITS << 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Resamples `image` to `out_w × out_h` with Pillow's antialiased bilinear filter and returns only
/// the `win_w × win_h` window at (`left`, `top`) of the result, as packed RGB.
fn resample_window(
    image: &RgbImage,
    out_w: u32,
    out_h: u32,
    left: u32,
    top: u32,
    win_w: u32,
    win_h: u32,
) -> Vec<u8> {
    let (in_w, in_h) = image.dimensions();
    let src = image.as_raw();
    let in_stride = in_w as usize * 3;
    let (left, top, win_w, win_h) = (left as usize, top as usize, win_w as usize, win_h as usize);

    let need_horizontal = out_w != in_w;
    let need_vertical = out_h != in_h;
    let horiz = bilinear_coeffs(in_w, out_w);
    let vert = bilinear_coeffs(in_h, out_h);

    // Source rows the vertical pass will read for the window's rows.
    let (row_first, row_last) = if need_vertical {
        let first = vert.starts[top];
        let last = vert.starts[top + win_h - 1] + vert.weights[top + win_h - 1].len();
        (first, last)
    } else {
        (top, top + win_h)
    };

    // Horizontal pass: rows row_first..row_last, only the window's columns.
    let rows = row_last - row_first;
    let mut temp = vec![0u8; rows * win_w * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    for (r, out_row) in temp.chunks_exact_mut(win_w * 3).enumerate() {
        let in_row = &src[(row_first + r) * in_stride..(row_first + r + 1) * in_stride];
        for (c, px) in out_row.chunks_exact_mut(3).enumerate() {
            let xx = left + c;
            if !need_horizontal {
                px.copy_from_slice(&in_row[xx * 3..xx * 3 + 3]);
                continue;
            }
            let start = horiz.starts[xx];
            let (mut s0, mut s1, mut s2) = (half, half, half);
            for (k, &w) in horiz.weights[xx].iter().enumerate() {
                let p = &in_row[(start + k) * 3..(start + k) * 3 + 3];
                s0 += i32::from(p[0]) * w;
                s1 += i32::from(p[1]) * w;
                s2 += i32::from(p[2]) * w;
            }
            px[0] = clip8(s0);
            px[1] = clip8(s1);
            px[2] = clip8(s2);
        }
    }
    if !need_vertical {
        return temp;
    }

    // Vertical pass over the temporary rows.
    let stride = win_w * 3;
    let mut out = vec![0u8; win_h * stride];
    for (r, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let yy = top + r;
        let start = vert.starts[yy] - row_first;
        let ks = &vert.weights[yy];
        for (i, v) in out_row.iter_mut().enumerate() {
            let mut acc = half;
            for (k, &w) in ks.iter().enumerate() {
                acc += i32::from(temp[(start + k) * stride + i]) * w;
            }
            *v = clip8(acc);
        }
    }
    out
}

/// `ToTensor()` + `Normalize(mean, std)` in float32, HWC bytes in, CHW floats out.
fn normalize_chw(rgb: &[u8], height: usize, width: usize, params: &Params) -> Vec<f32> {
    let plane = height * width;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) / 255.0 - params.mean[c]) / params.std[c];
        }
    }
    out
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
    Ok(array.to_pyarray(py))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_follows_torchvision() {
        assert_eq!(resized_size(512, 600, 256), (256, 300));
        assert_eq!(resized_size(600, 512, 256), (300, 256));
        assert_eq!(resized_size(256, 999, 256), (256, 999));
        assert_eq!(resized_size(3, 1000, 256), (256, 85333));
        assert_eq!(resized_size(4000, 3000, 256), (341, 256));
    }

    #[test]
    fn crop_offset_rounds_half_to_even() {
        assert_eq!(center_crop_offset(300, 224), 38);
        assert_eq!(center_crop_offset(225, 224), 0); // round(0.5) == 0
        assert_eq!(center_crop_offset(227, 224), 2); // round(1.5) == 2
        assert_eq!(center_crop_offset(229, 224), 2); // round(2.5) == 2
        assert_eq!(center_crop_offset(224, 224), 0);
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (inp, out) in [(600, 300), (512, 256), (10, 256), (4000, 341), (257, 256)] {
            let c = bilinear_coeffs(inp, out);
            for w in &c.weights {
                let sum: i64 = w.iter().map(|&k| i64::from(k)).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= w.len() as i64,
                    "{inp}->{out}: {sum}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(613, 401, image::Rgb([10, 128, 250]));
        let out = resample_window(&img, 349, 228, 3, 2, 224, 224);
        assert!(out.chunks_exact(3).all(|p| p == [10, 128, 250]));
    }

    #[test]
    fn window_equals_crop_of_full_resize() {
        let img = RgbImage::from_fn(97, 131, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let full = resample_window(&img, 256, 345, 0, 0, 256, 345);
        let win = resample_window(&img, 256, 345, 16, 60, 224, 224);
        for r in 0..224 {
            let a = &full[((60 + r) * 256 + 16) * 3..((60 + r) * 256 + 16 + 224) * 3];
            let b = &win[r * 224 * 3..(r + 1) * 224 * 3];
            assert_eq!(a, b, "row {r}");
        }
    }

    #[test]
    #[allow(clippy::float_cmp)] // the point is bit-exactness
    fn normalization_matches_formula() {
        let p = Params::default();
        let out = normalize_chw(&[255, 0, 128], 1, 1, &p);
        assert_eq!(out[0], (1.0 - 0.485) / 0.229);
        assert_eq!(out[1], (0.0 - 0.456) / 0.224);
        assert_eq!(out[2], (128.0f32 / 255.0 - 0.406) / 0.225);
    }

    #[test]
    fn missing_and_bad_files_are_image_errors() {
        let dir = std::env::temp_dir().join(format!("li-pre-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.jpg");
        let empty = dir.join("empty.jpg");
        std::fs::write(&empty, b"").unwrap();
        let text = dir.join("text.jpg");
        std::fs::write(&text, b"hello, not an image").unwrap();
        for (path, needle) in [
            (missing, "No such file"),
            (empty, "empty"),
            (text, "not a recognised"),
        ] {
            let err = preprocess_file(&path, &Params::default()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Image { .. }), "{msg}");
            assert!(
                msg.contains(path.to_str().unwrap()) && msg.contains(needle),
                "{msg}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rejects_crop_larger_than_resize() {
        let p = Params {
            crop: 300,
            ..Params::default()
        };
        assert!(matches!(p.validate(), Err(Error::InvalidArgument(_))));
    }
}
