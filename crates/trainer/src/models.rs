//! Model names known to this build and "did you mean" suggestions.

use data::text::did_you_mean;

/// The backbone names `--model` accepts: the model registry's.
pub fn names() -> Vec<String> {
    backbones::registry::names().into_iter().map(String::from).collect()
}

/// `trainer models`: one line per registered backbone with parameters (millions), input size, pooled feature
/// width and whether its weights are in the local Hugging Face cache, after a header line.
pub fn table() -> Vec<String> {
    let mut out = vec![format!(
        "{:<24} {:>8} {:>9} {:>9}  {}",
        "model", "params_m", "input", "features", "weights"
    )];
    for spec in backbones::registry::all() {
        let [h, w] = spec.preprocess.input_size;
        let cached = match backbones::weights::cached_path(spec) {
            Some(p) => format!("cached ({})", p.display()),
            None => "not cached".to_string(),
        };
        out.push(format!(
            "{:<24} {:>8.2} {:>9} {:>9}  {cached}",
            spec.name,
            spec.params_m,
            format!("{h}x{w}"),
            spec.num_features
        ));
    }
    out
}

/// Check `name` against `known`: one line with the nearest name when it is unknown. An empty list (no registry
/// wired in) accepts every name.
pub fn check(name: &str, known: &[String]) -> Result<(), String> {
    if known.is_empty() || known.iter().any(|k| k == name) {
        return Ok(());
    }
    Err(match did_you_mean(name, known.iter().map(String::as_str)) {
        Some(s) => {
            format!("unknown model `{name}`; did you mean `{s}`? (`trainer models` lists them)")
        }
        None => format!("unknown model `{name}` (`trainer models` lists them)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_name() {
        let known: Vec<String> = ["resnet18", "resnet50", "vgg16", "efficientnet_b0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let suggest = |name: &str| did_you_mean(name, known.iter().map(String::as_str));
        assert_eq!(suggest("resnt18"), Some("resnet18"));
        assert_eq!(suggest("VGG16"), Some("vgg16"));
        assert_eq!(suggest("efficientnet-b0"), Some("efficientnet_b0"));
        assert_eq!(suggest("transformer"), None);
        check("resnet18", &known).unwrap();
        let e = check("resnt18", &known).unwrap_err();
        assert!(e.contains("`resnt18`") && e.contains("`resnet18`"));
        assert!(check("anything", &[]).is_ok());
    }

    #[test]
    fn table_lists_every_registered_backbone_with_its_figures() {
        let table = table();
        assert_eq!(table.len(), names().len() + 1);
        let lite0 = table.iter().find(|l| l.starts_with("tf_efficientnet_lite0 ")).unwrap();
        assert!(lite0.contains("224x224") && lite0.contains("1280"), "{lite0}");
        assert!(names().iter().any(|n| n == "resnet18"));
    }
}
