//! The small subset of YAML that dataset files (Ultralytics `data.yaml`) use: top-level `key: value` scalars, flow
//! lists `[a, b]` and maps `{0: a}`, and indented block lists (`- a`) and maps (`0: a`), with `#` comments and quotes.

/// A top-level value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// A scalar, unquoted.
    Scalar(String),
    /// A list of scalars.
    List(Vec<String>),
    /// A map of scalars, in file order.
    Map(Vec<(String, String)>),
}

/// A top-level entry: key, value, 1-based line.
pub(crate) type Entry = (String, Value, u64);

fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            ('#', None) if i == 0 || line[..i].ends_with(char::is_whitespace) => return &line[..i],
            _ => {}
        }
    }
    line
}

pub(crate) fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['\'', '"'] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

/// Split a flow collection's body on top-level commas (outside quotes).
fn split_flow(body: &str) -> Vec<String> {
    let (mut items, mut cur, mut quote) = (Vec::new(), String::new(), None);
    for c in body.chars() {
        match (c, quote) {
            ('\'' | '"', None) => {
                quote = Some(c);
                cur.push(c);
            }
            (q, Some(open)) if q == open => {
                quote = None;
                cur.push(c);
            }
            (',', None) => items.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    items.push(cur);
    items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn key_value(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once(':')?;
    Some((unquote(k), v.trim().to_string()))
}

/// Parses `text`; errors are `(line, message)`.
pub(crate) fn parse(text: &str) -> Result<Vec<Entry>, (u64, String)> {
    let lines: Vec<(u64, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, strip_comment(l).trim_end()))
        .filter(|(_, l)| !l.trim().is_empty() && l.trim() != "---")
        .collect();
    let mut entries = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (no, line) = lines[i];
        i += 1;
        if line.starts_with([' ', '\t']) {
            return Err((no, "unexpected indentation".into()));
        }
        let (key, mut rest) = key_value(line).ok_or((no, format!("expected `key: value`, got `{line}`")))?;
        // A flow collection may continue on the following lines until it closes.
        let closer = match rest.chars().next() {
            Some('[') => Some(']'),
            Some('{') => Some('}'),
            _ => None,
        };
        if let Some(close) = closer {
            while !rest.ends_with(close) {
                let Some(&(_, more)) = lines.get(i) else {
                    return Err((no, format!("`{key}`: unclosed `{}`", &rest[..1])));
                };
                rest.push(' ');
                rest.push_str(more.trim());
                i += 1;
            }
            let body = &rest[1..rest.len() - 1];
            let value = if close == ']' {
                Value::List(split_flow(body).iter().map(|s| unquote(s)).collect())
            } else {
                let mut map = Vec::new();
                for item in split_flow(body) {
                    let (k, v) = key_value(&item).ok_or((no, format!("`{key}`: `{item}` is not `key: value`")))?;
                    map.push((k, unquote(&v)));
                }
                Value::Map(map)
            };
            entries.push((key, value, no));
            continue;
        }
        if !rest.is_empty() {
            entries.push((key, Value::Scalar(unquote(&rest)), no));
            continue;
        }
        // A block collection: the indented lines that follow.
        let (mut list, mut map) = (Vec::new(), Vec::new());
        while let Some(&(bno, bline)) = lines.get(i) {
            if !bline.starts_with([' ', '\t']) {
                break;
            }
            i += 1;
            let item = bline.trim();
            if let Some(v) = item.strip_prefix('-') {
                list.push(unquote(v));
            } else {
                let (k, v) =
                    key_value(item).ok_or((bno, format!("`{key}`: `{item}` is not `- item` or `key: value`")))?;
                map.push((k, unquote(&v)));
            }
        }
        let value = match (list.is_empty(), map.is_empty()) {
            (false, true) => Value::List(list),
            (true, false) => Value::Map(map),
            (true, true) => Value::Scalar(String::new()),
            (false, false) => return Err((no, format!("`{key}` mixes `- item` and `key: value` lines"))),
        };
        entries.push((key, value, no));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_data_yaml_forms() {
        let text = "# comment\npath: ../datasets/x  # root\ntrain: images/train\nval: 'images/val'\nnames:\n  0: person\n  1: \"traffic light\"\nnc: 2\n";
        let e = parse(text).unwrap();
        assert_eq!(e[0], ("path".into(), Value::Scalar("../datasets/x".into()), 2));
        assert_eq!(e[2].1, Value::Scalar("images/val".into()));
        assert_eq!(
            e[3].1,
            Value::Map(vec![
                ("0".into(), "person".into()),
                ("1".into(), "traffic light".into())
            ])
        );
        assert_eq!(e[4].1, Value::Scalar("2".into()));
        let e = parse("names: ['a', \"b, c\", d]\n").unwrap();
        assert_eq!(e[0].1, Value::List(vec!["a".into(), "b, c".into(), "d".into()]));
        let e = parse("names: {0: a,\n  1: b}\n").unwrap();
        assert_eq!(
            e[0].1,
            Value::Map(vec![("0".into(), "a".into()), ("1".into(), "b".into())])
        );
        let e = parse("names:\n  - cat\n  - dog # pet\n").unwrap();
        assert_eq!(e[0].1, Value::List(vec!["cat".into(), "dog".into()]));
        assert_eq!(parse("names: [a, b\n").unwrap_err().0, 1);
        assert_eq!(parse("a: 1\nnot yaml\n").unwrap_err().0, 2);
        assert_eq!(parse("names:\n  - a\n  1: b\n").unwrap_err().0, 1);
    }
}
