//! Training curves as PNG files, shared by the examples (`#[path = "common/plot.rs"] mod plot;`).
//!
//! Text is drawn with DejaVu Sans, compiled in (see `assets/fonts/README.md`), so the plots
//! look the same on every machine and need no system fonts.

// Each example uses only part of this file.
#![allow(dead_code)]

use std::error::Error;
use std::path::Path;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordu32;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// One chart: named curves over a common x axis that counts from 1 (epochs or steps).
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// A logarithmic y axis (for losses, which shrink by orders of magnitude).
    pub log_y: bool,
    /// `(legend, values)`; value `i` is drawn at x = `i + 1`.
    pub series: &'a [(&'a str, &'a [f32])],
}

/// The two charts of a classifier's training: the training loss per epoch (logarithmic) and
/// the test accuracy in percent, side by side, as a PNG at `path`.
pub fn plot_loss_and_accuracy(
    path: impl AsRef<Path>,
    losses: &[f32],
    accuracies: &[f32],
) -> Result<(), Box<dyn Error>> {
    plot_charts(
        path,
        &[
            Chart {
                title: "training loss",
                x_label: "epoch",
                y_label: "cross-entropy",
                log_y: true,
                series: &[("train", losses)],
            },
            Chart {
                title: "test accuracy",
                x_label: "epoch",
                y_label: "%",
                log_y: false,
                series: &[("test", accuracies)],
            },
        ],
    )
}

/// Draws `charts` side by side, as a PNG at `path`.
pub fn plot_charts(path: impl AsRef<Path>, charts: &[Chart<'_>]) -> Result<(), Box<dyn Error>> {
    let path = path.as_ref();
    // Fail early with a plain message if the file cannot be written at all.
    std::fs::File::create(path)
        .map_err(|e| format!("cannot write the plot {}: {e}", path.display()))?;
    draw(path, charts).map_err(|e| format!("cannot write the plot {}: {e}", path.display()).into())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn draw(path: &Path, charts: &[Chart<'_>]) -> Result<(), Box<dyn Error>> {
    register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "the bundled font is not a valid TrueType font")?;
    let width = 640 * charts.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, chart) in root
        .split_evenly((1, charts.len().max(1)))
        .iter()
        .zip(charts)
    {
        draw_chart(area, chart)?;
    }
    root.present()?;
    Ok(())
}

fn draw_chart(area: &Area<'_>, chart: &Chart<'_>) -> Result<(), Box<dyn Error>> {
    let points = chart.series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let x_range = 1..points.max(2) as u32;
    // The range of the values that can be drawn (a log axis cannot show zero).
    let drawable = |v: &f32| v.is_finite() && (!chart.log_y || *v > 0.0);
    let values = chart.series.iter().flat_map(|(_, v)| v.iter().copied());
    let (low, high) = values
        .filter(drawable)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64);
    if chart.log_y {
        let (low, high) = if low <= high { (low, high) } else { (0.1, 1.0) };
        let y_range = (low / 1.25..high * 1.25).log_scale();
        draw_curves(
            builder.build_cartesian_2d(x_range, y_range)?,
            chart,
            drawable,
        )
    } else {
        let (low, high) = if low <= high { (low, high) } else { (0.0, 1.0) };
        let margin = ((high - low) * 0.05).max(1e-3);
        let y_range = low - margin..high + margin;
        draw_curves(
            builder.build_cartesian_2d(x_range, y_range)?,
            chart,
            drawable,
        )
    }
}

fn draw_curves<'a, Y>(
    mut context: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordu32, Y>>,
    chart: &Chart<'_>,
    drawable: impl Fn(&f32) -> bool,
) -> Result<(), Box<dyn Error>>
where
    Y: Ranged<ValueType = f32> + ValueFormatter<f32>,
{
    context
        .configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, (name, values)) in chart.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let curve = (1..)
            .zip(values.iter().copied())
            .filter(|(_, y)| drawable(y));
        context
            .draw_series(LineSeries::new(curve, color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    // With a single curve, the title says what it is.
    if chart.series.len() > 1 {
        context
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// A named curve through explicit `(x, y)` points.
pub struct Curve<'a> {
    pub name: &'a str,
    pub points: &'a [(f32, f32)],
    /// Marks each point with a dot (for curves of few points).
    pub markers: bool,
}

/// Draws `curves` over a continuous x axis (e.g. epochs with fractions, for losses recorded
/// within an epoch), on a linear y axis, as a PNG at `path`.
pub fn plot_curves(
    path: impl AsRef<Path>,
    title: &str,
    x_label: &str,
    y_label: &str,
    curves: &[Curve<'_>],
) -> Result<(), Box<dyn Error>> {
    let path = path.as_ref();
    std::fs::File::create(path)
        .map_err(|e| format!("cannot write the plot {}: {e}", path.display()))?;
    draw_xy(path, title, x_label, y_label, curves)
        .map_err(|e| format!("cannot write the plot {}: {e}", path.display()).into())
}

fn draw_xy(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    curves: &[Curve<'_>],
) -> Result<(), Box<dyn Error>> {
    register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "the bundled font is not a valid TrueType font")?;
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let finite = |&(x, y): &(f32, f32)| x.is_finite() && y.is_finite();
    let points = || {
        curves
            .iter()
            .flat_map(|c| c.points.iter().copied().filter(finite))
    };
    let span = |values: &mut dyn Iterator<Item = f32>| {
        values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
    };
    let (x_low, x_high) = span(&mut points().map(|p| p.0));
    let (y_low, y_high) = span(&mut points().map(|p| p.1));
    let (x_low, x_high) = if x_low < x_high {
        (x_low, x_high)
    } else {
        (0.0, 1.0)
    };
    let (y_low, y_high) = if y_low <= y_high {
        (y_low, y_high)
    } else {
        (0.0, 1.0)
    };
    let margin = ((y_high - y_low) * 0.05).max(1e-3);
    let mut context = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x_low..x_high, y_low - margin..y_high + margin)?;
    context
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, curve) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line = curve.points.iter().copied().filter(finite);
        context
            .draw_series(LineSeries::new(line, color.stroke_width(2)))?
            .label(curve.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        if curve.markers {
            let dots = curve.points.iter().copied().filter(finite);
            context.draw_series(dots.map(|p| Circle::new(p, 4, color.filled())))?;
        }
    }
    context
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
