//! Segmentation pictures: class masks as 8-bit palette PNGs (VOC colours, [`crate::palette`]), images blended with
//! their coloured masks, and the run folder's `val_samples.png` (image | truth | prediction with a class legend).

use image::{GrayImage, Rgb, RgbImage};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::palette;
use crate::plots::{ensure_font, PlotError};

/// How much of the class colour an overlay pixel takes (the rest is the image).
pub const OVERLAY_ALPHA: f32 = 0.5;

/// The mask value of pixels without a class (the ignore index).
const IGNORE: u8 = 255;

/// `mask` (class indices, 255 = ignore) as an 8-bit palette PNG with [`palette::png_palette`]: viewers show VOC
/// colours, readers (PIL `Image.open(..)`, `data::segment`) get the class indices back.
pub fn mask_png(mask: &GrayImage) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, mask.width(), mask.height());
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(palette::png_palette());
        let mut writer = enc.write_header()?;
        writer.write_image_data(mask.as_raw())?;
        writer.finish()?;
    }
    Ok(out)
}

/// The class colour of mask value `v` (`None` for the ignore index).
fn class_color(v: u8) -> Option<[u8; 3]> {
    (v != IGNORE).then(|| palette::color(v as usize))
}

/// `image` blended with the colours of `mask` (same size): each pixel of a class whose colour is not black (VOC's
/// background, class 0) takes [`OVERLAY_ALPHA`] of its class colour; background and ignored pixels stay as they are.
pub fn overlay(image: &RgbImage, mask: &GrayImage) -> RgbImage {
    assert_eq!(
        image.dimensions(),
        mask.dimensions(),
        "overlay of a mask of another size"
    );
    let mut out = image.clone();
    for (p, m) in out.pixels_mut().zip(mask.pixels()) {
        if let Some(c) = class_color(m.0[0]).filter(|c| *c != [0, 0, 0]) {
            for (v, cv) in p.0.iter_mut().zip(c) {
                *v = ((1.0 - OVERLAY_ALPHA) * *v as f32 + OVERLAY_ALPHA * cv as f32).round() as u8;
            }
        }
    }
    out
}

/// The fraction of `mask`'s pixels of each of `classes` (ignored pixels count in the total, not in any class).
pub fn class_fractions(mask: &GrayImage, classes: &[String]) -> Vec<(String, f64)> {
    let mut counts = vec![0u64; classes.len()];
    for &v in mask.as_raw() {
        if let Some(c) = counts.get_mut(v as usize) {
            *c += 1;
        }
    }
    let total = mask.as_raw().len().max(1) as f64;
    classes
        .iter()
        .cloned()
        .zip(counts.into_iter().map(|c| c as f64 / total))
        .collect()
}

/// One row of `val_samples.png`: the (un-normalised) input image, its truth and the prediction, all the same size.
#[derive(Debug, Clone)]
pub struct SampleRow {
    /// The image as the model saw it.
    pub image: RgbImage,
    /// Truth mask (255 = ignore).
    pub truth: GrayImage,
    /// Predicted mask.
    pub pred: GrayImage,
    /// Caption (file name and the image's IoU).
    pub caption: String,
}

/// Height of the title band above the columns.
const HEADER: u32 = 28;
/// Height of the caption band under each row.
const CAPTION: u32 = 20;
/// Gap between columns.
const GAP: u32 = 6;
/// Height of one legend line.
const LEGEND_LINE: u32 = 22;

