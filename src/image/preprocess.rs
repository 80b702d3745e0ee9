//! torchvision's ImageNet pipeline: `Resize(resize)` + `CenterCrop(crop)` + `ToTensor()` +
//! `Normalize(mean, std)`, CHW float32, from an image file or an already decoded RGB image.

use std::path::Path;

use super::convert::{to_f32_chw, Pixels};
use super::fit::Fit;
use super::resample::{window_file, Window};
use crate::error::{Error, Result};

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
    fn fit(&self) -> Fit {
        Fit::ShortSide {
            resize: self.resize,
            width: self.crop,
            height: self.crop,
        }
    }

    /// `ToTensor()` + `Normalize(mean, std)` into CHW float32.
    fn normalize(&self, window: &Window) -> Vec<f32> {
        to_f32_chw(window, &self.pixels())
    }

    fn pixels(&self) -> Pixels {
        Pixels {
            scale: 255.0,
            mean: self.mean,
            std: self.std,
        }
    }

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
        self.pixels().validate()
    }
}

/// Reads, decodes and preprocesses an image file into a `3 × crop × crop` CHW tensor (torchvision's
/// ImageNet pipeline with `params`).
pub fn preprocess_file(path: &Path, params: &Params) -> Result<Vec<f32>> {
    params.validate()?;
    let window = window_file(path, params.fit())?;
    Ok(params.normalize(&window))
}

/// Preprocesses an already decoded RGB image (see [`preprocess_file`]).
#[cfg(test)]
pub fn preprocess_rgb(image: &image::RgbImage, params: &Params) -> Vec<f32> {
    params.normalize(&super::resample::window_rgb(image, params.fit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_crop_larger_than_resize() {
        let p = Params {
            crop: 300,
            ..Params::default()
        };
        assert!(matches!(p.validate(), Err(Error::InvalidArgument(_))));
    }
}
