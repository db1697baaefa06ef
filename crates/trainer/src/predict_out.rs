//! `predict` output: CSV (long format, one row per file and rank) or JSON lines (one object per file); for
//! segmentation one row per file (its mask file), for detection one row per box.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::backend::{DenseOutput, DensePrediction};

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
pub fn write_predictions<W: Write>(out: W, format: PredictFormat, preds: &[FilePrediction]) -> std::io::Result<()> {
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

/// Write dense predictions. Segmentation: CSV `path,mask,overlay` / JSON `{"path","mask","overlay","classes"}`
/// per file. Detection: CSV `path,class,score,x0,y0,x1,y1` / JSON `{"path","class","class_id","score","bbox"}` per
/// box (an image without boxes has no row). JSON lines also carry failed files as `error` objects.
pub fn write_dense_predictions<W: Write>(
    out: W,
    format: PredictFormat,
    preds: &[DensePrediction],
) -> std::io::Result<()> {
    let is_mask = preds.iter().any(|p| matches!(p.result, Ok(DenseOutput::Mask { .. })));
    match format {
        PredictFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            if is_mask {
                w.write_record(["path", "mask", "overlay"])?;
            } else {
                w.write_record(["path", "class", "score", "x0", "y0", "x1", "y1"])?;
            }
            for p in preds {
                let path = p.path.display().to_string();
                match &p.result {
                    Ok(DenseOutput::Mask { mask, overlay, .. }) => w.write_record([
                        path.as_str(),
                        &mask.display().to_string(),
                        &overlay.as_ref().map(|o| o.display().to_string()).unwrap_or_default(),
                    ])?,
                    Ok(DenseOutput::Boxes { boxes, .. }) => {
                        for b in boxes {
                            let [x0, y0, x1, y1] = b.bbox.map(|v| format!("{v:.2}"));
                            w.write_record([path.as_str(), &b.class, &format!("{:.6}", b.score), &x0, &y0, &x1, &y1])?;
                        }
                    }
                    Err(_) => {}
                }
            }
            w.flush()
        }
        PredictFormat::Jsonl => {
            let mut out = out;
            for p in preds {
                let lines: Vec<serde_json::Value> = match &p.result {
                    Ok(DenseOutput::Mask {
                        mask,
                        overlay,
                        class_fractions,
                    }) => {
                        let classes: serde_json::Map<String, serde_json::Value> = class_fractions
                            .iter()
                            .map(|(c, f)| (c.clone(), serde_json::json!(f)))
                            .collect();
                        vec![serde_json::json!({
                            "path": p.path, "mask": mask, "overlay": overlay, "classes": classes
                        })]
                    }
                    Ok(DenseOutput::Boxes { boxes, .. }) => boxes
                        .iter()
                        .map(|b| {
                            serde_json::json!({
                                "path": p.path, "class": b.class, "class_id": b.class_id,
                                "score": b.score, "bbox": b.bbox
                            })
                        })
                        .collect(),
                    Err(e) => vec![serde_json::json!({ "path": p.path, "error": e })],
                };
                for v in lines {
                    writeln!(out, "{v}")?;
                }
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
        assert_eq!(rdr.headers().unwrap(), vec!["path", "rank", "class", "probability"]);
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

    #[test]
    fn dense_predictions_write_a_row_per_mask_or_per_box() {
        use crate::backend::BoxPrediction;
        let boxes = vec![
            DensePrediction {
                path: "x.jpg".into(),
                result: Ok(DenseOutput::Boxes {
                    boxes: vec![
                        BoxPrediction {
                            class: "ant".into(),
                            class_id: 0,
                            score: 0.9,
                            bbox: [1.0, 2.0, 30.5, 40.25],
                        },
                        BoxPrediction {
                            class: "bee".into(),
                            class_id: 1,
                            score: 0.5,
                            bbox: [5.0, 5.0, 9.0, 9.0],
                        },
                    ],
                    drawn: None,
                }),
            },
            DensePrediction {
                path: "empty.jpg".into(),
                result: Ok(DenseOutput::Boxes {
                    boxes: vec![],
                    drawn: None,
                }),
            },
            DensePrediction {
                path: "bad.jpg".into(),
                result: Err("not an image".into()),
            },
        ];
        let mut buf = Vec::new();
        write_dense_predictions(&mut buf, PredictFormat::Csv, &boxes).unwrap();
        let mut rdr = csv::Reader::from_reader(buf.as_slice());
        assert_eq!(
            rdr.headers().unwrap(),
            vec!["path", "class", "score", "x0", "y0", "x1", "y1"]
        );
        let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!((&rows[0][1], &rows[0][5]), ("ant", "30.50"));
        let mut buf = Vec::new();
        write_dense_predictions(&mut buf, PredictFormat::Jsonl, &boxes).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(buf)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "two boxes and the failure");
        assert_eq!(lines[1]["class_id"], 1);
        assert_eq!(lines[0]["bbox"][3], 40.25);
        assert_eq!(lines[2]["error"], "not an image");

        let masks = vec![DensePrediction {
            path: "m.png".into(),
            result: Ok(DenseOutput::Mask {
                mask: "out/m.png".into(),
                overlay: None,
                class_fractions: vec![("background".into(), 0.75), ("ant".into(), 0.25)],
            }),
        }];
        let mut buf = Vec::new();
        write_dense_predictions(&mut buf, PredictFormat::Csv, &masks).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "path,mask,overlay\nm.png,out/m.png,\n");
        let mut buf = Vec::new();
        write_dense_predictions(&mut buf, PredictFormat::Jsonl, &masks).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["classes"]["ant"], 0.25);
    }
}
