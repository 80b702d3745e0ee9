//! Images into tensors: decoding (JPEG through libjpeg-turbo, [`jpeg`]), where the image goes
//! ([`fit`]), Pillow-exact resampling ([`resample`]), the model's tensor ([`convert`]), the ImageNet
//! pipeline ([`preprocess`]) and whole sets prepared at start ([`imageset`]). The modules depend on
//! each other in that order only.

pub(crate) mod convert;
pub(crate) mod fit;
pub(crate) mod imageset;
pub(crate) mod jpeg;
pub(crate) mod preprocess;
mod py;
pub(crate) mod resample;

pub(crate) use py::register;
