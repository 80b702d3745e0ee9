//! Image resampling that reproduces Pillow's antialiased bilinear `resize` (its fixed-point
//! arithmetic) as torchvision and YOLO-style pipelines use it: `Resize(resize)` + `CenterCrop`
//! ([`Fit::ShortSide`]), a resize to the model's size ([`Fit::Stretch`]) or one that keeps the
//! aspect ratio ([`Fit::Letterbox`]), producing packed RGB pixels; [`super::convert`] turns them
//! into the model's tensor; [`super::preprocess`] is the ImageNet pipeline, CHW float32.
//!
//! Only the part of the resized image that survives the crop is computed: every output pixel of
//! Pillow's two-pass resampler depends only on its own filter window, so this is exact.
//!
//! JPEG goes through libjpeg-turbo's code with Pillow's settings (see [`super::jpeg`]), decoding only
//! the rows and columns the crop window depends on, each row straight into the horizontal pass;
//! other formats are decoded whole by the `image` crate, whose PNG, WebP, GIF, BMP and TIFF decoders
//! are exact.

use std::ops::Range;
use std::path::Path;

use image::{ImageReader, RgbImage};

use super::fit::{Fit, Geometry};
use super::jpeg;
use crate::error::{Error, Result};

/// Pillow refuses images above this many pixels (`Image.MAX_IMAGE_PIXELS * 2`) as decompression bombs.
const MAX_PIXELS: u64 = 2 * 89_478_485;

