//! Locating the shared test assets (`../shared` beside the repository) for tests and benchmarks.

use std::path::{Path, PathBuf};

/// The shared assets folder: `$TL_SHARED_DIR` when set (and not empty), else `../shared` beside the workspace root.
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TL_SHARED_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // This package is `<workspace>/tests`: the workspace root is its parent.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).join("../shared")
}

/// Whether missing assets must fail rather than skip (`TL_REQUIRE_ASSETS=1`, set by CI).
pub fn assets_required() -> bool {
    std::env::var("TL_REQUIRE_ASSETS")
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        .unwrap_or(false)
}

/// The asset at `relative` under [`shared_dir`], or `None` after printing why the caller should skip.
///
/// Panics (failing the test) when the asset is missing and `TL_REQUIRE_ASSETS=1`.
pub fn require(relative: &str) -> Option<PathBuf> {
    let path = shared_dir().join(relative);
    if path.exists() {
        return Some(path);
    }
    if assets_required() {
        panic!(
            "required test asset {} is missing (TL_REQUIRE_ASSETS=1); place the shared assets beside the repository",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: test asset {} not found (set TL_REQUIRE_ASSETS=1 to make this an error)",
        path.display()
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_shared_dir_is_beside_the_workspace() {
        // The workspace root holds `Cargo.toml` with `[workspace]`; `shared` is its sibling.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert!(std::fs::read_to_string(root.join("Cargo.toml"))
            .unwrap()
            .contains("[workspace]"));
        if std::env::var_os("TL_SHARED_DIR").is_none() {
            assert_eq!(shared_dir(), root.join("../shared"));
        }
        if !assets_required() {
            assert_eq!(require("no/such/asset/anywhere.bin"), None);
        }
    }
}
