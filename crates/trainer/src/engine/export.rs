//! `trainer export`: a run's best model as one self-contained safetensors file.

use std::path::Path;

use anyhow::Context as _;
use candle_core::{Device, Tensor};

use super::train::best_path;
use crate::error::UsageError;
use training::export;

/// Write the run's best model, with its backbone tensors, to `out`.
pub fn export(run_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let best = best_path(run_dir);
    if !best.is_file() {
        return Err(UsageError(format!(
            "--run {}: no best.safetensors (not a finished run folder)",
            run_dir.display()
        ))
        .into());
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(UsageError(format!(
                "--out {}: folder {} does not exist",
                out.display(),
                parent.display()
            ))
            .into());
        }
    }
    if matches!(export::task_of_file(&best).ok().as_deref(), Some("segment" | "detect")) {
        // A dense model: the same file with the backbone included.
        let m = export::load_dense(&best, &Device::Cpu)?;
        let head = match &m.head {
            export::DenseHead::Segment(h) => h.store(),
            export::DenseHead::Detect(h) => h.store(),
        };
        return export::save_dense(out, &m.meta, head, Some(m.backbone.as_ref()))
            .map_err(|e| UsageError(format!("--out {}: {e}", out.display())).into());
    }
    let (mut meta, tensors) = export::read(&best, &Device::Cpu)?;
    let mut tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
    if !meta.backbone_included {
        let w = meta
            .weights
            .as_ref()
            .with_context(|| format!("{} records no backbone weights", best.display()))?;
        // Loading checks the recorded sha256 and that the tensors fit the architecture.
        let model = export::load(&best, &Device::Cpu).with_context(|| {
            format!(
                "cannot rebuild the model of {} (weights {})",
                run_dir.display(),
                w.path.display()
            )
        })?;
        for (k, t) in model.backbone.store().state_dict() {
            tensors.push((format!("backbone.{k}"), t));
        }
        meta.backbone_included = true;
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    export::write(out, &meta, tensors).map_err(|e| UsageError(format!("--out {}: {e}", out.display())).into())
}
