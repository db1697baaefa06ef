//! PNG charts rendered in Rust: training curves and the confusion matrix.

use std::sync::Once;

use image::RgbImage;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::summary::EpochRow;

/// The bundled font (DejaVu Sans, see `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Font family name the charts use.
const FAMILY: &str = "sans-serif";

/// A chart could not be drawn or encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot render {what}: {msg}")]
pub struct PlotError {
    what: &'static str,
    msg: String,
}

impl PlotError {
    /// An error drawing `what`.
    pub fn new(what: &'static str, msg: &dyn std::fmt::Display) -> Self {
        Self {
            what,
            msg: msg.to_string(),
        }
    }
}

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> PlotError {
    move |e| PlotError {
        what,
        msg: e.to_string(),
    }
}

/// Register the bundled font with plotters (once per process).
pub fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Invariant: the bundled file is a valid TrueType font.
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("bundled font is invalid"));
    });
}

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);

/// Loss (left) and accuracy (right) per epoch, train vs validation, as an RGB image of `width × height`; rows
/// with a task score add its panel (see [`render_task_curves`]).
pub fn render_curves(history: &[EpochRow], width: u32, height: u32) -> Result<RgbImage, PlotError> {
    render_task_curves(history, None, width, height)
}

/// How a task's score is titled: `miou` → mIoU, `map` → mAP, others as named.
pub fn score_title(name: &str) -> String {
    match name {
        "miou" => "mIoU".into(),
        "map" => "mAP".into(),
        other => other.to_string(),
    }
}

/// [`render_curves`], plus a third panel with the validation score (segmentation mIoU, detection mAP) when any
/// row has one ([`EpochRow::score`]), titled by `score_name` ([`score_title`]; `score` when absent).
pub fn render_task_curves(
    history: &[EpochRow],
    score_name: Option<&str>,
    width: u32,
    height: u32,
) -> Result<RgbImage, PlotError> {
    ensure_font();
    let scored = history.iter().any(|r| r.score.is_some());
    let score_title = score_title(score_name.unwrap_or("score"));
    let mut buf = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err("curves"))?;
        let panels = root.split_evenly((1, if scored { 3 } else { 2 }));
        let epochs = history.len().max(1) as f64;
        let loss_max = history
            .iter()
            .flat_map(|r| [Some(r.train_loss), r.val_loss])
            .flatten()
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let loss_max = if loss_max > 0.0 { loss_max * 1.1 } else { 1.0 };
        type Pick = fn(&EpochRow) -> Option<f64>;
        // Legends where the curves usually are not: loss falls (upper right is free), accuracy rises (lower right).
        let mut specs: Vec<(&str, f64, Pick, Pick, SeriesLabelPosition)> = vec![
            (
                "Loss",
                loss_max,
                |r| Some(r.train_loss),
                |r| r.val_loss,
                SeriesLabelPosition::UpperRight,
            ),
            (
                "Accuracy",
                1.0,
                |r| Some(r.train_acc),
                |r| r.val_acc,
                SeriesLabelPosition::LowerRight,
            ),
        ];
        if scored {
            specs.push((
                &score_title,
                1.0,
                |_| None,
                |r| r.score,
                SeriesLabelPosition::LowerRight,
            ));
        }
        for (panel, (title, y_max, train, val, legend_at)) in panels.iter().zip(specs) {
            let mut chart = ChartBuilder::on(panel)
                .caption(title, (FAMILY, 22))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(52)
                .build_cartesian_2d(0.5f64..epochs + 0.5, 0f64..y_max)
                .map_err(err("curves"))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .x_labels(history.len().clamp(2, 10))
                .x_label_formatter(&|x| format!("{x:.0}"))
                .label_style((FAMILY, 13))
                .axis_desc_style((FAMILY, 15))
                .draw()
                .map_err(err("curves"))?;
            for (name, color, pick) in [("train", TRAIN, train), ("val", VAL, val)] {
                let points: Vec<(f64, f64)> = history
                    .iter()
                    .filter_map(|r| pick(r).map(|v| (r.epoch as f64, v)))
                    .collect();
                if points.is_empty() {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(err("curves"))?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                chart
                    .draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                    .map_err(err("curves"))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FAMILY, 13))
                .position(legend_at)
                .draw()
                .map_err(err("curves"))?;
        }
        root.present().map_err(err("curves"))?;
    }
    RgbImage::from_raw(width, height, buf).ok_or_else(|| PlotError {
        what: "curves",
        msg: "buffer size".into(),
    })
}

