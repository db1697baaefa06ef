//! Numerical parity of MobileNetV3-Large 1.0 with timm (eval mode) on the shared fixture.

#[test]
fn mobilenetv3_large_100_matches_timm() {
    crate::support::check_parity("mobilenetv3_large_100", "mobilenetv3_large_100");
}
