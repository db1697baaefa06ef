//! Stage freezing, train-mode BatchNorm statistics and gradients of MobileNetV3-Large 1.0.

use crate::support::{check_backward, check_freeze_last, check_train_mode_stats};

#[test]
fn freeze_all_but_last_unfreezes_only_the_head() {
    check_freeze_last("mobilenetv3_large_100");
}

#[test]
fn train_mode_updates_only_unfrozen_batchnorm_stats() {
    // The head has no BatchNorm: unfreeze blocks.5 (SE bottlenecks), blocks.6 and the head.
    check_train_mode_stats("mobilenetv3_large_100", 3);
}

#[test]
fn backward_reaches_only_unfrozen_vars() {
    check_backward("mobilenetv3_large_100", 3);
}
