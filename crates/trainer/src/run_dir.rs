//! Run folders: `--out DIR` as given, or `PROJECT/NAME`, `PROJECT/NAME2`, ... (Ultralytics-style); never reused
//! silently.

use std::path::{Path, PathBuf};

use crate::error::UsageError;

/// Create the run folder and return it.
///
/// With `out`, that folder is used; it may already exist only when empty or with `exist_ok`. Otherwise the first
/// of `project/name`, `project/name2`, `project/name3`, ... that does not exist is created (with `exist_ok`,
/// `project/name` itself is reused).
pub fn create_run_dir(
    out: Option<&Path>,
    project: &Path,
    name: &str,
    exist_ok: bool,
) -> anyhow::Result<PathBuf> {
    if let Some(out) = out {
        if out.exists() && !exist_ok && !is_empty_dir(out) {
            return Err(UsageError(format!(
                "run folder {} already exists and is not empty; pass --exist-ok to reuse it or choose another --out",
                out.display()
            ))
            .into());
        }
        if out.exists() && !out.is_dir() {
            return Err(
                UsageError(format!("--out {} is a file, not a folder", out.display())).into(),
            );
        }
        create_all(out)?;
        return Ok(out.to_path_buf());
    }
    create_all(project)?;
    let first = project.join(name);
    if exist_ok {
        create_all(&first)?;
        return Ok(first);
    }
    for n in 1u32.. {
        let candidate = if n == 1 {
            first.clone()
        } else {
            project.join(format!("{name}{n}"))
        };
        // `create_dir` fails if the folder exists, so two concurrent runs never share a folder.
        match std::fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => anyhow::bail!("cannot create run folder {}: {e}", candidate.display()),
        }
    }
    unreachable!("u32 run numbers exhausted")
}

fn create_all(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create folder {}: {e}", dir.display()))
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_name_increments_and_never_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("runs");
        let a = create_run_dir(None, &project, "train", false).unwrap();
        let b = create_run_dir(None, &project, "train", false).unwrap();
        let c = create_run_dir(None, &project, "train", false).unwrap();
        assert_eq!(a, project.join("train"));
        assert_eq!(b, project.join("train2"));
        assert_eq!(c, project.join("train3"));
        assert!(a.is_dir() && b.is_dir() && c.is_dir());
        let again = create_run_dir(None, &project, "train", true).unwrap();
        assert_eq!(
            again,
            project.join("train"),
            "--exist-ok reuses the base name"
        );
    }

    #[test]
    fn explicit_out_refuses_a_non_empty_folder_without_exist_ok() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        assert_eq!(
            create_run_dir(Some(&out), Path::new("unused"), "train", false).unwrap(),
            out
        );
        // Empty and existing: fine.
        create_run_dir(Some(&out), Path::new("unused"), "train", false).unwrap();
        std::fs::write(out.join("metrics.csv"), "x").unwrap();
        let e = create_run_dir(Some(&out), Path::new("unused"), "train", false).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert!(e.to_string().contains("--exist-ok") && e.to_string().contains("run"));
        assert_eq!(
            create_run_dir(Some(&out), Path::new("unused"), "train", true).unwrap(),
            out
        );
        assert_eq!(
            std::fs::read_to_string(out.join("metrics.csv")).unwrap(),
            "x"
        );
        assert!(!Path::new("unused").exists());
    }
}