/// Pillow's `PRECISION_BITS` for 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// An image after resampling: `width x height` pixels of packed 8-bit RGB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Reads and decodes an image file and resamples it as `fit` says.
pub fn window_file(path: &Path, fit: Fit) -> Result<Window> {
    fit.validate()?;
    let fail = |reason: String| Error::Image {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    if bytes.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    let format = image::guess_format(&bytes).map_err(|_| {
        fail("not a recognised image format (JPEG, PNG, WebP, GIF, BMP, TIFF)".into())
    })?;
    if format == image::ImageFormat::Jpeg {
        return window_jpeg(&bytes, fit).map_err(fail);
    }
    let image = decode_other(&bytes, format).map_err(fail)?;
    Ok(window_rgb(&image, fit))
}

/// Resamples an already decoded RGB image as `fit` says.
pub fn window_rgb(image: &RgbImage, fit: Fit) -> Window {
    let (width, height) = image.dimensions();
    let plan = Plan::new(width as usize, height as usize, fit);
    let stride = width as usize * 3;
    let mut rgbx = vec![0u8; width as usize * 4 + plan.slack()];
    plan.with_temp(|temp| {
        let rows = plan.rows.clone();
        for (r, row) in rows.zip(temp.chunks_exact_mut(plan.temp_stride())) {
            let rgb = &image.as_raw()[r * stride..(r + 1) * stride];
            for (x, p) in rgbx.chunks_exact_mut(4).zip(rgb.chunks_exact(3)) {
                x[..3].copy_from_slice(p);
            }
            plan.take_row(&rgbx, 0, row);
        }
        plan.finish(temp)
    })
}

/// Decodes a JPEG's needed window row by row straight into the horizontal pass.
fn window_jpeg(bytes: &[u8], fit: Fit) -> std::result::Result<Window, String> {
    if !jpeg::is_complete(bytes) {
        return Err("the JPEG data is truncated (no end-of-image marker after the scan)".into());
    }
    let decoder = jpeg::Jpeg::open(bytes)?;
    let (width, height) = decoder.size();
    check_size(width, height)?;
    let plan = Plan::new(width, height, fit);
    plan.with_temp(|temp| {
        let mut rows = temp.chunks_exact_mut(plan.temp_stride());
        decoder.decode_window(
            plan.rows.clone(),
            plan.cols.clone(),
            plan.slack(),
            |first_col, pixels| {
                if let Some(row) = rows.next() {
                    plan.take_row(pixels, first_col, row);
                }
            },
        )?;
        Ok(plan.finish(temp))
    })
}

/// Decodes a non-JPEG image into 8-bit RGB the way Pillow's `convert("RGB")` would.
fn decode_other(bytes: &[u8], format: image::ImageFormat) -> std::result::Result<RgbImage, String> {
    let name = format!("{format:?}").to_uppercase();
    let reader = || ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let (width, height) = reader()
        .into_dimensions()
        .map_err(|e| format!("{name} header: {e}"))?;
    check_size(width as usize, height as usize)?;
    let decoded = reader()
        .decode()
        .map_err(|e| format!("{name} decoding failed: {e}"))?;
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

/// Pillow's filter weights along one axis for a run of output indices: for each, the first input
/// index and its fixed-point weights (`taps` apart, zero-padded). Mirrors `precompute_coeffs` +
/// `normalize_coeffs_8bpc` in `Resample.c`; `None` when the axis keeps its size (Pillow skips the
/// pass).
#[derive(Debug)]
struct Coeffs {
    starts: Vec<usize>,
    lens: Vec<usize>,
    taps: usize,
    weights: Vec<i32>,
    /// [`Coeffs::horizontal_layout`], built by [`Plan::new`] for the horizontal axis when the CPU
    /// has AVX2; empty otherwise.
    paired: Vec<i16>,
    /// [`Coeffs::vertical_layout`], likewise for the vertical axis.
    row_pairs: Vec<[i32; 2]>,
}

impl Coeffs {
    fn bilinear(in_size: usize, out_size: usize, out: Range<usize>) -> Option<Coeffs> {
        if in_size == out_size {
            return None;
        }
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // the bilinear filter's support is 1.0
        let ss = 1.0 / filterscale;
        let mut starts = Vec::with_capacity(out.len());
        let mut lens = Vec::with_capacity(out.len());
        // every window's weights one after the other, and one window's filter values
        let mut flat = Vec::new();
        let mut ks = Vec::new();
        for xx in out {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            ks.clear();
            ks.extend((xmin..xmax).map(|x| {
                let t = ((x as f64 - center + 0.5) * ss).abs();
                if t < 1.0 {
                    1.0 - t
                } else {
                    0.0
                }
            }));
            let total: f64 = ks.iter().sum();
            flat.extend(ks.iter().map(|&k| {
                let k = if total == 0.0 { k } else { k / total };
                let scaled = k * f64::from(1u32 << PRECISION_BITS);
                if k < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                }
            }));
            starts.push(xmin as usize);
            lens.push(ks.len());
        }
        // the longest window, rounded up to the four-tap steps of the AVX2 pass
        let taps = lens.iter().copied().max().unwrap_or(0).next_multiple_of(4);
        let mut weights = vec![0; lens.len() * taps];
        let mut from = 0;
        for (slots, &len) in weights.chunks_exact_mut(taps.max(1)).zip(&lens) {
            slots[..len].copy_from_slice(&flat[from..from + len]);
            from += len;
        }
        Some(Coeffs {
            starts,
            lens,
            taps,
            paired: Vec::new(),
            row_pairs: Vec::new(),
            weights,
        })
    }

    /// The AVX2 horizontal pass computes two output pixels at once, one per 128-bit lane, four taps
    /// per step, with `_mm256_madd_epi16`: 16-bit pairs `(p[t] · w[t] + p[t+1] · w[t+1])`. Weights
    /// need 23 bits, so each is split (see [`split`]) and multiplied twice. Per pair of output
    /// pixels and per four taps, four vectors of 16 × i16: high parts of taps 0-1, of taps 2-3, low
    /// parts of taps 0-1, of taps 2-3; in each, lane 0 is the even pixel's, lane 1 the odd one's
    /// (an odd count ends with a pixel paired with itself), every channel gets its tap pair:
    /// `w[t] w[t+1] w[t] w[t+1] ...`.
    fn horizontal_layout(&self) -> Vec<i16> {
        let (weights, taps) = (&self.weights, self.taps);
        let n = weights.len() / taps.max(1);
        let mut out = Vec::with_capacity(n.div_ceil(2) * taps * 16);
        for i in (0..n).step_by(2) {
            let pixels = [i, (i + 1).min(n - 1)];
            for quad in (0..taps).step_by(4) {
                for part in [0, 1] {
                    for first in [quad, quad + 2] {
                        for &px in &pixels {
                            let (a, b) =
                                (weights[px * taps + first], weights[px * taps + first + 1]);
                            let (a, b) = (split(a)[part], split(b)[part]);
                            out.extend([a, b, a, b, a, b, a, b]);
                        }
                    }
                }
            }
        }
        out
    }

    /// The AVX2 vertical pass multiplies two input rows at a time: per output row and per pair of
    /// taps, the two weights' high parts and their low parts (see [`split`]), each pair packed as
    /// the two 16-bit halves of an `i32` (first tap low), `taps / 2` pairs a row (zero-padded).
    fn vertical_layout(&self) -> Vec<[i32; 2]> {
        let pack = |a: i32, b: i32, part: usize| {
            i32::from(split(a)[part] as u16) | (i32::from(split(b)[part] as u16) << 16)
        };
        self.weights
            .chunks_exact(2)
            .map(|w| [pack(w[0], w[1], 0), pack(w[0], w[1], 1)])
            .collect()
    }

    /// Output `i`'s packed pairs of weights (see [`Coeffs::vertical_layout`]).
    fn get_pairs(&self, i: usize) -> &[[i32; 2]] {
        let per_row = self.taps / 2;
        &self.row_pairs[i * per_row..i * per_row + self.lens[i].div_ceil(2)]
    }

    fn get(&self, i: usize) -> (usize, &[i32]) {
        let w = &self.weights[i * self.taps..i * self.taps + self.lens[i]];
        (self.starts[i], w)
    }

    /// The input indices the run of outputs reads.
    fn span(&self) -> Range<usize> {
        let last = self.starts.len() - 1;
        self.starts[0]..self.starts[last] + self.lens[last]
    }
}

#[cfg(test)]
thread_local! {
    /// Tests run the portable passes too by setting this on their thread.
    static PORTABLE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn has_avx2() -> bool {
    #[cfg(test)]
    if PORTABLE_ONLY.get() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight as its high and low parts, `w == hi << 15 | lo`, each fitting `i16` (weights are
/// non-negative and at most `1 << PRECISION_BITS`): the AVX2 passes multiply 8-bit pixels by both
/// with 16-bit multiply-adds and recombine, which gives the same 32-bit sums as Pillow.
fn split(w: i32) -> [i16; 2] {
    debug_assert!((0..=1 << PRECISION_BITS).contains(&w));
    [(w >> 15) as i16, (w & 0x7FFF) as i16]
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

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// What Pillow's two-pass resampler computes for the pixels that survive the center crop, and the
/// source rows and columns they depend on. The order of the passes matters to the rounding; it is
/// Pillow's (see [`horizontal_first`]).
struct Plan {
    /// The crop window in the resized image: columns `left..left + win_w`, rows `top..top + win_h`.
    left: usize,
    top: usize,
    win_w: usize,
    win_h: usize,
    horiz: Option<Coeffs>,
    vert: Option<Coeffs>,
    /// Source rows and columns the window depends on.
    rows: Range<usize>,
    cols: Range<usize>,
    horizontal_first: bool,
    /// Whether the CPU has AVX2, for the vectorised passes.
    avx2: bool,
}

/// Pillow (13) runs the vertical pass first when the height shrinks by more than twice as many
/// pixels as the width (`ImagingResampleInner`); earlier versions always ran the horizontal one
/// first. Either way each pass rounds to 8 bits, so the order shows in the result.
fn horizontal_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let shrink_h = in_h as i64 - out_h as i64;
    let shrink_w = in_w as i64 - out_w as i64;
    !(shrink_h > 0 && shrink_h > shrink_w * 2)
}

impl Plan {
    fn new(width: usize, height: usize, fit: Fit) -> Plan {
        let Geometry {
            out_w,
            out_h,
            left,
            top,
            win_w,
            win_h,
        } = fit.geometry(width, height);
        let mut horiz = Coeffs::bilinear(width, out_w, left..left + win_w);
        let mut vert = Coeffs::bilinear(height, out_h, top..top + win_h);
        let avx2 = has_avx2();
        if avx2 {
            if let Some(h) = &mut horiz {
                h.paired = h.horizontal_layout();
            }
            if let Some(v) = &mut vert {
                v.row_pairs = v.vertical_layout();
            }
        }
        let cols = horiz.as_ref().map_or(left..left + win_w, Coeffs::span);
        let rows = vert.as_ref().map_or(top..top + win_h, Coeffs::span);
        Plan {
            left,
            top,
            win_w,
            win_h,
            horiz,
            vert,
            rows,
            cols,
            horizontal_first: horizontal_first(width, height, out_w, out_h),
            avx2,
        }
    }

    /// The rows kept until the second pass, one per source row in `rows`, RGBX: horizontally
    /// resampled ones (horizontal pass first), or the source's `cols` (vertical pass first).
    fn temp_stride(&self) -> usize {
        if self.horizontal_first {
            self.win_w * 4
        } else {
            self.cols.len() * 4
        }
    }

    /// Keeps one source row (RGBX from column `first_col` on, then [`Plan::slack`] zero bytes) in
    /// `slot`, its row of the temporary buffer.
    fn take_row(&self, src: &[u8], first_col: usize, slot: &mut [u8]) {
        if self.horizontal_first {
            self.horizontal(src, first_col, slot);
        } else {
            let from = (self.cols.start - first_col) * 4;
            slot.copy_from_slice(&src[from..from + slot.len()]);
        }
    }

    /// Runs `f` on a buffer for the horizontally resampled rows, reused between calls on a thread:
    /// a fresh one would cost a page fault per 4 KiB on every image.
    fn with_temp<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        /// Larger buffers are freed after use.
        const KEEP: usize = 16 << 20;
        thread_local! {
            static TEMP: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
        }
        let len = self.rows.len() * self.temp_stride();
        let mut buffer = TEMP.take();
        buffer.resize(len, 0);
        let result = f(&mut buffer[..len]);
        if buffer.capacity() <= KEEP {
            TEMP.set(buffer);
        }
        result
    }

    /// Zero bytes the horizontal pass may read past the end of a row: every output reads a whole
    /// `taps`-pixel window, whose weights past the filter's own length are zero.
    fn slack(&self) -> usize {
        self.horiz.as_ref().map_or(0, |h| h.taps * 4)
    }

    /// The horizontal pass over one source row, given as RGBX from column `first_col` on and followed
    /// by [`Plan::slack`] zero bytes.
    fn horizontal(&self, src: &[u8], first_col: usize, out: &mut [u8]) {
        let Some(horiz) = &self.horiz else {
            let from = (self.left - first_col) * 4;
            out.copy_from_slice(&src[from..from + out.len()]);
            return;
        };
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only when the CPU has AVX2.
            unsafe { horizontal_avx2(horiz, src, first_col, out) };
            return;
        }
        horizontal_taps(horiz, src, first_col, out);
    }

    /// The second pass (vertical) or both (vertical then horizontal) over the kept rows, written
    /// as packed RGB.
    fn finish(&self, temp: &[u8]) -> Window {
        let stride = self.temp_stride();
        // every byte is written below (one row per `y`): no zeroing
        let mut out = Vec::with_capacity(3 * self.win_w * self.win_h);
        // the portable vertical pass's sums (the AVX2 one keeps them in registers)
        let mut acc = vec![0i32; if self.avx2 { 0 } else { stride }];
        // the vertically resampled row, with the horizontal pass's slack when that pass follows
        let mut row = vec![0u8; stride + self.slack()];
        let mut resampled = vec![0u8; self.win_w * 4];
        for y in 0..self.win_h {
            let vertical = &mut row[..stride];
            match &self.vert {
                None => {
                    let r = self.top + y - self.rows.start;
                    vertical.copy_from_slice(&temp[r * stride..(r + 1) * stride]);
                }
                Some(vert) => {
                    let (start, ws) = vert.get(y);
                    let from = (start - self.rows.start) * stride;
                    let input = &temp[from..from + ws.len() * stride];
                    #[cfg(target_arch = "x86_64")]
                    if self.avx2 {
                        // SAFETY: `avx2` is set only when the CPU has AVX2.
                        unsafe { vertical_row_avx2(input, ws, vert.get_pairs(y), vertical) };
                    } else {
                        vertical_row(input, ws, &mut acc, vertical);
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    vertical_row(input, ws, &mut acc, vertical);
                }
            }
            let rgbx = if self.horizontal_first {
                &row[..stride]
            } else {
                self.horizontal(&row, self.cols.start, &mut resampled);
                &resampled[..]
            };
            for px in rgbx.chunks_exact(4) {
                out.extend_from_slice(&px[..3]);
            }
        }
        Window {
            width: self.win_w,
            height: self.win_h,
            rgb: out,
        }
    }
}

/// The horizontal pass with AVX2: two output pixels per vector, one per 128-bit lane, four taps per
/// step (the layout of [`Coeffs::horizontal_layout`]). Integer sums in another order: the same result.
///
/// # Safety
/// The CPU must have AVX2. The bounds of the unchecked accesses are asserted here.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_avx2(horiz: &Coeffs, src: &[u8], first_col: usize, out: &mut [u8]) {
    let n = out.len() / 4;
    let taps = horiz.taps;
    // the bounds of every access below (window starts never decrease)
    assert!(n > 0 && horiz.starts.len() == n && horiz.paired.len() == n.div_ceil(2) * taps * 16);
    assert!(horiz.starts[0] >= first_col);
    assert!((horiz.starts[n - 1] - first_col + taps) * 4 <= src.len());
    // SAFETY: the checks above; a constant step count unrolls the common downscales (up to 4x)
    unsafe {
        match taps {
            4 => horizontal_avx2_body(horiz, 1, src, first_col, out),
            8 => horizontal_avx2_body(horiz, 2, src, first_col, out),
            _ => horizontal_avx2_body(horiz, taps / 4, src, first_col, out),
        }
    }
}

/// # Safety
/// AVX2, and every window `starts[i] - first_col .. + taps` within `src` (see [`horizontal_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::cast_ptr_alignment)] // all loads and stores are unaligned ones
unsafe fn horizontal_avx2_body(
    horiz: &Coeffs,
    quads: usize,
    src: &[u8],
    first_col: usize,
    out: &mut [u8],
) {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_add_epi32, _mm256_castsi256_si128, _mm256_extracti128_si256,
        _mm256_loadu2_m128i, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_packs_epi32,
        _mm256_packus_epi16, _mm256_set1_epi32, _mm256_setzero_si256, _mm256_shuffle_epi8,
        _mm256_slli_epi32, _mm256_srai_epi32, _mm_cvtsi128_si32,
    };
    let load = |mask: &[i8; 32]| _mm256_loadu_si256(mask.as_ptr().cast::<__m256i>());
    let (m01, m23) = (load(&SPREAD_01), load(&SPREAD_23));
    let half = _mm256_set1_epi32(HALF);
    let count = out.len() / 4;
    let (src, out) = (src.as_ptr(), out.as_mut_ptr());
    let mut ws = horiz.paired.as_ptr().cast::<__m256i>();
    for even in (0..count).step_by(2) {
        let odd = (even + 1).min(count - 1);
        // SAFETY: the caller's bounds; `ws` moves through `paired`, 4 vectors per pair and quad
        unsafe {
            let from_even = src.add((horiz.starts.get_unchecked(even) - first_col) * 4);
            let from_odd = src.add((horiz.starts.get_unchecked(odd) - first_col) * 4);
            let (mut high, mut low) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for q in 0..quads {
                let pixels = _mm256_loadu2_m128i(
                    from_odd.add(q * 16).cast::<__m128i>(),
                    from_even.add(q * 16).cast::<__m128i>(),
                );
                let taps01 = _mm256_shuffle_epi8(pixels, m01);
                let taps23 = _mm256_shuffle_epi8(pixels, m23);
                let madd = |p, k| _mm256_madd_epi16(p, _mm256_loadu_si256(ws.add(k)));
                high = _mm256_add_epi32(high, _mm256_add_epi32(madd(taps01, 0), madd(taps23, 1)));
                low = _mm256_add_epi32(low, _mm256_add_epi32(madd(taps01, 2), madd(taps23, 3)));
                ws = ws.add(4);
            }
            let sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32::<15>(high), low), half);
            // clip8: (acc >> PRECISION_BITS) saturated to 0..=255 by the two packs
            let shifted = _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(sum);
            let words = _mm256_packs_epi32(shifted, shifted);
            let bytes = _mm256_packus_epi16(words, words);
            let lane0 = _mm_cvtsi128_si32(_mm256_castsi256_si128(bytes));
            let lane1 = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(bytes));
            out.add(even * 4).cast::<i32>().write_unaligned(lane0);
            out.add(odd * 4).cast::<i32>().write_unaligned(lane1);
        }
    }
}