/// The confusion matrix (`confusion[true][pred]`) with counts in the cells and class names on both axes.
pub fn render_confusion(classes: &[String], confusion: &[Vec<u64>]) -> Result<RgbImage, PlotError> {
    ensure_font();
    let n = confusion.len().max(1) as i32;
    let cell = (640 / n).clamp(14, 90);
    let (left, top, bottom, right) = (170i32, 50i32, 60i32, 20i32);
    let width = (left + cell * n + right) as u32;
    let height = (top + cell * n + bottom) as u32;
    let mut buf = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err("confusion matrix"))?;
        let centered =
            |size: i32| TextStyle::from((FAMILY, size).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(
            "Confusion matrix (rows: true, columns: predicted)",
            (width as i32 / 2, 20),
            centered(16),
        ))
        .map_err(err("confusion matrix"))?;
        let label = |i: usize, max_chars: usize| -> String {
            let name = classes.get(i).map(String::as_str).unwrap_or("?");
            if name.chars().count() <= max_chars {
                name.to_string()
            } else {
                let mut s: String = name.chars().take(max_chars.saturating_sub(1)).collect();
                s.push('…');
                s
            }
        };
        let font = (cell / 3).clamp(9, 16);
        for (t, row) in confusion.iter().enumerate() {
            let total: u64 = row.iter().sum();
            for (p, &count) in row.iter().enumerate() {
                let frac = if total == 0 { 0.0 } else { count as f64 / total as f64 };
                let shade = |full: u8| (255.0 - (255.0 - full as f64) * frac).round() as u8;
                let fill = RGBColor(shade(8), shade(48), shade(107));
                let (x0, y0) = (left + p as i32 * cell, top + t as i32 * cell);
                root.draw(&Rectangle::new([(x0, y0), (x0 + cell, y0 + cell)], fill.filled()))
                    .map_err(err("confusion matrix"))?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell, y0 + cell)],
                    RGBColor(200, 200, 200),
                ))
                .map_err(err("confusion matrix"))?;
                if n <= 30 {
                    let color = if frac > 0.5 { WHITE } else { BLACK };
                    let style = centered(font).color(&color);
                    root.draw(&Text::new(count.to_string(), (x0 + cell / 2, y0 + cell / 2), style))
                        .map_err(err("confusion matrix"))?;
                }
            }
        }
        if n <= 40 {
            let right_aligned = TextStyle::from((FAMILY, 13).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
            let max_x_chars = ((cell / 7).max(2)) as usize;
            for i in 0..n as usize {
                let y = top + i as i32 * cell + cell / 2;
                root.draw(&Text::new(label(i, 22), (left - 6, y), right_aligned.clone()))
                    .map_err(err("confusion matrix"))?;
                let x = left + i as i32 * cell + cell / 2;
                root.draw(&Text::new(
                    label(i, max_x_chars),
                    (x, top + n * cell + 12),
                    centered(12),
                ))
                .map_err(err("confusion matrix"))?;
            }
        }
        root.draw(&Text::new(
            "predicted",
            (left + n * cell / 2, height as i32 - 16),
            centered(14),
        ))
        .map_err(err("confusion matrix"))?;
        root.present().map_err(err("confusion matrix"))?;
    }
    RgbImage::from_raw(width, height, buf).ok_or_else(|| PlotError {
        what: "confusion matrix",
        msg: "buffer size".into(),
    })
}

