//! Datasets, image decoding, transforms and batch loading for image classification.
//!
//! Depends on candle-core and image only, so it can be reused by any image-classification project.

pub mod config;
pub mod csv;
pub mod dataset;
pub mod decode;
pub mod error;
pub mod folder;
pub mod fsutil;
pub mod inspect;
pub mod loader;
pub mod open;
pub mod split;
pub mod text;
pub mod transforms;

pub use crate::csv::CsvOptions;
pub use config::{Interpolation, PreprocessConfig, IMAGENET_MEAN, IMAGENET_STD};
pub use dataset::{Dataset, Ignored, Sample};
pub use decode::{decode_image, DecodePolicy, SkippedFile};
pub use error::{DataError, Result};
pub use inspect::{inspect, InspectReport};
pub use loader::{Batch, Epoch, Loader, LoaderConfig};
pub use open::{open, open_with};
pub use split::TrainVal;
