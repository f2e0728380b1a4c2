//! `convjit bench --plot`: an SVG bar chart of MACs per cycle per layer and
//! engine, with the measured ceiling drawn across.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Report;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// A colour per engine, the same in every chart.
fn colour(engine: Engine) -> RGBColor {
    match engine {
        Engine::Jit => RGBColor(31, 119, 180),
        Engine::Naive => RGBColor(214, 39, 40),
        Engine::Im2col => RGBColor(255, 127, 14),
        Engine::Reference => RGBColor(127, 127, 127),
    }
}

/// The chart of `report` as SVG text.
pub fn plot_svg(report: &Report) -> Result<String> {
    let mut svg = String::new();
    draw(report, &mut svg).map_err(|e| Error::Plot(e.to_string()))?;
    Ok(svg)
}

/// Layer groups' worth of room above the bars for the legend.
const LEGEND_ROWS: f64 = 1.3;

/// Horizontal bars (layer names stay readable), one group per layer in suite
/// order from the top, on a log axis: the engines differ by up to 100×.
fn draw(report: &Report, svg: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let layers = report.layers();
    let engines = report.engines();
    let group = 22 * engines.len().max(1) as u32 + 12;
    let height = 160 + (group as f64 * (layers.len() as f64 + LEGEND_ROWS)) as u32;
    let root = SVGBackend::with_string(svg, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let values = report.results.iter().map(|r| r.macs_per_cycle).filter(|&v| v > 0.0);
    let ceiling = report.ceiling_macs_per_cycle;
    let right = values.clone().fold(ceiling, f64::max) * 2.0;
    let left = values.fold(ceiling, f64::min) / 2.0;
    let threads = report.results.iter().map(|r| r.threads).max().unwrap_or(1);
    let n = layers.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "MACs per TSC cycle (macs_valid), {threads} thread{}, {}",
                if threads == 1 { "" } else { "s" },
                report.machine.cpu
            ),
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(150)
        // Headroom above the first layer for the legend.
        .build_cartesian_2d((left..right).log_scale(), 0f64..n + LEGEND_ROWS)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .y_labels(0)
        .x_desc("MACs / TSC cycle (log scale)")
        .draw()?;

    // The layer names, beside the middle of their groups (the axis's own
    // labels fall where its tick algorithm puts them, not on the groups).
    let name_style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (k, layer) in layers.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(left, n - k as f64 - 0.5));
        root.draw(&Text::new(layer.to_string(), (x - 8, y), name_style.clone()))?;
    }

    let bar = 0.8 / engines.len().max(1) as f64;
    for (j, &engine) in engines.iter().enumerate() {
        let style = colour(engine).filled();
        let bars = report.results.iter().filter(|r| r.engine == engine).filter_map(|r| {
            let k = layers.iter().position(|&l| l == r.layer)?;
            let y1 = n - k as f64 - 0.1 - j as f64 * bar;
            Some(Rectangle::new([(left, y1 - bar), (r.macs_per_cycle.max(left), y1)], style))
        });
        chart
            .draw_series(bars)?
            .label(engine.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], style));
    }
    chart
        .draw_series(LineSeries::new([(ceiling, 0.0), (ceiling, n)], BLACK.stroke_width(2)))?
        .label(format!("ceiling {ceiling:.2} (Cranelift f32x4 FMA, data in L1)"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
