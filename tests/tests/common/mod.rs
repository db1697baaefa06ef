//! Helpers shared by the end-to-end tests: locating the `trainer` binary (and `require`, from `tests::assets`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// The `trainer` binary of the same profile as this test, (re)built once per test process.
///
/// `cargo test` builds binaries only for tests of their own package, so the binary is brought up to date here with
/// the same command the README's test command runs first (`cargo build --release --workspace --bins`), which makes
/// this a no-op there; feature resolution differs for `-p trainer` alone, which would rebuild dependencies.
pub fn trainer_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-binary> -> target/<profile>/trainer
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir").to_path_buf();
        let bin = profile_dir.join(format!("trainer{}", std::env::consts::EXE_SUFFIX));
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(workspace_root())
            .args(["build", "--quiet", "-p", "trainer"]);
        if release {
            cmd.arg("--release");
        }
        if let Some(target_dir) = profile_dir.parent() {
            cmd.arg("--target-dir").arg(target_dir);
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the trainer binary failed");
        assert!(bin.exists(), "no trainer binary at {}", bin.display());
        bin
    })
    .clone()
}

/// A `trainer` command with a clean environment for tests (no Hub access, quiet colours).
pub fn trainer() -> Command {
    let mut cmd = Command::new(trainer_bin());
    cmd.env("HF_HUB_OFFLINE", "1").env("NO_COLOR", "1");
    cmd
}

pub use tests::assets::require;

/// Run and return the output, printing it when the command fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn trainer");
    if !out.status.success() {
        eprintln!(
            "command {:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// An ImageFolder at `dst` with the first `per_class` files (sorted by name) of each class folder of `src`.
pub fn subset(src: &Path, dst: &Path, per_class: usize) -> PathBuf {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(src)
        .unwrap_or_else(|e| panic!("read {}: {e}", src.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    for class in classes {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&class)
            .expect("class folder")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        files.sort();
        let out = dst.join(class.file_name().expect("class name"));
        std::fs::create_dir_all(&out).expect("create subset folder");
        for f in files.into_iter().take(per_class) {
            std::fs::copy(&f, out.join(f.file_name().expect("file name"))).expect("copy image");
        }
    }
    dst.to_path_buf()
}

/// stdout and stderr of `out`, together.
pub fn log_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The JSON objects of a `--log-format json` stdout, one per line (panics on a line that is not JSON).
pub fn json_events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event line ({e}): {l}")))
        .collect()
}