/// `val_samples.png`'s picture: a row per sample (image | truth overlay | prediction overlay), column titles, a
/// caption per row and a legend of the class colours with their names.
pub fn render_samples(rows: &[SampleRow], classes: &[String]) -> Result<RgbImage, PlotError> {
    ensure_font();
    let cell_w = rows.iter().map(|r| r.image.width()).max().unwrap_or(128).max(96);
    let cell_h = rows.iter().map(|r| r.image.height()).max().unwrap_or(128);
    let width = (3 * cell_w + 4 * GAP).max(360);
    let legend_rows = classes.len().div_ceil(3) as u32;
    let height = HEADER + rows.len() as u32 * (cell_h + CAPTION) + legend_rows * LEGEND_LINE + GAP;
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (i, r) in rows.iter().enumerate() {
        let y = HEADER + i as u32 * (cell_h + CAPTION);
        let panels = [r.image.clone(), overlay(&r.image, &r.truth), overlay(&r.image, &r.pred)];
        for (k, p) in panels.iter().enumerate() {
            let x = GAP + k as u32 * (cell_w + GAP);
            image::imageops::replace(&mut canvas, p, x as i64, y as i64);
        }
    }
    let legend_top = HEADER + rows.len() as u32 * (cell_h + CAPTION) + GAP / 2;
    for (i, _) in classes.iter().enumerate() {
        let (col, line) = ((i % 3) as u32, (i / 3) as u32);
        let (x, y) = (GAP + col * (width / 3), legend_top + line * LEGEND_LINE + 3);
        let c = palette::color(i);
        for dy in 0..14 {
            for dx in 0..14 {
                let px = canvas.get_pixel_mut(x + dx, y + dy);
                *px = if dx == 0 || dy == 0 || dx == 13 || dy == 13 {
                    Rgb([90, 90, 90])
                } else {
                    Rgb(c)
                };
            }
        }
    }
    let mut buf = canvas.into_raw();
    {
        let err = |e: &dyn std::fmt::Display| PlotError::new("validation samples", e);
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let centered = TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        let left = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (k, title) in ["image", "truth", "prediction"].iter().enumerate() {
            let x = (GAP + k as u32 * (cell_w + GAP) + cell_w / 2) as i32;
            root.draw(&Text::new(*title, (x, HEADER as i32 / 2), centered.clone()))
                .map_err(|e| err(&e))?;
        }
        for (i, r) in rows.iter().enumerate() {
            let y = HEADER + i as u32 * (cell_h + CAPTION) + cell_h + CAPTION / 2;
            root.draw(&Text::new(r.caption.clone(), (GAP as i32, y as i32), left.clone()))
                .map_err(|e| err(&e))?;
        }
        for (i, name) in classes.iter().enumerate() {
            let (col, line) = ((i % 3) as u32, (i / 3) as u32);
            let (x, y) = (GAP + col * (width / 3) + 20, legend_top + line * LEGEND_LINE + 10);
            root.draw(&Text::new(name.clone(), (x as i32, y as i32), left.clone()))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    RgbImage::from_raw(width, height, buf).ok_or_else(|| PlotError::new("validation samples", &"buffer size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]))
    }

    #[test]
    fn mask_png_is_a_palette_png_whose_indices_and_colours_round_trip() {
        let m = mask(7, 5, |x, y| match (x + y) % 4 {
            3 => 255,
            v => v as u8,
        });
        let bytes = mask_png(&m).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(&bytes));
        let mut reader = dec.read_info().unwrap();
        let info = reader.info();
        assert_eq!(info.color_type, png::ColorType::Indexed);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        let pal = info.palette.as_ref().unwrap().to_vec();
        assert_eq!(pal, palette::png_palette());
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buf).unwrap();
        assert_eq!((frame.width, frame.height), (7, 5));
        assert_eq!(&buf[..frame.buffer_size()], m.as_raw().as_slice());
        // `image` decodes it to the palette colours, as a viewer shows it.
        let rgb = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(rgb.get_pixel(1, 0).0, palette::color(1));
        assert_eq!(rgb.get_pixel(3, 0).0, [255, 255, 255]);
    }

    #[test]
    fn overlay_tints_classes_and_leaves_background_and_ignore_alone() {
        let img = RgbImage::from_pixel(4, 1, Rgb([100, 100, 100]));
        let m = mask(4, 1, |x, _| [0, 1, 2, 255][x as usize]);
        let o = overlay(&img, &m);
        assert_eq!(o.get_pixel(0, 0).0, [100, 100, 100], "background untouched");
        // Class 1 is VOC's (128, 0, 0): half image, half colour.
        assert_eq!(o.get_pixel(1, 0).0, [114, 50, 50]);
        assert_eq!(o.get_pixel(2, 0).0, [50, 114, 50]);
        assert_eq!(o.get_pixel(3, 0).0, [100, 100, 100], "ignored untouched");
    }

    #[test]
    fn class_fractions_count_pixels_per_class() {
        let m = mask(4, 2, |x, y| {
            if y == 0 {
                1
            } else if x == 0 {
                255
            } else {
                0
            }
        });
        let f = class_fractions(&m, &["bg".into(), "fg".into(), "other".into()]);
        assert_eq!(
            f,
            vec![("bg".into(), 3.0 / 8.0), ("fg".into(), 0.5), ("other".into(), 0.0)]
        );
    }

    #[test]
    fn samples_picture_holds_every_panel_and_the_legend() {
        let img = RgbImage::from_pixel(64, 48, Rgb([200, 200, 200]));
        let truth = mask(64, 48, |x, _| u8::from(x >= 32));
        let pred = mask(64, 48, |_, y| 2 * u8::from(y >= 24));
        let rows = vec![
            SampleRow {
                image: img.clone(),
                truth: truth.clone(),
                pred: pred.clone(),
                caption: "a.png IoU 0.5".into(),
            };
            2
        ];
        let classes = vec!["background".to_string(), "ant".into(), "bee".into()];
        let pic = render_samples(&rows, &classes).unwrap();
        assert!(pic.width() >= 3 * 64 && pic.height() >= 2 * 48 + HEADER);
        let has = |c: [u8; 3]| pic.pixels().any(|p| p.0 == c);
        // Truth overlay tints class 1 red, prediction overlay tints class 2 green; the legend shows pure colours.
        assert!(has([164, 100, 100]) && has([100, 164, 100]));
        assert!(has(palette::color(1)) && has(palette::color(2)));
        // Text was drawn (dark pixels in the header band).
        let header_dark = (0..pic.width())
            .flat_map(|x| (0..HEADER).map(move |y| (x, y)))
            .filter(|&(x, y)| pic.get_pixel(x, y).0.iter().all(|&v| v < 100))
            .count();
        assert!(header_dark > 20, "{header_dark}");
    }
}
