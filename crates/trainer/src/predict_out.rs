//! `predict` output: CSV (long format, one row per file and rank) or JSON lines (one object per file).

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

/// A class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassProb {
    /// Class name.
    pub class: String,
    /// Probability in [0, 1].
    pub probability: f32,
}

/// The top-k predictions for one input file, or why it could not be predicted.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePrediction {
    /// The input file.
    pub path: PathBuf,
    /// Best class first, or the per-file error message.
    pub result: Result<Vec<ClassProb>, String>,
}

/// Output format of `predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PredictFormat {
    /// `path,rank,class,probability`, one row per file and rank (rank 1 is the best).
    Csv,
    /// One JSON object per file: `{"path":…,"predictions":[{"class":…,"probability":…}]}` or `{"path":…,"error":…}`.
    Jsonl,
}

/// Write the predictions that succeeded (CSV) or all of them (JSON lines, errors as `error` objects).
pub fn write_predictions<W: Write>(
    out: W,
    format: PredictFormat,
    preds: &[FilePrediction],
) -> std::io::Result<()> {
    match format {
        PredictFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(["path", "rank", "class", "probability"])?;
            for p in preds {
                let Ok(top) = &p.result else { continue };
                let path = p.path.display().to_string();
                for (rank, c) in top.iter().enumerate() {
                    w.write_record([
                        path.as_str(),
                        &(rank + 1).to_string(),
                        &c.class,
                        &format!("{:.6}", c.probability),
                    ])?;
                }
            }
            w.flush()
        }
        PredictFormat::Jsonl => {
            let mut out = out;
            for p in preds {
                let v = match &p.result {
                    Ok(top) => serde_json::json!({ "path": p.path, "predictions": top }),
                    Err(e) => serde_json::json!({ "path": p.path, "error": e }),
                };
                writeln!(out, "{v}")?;
            }
            out.flush()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<FilePrediction> {
        vec![
            FilePrediction {
                path: "a b/1.jpg".into(),
                result: Ok(vec![
                    ClassProb {
                        class: "ant, emmet, pismire".into(),
                        probability: 0.75,
                    },
                    ClassProb {
                        class: "bee".into(),
                        probability: 0.25,
                    },
                ]),
            },
            FilePrediction {
                path: "bad.jpg".into(),
                result: Err("bad.jpg: not an image".into()),
            },
        ]
    }

    #[test]
    fn csv_is_long_format_with_quoting_and_skips_failures() {
        let mut buf = Vec::new();
        write_predictions(&mut buf, PredictFormat::Csv, &sample()).unwrap();
        let mut rdr = csv::Reader::from_reader(buf.as_slice());
        assert_eq!(
            rdr.headers().unwrap(),
            vec!["path", "rank", "class", "probability"]
        );
        let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[0][2], "ant, emmet, pismire");
        assert_eq!((&rows[1][0], &rows[1][1]), ("a b/1.jpg", "2"));
        assert_eq!(rows[1][3].parse::<f32>().unwrap(), 0.25);
    }

    #[test]
    fn jsonl_has_one_object_per_file_including_errors() {
        let mut buf = Vec::new();
        write_predictions(&mut buf, PredictFormat::Jsonl, &sample()).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(buf)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["predictions"][0]["class"], "ant, emmet, pismire");
        assert_eq!(lines[0]["predictions"][1]["probability"], 0.25);
        assert_eq!(lines[1]["path"], "bad.jpg");
        assert!(lines[1]["error"].as_str().unwrap().contains("not an image"));
    }
}
