//! From resampled pixels to the tensor a model takes: placement on the model's canvas (letterbox
//! padding), layout (NCHW or NHWC), value scaling and normalization, and the datatype (FP32, FP16,
//! UINT8, INT8).
//!
//! Every value is `(pixel / scale - mean[c]) / std[c]` computed in float32, the expression
//! torchvision's `ToTensor()` + `Normalize` evaluates, so FP32 output is bit-exact with it. FP16
//! rounds that float to nearest-even (numpy's `astype(float16)`); UINT8 and INT8 round it half
//! to even and saturate (numpy's `clip(rint(x), lo, hi)`). Since a value depends only on the pixel
//! byte and its channel, each channel's 256 possible encodings are computed once.

use super::resample::Window;
use crate::error::{Error, Result};
use crate::protocol::tensor::DataType;

/// The memory order of one image's tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Channels, then rows, then columns.
    Chw,
    /// Rows, then columns, then channels.
    Hwc,
}

/// How a pixel byte becomes a value: `(pixel / scale - mean[c]) / std[c]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pixels {
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Pixels {
    pub fn validate(&self) -> Result<()> {
        let finite = self.mean.iter().chain(&self.std).all(|v| v.is_finite());
        if !finite || self.std.contains(&0.0) || self.scale == 0.0 || !self.scale.is_finite() {
            return Err(Error::InvalidArgument(
                "mean must be finite and std finite and non-zero".into(),
            ));
        }
        Ok(())
    }

    fn value(&self, pixel: u8, channel: usize) -> f32 {
        (f32::from(pixel) / self.scale - self.mean[channel]) / self.std[channel]
    }
}

/// The model's side of one image: its canvas, the grey around a smaller window, its layout and
/// datatype.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub width: usize,
    pub height: usize,
    /// The byte value of the padding around a window smaller than the canvas (centred on it).
    pub pad: u8,
    pub layout: Layout,
    pub datatype: DataType,
    pub pixels: Pixels,
}

impl Target {
    /// Bytes of one image's tensor.
    pub fn bytes(&self) -> usize {
        self.width * self.height * 3 * self.datatype.size()
    }
}

/// Encodes one float as `datatype`'s little-endian bytes (up to 4).
pub fn encode(value: f32, datatype: DataType) -> Result<([u8; 4], usize)> {
    let mut out = [0u8; 4];
    let size = match datatype {
        DataType::Fp32 => {
            out.copy_from_slice(&value.to_le_bytes());
            4
        }
        DataType::Fp16 => {
            out[..2].copy_from_slice(&half::f16::from_f32(value).to_le_bytes());
            2
        }
        DataType::Uint8 => {
            out[0] = value.round_ties_even().clamp(0.0, 255.0) as u8;
            1
        }
        DataType::Int8 => {
            out[0] = value.round_ties_even().clamp(-128.0, 127.0) as i8 as u8;
            1
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "images can be sent as FP32, FP16, UINT8 or INT8, not {other}"
            )))
        }
    };
    Ok((out, size))
}

/// The tensor of one image: `window` centred on `target`'s canvas (padded with `target.pad`), in
/// its layout and datatype.
#[cfg(test)]
pub fn to_tensor(window: &Window, target: &Target) -> Result<Vec<u8>> {
    let mut out = vec![0u8; target.bytes()];
    to_tensor_into(window, target, &mut out)?;
    Ok(out)
}

