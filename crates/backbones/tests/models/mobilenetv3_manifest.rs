//! MobileNetV3-Large 1.0 creates exactly timm's tensors (names and shapes).

#[test]
fn mobilenetv3_large_100_matches_manifest() {
    crate::support::check_manifest("mobilenetv3_large_100");
}
