//! ImageFolder datasets: `root/<class>/<image>`, classes sorted by name as torchvision does.
//!
//! Outcomes: dot-files/folders, files without an image extension, folders nested in a class folder and files directly
//! in the root are ignored and counted in [`Ignored`]. A class folder with no image file is an error
//! ([`DataError::EmptyClass`], as torchvision's "found no valid file for class"); a root without class folders is
//! [`DataError::NoClasses`]. A single class is allowed (e.g. for inspection); [`Dataset::check_trainable`] demands two.

use std::fs;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, Ignored, Sample};
use crate::error::{DataError, Result};

/// Image file extensions accepted by folder scans (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "gif", "bmp", "webp"];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`].
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        entries.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
    }
    entries.sort();
    Ok(entries)
}

/// Scans an ImageFolder root into a [`Dataset`] (samples sorted by class, then file name).
pub fn scan_folder(root: &Path) -> Result<Dataset> {
    scan(root, false)
}

/// Like [`scan_folder`], but a class folder with no image file is kept as a class with no sample (for reports such
/// as [`crate::inspect()`], which list every problem instead of stopping at the first).
pub fn scan_folder_keeping_empty_classes(root: &Path) -> Result<Dataset> {
    scan(root, true)
}

fn scan(root: &Path, keep_empty_classes: bool) -> Result<Dataset> {
    if !root.exists() {
        return Err(DataError::NotFound(root.to_path_buf()));
    }
    let mut ignored = Ignored::default();
    let mut classes = Vec::new();
    let mut samples = Vec::new();
    for (name, path) in read_dir_sorted(root)? {
        if is_hidden(&name) {
            ignored.hidden += 1;
            continue;
        }
        // `is_dir` follows symlinks, like torchvision's `entry.is_dir()`.
        if !path.is_dir() {
            ignored.outside_classes += 1;
            continue;
        }
        let label = classes.len();
        let before = samples.len();
        for (file, fpath) in read_dir_sorted(&path)? {
            if is_hidden(&file) {
                ignored.hidden += 1;
            } else if fpath.is_dir() {
                ignored.nested_folders += 1;
            } else if has_image_extension(&fpath) {
                samples.push(Sample { path: fpath, label });
            } else {
                ignored.not_image += 1;
            }
        }
        if samples.len() == before && !keep_empty_classes {
            return Err(DataError::EmptyClass { class: name, path });
        }
        classes.push(name);
    }
    if classes.is_empty() {
        return Err(DataError::NoClasses(root.to_path_buf()));
    }
    Ok(Dataset {
        samples,
        classes,
        source: root.to_path_buf(),
        ignored,
    })
}
