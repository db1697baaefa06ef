//! Durable atomic file writes, the one implementation every crate of the workspace uses.
//!
//! It lives here because `data` is the bottom of the crate graph: `backbones`, `heads`, `training`, the `trainer`
//! binary and `xtask` all depend on it, so none of them needs a copy.
//!
//! A write goes to a fresh temporary file in the destination's folder (`.NAME.XXXXXX.tmp`, created with
//! [`tempfile`]'s `NamedTempFile` in that folder, so the final rename never crosses file systems), which is written,
//! flushed to disk (`sync_all`), renamed over the destination (`persist`), and then the folder itself is flushed, so
//! the rename survives a power loss. Readers see the old file or the new one, never a partial one; on any failure
//! the temporary file is removed and the destination is untouched.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use crate::error::{DataError, Result};

/// Write `bytes` to `path` atomically and durably (see the module notes). The parent folder must exist; the error
/// ([`DataError::Write`]) names `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the content written by `write` into the temporary file (streamed, not buffered).
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> Result<()> {
    let named = |source: io::Error| DataError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| named(io::Error::new(io::ErrorKind::InvalidInput, "not a file path")))?;
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        // As `File::create` would: 0o666 less the umask (tempfile's own default is 0o600).
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    // The temporary file is deleted when `tmp` drops, i.e. on every early return below.
    let mut tmp = builder.tempfile_in(dir).map_err(named)?;
    write(tmp.as_file_mut()).map_err(named)?;
    tmp.as_file_mut().flush().map_err(named)?;
    tmp.as_file().sync_all().map_err(named)?;
    tmp.persist(path).map_err(|e| named(e.error))?;
    sync_dir(dir).map_err(named)
}

/// Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be opened as files.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_and_replaces_leaving_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"first").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        // An open handle on the old file keeps the old content: the new file replaced it (rename), not rewrote it.
        let old = File::open(&p).unwrap();
        write_atomic(&p, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
        assert_eq!(std::io::read_to_string(old).unwrap(), "first");
        assert_eq!(names(dir.path()), ["a.txt"]);
    }

    #[cfg(unix)]
    #[test]
    fn new_files_are_readable_by_others_like_file_create() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("atomic"), dir.path().join("plain"));
        write_atomic(&a, b"x").unwrap();
        std::fs::write(&b, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&a), mode(&b));
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.bin");
        write_atomic(&p, b"old").unwrap();
        let e = write_atomic_with(&p, |f| {
            f.write_all(b"half of the new")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("model.bin") && e.to_string().contains("disk full"),
            "{e}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["model.bin"]);
    }

    #[test]
    fn a_failed_rename_leaves_no_temp_file_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A missing folder: nothing is created.
        let e = write_atomic(&dir.path().join("missing_dir").join("a.txt"), b"x").unwrap_err();
        assert!(e.to_string().contains("a.txt"), "{e}");
        // A non-empty folder in the way: the rename fails, the folder and its content stay.
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("keep"), b"k").unwrap();
        assert!(write_atomic(&d, b"x").is_err());
        assert_eq!(names(dir.path()), ["d"]);
        assert_eq!(names(&d), ["keep"]);
    }
}
