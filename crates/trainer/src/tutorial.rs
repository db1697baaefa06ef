//! The default job's data: the PyTorch tutorial's hymenoptera set, cached under `$XDG_CACHE_HOME/graft`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use data::fsutil::write_atomic;

/// Where the PyTorch tutorial publishes the data.
pub const HYMENOPTERA_URL: &str = "https://download.pytorch.org/tutorial/hymenoptera_data.zip";

/// Folder name of the data inside the cache (and the zip's top-level folder).
pub const HYMENOPTERA_DIR: &str = "hymenoptera_data";

/// Largest download accepted (the real file is ~45 MiB).
const MAX_BYTES: u64 = 512 << 20;

/// Why the tutorial data is not available.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP request failed (offline, DNS, timeout, HTTP status).
    #[error("GET {url} failed: {msg}")]
    Download {
        /// The URL tried.
        url: String,
        /// What went wrong, one line.
        msg: String,
    },
    /// The archive could not be unpacked or lacks `train/` and `val/`.
    #[error("cannot unpack {path}: {msg}")]
    Unpack {
        /// The archive.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// A cache file could not be written.
    #[error("cache: {0}")]
    Io(#[from] std::io::Error),
    /// A cache file could not be written atomically.
    #[error("cache: {0}")]
    Write(#[from] data::DataError),
}

/// graft's cache folder: `$XDG_CACHE_HOME/graft`, else `$HOME/.cache/graft`.
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("graft"))
}

/// Whether `dir` looks like the unpacked data (has `train/` and `val/`).
pub fn is_dataset(dir: &Path) -> bool {
    dir.join("train").is_dir() && dir.join("val").is_dir()
}

/// The dataset folder under `cache`, downloading and unpacking `url` first when it is not there yet.
pub fn ensure_hymenoptera(cache: &Path, url: &str, timeout: Duration) -> Result<PathBuf, FetchError> {
    let target = cache.join(HYMENOPTERA_DIR);
    if is_dataset(&target) {
        return Ok(target);
    }
    let bytes = download(url, timeout)?;
    std::fs::create_dir_all(cache)?;
    let zip_path = cache.join("hymenoptera_data.zip");
    write_atomic(&zip_path, &bytes)?;
    unpack(&zip_path, cache)?;
    Ok(target)
}

/// GET `url` into memory with a connect timeout of `timeout` (and 20× that for the whole body).
pub fn download(url: &str, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    let fail = |msg: String| FetchError::Download {
        url: url.to_string(),
        msg,
    };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(timeout)
        .timeout(timeout * 20)
        .build();
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| fail(data::text::one_line(&e.to_string())))?;
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(MAX_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    Ok(bytes)
}

/// Unpack the archive into `dest` via a temporary folder, then move `hymenoptera_data/` into place.
pub fn unpack(zip_path: &Path, dest: &Path) -> Result<(), FetchError> {
    let fail = |msg: String| FetchError::Unpack {
        path: zip_path.to_path_buf(),
        msg,
    };
    let file = std::fs::File::open(zip_path)?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| fail(e.to_string()))?;
    let staging = dest.join(format!(".unpack.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = (|| {
        // `extract` refuses entries that would escape the folder.
        archive.extract(&staging).map_err(|e| fail(e.to_string()))?;
        let unpacked = staging.join(HYMENOPTERA_DIR);
        if !is_dataset(&unpacked) {
            return Err(fail(format!(
                "no {HYMENOPTERA_DIR}/train and {HYMENOPTERA_DIR}/val inside"
            )));
        }
        let target = dest.join(HYMENOPTERA_DIR);
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(&unpacked, &target)?;
        data::fsutil::sync_dir(dest)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// The one-line explanation printed when the default job cannot get its data.
pub fn offline_message(cache: Option<&Path>, err: &FetchError) -> String {
    let looked = match cache {
        Some(c) => format!("not found in {}", c.join(HYMENOPTERA_DIR).display()),
        None => "no cache folder ($XDG_CACHE_HOME and $HOME unset)".to_string(),
    };
    format!(
        "no arguments: the default job (PyTorch tutorial, hymenoptera + resnet18) needs its data, {looked}, and {err}; \
         pass your own data with `trainer train --data DIR --model resnet18 --weights FILE.safetensors` \
         (DIR holds train/ and val/ class folders), or unpack {HYMENOPTERA_URL} into the cache"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn make_zip(path: &Path, with_val: bool) {
        let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let mut files = vec!["hymenoptera_data/train/ants/a.jpg", "hymenoptera_data/train/bees/b.jpg"];
        if with_val {
            files.push("hymenoptera_data/val/ants/c.jpg");
        }
        for f in files {
            z.start_file(f, opts).unwrap();
            z.write_all(&[7u8; 300]).unwrap();
        }
        z.finish().unwrap();
    }

    #[test]
    fn unpacks_a_deflated_archive_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("h.zip");
        make_zip(&zip_path, true);
        unpack(&zip_path, dir.path()).unwrap();
        let data = dir.path().join(HYMENOPTERA_DIR);
        assert!(is_dataset(&data));
        assert_eq!(std::fs::read(data.join("val/ants/c.jpg")).unwrap(), vec![7u8; 300]);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // Present now: no network needed.
        let got = ensure_hymenoptera(dir.path(), "http://127.0.0.1:9/none.zip", Duration::from_millis(200)).unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn rejects_an_archive_without_val() {
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("h.zip");
        make_zip(&zip_path, false);
        let e = unpack(&zip_path, dir.path()).unwrap_err().to_string();
        assert!(e.contains("h.zip") && e.contains("val"), "{e}");
        assert!(!dir.path().join(HYMENOPTERA_DIR).exists());
        std::fs::write(&zip_path, b"not a zip").unwrap();
        assert!(unpack(&zip_path, dir.path()).unwrap_err().to_string().contains("h.zip"));
    }

    #[test]
    fn offline_fails_fast_with_one_line_naming_url_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        // Port 9 (discard) on localhost is closed: the connection is refused at once.
        let url = "http://127.0.0.1:9/hymenoptera_data.zip";
        let start = std::time::Instant::now();
        let e = ensure_hymenoptera(dir.path(), url, Duration::from_secs(2)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        let msg = offline_message(Some(dir.path()), &e);
        assert!(!msg.contains('\n'), "{msg}");
        for needle in [url, "--data", "--weights", HYMENOPTERA_DIR] {
            assert!(msg.contains(needle), "missing {needle} in {msg}");
        }
        assert!(!dir.path().join(HYMENOPTERA_DIR).exists());
    }
}
