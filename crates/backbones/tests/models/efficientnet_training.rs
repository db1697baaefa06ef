//! Stage freezing, train-mode BatchNorm statistics and gradients of EfficientNet-B0 and Lite0.

use crate::support::{check_backward, check_freeze_last, check_train_mode_stats};

#[test]
fn freeze_all_but_last_unfreezes_only_the_head() {
    check_freeze_last("efficientnet_b0");
    check_freeze_last("tf_efficientnet_lite0");
}

#[test]
fn train_mode_updates_only_unfrozen_batchnorm_stats() {
    check_train_mode_stats("efficientnet_b0", 2);
    check_train_mode_stats("tf_efficientnet_lite0", 1);
}

#[test]
fn backward_reaches_only_unfrozen_vars() {
    // Two stages: blocks.6 (MBConv with depthwise conv and SE) and the head.
    check_backward("efficientnet_b0", 2);
    check_backward("tf_efficientnet_lite0", 2);
}
