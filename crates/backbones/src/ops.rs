//! Tensor operations candle 0.11 lacks or runs slowly, from the `kernels` crate: depthwise convolution (NCHW and
//! NHWC) and max-pooling with backward (CPU custom ops; candle's own operations on other devices), fused inference
//! attention.

pub use kernels::ops::{depthwise_conv2d, depthwise_conv2d_nhwc, fused_attention, max_pool2d};