/// The tensor of one image (as `to_tensor` makes it) written into `out`, which must be
/// `target.bytes()` long: a set of images is written straight into the buffers Python keeps, so no
/// image is copied after it is made.
pub fn to_tensor_into(window: &Window, target: &Target, out: &mut [u8]) -> Result<()> {
    target.pixels.validate()?;
    let (w, h) = (target.width, target.height);
    if window.width > w || window.height > h {
        return Err(Error::InvalidArgument(format!(
            "a {}x{} window does not fit a {w}x{h} input",
            window.width, window.height
        )));
    }
    if out.len() != target.bytes() {
        return Err(Error::Runtime(format!(
            "a {w}x{h} tensor takes {} bytes, not {}",
            target.bytes(),
            out.len()
        )));
    }
    let size = target.datatype.size();
    let mut table = vec![[0u8; 4]; 3 * 256];
    for c in 0..3 {
        for v in 0..=255u8 {
            table[c * 256 + usize::from(v)] = encode(target.pixels.value(v, c), target.datatype)?.0;
        }
    }
    let left = (w - window.width) / 2;
    let top = (h - window.height) / 2;
    let pixel = |x: usize, y: usize, c: usize| -> u8 {
        if x < left || y < top || x >= left + window.width || y >= top + window.height {
            target.pad
        } else {
            window.rgb[((y - top) * window.width + (x - left)) * 3 + c]
        }
    };
    let mut values = out.chunks_exact_mut(size);
    let mut put = |x: usize, y: usize, c: usize| {
        if let Some(value) = values.next() {
            value.copy_from_slice(&table[c * 256 + usize::from(pixel(x, y, c))][..size]);
        }
    };
    match target.layout {
        Layout::Chw => {
            for c in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        put(x, y, c);
                    }
                }
            }
        }
        Layout::Hwc => {
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        put(x, y, c);
                    }
                }
            }
        }
    }
    Ok(())
}

