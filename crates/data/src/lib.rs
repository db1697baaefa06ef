//! Datasets, image decoding, transforms and batch loading for image classification, multi-label classification,
//! semantic segmentation and object detection.
//!
//! Depends on candle-core and image only, so it can be reused by any computer-vision project.

pub mod config;
pub mod csv;
pub mod dataset;
pub mod decode;
pub mod detect;
pub mod error;
pub mod folder;
pub mod fsutil;
pub mod inspect;
pub mod loader;
pub mod multilabel;
pub mod open;
pub mod segment;
pub mod split;
pub mod target;
pub mod text;
pub mod transforms;
mod yaml;

pub use crate::csv::CsvOptions;
pub use config::{Interpolation, PreprocessConfig, IMAGENET_MEAN, IMAGENET_STD};
pub use dataset::{Dataset, Ignored, Sample};
pub use decode::{decode_image, DecodePolicy, SkippedFile};
pub use detect::{DetDataset, DetSample, LabelIssues};
pub use error::{DataError, Result};
pub use inspect::{inspect, InspectReport};
pub use loader::{Batch, Epoch, Loader, LoaderConfig, SampleSource};
pub use multilabel::{MultiLabelDataset, MultiLabelSample};
pub use open::{open, open_with};
pub use segment::{SegDataset, SegOptions, SegSample, ValueMap};
pub use split::TrainVal;
pub use target::{Affine, Annotated, BoxFilter, BoxTarget, Placement, TargetKind, Targets, IGNORE};