/// Encode an RGB image as PNG bytes.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>, PlotError> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).map_err(err("PNG"))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::tests::history;

    fn decode(png: &[u8]) -> RgbImage {
        image::load_from_memory_with_format(png, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8()
    }

    fn count(img: &RgbImage, f: impl Fn(&image::Rgb<u8>) -> bool) -> usize {
        img.pixels().filter(|p| f(p)).count()
    }

    #[test]
    fn curves_png_decodes_at_the_requested_size_with_both_series() {
        let png = encode_png(&render_curves(&history(6, true), 900, 360).unwrap()).unwrap();
        let img = decode(&png);
        assert_eq!(img.dimensions(), (900, 360));
        let near =
            |c: RGBColor| move |p: &image::Rgb<u8>| p.0.iter().zip([c.0, c.1, c.2]).all(|(a, b)| a.abs_diff(b) < 8);
        // Both series drawn in both panels.
        for c in [TRAIN, VAL] {
            let left = count(&image::imageops::crop_imm(&img, 0, 0, 450, 360).to_image(), near(c));
            let right = count(&image::imageops::crop_imm(&img, 450, 0, 450, 360).to_image(), near(c));
            assert!(left > 50 && right > 50, "series colour {c:?}: {left} / {right} pixels");
        }
        // Text and axes: plenty of dark pixels.
        assert!(count(&img, |p| p.0.iter().all(|&v| v < 60)) > 500);
    }

    #[test]
    fn rows_with_a_score_get_a_third_panel_with_the_validation_score() {
        let mut rows = history(5, true);
        for (i, r) in rows.iter_mut().enumerate() {
            r.score = Some(0.1 + 0.15 * i as f64);
        }
        let img = render_task_curves(&rows, Some("miou"), 900, 300).unwrap();
        let near =
            |c: RGBColor| move |p: &image::Rgb<u8>| p.0.iter().zip([c.0, c.1, c.2]).all(|(a, b)| a.abs_diff(b) < 8);
        let third = image::imageops::crop_imm(&img, 600, 0, 300, 300).to_image();
        assert!(
            count(&third, near(VAL)) > 50,
            "the score series is drawn in the third panel"
        );
        assert_eq!(count(&third, near(TRAIN)), 0, "no training score");
        // Without scores the layout stays two panels: the third of the width holds the accuracy panel's val series.
        let plain = render_task_curves(&history(5, true), Some("miou"), 900, 300).unwrap();
        assert_ne!(plain, img);
        assert_eq!(score_title("miou"), "mIoU");
        assert_eq!(score_title("map"), "mAP");
    }

    #[test]
    fn curves_without_validation_or_epochs_still_render() {
        let img = render_curves(&history(3, false), 600, 300).unwrap();
        assert_eq!(img.dimensions(), (600, 300));
        assert_eq!(count(&img, |p| p.0 == [VAL.0, VAL.1, VAL.2]), 0, "no val series");
        render_curves(&[], 400, 200).unwrap();
    }

    #[test]
    fn confusion_png_shades_cells_by_row_fraction() {
        let classes = vec!["ants".to_string(), "bees".to_string()];
        let img = decode(&encode_png(&render_confusion(&classes, &[vec![9, 1], vec![0, 10]]).unwrap()).unwrap());
        let (w, h) = img.dimensions();
        assert!(w > 300 && h > 200);
        let cell = 90u32;
        // Sample near the cell corners (away from the centred count text).
        let at = |r: u32, c: u32| *img.get_pixel(170 + c * cell + 6, 50 + r * cell + 6);
        let (diag, off, empty) = (at(0, 0), at(0, 1), at(1, 0));
        assert!(diag.0[0] < off.0[0] && off.0[0] < 255, "{diag:?} vs {off:?}");
        assert_eq!(empty.0, [255, 255, 255]);
        // Class names drawn left of the grid.
        let label_area = image::imageops::crop_imm(&img, 0, 50, 165, 2 * cell).to_image();
        assert!(count(&label_area, |p| p.0.iter().all(|&v| v < 100)) > 30);
    }

    #[test]
    fn many_classes_stay_bounded() {
        let n = 120;
        let classes: Vec<String> = (0..n).map(|i| format!("class number {i}")).collect();
        let conf: Vec<Vec<u64>> = (0..n).map(|i| (0..n).map(|j| u64::from(i == j)).collect()).collect();
        let img = render_confusion(&classes, &conf).unwrap();
        assert!(img.width() < 2000 && img.height() < 2000);
    }
}
