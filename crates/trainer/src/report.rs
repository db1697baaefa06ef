//! `report.html`: one self-contained page (images inlined as base64) summarising a run.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;

use crate::summary::{best_epoch, DenseOutcome, EpochRow, EvalSummary, WrongExample};

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct ReportInput<'a> {
    /// Page title (the run folder's name).
    pub title: String,
    /// Settings shown in the summary table, in order.
    pub settings: Vec<(String, String)>,
    /// Every epoch.
    pub history: &'a [EpochRow],
    /// Evaluation of the kept model on validation data.
    pub eval: Option<&'a EvalSummary>,
    /// `curves.png` bytes.
    pub curves_png: &'a [u8],
    /// `confusion_matrix.png` bytes.
    pub confusion_png: Option<&'a [u8]>,
    /// Most confidently wrong images.
    pub wrong: &'a [WrongExample],
    /// Segmentation/detection: the task's table, figures and worst images.
    pub dense: Option<&'a DenseOutcome>,
}

/// Thumbnail edge in pixels.
const THUMB: u32 = 96;

/// Most wrong images shown.
const MAX_WRONG: usize = 24;

/// Escape text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A JPEG thumbnail (longest side [`THUMB`] px) of the image at `path`, or `None` if it cannot be read.
pub fn thumbnail_jpeg(path: &Path) -> Option<Vec<u8>> {
    let img = image::open(path).ok()?.thumbnail(THUMB, THUMB).to_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).ok()?;
    Some(out.into_inner())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}\
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}img.plot{max-width:100%}\
.gallery{display:flex;flex-wrap:wrap;gap:12px}.gallery figure{margin:0;width:128px;font-size:12px}\
.gallery img{max-width:96px;max-height:96px;display:block}";

/// Render the page.
pub fn render_report(input: &ReportInput<'_>) -> String {
    let mut h = String::new();
    let title = escape(&input.title);
    // Writing to a String cannot fail.
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>graft run {title}</title>\
         <style>{STYLE}</style></head><body>\n<h1>graft run {title}</h1>\n"
    );

    h.push_str("<section id=\"summary\"><h2>Summary</h2><table>\n");
    let best = best_epoch(input.history);
    let mut rows: Vec<(String, String)> = vec![("epochs run".into(), input.history.len().to_string())];
    if let Some(b) = best {
        rows.push(("best epoch".into(), b.epoch.to_string()));
        match (input.dense, b.score, b.val_acc) {
            (Some(d), Some(score), _) => rows.push((format!("best val {}", d.score_name), format!("{score:.4}"))),
            (_, _, Some(acc)) => rows.push(("best val accuracy".into(), format!("{acc:.4}"))),
            _ => {}
        }
        if let Some(loss) = b.val_loss {
            rows.push(("val loss at best epoch".into(), format!("{loss:.4}")));
        }
    }
    if let Some(last) = input.history.last() {
        rows.push(("final train accuracy".into(), format!("{:.4}", last.train_acc)));
        let secs: f64 = input.history.iter().map(|r| r.seconds).sum();
        rows.push(("training time".into(), format!("{secs:.1} s")));
    }
    rows.extend(input.settings.iter().cloned());
    for (k, v) in &rows {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    h.push_str("</table></section>\n");

    let _ = writeln!(
        h,
        "<section id=\"curves\"><h2>Training curves</h2><img class=\"plot\" alt=\"loss and accuracy per epoch\" \
         src=\"{}\"></section>",
        data_uri("image/png", input.curves_png)
    );

    if let Some(png) = input.confusion_png {
        let _ = writeln!(
            h,
            "<section id=\"confusion\"><h2>Confusion matrix</h2><img class=\"plot\" alt=\"confusion matrix\" \
             src=\"{}\"></section>",
            data_uri("image/png", png)
        );
    }

    if let Some(eval) = input.eval {
        h.push_str("<section id=\"per-class\"><h2>Per-class metrics</h2><table>\n");
        h.push_str("<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>\n");
        for (name, m) in eval.classes.iter().zip(&eval.per_class) {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"n\">{:.4}</td><td class=\"n\">{:.4}</td><td class=\"n\">{:.4}</td>\
                 <td class=\"n\">{}</td></tr>",
                escape(name),
                m.precision,
                m.recall,
                m.f1,
                m.support
            );
        }
        let _ = writeln!(
            h,
            "<tr><th>accuracy</th><td class=\"n\" colspan=\"4\">{:.4}</td></tr></table></section>",
            eval.accuracy
        );
    }

    if let Some(d) = input.dense {
        render_dense(&mut h, d);
        h.push_str("</body></html>\n");
        return h;
    }

    h.push_str("<section id=\"wrong\"><h2>Most confidently wrong validation images</h2>\n");
    if input.wrong.is_empty() {
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<div class=\"gallery\">\n");
        for w in input.wrong.iter().take(MAX_WRONG) {
            let img = match thumbnail_jpeg(&w.path) {
                Some(jpg) => format!("<img alt=\"\" src=\"{}\">", data_uri("image/jpeg", &jpg)),
                None => "<div>(unreadable)</div>".to_string(),
            };
            let file = w
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = writeln!(
                h,
                "<figure>{img}<figcaption title=\"{}\">{}<br>true: {}<br>pred: {} ({:.3})</figcaption></figure>",
                escape(&w.path.display().to_string()),
                escape(&file),
                escape(&w.true_class),
                escape(&w.pred_class),
                w.prob
            );
        }
        h.push_str("</div>\n");
    }
    h.push_str("</section>\n</body></html>\n");
    h
}