/// `pshufb` masks for [`horizontal_avx2_body`]: the 16 bytes `RGBX RGBX RGBX RGBX` of four taps
/// become the 16-bit pairs `R R G G B B X X` of taps 0 and 1 (`SPREAD_01`) or 2 and 3
/// (`SPREAD_23`), in both lanes (-128 writes a zero byte).
const SPREAD_01: [i8; 32] = spread(0);
const SPREAD_23: [i8; 32] = spread(8);

const fn spread(first: i8) -> [i8; 32] {
    const ORDER: [i8; 8] = [0, 4, 1, 5, 2, 6, 3, 7];
    let mut mask = [-128; 32];
    let mut k = 0;
    while k < 16 {
        mask[k / 8 * 16 + k % 8 * 2] = first + ORDER[k % 8];
        k += 1;
    }
    mask
}

/// A fixed window length lets the compiler unroll the common downscales (up to 4x).
#[inline(always)] // inlined into the AVX2 variant, which compiles it for AVX2
#[allow(clippy::inline_always)]
fn horizontal_taps(horiz: &Coeffs, src: &[u8], first_col: usize, out: &mut [u8]) {
    match horiz.taps {
        4 => horizontal_any(horiz, 4, src, first_col, out),
        6 => horizontal_any(horiz, 6, src, first_col, out),
        8 => horizontal_any(horiz, 8, src, first_col, out),
        10 => horizontal_any(horiz, 10, src, first_col, out),
        taps => horizontal_any(horiz, taps, src, first_col, out),
    }
}

