//! A latency percentile plot as a standalone SVG, drawn the way the HdrHistogram plotter
//! draws `.hgrm` files: the x axis is `log10(1 / (1 - percentile))`, so 0%, 90%, 99%, 99.9%,
//! 99.99% are evenly spaced and the tail gets as much room as the body; the y axis is
//! latency in milliseconds, linear from zero.
//!
//! Written by hand (a few dozen elements) so a report needs no plotting dependency and
//! opens in any browser.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::hgrm::{percentiles, TICKS_PER_HALF_DISTANCE};

/// One curve: `(percentile as a fraction 0..=1, latency in ms)` points, percentiles rising.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// The percentile steps of a nanosecond histogram, in milliseconds.
    pub fn from_histogram(name: &str, h: &Histogram<u64>) -> Series {
        let points = if h.is_empty() {
            Vec::new()
        } else {
            percentiles(h, TICKS_PER_HALF_DISTANCE)
                .iter()
                .map(|s| (s.percentile / 100.0, s.value as f64 / 1e6))
                .collect()
        };
        Series {
            name: name.to_string(),
            points,
        }
    }
}

const W: f64 = 960.0;
const H: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 64.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// `log10(1/(1-q))`, with 100% (infinite) mapped to `cap`.
fn x_of(q: f64, cap: f64) -> f64 {
    if q >= 1.0 {
        cap
    } else {
        (1.0 / (1.0 - q.max(0.0))).log10().min(cap)
    }
}

/// A "nice" axis maximum and step (1, 2, 2.5 or 5 times a power of ten), about 5 steps.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Trims a tick label: 0.5, 2, 2.5, 0.025.
fn num(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// The percentile label of decade `k` of the x axis: 0%, 90%, 99%, 99.9%, ...
fn pct_label(k: u32) -> String {
    match k {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        _ => format!("99.{}%", "9".repeat(k as usize - 2)),
    }
}

/// The plot. The x axis runs at least to 99.99% and further (up to 99.99999%) when a series
/// has enough samples to resolve it.
pub fn percentile_plot(title: &str, series: &[Series]) -> String {
    let decades = series
        .iter()
        .filter_map(|s| {
            s.points
                .iter()
                .filter(|p| p.0 < 1.0)
                .map(|p| x_of(p.0, 12.0))
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        })
        .fold(4.0f64, f64::max)
        .ceil()
        .min(7.0) as u32;
    let xmax = f64::from(decades);
    let ymax_data = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let (ymax, ystep) = nice_axis(ymax_data * 1.05);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / xmax * pw;
    let py = |y: f64| TOP + ph - (y / ymax).min(1.0) * ph;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    // Grid and axes.
    let _ = writeln!(o, r##"<g stroke="#ddd" stroke-width="1">"##);
    let mut y = 0.0;
    while y <= ymax + ystep / 2.0 {
        let _ = writeln!(
            o,
            r#"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}"/>"#,
            py(y),
            LEFT + pw
        );
        y += ystep;
    }
    for k in 0..=decades {
        let x = px(f64::from(k));
        let _ = writeln!(
            o,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}"/>"#,
            TOP + ph
        );
    }
    let _ = writeln!(o, "</g>");
    let _ = writeln!(
        o,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let mut y = 0.0;
    while y <= ymax + ystep / 2.0 {
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            py(y) + 4.0,
            num(y)
        );
        y += ystep;
    }
    for k in 0..=decades {
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            px(f64::from(k)),
            TOP + ph + 20.0,
            pct_label(k)
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">Percentile</text>"#,
        LEFT + pw / 2.0,
        H - 16.0
    );
    let _ = writeln!(
        o,
        r#"<text x="20" y="{0}" text-anchor="middle" transform="rotate(-90 20 {0})">Latency (ms)</text>"#,
        TOP + ph / 2.0
    );
    // Curves.
    for (i, s) in series.iter().enumerate() {
        if s.points.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(q, v)| format!("{:.1},{:.1}", px(x_of(q, xmax)), py(v)))
            .collect();
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            pts.join(" "),
            esc(&s.name)
        );
    }
    // Legend.
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let ly = TOP + 18.0 + 18.0 * i as f64;
        let _ = writeln!(
            o,
            r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="{color}" stroke-width="3"/>"#,
            LEFT + 14.0,
            ly - 4.0,
            LEFT + 38.0
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{ly}">{}</text>"#,
            LEFT + 44.0,
            esc(&s.name)
        );
    }
    let _ = writeln!(o, "</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
        let key = format!(" {name}=\"");
        let at = tag.find(&key).unwrap() + key.len();
        let end = tag[at..].find('"').unwrap();
        &tag[at..at + end]
    }

    #[test]
    fn axes_curves_and_legend() {
        let mut h = crate::stats::new_histogram();
        for i in 1..=10_000u64 {
            h.record(i * 100_000).unwrap(); // 0.1 .. 1000 ms
        }
        let a = Series::from_histogram("ack <p&q>", &h);
        let b = Series {
            name: "delivery".into(),
            points: vec![(0.0, 1.0), (0.9, 2.0), (0.999, 5.0), (1.0, 9.0)],
        };
        let svg = percentile_plot("throughput \"run\"", &[a, b]);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        for label in [
            "0%",
            "90%",
            "99%",
            "99.9%",
            "99.99%",
            "Percentile",
            "Latency (ms)",
        ] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
        assert!(svg.contains("ack &lt;p&amp;q&gt;"));
        assert!(svg.contains("throughput &quot;run&quot;"));
        let lines: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
        assert_eq!(lines.len(), 2);
        // Points stay inside the plot area and go right and up.
        for l in lines {
            let pts: Vec<(f64, f64)> = attr(l, "points")
                .split(' ')
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect();
            for w in pts.windows(2) {
                assert!(w[0].0 <= w[1].0 && w[0].1 >= w[1].1, "{w:?}");
            }
            for (x, y) in pts {
                assert!((LEFT..=W - RIGHT).contains(&x), "{x}");
                assert!((TOP..=H - BOTTOM).contains(&y), "{y}");
            }
        }
        // Every opened element is closed or self-closing.
        let opened = svg.matches('<').count();
        assert_eq!(
            opened,
            2 * svg.matches("</").count() + svg.matches("/>").count()
        );
    }

    #[test]
    fn more_samples_widen_the_axis() {
        let s = Series {
            name: "x".into(),
            points: vec![(0.0, 1.0), (0.999_999, 2.0), (1.0, 3.0)],
        };
        let svg = percentile_plot("t", &[s]);
        assert!(svg.contains(">99.9999%</text>"));
        assert!(!svg.contains(">99.99999%</text>"));
    }

    #[test]
    fn empty_series_still_draws_axes() {
        let svg = percentile_plot(
            "nothing",
            &[Series {
                name: "none".into(),
                points: vec![],
            }],
        );
        assert!(svg.contains(">99.99%</text>"));
        assert!(!svg.contains("<polyline"));
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_axis(9.3), (10.0, 2.0));
        assert_eq!(nice_axis(0.42), (0.5, 0.1));
        assert_eq!(nice_axis(120.0), (125.0, 25.0));
        assert_eq!(num(2.5), "2.5");
        assert_eq!(num(0.0), "0");
        assert_eq!(pct_label(0), "0%");
        assert_eq!(pct_label(3), "99.9%");
        assert_eq!(pct_label(5), "99.999%");
    }
}
