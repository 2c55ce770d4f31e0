//! The client's latency over time as an SVG picture, so that a failover shows as a spike.
//!
//! The demo records, for every request, `(seconds since start, latency in ms)` and a few
//! labelled [`Event`]s ("primary killed", "backup live", ...). [`latency_svg`] draws each
//! request as a point on a log-scale latency axis, each event as a vertical dashed line with
//! its label, and labels the largest latency with its value.
//!
//! Only plotters' SVG backend is used, without font files: the SVG holds `<text>` elements
//! that the viewer renders with its own fonts.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Size of the picture in pixels.
const SIZE: (u32, u32) = (1000, 500);
/// Vertical distance between the rows of event labels, in pixels.
const LABEL_ROW_PX: i32 = 16;
/// Event labels cycle through this many rows, so that close events don't overlap.
const LABEL_ROWS: usize = 4;

/// A labelled moment of the run, drawn as a vertical dashed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the start, on the same clock as the samples.
    pub at_s: f64,
    pub label: String,
}

impl Event {
    pub fn new(at_s: f64, label: impl Into<String>) -> Self {
        Event {
            at_s,
            label: label.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot write the latency plot to {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no latency samples to plot")]
    NoSamples,
    #[error(
        "latency sample {index} cannot be plotted: t = {t_s} s, latency = {latency_ms} ms \
         (both must be finite and the latency > 0 for the log scale)"
    )]
    InvalidSample {
        index: usize,
        t_s: f64,
        latency_ms: f64,
    },
    #[error("event {label:?} has a non-finite time {at_s}")]
    InvalidEvent { label: String, at_s: f64 },
    #[error("plotting backend: {0}")]
    Backend(String),
}

fn backend<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Backend(e.to_string())
}

/// Latency of each request (points, log-scale y in ms), vertical dashed lines with labels for
/// events, and the maximum latency labelled with its value. Writes an SVG of about 1000x500
/// pixels to `path`; the file is only created once the picture is complete.
pub fn latency_svg(
    path: &Path,
    title: &str,
    samples: &[(f64, f64)],
    events: &[Event],
) -> Result<(), PlotError> {
    let svg = render(title, samples, events)?;
    std::fs::write(path, svg).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Axis bounds: the x range covers the samples and the events, the y range goes from a bit
/// below the smallest latency to a bit above the largest.
struct Bounds {
    x: (f64, f64),
    y: (f64, f64),
    /// The sample with the largest latency.
    max: (f64, f64),
}

fn bounds(samples: &[(f64, f64)], events: &[Event]) -> Result<Bounds, PlotError> {
    let (&first, _) = samples.split_first().ok_or(PlotError::NoSamples)?;
    let mut max = first;
    let (mut x_lo, mut x_hi) = (first.0, first.0);
    let mut y_lo = first.1;
    for (index, &(t_s, latency_ms)) in samples.iter().enumerate() {
        if !t_s.is_finite() || !latency_ms.is_finite() || latency_ms <= 0.0 {
            return Err(PlotError::InvalidSample {
                index,
                t_s,
                latency_ms,
            });
        }
        x_lo = x_lo.min(t_s);
        x_hi = x_hi.max(t_s);
        y_lo = y_lo.min(latency_ms);
        if latency_ms > max.1 {
            max = (t_s, latency_ms);
        }
    }
    for e in events {
        if !e.at_s.is_finite() {
            return Err(PlotError::InvalidEvent {
                label: e.label.clone(),
                at_s: e.at_s,
            });
        }
        x_lo = x_lo.min(e.at_s);
        x_hi = x_hi.max(e.at_s);
    }
    // Start at 0 when the run starts near 0, leave a little room on the right.
    if x_lo >= 0.0 {
        x_lo = 0.0;
    }
    let span = if x_hi > x_lo { x_hi - x_lo } else { 1.0 };
    x_hi += span * 0.02;
    // A decade of room above the maximum for the event labels, which sit at the top.
    let y = (y_lo / 2.0, max.1 * 10.0);
    Ok(Bounds {
        x: (x_lo, x_hi),
        y,
        max,
    })
}

/// An axis tick in ms: as few digits as it needs (0.1, 0.5, 1, 10, 1000).
fn tick_ms(ms: f64) -> String {
    let s = if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.4}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A latency in ms, with a precision that suits its size.
fn format_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}