/// One output pixel per four bytes of `out` (RGBX): the weighted sum of `taps` RGBX input pixels, with
/// four lanes (the fourth ignored) so that each tap is one vector multiply-add.
#[inline(always)] // inlined into the AVX2 variant, which compiles it for AVX2
#[allow(clippy::inline_always)]
fn horizontal_any(horiz: &Coeffs, taps: usize, src: &[u8], first_col: usize, out: &mut [u8]) {
    for (i, px) in out.chunks_exact_mut(4).enumerate() {
        let from = (horiz.starts[i] - first_col) * 4;
        let input = &src[from..from + taps * 4];
        let ws = &horiz.weights[i * taps..(i + 1) * taps];
        let mut acc = [HALF; 4];
        for (p, &w) in input.chunks_exact(4).zip(ws) {
            for c in 0..4 {
                acc[c] += i32::from(p[c]) * w;
            }
        }
        px[0] = clip8(acc[0]);
        px[1] = clip8(acc[1]);
        px[2] = clip8(acc[2]);
        px[3] = 0;
    }
}

/// One output row of the vertical pass: `input` holds the `ws.len()` rows it reads.
#[inline(always)] // inlined into the AVX2 variant, which compiles it for AVX2
#[allow(clippy::inline_always)]
fn vertical_row(input: &[u8], ws: &[i32], acc: &mut [i32], row: &mut [u8]) {
    let stride = row.len();
    acc.fill(HALF);
    for (rows, &w) in input.chunks_exact(stride).zip(ws) {
        for (a, &p) in acc.iter_mut().zip(rows) {
            *a += i32::from(p) * w;
        }
    }
    for (v, &a) in row.iter_mut().zip(acc.iter()) {
        *v = clip8(a);
    }
}

