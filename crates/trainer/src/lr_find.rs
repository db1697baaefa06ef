//! The learning-rate finder's plot (the sweep and its suggestion are `training::lr_find`'s).

use image::RgbImage;
use plotters::prelude::*;

use crate::plots::PlotError;

/// Loss against learning rate (log axis), with the suggestion marked.
pub fn render_lr_curve(
    points: &[(f64, f64)],
    suggestion: Option<f64>,
    width: u32,
    height: u32,
) -> Result<RgbImage, PlotError> {
    let mut buf = vec![0u8; (width * height * 3) as usize];
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(l, v)| *l > 0.0 && v.is_finite())
        .collect();
    let (lo, hi) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (lo, hi) = if lo < hi { (lo, hi) } else { (1e-7, 10.0) };
    let y_max = finite.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-6) * 1.05;
    {
        crate::plots::ensure_font();
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| PlotError::new("lr curve", e);
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Learning-rate sweep", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..y_max)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("learning rate")
            .y_desc("loss")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|x| e(&x))?;
        chart
            .draw_series(LineSeries::new(finite, BLUE.stroke_width(2)))
            .map_err(|x| e(&x))?;
        if let Some(lr) = suggestion {
            chart
                .draw_series(LineSeries::new([(lr, 0.0), (lr, y_max)], RED.stroke_width(1)))
                .map_err(|x| e(&x))?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    RgbImage::from_raw(width, height, buf).ok_or_else(|| PlotError::new("lr curve", &"buffer size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(best_log10: f64) -> Vec<(f64, f64)> {
        // Loss flat at low rates, falls steepest around 10^best_log10, then explodes.
        (0..100)
            .map(|i| {
                let log10 = -7.0 + 8.0 * i as f64 / 99.0;
                let fall = 1.0 / (1.0 + (-(log10 - best_log10) * 3.0).exp());
                let blow = if log10 > best_log10 + 1.5 {
                    (log10 - best_log10 - 1.5).exp() * 5.0
                } else {
                    0.0
                };
                (10f64.powf(log10), 2.0 - 1.5 * fall + blow)
            })
            .collect()
    }

    #[test]
    fn renders_the_curve() {
        let pts = sweep(-3.0);
        let img = render_lr_curve(&pts, Some(1e-3), 640, 360).unwrap();
        assert_eq!(img.dimensions(), (640, 360));
        let blue = img.pixels().filter(|p| p.0 == [0, 0, 255]).count();
        let red = img.pixels().filter(|p| p.0 == [255, 0, 0]).count();
        assert!(blue > 100 && red > 50, "{blue} {red}");
    }
}