fn render(title: &str, samples: &[(f64, f64)], events: &[Event]) -> Result<String, PlotError> {
    let b = bounds(samples, events)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, title, samples, events, &b)?;
        root.present().map_err(backend)?;
    }
    Ok(svg)
}

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    samples: &[(f64, f64)],
    events: &[Event],
    b: &Bounds,
) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(backend)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(b.x.0..b.x.1, (b.y.0..b.y.1).log_scale())
        .map_err(backend)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("request latency (ms, log scale)")
        .y_label_formatter(&|v| tick_ms(*v))
        .x_label_formatter(&|v| format!("{v:.1}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(backend)?;

    let point_style = BLUE.mix(0.6).filled();
    chart
        .draw_series(
            samples
                .iter()
                .map(|&(t, ms)| Circle::new((t, ms), 2, point_style)),
        )
        .map_err(backend)?;

    // Events: a dashed line over the full height, the label at its top, rows staggered so
    // that events close in time (kill, then backup live 0.2 s later) stay readable.
    let event_style = RED.stroke_width(1);
    let label_font = ("sans-serif", 13).into_font().color(&RED);
    let plot_top = chart.backend_coord(&(b.x.0, b.y.1)).1;
    let plot_right = chart.backend_coord(&(b.x.1, b.y.1)).0;
    for (i, e) in events.iter().enumerate() {
        chart
            .draw_series(DashedLineSeries::new(
                [(e.at_s, b.y.0), (e.at_s, b.y.1)],
                6,
                4,
                event_style,
            ))
            .map_err(backend)?;
        let x = chart.backend_coord(&(e.at_s, b.y.1)).0;
        let y = plot_top + 4 + LABEL_ROW_PX * i32::try_from(i % LABEL_ROWS).unwrap_or(0);
        // Labels of events in the right half grow to the left, so they stay inside.
        let (pos, dx) = if x > plot_right - (plot_right - root.get_base_pixel().0) / 3 {
            (Pos::new(HPos::Right, VPos::Top), -4)
        } else {
            (Pos::new(HPos::Left, VPos::Top), 4)
        };
        root.draw(&Text::new(
            e.label.clone(),
            (x + dx, y),
            label_font.pos(pos),
        ))
        .map_err(backend)?;
    }

    // The maximum: a ring around its point and its value.
    let (max_t, max_ms) = b.max;
    chart
        .draw_series(std::iter::once(Circle::new(
            (max_t, max_ms),
            5,
            BLACK.stroke_width(1),
        )))
        .map_err(backend)?;
    // Its value beside it, on the side with more room.
    let (px, py) = chart.backend_coord(&(max_t, max_ms));
    let (max_pos, dx) = if px > plot_right - 200 {
        (Pos::new(HPos::Right, VPos::Center), -9)
    } else {
        (Pos::new(HPos::Left, VPos::Center), 9)
    };
    root.draw(&Text::new(
        format!("max {} ms at {:.2} s", format_ms(max_ms), max_t),
        (px + dx, py),
        ("sans-serif", 14).into_font().color(&BLACK).pos(max_pos),
    ))
    .map_err(backend)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ~0.2 ms latencies for 20 s at 20 requests/s, a 1500 ms spike at the failover.
    fn synthetic() -> Vec<(f64, f64)> {
        (0..400)
            .map(|i| {
                let t = f64::from(i) * 0.05;
                let ms = if (12.3..12.6).contains(&t) {
                    1500.0
                } else {
                    0.15 + f64::from(i % 7) * 0.02
                };
                (t, ms)
            })
            .collect()
    }

    #[test]
    fn writes_svg_with_points_events_title_and_max() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("latency.svg");
        let samples = synthetic();
        let events = [
            Event::new(12.3, "primary killed"),
            Event::new(12.5, "backup live & serving"),
        ];
        latency_svg(&path, "Failover <demo>", &samples, &events).expect("plot");

        let svg = std::fs::read_to_string(&path).expect("read svg");
        assert!(
            svg.contains("<svg"),
            "not an SVG: {}",
            &svg[..svg.len().min(200)]
        );
        assert!(svg.contains("Failover &lt;demo&gt;"), "title missing");
        assert!(svg.contains("primary killed"), "first event label missing");
        assert!(
            svg.contains("backup live &amp; serving"),
            "second event label missing"
        );
        assert!(svg.contains("max 1500 ms at 12.30 s"), "max label missing");
        let circles = svg.matches("<circle").count();
        assert!(
            circles >= samples.len(),
            "{circles} circles for {} samples",
            samples.len()
        );
        // Two dashed event lines are drawn as many short segments.
        assert!(svg.matches("<polyline").count() + svg.matches("<line").count() > 20);
    }

    #[test]
    fn spike_is_drawn_higher_than_the_baseline() {
        // The y of a circle's centre is smaller (higher on the picture) for larger latency.
        let svg = render("t", &[(0.0, 0.2), (1.0, 1000.0), (2.0, 0.2)], &[]).expect("render");
        let ys: Vec<f64> = svg
            .split("<circle")
            .skip(1)
            .take(3)
            .map(|c| {
                let rest = &c[c.find("cy=\"").expect("cy") + 4..];
                rest[..rest.find('"').expect("quote")]
                    .parse()
                    .expect("number")
            })
            .collect();
        assert_eq!(ys.len(), 3);
        assert!(ys[1] + 100.0 < ys[0], "{ys:?}");
        assert!((ys[0] - ys[2]).abs() < 1e-6, "{ys:?}");
    }

    #[test]
    fn empty_samples_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.svg");
        let err = latency_svg(&path, "t", &[], &[Event::new(1.0, "x")]).unwrap_err();
        assert!(matches!(err, PlotError::NoSamples), "{err:?}");
        assert!(!path.exists());
    }

    #[test]
    fn invalid_samples_are_errors() {
        for bad in [
            (1.0, 0.0),
            (1.0, -3.0),
            (f64::NAN, 1.0),
            (1.0, f64::INFINITY),
        ] {
            let err = render("t", &[(0.0, 1.0), bad], &[]).unwrap_err();
            assert!(
                matches!(err, PlotError::InvalidSample { index: 1, .. }),
                "{bad:?}: {err:?}"
            );
        }
        let err = render("t", &[(0.0, 1.0)], &[Event::new(f64::NAN, "e")]).unwrap_err();
        assert!(matches!(err, PlotError::InvalidEvent { .. }), "{err:?}");
    }

    #[test]
    fn missing_directory_error_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no-such-dir").join("latency.svg");
        let err = latency_svg(&path, "t", &synthetic(), &[]).unwrap_err();
        assert!(matches!(err, PlotError::Io { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_ms(0.1), "0.1");
        assert_eq!(tick_ms(0.30000000000000004), "0.3");
        assert_eq!(tick_ms(0.05), "0.05");
        assert_eq!(tick_ms(1.0), "1");
        assert_eq!(tick_ms(2.5), "2.5");
        assert_eq!(tick_ms(1000.0000001), "1000");
    }

    #[test]
    fn single_sample_and_equal_times_still_plot() {
        let svg = render("one", &[(5.0, 3.0)], &[Event::new(5.0, "same time")]).expect("render");
        assert!(svg.contains("same time"));
        assert!(svg.contains("max 3.00 ms at 5.00 s"));
    }
}