/// The dense task's sections: its table, its figures and its worst images.
fn render_dense(h: &mut String, d: &DenseOutcome) {
    let _ = writeln!(h, "<section id=\"task\"><h2>{}</h2><table>", escape(&d.section.title));
    h.push_str("<tr>");
    for c in &d.section.columns {
        let _ = write!(h, "<th>{}</th>", escape(c));
    }
    h.push_str("</tr>\n");
    for row in &d.section.rows {
        h.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if i == 0 { "" } else { " class=\"n\"" };
            let _ = write!(h, "<td{class}>{}</td>", escape(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table></section>\n");
    for (name, png) in &d.figures {
        let _ = writeln!(
            h,
            "<section class=\"figure\"><h2>{}</h2><img class=\"plot\" alt=\"{}\" src=\"{}\"></section>",
            escape(name),
            escape(name),
            data_uri("image/png", png)
        );
    }
    if !d.worst.is_empty() {
        h.push_str("<section id=\"worst\"><h2>Worst validation images</h2><div class=\"gallery\">\n");
        for (path, score) in d.worst.iter().take(MAX_WRONG) {
            let img = match thumbnail_jpeg(path) {
                Some(jpg) => format!("<img alt=\"\" src=\"{}\">", data_uri("image/jpeg", &jpg)),
                None => "<div>(unreadable)</div>".to_string(),
            };
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = writeln!(
                h,
                "<figure>{img}<figcaption title=\"{}\">{}<br>{} {score:.3}</figcaption></figure>",
                escape(&path.display().to_string()),
                escape(&file),
                // Detection ranks images by their F1 at IoU 0.5 (`engine::detect::image_f1`), not by mAP.
                escape(if d.task == crate::spec::TaskKind::Detect {
                    "F1@.5"
                } else {
                    &d.score_name
                })
            );
        }
        h.push_str("</div></section>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::{encode_png, render_confusion, render_curves};
    use crate::summary::tests::history;

    /// Every `data:` URI in the page, decoded.
    fn data_uris(html: &str) -> Vec<(String, Vec<u8>)> {
        html.split("src=\"data:")
            .skip(1)
            .map(|rest| {
                let uri = &rest[..rest.find('"').unwrap()];
                let (mime, b64) = uri.split_once(";base64,").unwrap();
                (
                    mime.to_string(),
                    base64::engine::general_purpose::STANDARD.decode(b64).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn report_has_every_section_and_decodable_images() {
        let dir = tempfile::tempdir().unwrap();
        let photo = dir.path().join("bee.jpg");
        image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 90]))
            .save(&photo)
            .unwrap();
        let classes = vec!["ants".to_string(), "bees <&>".to_string()];
        let eval = EvalSummary::from_confusion(classes.clone(), vec![vec![9, 1], vec![2, 8]], Some(0.4));
        let hist = history(4, true);
        let curves = encode_png(&render_curves(&hist, 800, 300).unwrap()).unwrap();
        let conf = encode_png(&render_confusion(&classes, &eval.confusion).unwrap()).unwrap();
        let wrong = vec![
            WrongExample {
                path: photo.clone(),
                true_class: "ants".into(),
                pred_class: "bees <&>".into(),
                prob: 0.97,
            },
            WrongExample {
                path: dir.path().join("gone.jpg"),
                true_class: "bees <&>".into(),
                pred_class: "ants".into(),
                prob: 0.9,
            },
        ];
        let html = render_report(&ReportInput {
            title: "train2".into(),
            settings: vec![("model".into(), "resnet18".into())],
            history: &hist,
            eval: Some(&eval),
            curves_png: &curves,
            confusion_png: Some(&conf),
            wrong: &wrong,
            dense: None,
        });
        for id in ["summary", "curves", "confusion", "per-class", "wrong"] {
            assert!(html.contains(&format!("<section id=\"{id}\">")), "missing section {id}");
        }
        assert!(html.contains("best val accuracy</th><td>0.9500"));
        assert!(html.contains("bees &lt;&amp;&gt;") && !html.contains("bees <&>"));
        assert!(html.contains("(0.970)") && html.contains("(unreadable)"));
        let uris = data_uris(&html);
        assert_eq!(uris.len(), 3, "two charts and one readable thumbnail");
        for (mime, bytes) in &uris {
            let fmt = if mime == "image/png" {
                image::ImageFormat::Png
            } else {
                image::ImageFormat::Jpeg
            };
            let img = image::load_from_memory_with_format(bytes, fmt).unwrap();
            if mime == "image/jpeg" {
                assert_eq!((img.width(), img.height()), (96, 64));
            }
        }
        assert!(
            !html.contains("src=\"/") && !html.contains("src=\"http"),
            "self-contained"
        );
    }

    #[test]
    fn report_without_validation_omits_matrix_sections() {
        let hist = history(2, false);
        let curves = encode_png(&render_curves(&hist, 400, 200).unwrap()).unwrap();
        let html = render_report(&ReportInput {
            title: "t".into(),
            settings: vec![],
            history: &hist,
            eval: None,
            curves_png: &curves,
            confusion_png: None,
            wrong: &[],
            dense: None,
        });
        assert!(html.contains("id=\"summary\"") && html.contains("id=\"curves\""));
        assert!(!html.contains("id=\"confusion\"") && !html.contains("id=\"per-class\""));
        assert_eq!(data_uris(&html).len(), 1);
    }

    #[test]
    fn dense_report_shows_the_task_table_figures_and_worst_images() {
        let dir = tempfile::tempdir().unwrap();
        let photo = dir.path().join("worst.png");
        image::RgbImage::from_pixel(40, 30, image::Rgb([9, 99, 200]))
            .save(&photo)
            .unwrap();
        let mut hist = history(2, true);
        hist[1].score = Some(0.625);
        hist[0].score = Some(0.5);
        let curves = encode_png(&render_curves(&hist, 400, 200).unwrap()).unwrap();
        let samples = encode_png(&image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))).unwrap();
        let dense = DenseOutcome {
            task: crate::spec::TaskKind::Segment,
            score_name: "miou".into(),
            metrics: Default::default(),
            section: training::ReportSection {
                title: "Per-class IoU".into(),
                columns: vec!["class".into(), "IoU".into()],
                rows: vec![vec!["<ant>".into(), "0.7000".into()], vec!["bee".into(), "-".into()]],
            },
            figures: vec![("val_samples.png".into(), samples.clone())],
            worst: vec![(photo, 0.125)],
        };
        let html = render_report(&ReportInput {
            title: "seg".into(),
            settings: vec![],
            history: &hist,
            eval: None,
            curves_png: &curves,
            confusion_png: None,
            wrong: &[],
            dense: Some(&dense),
        });
        assert!(html.contains("best val miou</th><td>0.6250"), "{html}");
        assert!(html.contains("<td>&lt;ant&gt;</td><td class=\"n\">0.7000</td>"));
        assert!(html.contains("id=\"worst\"") && html.contains("miou 0.125"));
        assert!(!html.contains("id=\"wrong\""));
        let uris = data_uris(&html);
        assert_eq!(uris.len(), 3, "curves, val_samples, one worst thumbnail");
        assert_eq!(uris[1], ("image/png".to_string(), samples));
        assert_eq!(uris[2].0, "image/jpeg");
    }
}
