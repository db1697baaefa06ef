//! Tensor operations candle 0.11 lacks or runs slowly, from the `kernels` crate: depthwise convolution (NCHW and
//! NHWC), max-pooling and a last-dimension bias add with backward (CPU custom ops; candle's own operations on other
//! devices), fused attention (with backward) and linear layer over rows.

pub use kernels::ops::{add_bias, depthwise_conv2d, depthwise_conv2d_nhwc, fused_attention, linear_rows, max_pool2d};
