//! PyTorch checkpoints: reading zip-format `.pth` files and renaming torchvision's tensors to timm's.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};

/// Every tensor of a zip-format PyTorch file: a plain state dict, or one under `state_dict` / `model`.
pub fn read_pth(path: &Path) -> Result<HashMap<String, Tensor>> {
    let err = |e: candle_core::Error| Error::Weights {
        path: path.to_path_buf(),
        reason: data::text::one_line(&e.to_string()),
    };
    for key in [None, Some("state_dict"), Some("model")] {
        match candle_core::pickle::read_all_with_key(path, key) {
            Ok(v) if !v.is_empty() => return Ok(v.into_iter().collect()),
            Ok(_) => {}
            Err(e) if key.is_none() => return Err(err(e)),
            // The wrapper key is absent: try the next one.
            Err(_) => {}
        }
    }
    Err(Error::Weights {
        path: path.to_path_buf(),
        reason: "no tensors found (expected a state dict, or one under `state_dict` or `model`)".into(),
    })
}

/// Rename a torchvision state dict to timm's names where they differ; timm checkpoints pass through unchanged.
///
/// Always: a DataParallel `module.` prefix is stripped and BatchNorm `num_batches_tracked` counters are dropped.
/// VGG (`features.N` + `classifier.{0,3,6}`): `classifier.0` → `pre_logits.fc1` (weight 4096×25088 reshaped to
/// 4096×512×7×7), `classifier.3` → `pre_logits.fc2` (weight to 4096×4096×1×1), `classifier.6` → `head.fc`.
/// ResNet names are identical in both.
pub fn torchvision_to_timm(tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let mut out: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, t)| (k.strip_prefix("module.").map(str::to_string).unwrap_or(k), t))
        .collect();
    let is_tv_vgg = out.contains_key("features.0.weight")
        && out.contains_key("classifier.0.weight")
        && out.contains_key("classifier.6.weight");
    if is_tv_vgg {
        for (from, to, conv_hw) in [
            ("classifier.0", "pre_logits.fc1", Some(7usize)),
            ("classifier.3", "pre_logits.fc2", Some(1)),
            ("classifier.6", "head.fc", None),
        ] {
            if let Some(w) = out.remove(&format!("{from}.weight")) {
                let w = match conv_hw {
                    Some(k) => {
                        let (o, i) = w.dims2()?;
                        if i % (k * k) != 0 {
                            return Err(Error::Msg(format!(
                                "tensor `{from}.weight` has {i} inputs, not a multiple of {k}×{k}"
                            )));
                        }
                        w.reshape((o, i / (k * k), k, k))?
                    }
                    None => w,
                };
                out.insert(format!("{to}.weight"), w);
            }
            if let Some(b) = out.remove(&format!("{from}.bias")) {
                out.insert(format!("{to}.bias"), b);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn vgg_classifier_is_renamed_and_reshaped() -> Result<()> {
        let d = Device::Cpu;
        let mut m = HashMap::new();
        m.insert(
            "features.0.weight".to_string(),
            Tensor::zeros((64, 3, 3, 3), DType::F32, &d)?,
        );
        m.insert(
            "classifier.0.weight".to_string(),
            Tensor::arange(0f32, 8.0 * 98.0, &d)?.reshape((8, 98))?,
        );
        m.insert("classifier.0.bias".to_string(), Tensor::zeros(8, DType::F32, &d)?);
        m.insert(
            "classifier.3.weight".to_string(),
            Tensor::zeros((8, 8), DType::F32, &d)?,
        );
        m.insert(
            "classifier.6.weight".to_string(),
            Tensor::zeros((5, 8), DType::F32, &d)?,
        );
        m.insert("classifier.6.bias".to_string(), Tensor::zeros(5, DType::F32, &d)?);
        m.insert("bn.num_batches_tracked".to_string(), Tensor::zeros((), DType::I64, &d)?);
        let out = torchvision_to_timm(m)?;
        assert_eq!(out["pre_logits.fc1.weight"].dims(), &[8, 2, 7, 7]);
        // Row-major reshape keeps torchvision's flatten order (channel, then y, then x).
        let v: Vec<f32> = out["pre_logits.fc1.weight"].flatten_all()?.to_vec1()?;
        assert_eq!(v[49], 49.0);
        assert_eq!(out["pre_logits.fc2.weight"].dims(), &[8, 8, 1, 1]);
        assert_eq!(out["head.fc.weight"].dims(), &[5, 8]);
        assert!(out.contains_key("pre_logits.fc1.bias") && out.contains_key("head.fc.bias"));
        assert!(!out
            .keys()
            .any(|k| k.starts_with("classifier") || k.contains("num_batches")));
        Ok(())
    }

    #[test]
    fn non_vgg_names_pass_through() -> Result<()> {
        let d = Device::Cpu;
        let mut m = HashMap::new();
        m.insert(
            "module.classifier.weight".to_string(),
            Tensor::zeros((3, 4), DType::F32, &d)?,
        );
        let out = torchvision_to_timm(m)?;
        assert_eq!(out.keys().collect::<Vec<_>>(), vec!["classifier.weight"]);
        Ok(())
    }
}
