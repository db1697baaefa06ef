//! Model names known to this build and "did you mean" suggestions.

/// The backbone names `--model` accepts (the lead points this at the model registry).
pub fn names() -> Vec<String> {
    backbones::zoo::ARCHITECTURES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The known name closest to `name`, if one is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.as_str())
}

/// Check `name` against `known`: one line with the nearest name when it is unknown. An empty list (no registry
/// wired in) accepts every name.
pub fn check(name: &str, known: &[String]) -> Result<(), String> {
    if known.is_empty() || known.iter().any(|k| k == name) {
        return Ok(());
    }
    Err(match suggest(name, known) {
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
        assert_eq!(suggest("resnt18", &known), Some("resnet18"));
        assert_eq!(suggest("VGG16", &known), Some("vgg16"));
        assert_eq!(suggest("efficientnet-b0", &known), Some("efficientnet_b0"));
        assert_eq!(suggest("transformer", &known), None);
        check("resnet18", &known).unwrap();
        let e = check("resnt18", &known).unwrap_err();
        assert!(e.contains("`resnt18`") && e.contains("`resnet18`"));
        assert!(check("anything", &[]).is_ok());
    }
}
