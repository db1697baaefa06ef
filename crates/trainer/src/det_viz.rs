//! Detection figures: boxes drawn on images (predictions solid with a `class score` label, ground truth dashed),
//! the validation sample sheet and the per-class precision–recall curve.

use image::{imageops::FilterType, Rgb, RgbImage};
use plotters::prelude::*;

use crate::backend::BoxPrediction;
use crate::palette;
use crate::plots::{ensure_font, PlotError};

/// How a box outline is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stroke {
    /// A continuous line (predictions).
    Solid,
    /// 6 pixels on, 4 off (ground truth).
    Dashed,
}

/// The colour of detection class `class` (VOC's colour of `class + 1`: VOC's 0 is black, for backgrounds).
pub fn class_color(class: usize) -> [u8; 3] {
    palette::color(class + 1)
}

/// Outline `bbox` (`[x0, y0, x1, y1]`, pixels) on `img` in `color`, `thickness` pixels wide inside the box, clipped
/// to the image.
pub fn draw_rect(img: &mut RgbImage, bbox: [f32; 4], color: [u8; 3], thickness: u32, stroke: Stroke) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    if w == 0 || h == 0 {
        return;
    }
    let x0 = (bbox[0].floor() as i64).clamp(0, w - 1);
    let y0 = (bbox[1].floor() as i64).clamp(0, h - 1);
    let x1 = ((bbox[2].ceil() as i64) - 1).clamp(0, w - 1);
    let y1 = ((bbox[3].ceil() as i64) - 1).clamp(0, h - 1);
    let on = |i: i64| stroke == Stroke::Solid || i.rem_euclid(10) < 6;
    let mut put = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            img.put_pixel(x as u32, y as u32, Rgb(color));
        }
    };
    for t in 0..thickness as i64 {
        for x in x0..=x1 {
            if on(x - x0) {
                put(x, y0 + t);
                put(x, y1 - t);
            }
        }
        for y in y0..=y1 {
            if on(y - y0) {
                put(x0 + t, y);
                put(x1 - t, y);
            }
        }
    }
}

/// Write `text` in white on a `color` band whose top-left corner is near `(x, y)` (kept inside the image).
pub fn draw_label(img: &mut RgbImage, x: i32, y: i32, text: &str, color: [u8; 3]) -> Result<(), PlotError> {
    ensure_font();
    let (w, h) = img.dimensions();
    let backend = BitMapBackend::with_buffer(img.as_mut(), (w, h));
    let root = backend.into_drawing_area();
    let style = ("sans-serif", 13).into_font().color(&WHITE);
    let (tw, th) = root
        .estimate_text_size(text, &style)
        .map_err(|e| PlotError::new("box label", &e))?;
    let (tw, th) = (tw as i32 + 4, th as i32 + 2);
    let x = x.clamp(0, (w as i32 - tw).max(0));
    let y = y.clamp(0, (h as i32 - th).max(0));
    let fill = RGBColor(color[0], color[1], color[2]);
    root.draw(&Rectangle::new([(x, y), (x + tw, y + th)], fill.filled()))
        .map_err(|e| PlotError::new("box label", &e))?;
    root.draw(&Text::new(text.to_string(), (x + 2, y + 1), style))
        .map_err(|e| PlotError::new("box label", &e))?;
    root.present().map_err(|e| PlotError::new("box label", &e))?;
    Ok(())
}

/// Draw predicted boxes (solid, 2 px, class colour) with their `class score` label above each box.
pub fn draw_predictions(img: &mut RgbImage, boxes: &[BoxPrediction]) -> Result<(), PlotError> {
    for b in boxes {
        draw_rect(img, b.bbox, class_color(b.class_id), 2, Stroke::Solid);
    }
    for b in boxes {
        let text = format!("{} {:.2}", b.class, b.score);
        draw_label(
            img,
            b.bbox[0] as i32,
            b.bbox[1] as i32 - 16,
            &text,
            class_color(b.class_id),
        )?;
    }
    Ok(())
}

/// Draw ground-truth boxes (`[x0, y0, x1, y1]`, class index) dashed, 2 px, in the class colour, with the class
/// name at the box's bottom-left corner.
pub fn draw_truth(img: &mut RgbImage, boxes: &[([f32; 4], usize)], names: &[String]) -> Result<(), PlotError> {
    for (b, c) in boxes {
        draw_rect(img, *b, class_color(*c), 2, Stroke::Dashed);
    }
    for (b, c) in boxes {
        let name = names.get(*c).map(String::as_str).unwrap_or("?");
        draw_label(
            img,
            b[0] as i32,
            b[3] as i32 - 16,
            &format!("true {name}"),
            class_color(*c),
        )?;
    }
    Ok(())
}

/// One tile of the validation sheet: `img` scaled to fit `size × size` (kept aspect, grey padding), its true boxes
/// dashed and its predictions solid.
pub fn sample_tile(
    img: &RgbImage,
    truth: &[([f32; 4], usize)],
    preds: &[BoxPrediction],
    names: &[String],
    size: u32,
) -> Result<RgbImage, PlotError> {
    let (w, h) = img.dimensions();
    let s = (size as f32 / w.max(1) as f32).min(size as f32 / h.max(1) as f32);
    let (nw, nh) = (
        ((w as f32 * s).round() as u32).max(1),
        ((h as f32 * s).round() as u32).max(1),
    );
    let mut tile = image::imageops::resize(img, nw, nh, FilterType::Triangle);
    let scale = |b: [f32; 4]| b.map(|v| v * s);
    let truth: Vec<_> = truth.iter().map(|(b, c)| (scale(*b), *c)).collect();
    let preds: Vec<BoxPrediction> = preds
        .iter()
        .map(|p| BoxPrediction {
            bbox: scale(p.bbox),
            ..p.clone()
        })
        .collect();
    draw_truth(&mut tile, &truth, names)?;
    draw_predictions(&mut tile, &preds)?;
    let mut out = RgbImage::from_pixel(size, size, Rgb([114; 3]));
    image::imageops::replace(&mut out, &tile, ((size - nw) / 2) as i64, ((size - nh) / 2) as i64);
    Ok(out)
}

