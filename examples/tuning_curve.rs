//! Plots how fast the tuner finds its best: for each layer named, the best
//! speedup over the heuristic found so far against the tuning time, from
//! `convjit tune --records` files.
//!
//! ```text
//! cargo run --release --example tuning_curve -- OUT.svg RECORDS.jsonl LAYER...
//! ```
//!
//! The speedup of a candidate is 1 / its `relative` (its run time over the
//! heuristic's, timed in pairs with it); candidates whose timing was cut
//! short and the final confirmation are left out. A step marks each new
//! best. When the file holds several runs of a layer, the last is drawn.
//! A dot at the end marks what the confirmation's validation measured for
//! the schedule it tried against the heuristic's (1 when it tried none):
//! the search's best score is the best of many noisy ones and flatters it.

use std::path::Path;

use convjit::tune::records;
use plotters::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, file, layers @ ..] = &args[..] else {
        return Err("usage: tuning_curve OUT.svg RECORDS.jsonl LAYER...".into());
    };
    let (records, skipped) = records::read(Path::new(file))?;
    if skipped > 0 {
        eprintln!("{file}: {skipped} lines skipped");
    }
    // (layer, [(seconds, best speedup so far)])
    let mut curves = Vec::new();
    for layer in layers {
        // The layer's last run, when the file holds several.
        let of_layer = |r: &&records::Record| r.layer.as_deref() == Some(layer.as_str());
        let last = records.iter().filter(of_layer).map(|r| r.started_at_ms).max().unwrap_or(0);
        let run: Vec<&records::Record> =
            records.iter().filter(of_layer).filter(|r| r.started_at_ms == last).collect();
        let mut best = 0.0f64;
        let mut points = Vec::new();
        for r in &run {
            if r.phase.starts_with("confirm") || r.cut {
                continue;
            }
            if let Some(rel) = r.relative {
                let speedup = 1.0 / rel;
                if speedup > best {
                    if let Some(&(_, last)) = points.last() {
                        points.push((r.elapsed_s, last));
                    }
                    best = speedup;
                    points.push((r.elapsed_s, best));
                }
            }
        }
        let end = run.iter().map(|r| r.elapsed_s).fold(0.0, f64::max);
        points.push((end, best));
        if points.len() < 2 {
            return Err(format!("{file} holds no records of {layer}").into());
        }
        // What the confirmation's validation measured for the schedule it
        // tried against the heuristic's (none tried: the heuristic's kept).
        let validated = run
            .iter()
            .filter(|r| r.phase == "confirm-validate")
            .filter_map(|r| r.relative)
            .filter(|&rel| rel != 1.0)
            .map(|rel| 1.0 / rel)
            .next_back()
            .unwrap_or(1.0);
        curves.push((layer.clone(), points, validated));
    }
    let seconds = curves.iter().flat_map(|c| c.1.iter().map(|p| p.0)).fold(1.0, f64::max);
    let bottom = curves.iter().map(|c| c.2).fold(0.9, f64::min) - 0.02;
    let top = curves.iter().flat_map(|c| c.1.iter().map(|p| p.1)).fold(1.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Best search score so far (line) and the winner's validation (dot), over the heuristic",
                ("sans-serif", 18),
            )
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((0.05f64..seconds * 1.15).log_scale(), bottom..top * 1.05)?;
        chart
            .configure_mesh()
            .x_desc("tuning time, seconds (log scale)")
            .y_desc("speedup over the heuristic")
            .draw()?;
        chart.draw_series(LineSeries::new([(0.05, 1.0), (seconds * 1.05, 1.0)], BLACK.mix(0.4)))?;
        for (i, (layer, points, validated)) in curves.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|&(t, s)| (t.max(0.05), s)),
                    colour.stroke_width(2),
                ))?
                .label(format!("{layer}: validated {validated:.2}×"))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 14, y)], colour.stroke_width(2))
                });
            // The validation's figure, at the end of the run: the search's
            // best score is the best of many noisy ones, and flatters.
            let end = points.last().map_or(seconds, |p| p.0);
            chart.draw_series([Circle::new((end, *validated), 5, colour.filled())])?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    convjit::atomic::write(Path::new(out), |f| f.write_all(svg.as_bytes()))?;
    Ok(())
}
