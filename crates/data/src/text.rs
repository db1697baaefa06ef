//! Message helpers every crate of the workspace shares: one-line errors and "did you mean" suggestions.

/// Collapse a multi-line message into one line: lines trimmed, blank ones and the `|` gutter lines that quote
/// source text (toml's errors) dropped, the rest joined with single spaces.
pub fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|'))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The candidate nearest to `name` by edit distance (case-insensitive), when it is close enough to be a likely typo:
/// at most half the longer name's length and at least 2 edits allowed; ties go to the shorter, then the first.
pub fn did_you_mean<'a, I>(name: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count().max(lower.chars().count()) / 2).max(2))
        .min_by_key(|(d, c)| (*d, c.len()))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_lines_and_drops_quoted_source() {
        let toml_error = "TOML parse error at line 1, column 5\n  |\n1 | lr = \"x\"\n  |      ^^^\ninvalid type\n";
        assert_eq!(
            one_line(toml_error),
            "TOML parse error at line 1, column 5 1 | lr = \"x\" invalid type"
        );
        assert_eq!(one_line("  a\tb \n\n c  "), "a b c");
        assert_eq!(one_line(""), "");
    }

    #[test]
    fn did_you_mean_finds_likely_typos_only() {
        let known = [
            "resnet18",
            "resnet50",
            "vgg16",
            "efficientnet_b0",
            "tf_efficientnet_lite0",
        ];
        let k = || known.iter().copied();
        assert_eq!(did_you_mean("resnt18", k()), Some("resnet18"));
        assert_eq!(did_you_mean("VGG16", k()), Some("vgg16"));
        assert_eq!(did_you_mean("efficientnet-b0", k()), Some("efficientnet_b0"));
        assert_eq!(did_you_mean("efficientnet_lite0", k()), Some("tf_efficientnet_lite0"));
        assert_eq!(did_you_mean("transformer", k()), None);
        assert_eq!(did_you_mean("a-completely-different-thing", k()), None);
        assert_eq!(did_you_mean("x", std::iter::empty()), None);
    }
}
