//! Fast CPU convolution (im2col + GEMM with a fused bias/activation epilogue), training-mode BatchNorm and ReLU6,
//! each with its backward, from the `kernels` crate.

pub use kernels::conv::{add_relu, batch_norm_act_train, batch_norm_train, conv2d, conv2d_bias_act, relu6, Epilogue};