/// [`vertical_row`] with AVX2: 32 bytes of the output row at a time, the sums kept in registers;
/// each step multiplies two input rows, their bytes interleaved into 16-bit pairs, by the pair of
/// weights with `_mm256_madd_epi16`, twice (the high and low parts of [`split`]). `pairs` is the
/// row's [`Coeffs::get_pairs`]: an odd last row is paired with itself at weight zero.
///
/// # Safety
/// The CPU must have AVX2. Every load and store goes through a bounds-checked slice.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::cast_ptr_alignment)] // loadu and storeu access unaligned
unsafe fn vertical_row_avx2(input: &[u8], ws: &[i32], pairs: &[[i32; 2]], row: &mut [u8]) {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_packs_epi32,
        _mm256_packus_epi16, _mm256_set1_epi32, _mm256_setzero_si256, _mm256_slli_epi32,
        _mm256_srai_epi32, _mm256_storeu_si256, _mm256_unpackhi_epi8, _mm256_unpacklo_epi8,
    };
    let stride = row.len();
    let last = ws.len().saturating_sub(1);
    let half = _mm256_set1_epi32(HALF);
    let zero = _mm256_setzero_si256();
    let body = stride / 32 * 32;
    for x in (0..body).step_by(32) {
        // SAFETY: every load reads 32 bytes of `input` at `x` in one of its rows, the store 32
        // bytes of `row` at `x`, all within the slices (`x + 32 <= stride`).
        unsafe {
            let mut high = [zero; 4];
            let mut low = [zero; 4];
            for (p, &[high_parts, low_parts]) in pairs.iter().enumerate() {
                let (r0, r1) = (2 * p * stride, (2 * p + 1).min(last) * stride);
                let (wh, wl) = (_mm256_set1_epi32(high_parts), _mm256_set1_epi32(low_parts));
                let a = _mm256_loadu_si256(input[r0 + x..r0 + x + 32].as_ptr().cast::<__m256i>());
                let b = _mm256_loadu_si256(input[r1 + x..r1 + x + 32].as_ptr().cast::<__m256i>());
                let (lo, hi) = (_mm256_unpacklo_epi8(a, b), _mm256_unpackhi_epi8(a, b));
                // byte columns 0-3, 4-7, 8-11, 12-15 of each 16-byte lane
                let words = [
                    _mm256_unpacklo_epi8(lo, zero),
                    _mm256_unpackhi_epi8(lo, zero),
                    _mm256_unpacklo_epi8(hi, zero),
                    _mm256_unpackhi_epi8(hi, zero),
                ];
                for k in 0..4 {
                    high[k] = _mm256_add_epi32(high[k], _mm256_madd_epi16(words[k], wh));
                    low[k] = _mm256_add_epi32(low[k], _mm256_madd_epi16(words[k], wl));
                }
            }
            let v = std::array::from_fn::<_, 4, _>(|k| {
                let sum = _mm256_add_epi32(_mm256_slli_epi32::<15>(high[k]), low[k]);
                _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(_mm256_add_epi32(sum, half))
            });
            // clip8 by the saturating packs, which also restore the byte order
            let bytes = _mm256_packus_epi16(
                _mm256_packs_epi32(v[0], v[1]),
                _mm256_packs_epi32(v[2], v[3]),
            );
            _mm256_storeu_si256(row[x..x + 32].as_mut_ptr().cast::<__m256i>(), bytes);
        }
    }
    for x in body..stride {
        let acc = ws.iter().enumerate().fold(HALF, |acc, (k, &w)| {
            acc + i32::from(input[k * stride + x]) * w
        });
        row[x] = clip8(acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // the ImageNet pipeline is the simplest way to drive the passes end to end
    use crate::error::Error;
    use crate::image::fit::{center_crop_offset, resized_size};
    use crate::image::preprocess::{preprocess_file, preprocess_rgb, Params};

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (inp, out) in [(600, 300), (512, 256), (10, 256), (4000, 341), (257, 256)] {
            let c = Coeffs::bilinear(inp, out, 0..out).unwrap();
            for i in 0..out {
                let (start, w) = c.get(i);
                assert!(start + w.len() <= inp);
                let sum: i64 = w.iter().map(|&k| i64::from(k)).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= w.len() as i64,
                    "{inp}->{out}: {sum}"
                );
            }
        }
        assert!(Coeffs::bilinear(256, 256, 0..224).is_none());
    }

    #[test]
    fn pass_order_follows_pillow() {
        assert!(horizontal_first(512, 600, 256, 300));
        assert!(horizontal_first(600, 1200, 256, 512)); // 688 is not more than 2 x 344
        assert!(!horizontal_first(300, 1000, 256, 853));
        assert!(horizontal_first(4000, 3000, 341, 256));
        assert!(horizontal_first(13, 17, 256, 334)); // growing
    }

    /// Pillow's resize computed in full (both passes over the whole image, as `Resample.c` does),
    /// then cropped and normalized pixel by pixel: what the windowed plan must reproduce.
    /// One pass of Pillow's resampler over a whole packed-RGB image: along x (`horizontal`) from
    /// `w` to `out` columns, or along y from `h` to `out` rows.
    fn pass(src: &[u8], w: usize, h: usize, out: usize, horizontal: bool) -> Vec<u8> {
        let (inn, other) = if horizontal { (w, h) } else { (h, w) };
        let Some(c) = Coeffs::bilinear(inn, out, 0..out) else {
            return src.to_vec();
        };
        let at = |along: usize, across: usize, ch: usize, width: usize| {
            if horizontal {
                (across * width + along) * 3 + ch
            } else {
                (along * width + across) * 3 + ch
            }
        };
        let out_w = if horizontal { out } else { w };
        let mut dst = vec![0; out * other * 3];
        for o in 0..out {
            let (start, ws) = c.get(o);
            for across in 0..other {
                for ch in 0..3 {
                    let acc = ws.iter().enumerate().fold(HALF, |acc, (k, &wt)| {
                        acc + i32::from(src[at(start + k, across, ch, w)]) * wt
                    });
                    dst[at(o, across, ch, out_w)] = clip8(acc);
                }
            }
        }
        dst
    }

    /// Pillow's resize computed in full (both passes over the whole image, in Pillow's order), then
    /// cropped and normalized pixel by pixel: what the windowed plan must reproduce.
    fn reference(image: &RgbImage, params: &Params) -> Vec<f32> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let (ow, oh) = resized_size(w as u32, h as u32, params.resize);
        let (ow, oh) = (ow as usize, oh as usize);
        let src = image.as_raw();
        let full = if horizontal_first(w, h, ow, oh) {
            pass(&pass(src, w, h, ow, true), ow, h, oh, false)
        } else {
            pass(&pass(src, w, h, oh, false), w, oh, ow, true)
        };
        let stride = ow * 3;
        let crop = params.crop as usize;
        let left = center_crop_offset(ow as u32, params.crop) as usize;
        let top = center_crop_offset(oh as u32, params.crop) as usize;
        let mut out = vec![0f32; 3 * crop * crop];
        for y in 0..crop {
            for x in 0..crop {
                for c in 0..3 {
                    let v = full[(top + y) * stride + (left + x) * 3 + c];
                    out[c * crop * crop + y * crop + x] =
                        (f32::from(v) / 255.0 - params.mean[c]) / params.std[c];
                }
            }
        }
        out
    }

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x ^ y) * 13 % 256) as u8,
            ])
        })
    }

    #[test]
    #[allow(clippy::float_cmp)] // the point is bit-exactness
    fn window_equals_crop_of_full_resize() {
        window_equals_crop_of_full_resize_with(false);
    }

    #[test]
    fn portable_passes_equal_crop_of_full_resize() {
        window_equals_crop_of_full_resize_with(true);
    }

    #[allow(clippy::float_cmp)] // the point is bit-exactness
    fn window_equals_crop_of_full_resize_with(portable: bool) {
        PORTABLE_ONLY.set(portable);
        let params = Params::default();
        for (w, h) in [
            (97, 131),
            (512, 600),
            (600, 512),
            (256, 300),
            (300, 256),
            (257, 1000),
            (224, 224),
            (1200, 900),
            (2000, 261),
            (300, 601), // vertical pass first (the height shrinks by more than twice the width)
            (300, 1000),
            (257, 2000),
            (600, 1200), // not quite: horizontal first
        ] {
            let image = pattern(w, h);
            assert!(
                preprocess_rgb(&image, &params) == reference(&image, &params),
                "{w}x{h}"
            );
        }
        let small = Params {
            resize: 224,
            ..Params::default()
        };
        let image = pattern(224, 230);
        assert!(preprocess_rgb(&image, &small) == reference(&image, &small));
        // an odd crop: an output pixel without a partner in the AVX2 horizontal pass, and rows
        // that are not a multiple of 32 bytes in the vertical one
        let odd = Params {
            resize: 250,
            crop: 223,
            ..Params::default()
        };
        for (w, h) in [(512, 600), (300, 900), (251, 253), (999, 1001)] {
            let image = noise(w, h);
            assert!(
                preprocess_rgb(&image, &odd) == reference(&image, &odd),
                "{w}x{h} crop 223"
            );
        }
    }

    /// Every byte value, in no order: the sums reach both ends of the 8-bit range.
    fn noise(w: u32, h: u32) -> RgbImage {
        let mut seed = 0x9E37_79B9_u32;
        RgbImage::from_fn(w, h, |_, _| {
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed >> 24) as u8
            };
            image::Rgb([next(), next(), next()])
        })
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(613, 401, image::Rgb([10, 128, 250]));
        let p = Params::default();
        let out = preprocess_rgb(&img, &p);
        for (c, v) in [10u8, 128, 250].into_iter().enumerate() {
            let expected = (f32::from(v) / 255.0 - p.mean[c]) / p.std[c];
            assert!(out[c * 224 * 224..(c + 1) * 224 * 224]
                .iter()
                .all(|&x| x.to_bits() == expected.to_bits()));
        }
    }

    #[test]
    #[allow(clippy::float_cmp)] // the point is bit-exactness
    fn normalization_matches_formula() {
        let p = Params {
            resize: 1,
            crop: 1,
            ..Params::default()
        };
        let out = preprocess_rgb(&RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 128])), &p);
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
}