/// ImageNet-style CHW float32 of a window that fills its canvas.
pub fn to_f32_chw(window: &Window, pixels: &Pixels) -> Vec<f32> {
    let plane = window.width * window.height;
    let mut out = vec![0f32; 3 * plane];
    let lut: Vec<[f32; 256]> = (0..3)
        .map(|c| std::array::from_fn(|v| pixels.value(v as u8, c)))
        .collect();
    for (i, px) in window.rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = lut[c][usize::from(px[c])];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const IDENTITY: Pixels = Pixels {
        scale: 1.0,
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    fn window(width: usize, height: usize, rgb: Vec<u8>) -> Window {
        Window { width, height, rgb }
    }

    fn target(width: usize, height: usize, layout: Layout, datatype: DataType) -> Target {
        Target {
            width,
            height,
            pad: 114,
            layout,
            datatype,
            pixels: IDENTITY,
        }
    }

    #[test]
    fn layouts_order_the_same_pixels() {
        // 2x1 image: pixel (0,0) = 1 2 3, pixel (1,0) = 4 5 6
        let w = window(2, 1, vec![1, 2, 3, 4, 5, 6]);
        let hwc = to_tensor(&w, &target(2, 1, Layout::Hwc, DataType::Uint8)).unwrap();
        let chw = to_tensor(&w, &target(2, 1, Layout::Chw, DataType::Uint8)).unwrap();
        assert_eq!(hwc, [1, 2, 3, 4, 5, 6]);
        assert_eq!(chw, [1, 4, 2, 5, 3, 6]);
    }

    #[test]
    fn a_smaller_window_is_centred_on_grey() {
        let w = window(1, 1, vec![9, 8, 7]);
        let t = target(3, 2, Layout::Hwc, DataType::Uint8);
        let out = to_tensor(&w, &t).unwrap();
        let grey = [114u8; 3];
        let expected: Vec<u8> = [grey, [9, 8, 7], grey, grey, grey, grey].concat();
        assert_eq!(out, expected);
    }

    #[test]
    fn integers_round_half_to_even_and_saturate() {
        let e = |v: f32, dt| encode(v, dt).unwrap().0[0];
        assert_eq!(e(2.5, DataType::Uint8), 2);
        assert_eq!(e(3.5, DataType::Uint8), 4);
        assert_eq!(e(-3.0, DataType::Uint8), 0);
        assert_eq!(e(300.0, DataType::Uint8), 255);
        assert_eq!(e(-200.0, DataType::Int8) as i8, -128);
        assert_eq!(e(127.6, DataType::Int8) as i8, 127);
        assert_eq!(e(-0.5, DataType::Int8) as i8, 0);
        assert_eq!(e(-1.5, DataType::Int8) as i8, -2);
        assert!(encode(1.0, DataType::Int32).is_err());
    }

    #[test]
    fn int8_from_pixels_shifted_by_128() {
        let w = window(1, 1, vec![0, 128, 255]);
        let mut t = target(1, 1, Layout::Hwc, DataType::Int8);
        t.pixels.mean = [128.0; 3];
        let out = to_tensor(&w, &t).unwrap();
        assert_eq!(
            out.iter().map(|&b| b as i8).collect::<Vec<_>>(),
            [-128, 0, 127]
        );
    }

    #[test]
    fn a_window_larger_than_the_canvas_is_refused() {
        let w = window(2, 2, vec![0; 12]);
        assert!(to_tensor(&w, &target(1, 2, Layout::Chw, DataType::Fp32)).is_err());
    }

    fn datatype() -> impl Strategy<Value = DataType> {
        proptest::sample::select(vec![
            DataType::Fp32,
            DataType::Fp16,
            DataType::Uint8,
            DataType::Int8,
        ])
    }

    proptest! {
        #![proptest_config(crate::protocol::tensor::fuzz_config())]

        /// FP32 is the float itself, FP16 its nearest half, and the integers what numpy's
        /// `clip(rint(x))` gives, for any float.
        #[test]
        #[allow(clippy::float_cmp)] // whole numbers, compared exactly
        fn encodings_follow_their_definitions(v in -1000.0f32..1000.0) {
            prop_assert_eq!(encode(v, DataType::Fp32).unwrap().0, v.to_le_bytes());
            let h = half::f16::from_le_bytes(encode(v, DataType::Fp16).unwrap().0[..2].try_into().unwrap());
            let err = (h.to_f32() - v).abs();
            for n in [h.to_f32().next_up(), h.to_f32().next_down()] {
                let other = half::f16::from_f32(n);
                prop_assert!(err <= (other.to_f32() - v).abs());
            }
            let r = f64::from(v).round_ties_even();
            prop_assert_eq!(f64::from(encode(v, DataType::Uint8).unwrap().0[0]), r.clamp(0.0, 255.0));
            prop_assert_eq!(f64::from(encode(v, DataType::Int8).unwrap().0[0] as i8), r.clamp(-128.0, 127.0));
        }

        /// Element (c, y, x) of the NCHW tensor is element (y, x, c) of the NHWC one, for any
        /// window, canvas and datatype.
        #[test]
        fn nchw_is_nhwc_transposed(
            (ww, wh, rgb) in (1usize..6, 1usize..6).prop_flat_map(|(w, h)| (Just(w), Just(h), proptest::collection::vec(any::<u8>(), w * h * 3))),
            extra in (0usize..3, 0usize..3),
            dt in datatype(),
            mean in -2.0f32..2.0,
            std in 0.1f32..3.0,
        ) {
            let w = window(ww, wh, rgb);
            let mut t = target(ww + extra.0, wh + extra.1, Layout::Chw, dt);
            t.pixels = Pixels { scale: 255.0, mean: [mean; 3], std: [std; 3] };
            let chw = to_tensor(&w, &t).unwrap();
            t.layout = Layout::Hwc;
            let hwc = to_tensor(&w, &t).unwrap();
            let (cw, ch, s) = (t.width, t.height, dt.size());
            prop_assert_eq!(chw.len(), t.bytes());
            for c in 0..3 {
                for y in 0..ch {
                    for x in 0..cw {
                        let a = ((c * ch + y) * cw + x) * s;
                        let b = ((y * cw + x) * 3 + c) * s;
                        prop_assert_eq!(&chw[a..a + s], &hwc[b..b + s]);
                    }
                }
            }
        }
    }
}