/// Tiles in a grid of `cols` columns with a 4-pixel white gutter.
pub fn sheet(tiles: &[RgbImage], cols: usize) -> RgbImage {
    let Some(first) = tiles.first() else {
        return RgbImage::from_pixel(1, 1, Rgb([255; 3]));
    };
    let (tw, th) = first.dimensions();
    let cols = cols.clamp(1, tiles.len());
    let rows = tiles.len().div_ceil(cols);
    let gap = 4;
    let mut out = RgbImage::from_pixel(
        cols as u32 * (tw + gap) + gap,
        rows as u32 * (th + gap) + gap,
        Rgb([255; 3]),
    );
    for (i, t) in tiles.iter().enumerate() {
        let (r, c) = ((i / cols) as u32, (i % cols) as u32);
        image::imageops::replace(
            &mut out,
            t,
            (gap + c * (tw + gap)) as i64,
            (gap + r * (th + gap)) as i64,
        );
    }
    out
}

/// The precision–recall curve of one class (`(recall, precision)` points, as COCO's 101-point interpolation at
/// IoU .5 gives them), titled with its AP50.
pub fn render_pr_curve(
    class: &str,
    curve: &[(f64, f64)],
    ap50: Option<f64>,
    width: u32,
    height: u32,
) -> Result<RgbImage, PlotError> {
    ensure_font();
    let e = |e: &dyn std::fmt::Display| PlotError::new("precision-recall curve", e);
    let mut buf = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let title = match ap50 {
            Some(ap) => format!("{class}: AP50 {ap:.3}"),
            None => format!("{class}: no validation objects"),
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("recall")
            .y_desc("precision")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|x| e(&x))?;
        let color = class_color(0);
        chart
            .draw_series(LineSeries::new(
                curve.iter().copied(),
                RGBColor(color[0], color[1], color[2]).stroke_width(2),
            ))
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    RgbImage::from_raw(width, height, buf).ok_or_else(|| e(&"buffer size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_colour_their_edges_and_leave_the_inside_alone() {
        let mut img = RgbImage::from_pixel(60, 40, Rgb([0; 3]));
        let c = [200, 10, 30];
        draw_rect(&mut img, [10.0, 5.0, 30.0, 25.0], c, 2, Stroke::Solid);
        for x in 10..30 {
            assert_eq!(img.get_pixel(x, 5).0, c, "top edge at x={x}");
            assert_eq!(img.get_pixel(x, 24).0, c, "bottom edge at x={x}");
        }
        for y in 5..25 {
            assert_eq!(img.get_pixel(10, y).0, c);
            assert_eq!(img.get_pixel(29, y).0, c);
            assert_eq!(img.get_pixel(11, y).0, c, "2 px thick");
        }
        assert_eq!(img.get_pixel(20, 15).0, [0; 3], "inside untouched");
        assert_eq!(img.get_pixel(9, 15).0, [0; 3], "outside untouched");
        assert_eq!(img.get_pixel(31, 15).0, [0; 3]);
        // Dashed: the edge has gaps.
        let mut dashed = RgbImage::from_pixel(60, 40, Rgb([0; 3]));
        draw_rect(&mut dashed, [0.0, 0.0, 50.0, 30.0], c, 1, Stroke::Dashed);
        let on = (0..50).filter(|&x| dashed.get_pixel(x, 0).0 == c).count();
        assert!(on > 20 && on < 50, "{on} of 50 pixels drawn");
        // Boxes beyond the image are clipped, not a panic.
        draw_rect(&mut dashed, [-20.0, -5.0, 500.0, 500.0], c, 2, Stroke::Solid);
        assert_eq!(dashed.get_pixel(59, 20).0, c);
    }

    #[test]
    fn predictions_get_a_label_in_their_colour() {
        let mut img = RgbImage::from_pixel(120, 80, Rgb([0; 3]));
        let b = BoxPrediction {
            class: "ant".into(),
            class_id: 0,
            score: 0.9,
            bbox: [20.0, 30.0, 100.0, 70.0],
        };
        draw_predictions(&mut img, &[b]).unwrap();
        let c = class_color(0);
        assert_eq!(img.get_pixel(60, 69).0, c);
        // The label band sits above the box, with white text in it.
        let band = (14..30).flat_map(|y| (20..60).map(move |x| (x, y)));
        let (mut colour, mut white) = (0, 0);
        for (x, y) in band {
            match img.get_pixel(x, y).0 {
                p if p == c => colour += 1,
                p if p.iter().all(|&v| v > 200) => white += 1,
                _ => {}
            }
        }
        assert!(colour > 100 && white > 5, "{colour} band pixels, {white} text pixels");
    }

    #[test]
    fn pr_curve_renders_at_its_size() {
        let curve: Vec<(f64, f64)> = (0..=100).map(|i| (i as f64 / 100.0, 1.0 - i as f64 / 200.0)).collect();
        let img = render_pr_curve("ant", &curve, Some(0.75), 400, 300).unwrap();
        assert_eq!(img.dimensions(), (400, 300));
        let c = class_color(0);
        assert!(img.pixels().any(|p| p.0 == c), "the curve is drawn");
        let sheet = sheet(&[img.clone(), img.clone(), img], 2);
        assert_eq!(sheet.dimensions(), (2 * 404 + 4, 2 * 304 + 4));
    }
}
