//! Where an image goes: the size it is resampled to and the window of the result that is kept,
//! for torchvision's short-side resize and center crop, a plain resize, and YOLO's letterbox.

use crate::error::{Error, Result};

/// How an image becomes the window of pixels the model sees (all with Pillow's antialiased
/// bilinear resampling, as torchvision uses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// torchvision's `Resize(resize)` (the short side) then `CenterCrop((height, width))`.
    ShortSide {
        resize: u32,
        width: u32,
        height: u32,
    },
    /// Pillow's `resize((width, height))`, whatever the aspect ratio.
    Stretch { width: u32, height: u32 },
    /// Resized keeping the aspect ratio to fit inside `width x height` (YOLO's letterbox); the
    /// caller pads around it.
    Letterbox { width: u32, height: u32 },
}

impl Fit {
    pub(crate) fn validate(self) -> Result<()> {
        let (w, h) = match self {
            Fit::ShortSide {
                resize,
                width,
                height,
            } => {
                if resize == 0 {
                    return Err(Error::InvalidArgument("resize must be positive".into()));
                }
                if width > resize || height > resize {
                    return Err(Error::InvalidArgument(format!(
                        "crop ({width}x{height}) must not exceed resize ({resize})"
                    )));
                }
                (width, height)
            }
            Fit::Stretch { width, height } | Fit::Letterbox { width, height } => (width, height),
        };
        if w == 0 || h == 0 {
            return Err(Error::InvalidArgument(
                "resize and crop must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The resampled image's size and the window of it that is kept.
    pub(crate) fn geometry(self, width: usize, height: usize) -> Geometry {
        match self {
            Fit::ShortSide {
                resize,
                width: cw,
                height: ch,
            } => {
                let (out_w, out_h) = resized_size(width as u32, height as u32, resize);
                Geometry {
                    out_w: out_w as usize,
                    out_h: out_h as usize,
                    left: center_crop_offset(out_w, cw) as usize,
                    top: center_crop_offset(out_h, ch) as usize,
                    win_w: cw as usize,
                    win_h: ch as usize,
                }
            }
            Fit::Stretch {
                width: out_w,
                height: out_h,
            } => Geometry::whole(out_w as usize, out_h as usize),
            Fit::Letterbox {
                width: box_w,
                height: box_h,
            } => {
                let (out_w, out_h) = letterbox_size(width, height, box_w, box_h);
                Geometry::whole(out_w, out_h)
            }
        }
    }
}

/// The size an image of `width x height` is resized to inside a `box_w x box_h` letterbox:
/// scaled by `min(box_w / width, box_h / height)`, each side rounded half away from zero.
pub fn letterbox_size(width: usize, height: usize, box_w: u32, box_h: u32) -> (usize, usize) {
    let r = (f64::from(box_w) / width as f64).min(f64::from(box_h) / height as f64);
    let side = |n: usize, limit: u32| ((n as f64 * r).round() as usize).clamp(1, limit as usize);
    (side(width, box_w), side(height, box_h))
}

/// The resampled image's size (`out_w x out_h`) and the window of it that is computed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub out_w: usize,
    pub out_h: usize,
    pub left: usize,
    pub top: usize,
    pub win_w: usize,
    pub win_h: usize,
}

impl Geometry {
    fn whole(out_w: usize, out_h: usize) -> Self {
        Geometry {
            out_w,
            out_h,
            left: 0,
            top: 0,
            win_w: out_w,
            win_h: out_h,
        }
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
    fn letterbox_keeps_the_aspect_ratio_inside_the_box() {
        assert_eq!(letterbox_size(1280, 720, 640, 640), (640, 360));
        assert_eq!(letterbox_size(240, 700, 640, 640), (219, 640)); // 219.43
        assert_eq!(letterbox_size(3, 1000, 640, 640), (2, 640)); // 1.92
        assert_eq!(letterbox_size(1, 5000, 640, 640), (1, 640)); // never zero
    }

    #[test]
    fn geometries() {
        let g = Fit::ShortSide {
            resize: 256,
            width: 224,
            height: 224,
        }
        .geometry(512, 600);
        assert_eq!(
            (g.out_w, g.out_h, g.left, g.top, g.win_w, g.win_h),
            (256, 300, 16, 38, 224, 224)
        );
        let g = Fit::Stretch {
            width: 300,
            height: 200,
        }
        .geometry(17, 19);
        assert_eq!(
            (g.out_w, g.out_h, g.left, g.top, g.win_w, g.win_h),
            (300, 200, 0, 0, 300, 200)
        );
        assert!(Fit::ShortSide {
            resize: 200,
            width: 224,
            height: 100
        }
        .validate()
        .is_err());
        assert!(Fit::Letterbox {
            width: 0,
            height: 10
        }
        .validate()
        .is_err());
    }
}
