//! Numerical parity of EfficientNet-B0 and Lite0 with timm (eval mode) on the shared fixtures.

#[test]
fn efficientnet_b0_matches_timm() {
    crate::support::check_parity("efficientnet_b0", "efficientnet_b0");
}

#[test]
fn tf_efficientnet_lite0_matches_timm() {
    crate::support::check_parity("tf_efficientnet_lite0", "tf_efficientnet_lite0");
}
