//! CPU kernels for convolutional networks on candle 0.11, each with the geometry of a [`Window`].
//!
//! - [`ops`]: depthwise convolution (NCHW and NHWC) and max-pooling as custom ops with backward (f32/f64, any
//!   stride/padding), and trainable LayerNorm, softmax and GELU with hand-written backward.
//! - [`conv`]: im2col + GEMM convolution with a fused bias/ReLU/ReLU6 epilogue and backward, training-mode
//!   BatchNorm in two passes with a fused backward, ReLU6 with a one-pass backward.
//! - [`fold`]: the BatchNorm fold (`scale = γ/√(var+ε)`, `shift = β − mean·scale`) into a convolution, and
//!   [`fused`]: a convolution with its BatchNorm folded and its activation in the epilogue.
//! - [`nhwc`] and [`plan`]: the inference path of frozen mobile networks (NHWC, folded, vectorised depthwise,
//!   GEMM pointwise with a bias/activation/residual epilogue).
//!
//! On other devices or dtypes the tensor-level functions fall back to candle's own operations.

#![warn(missing_docs)]

pub mod conv;
pub mod error;
pub mod fold;
pub mod fused;
pub mod nhwc;
pub mod ops;
pub mod plan;
pub mod window;

pub use error::{Error, Result};
pub use fold::{fold_bn, BatchNormStats};
pub use nhwc::Activation;
pub use window::{Padding, Window};
