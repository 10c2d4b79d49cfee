//! An SVG plot of latency by percentile, hand-written (no dependency).
//!
//! The x axis is HdrHistogram's "nines" scale, x = -log10(1 - p): 0% at 0, 90% at 1, 99% at 2,
//! 99.9% at 3, so each further nine of the tail gets as much room as the whole body.
//!
//! The y axis is logarithmic. HdrHistogram's own plotter draws latency linear from zero, which
//! reads well when the whole distribution fits in one decade. A network service's rarely does:
//! tens of microseconds at the median, milliseconds in the far tail, now and then a stall of a
//! second. On a linear axis the largest value sets the scale, and everything under a hundredth
//! of it (the body and most of the tail, where runs usually differ) lies flat on the floor
//! line. On a log axis each decade gets the same height, so median, tail and outliers all stay
//! readable, and "twice as slow" is the same vertical gap at any height. Grid lines at 1, 2
//! and 5 of each decade, labelled with their unit, keep the values easy to read off.

use std::fmt::Write;

use hdrhistogram::Histogram;

use super::table::format_nanos;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 560.0;
/// The plot area: left, top, right, bottom edges. The right margin leaves room for half of
/// the widest x label ("99.9999%"), centred on the right edge.
const LEFT: f64 = 84.0;
const TOP: f64 = 56.0;
const RIGHT: f64 = WIDTH - 48.0;
const BOTTOM: f64 = HEIGHT - 64.0;

/// Line colours, distinct in print and for the common colour-vision deficiencies (Okabe-Ito's
/// palette less its yellow, which vanishes on white); runs past the seventh reuse them dashed.
const COLOURS: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];

/// The most nines the x axis shows: 99.9999%.
const MAX_NINES: u32 = 6;
/// Curve points per nine.
const POINTS_PER_NINE: u32 = 100;

/// An SVG image (960x560) of latency by percentile for each run: the percentile on a "nines"
/// x axis (0%, 90%, 99%, 99.9%, ...), the latency on a logarithmic y axis, one coloured line
/// per run, and a legend giving each run's label, sample count, p99 and maximum.
///
/// The x axis reaches as many nines as the largest run has samples for (10^k samples support
/// k nines), at least 99% and at most 99.9999%. Each line ends where its run's samples end,
/// with a step up to a dot at the run's maximum.
///
/// ```
/// use ringwire::report::{histogram, svg};
///
/// let mut hist = histogram();
/// for i in 1..=1000 {
///     hist.record(i * 1_000).unwrap();
/// }
/// let image = svg("echo, 1 core", &[("baseline", &hist)]);
/// assert!(image.starts_with("<svg") && image.ends_with("</svg>\n"));
/// std::fs::write(std::env::temp_dir().join("echo.svg"), image).unwrap();
/// ```
pub fn svg(title: &str, runs: &[(&str, &Histogram<u64>)]) -> String {
    let most = runs.iter().map(|(_, h)| h.len()).max().unwrap_or(0);
    let nines = ((most.max(1) as f64).log10().ceil() as u32).clamp(2, MAX_NINES);
    let recorded = runs.iter().filter(|(_, h)| !h.is_empty());
    let low = recorded.clone().map(|(_, h)| h.min()).min();
    let high = recorded.map(|(_, h)| h.max()).max();
    let plot = Plot {
        nines,
        y: YAxis::new(low.unwrap_or(1_000), high.unwrap_or(10_000)),
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, "<title>{}</title>", escape(title));
    let _ = writeln!(
        s,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="32" text-anchor="middle" font-size="18" font-weight="bold">{}</text>"#,
        (LEFT + RIGHT) / 2.0,
        escape(title)
    );
    plot.axes(&mut s);
    let lines: Vec<Vec<(f64, f64)>> = runs.iter().map(|(_, h)| plot.line(h)).collect();
    plot.draw_lines(&mut s, runs, &lines);
    legend(&mut s, runs, &lines);
    s.push_str("</svg>\n");
    s
}

/// Where things go on the plot area.
struct Plot {
    /// Nines at the right edge of the x axis.
    nines: u32,
    y: YAxis,
}

impl Plot {
    /// The pixel x of a point `x_nines` along the x axis.
    fn px(&self, x_nines: f64) -> f64 {
        LEFT + (RIGHT - LEFT) * x_nines / f64::from(self.nines)
    }

    /// The pixel y of a latency.
    fn py(&self, nanos: f64) -> f64 {
        let (lo, hi) = (self.y.lo.log10(), self.y.hi.log10());
        BOTTOM - (BOTTOM - TOP) * (nanos.max(self.y.lo).log10() - lo) / (hi - lo)
    }

    /// Grid, tick labels, frame and axis titles.
    fn axes(&self, s: &mut String) {
        let ticks = self.y.ticks();
        let labelled_every_tick = self.y.labels_every_tick();
        s.push_str("<g stroke-width=\"1\">\n");
        for k in 0..=self.nines {
            let px = self.px(f64::from(k));
            let _ = writeln!(
                s,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{BOTTOM}" stroke="#e0e0e0"/>"##
            );
        }
        for &(nanos, decade) in &ticks {
            let py = self.py(nanos);
            let colour = if decade { "#d0d0d0" } else { "#ececec" };
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" y1="{py:.1}" x2="{RIGHT}" y2="{py:.1}" stroke="{colour}"/>"#
            );
        }
        s.push_str("</g>\n<g fill=\"#333\">\n");
        for k in 0..=self.nines {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                self.px(f64::from(k)),
                BOTTOM + 20.0,
                nines_label(k)
            );
        }
        for &(nanos, decade) in &ticks {
            if decade || labelled_every_tick {
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                    LEFT - 8.0,
                    self.py(nanos) + 4.5,
                    tick_label(nanos)
                );
            }
        }
        s.push_str("</g>\n");
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
            RIGHT - LEFT,
            BOTTOM - TOP
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">Percentile</text>"#,
            (LEFT + RIGHT) / 2.0,
            HEIGHT - 18.0
        );
        let (mid_x, mid_y) = (20.0, (TOP + BOTTOM) / 2.0);
        let _ = writeln!(
            s,
            r#"<text x="{mid_x}" y="{mid_y}" text-anchor="middle" font-size="14" transform="rotate(-90 {mid_x} {mid_y})">Latency (log scale)</text>"#
        );
    }

    /// The pixel points of the line of `hist`; none if it is empty.
    fn line(&self, hist: &Histogram<u64>) -> Vec<(f64, f64)> {
        if hist.is_empty() {
            return Vec::new();
        }
        let points = curve(hist, self.nines);
        points
            .into_iter()
            .map(|(x, nanos)| (self.px(x), self.py(nanos)))
            .collect()
    }

    /// The lines of the runs, clipped to the plot area, with a dot at each maximum shown.
    fn draw_lines(
        &self,
        s: &mut String,
        runs: &[(&str, &Histogram<u64>)],
        lines: &[Vec<(f64, f64)>],
    ) {
        let _ = writeln!(
            s,
            r#"<defs><clipPath id="plot"><rect x="{}" y="{}" width="{}" height="{}"/></clipPath></defs>"#,
            LEFT - 5.0,
            TOP - 5.0,
            RIGHT - LEFT + 10.0,
            BOTTOM - TOP + 10.0
        );
        s.push_str("<g clip-path=\"url(#plot)\" fill=\"none\" stroke-width=\"2\" stroke-linejoin=\"round\">\n");
        for (i, ((_, hist), points)) in runs.iter().zip(lines).enumerate() {
            let Some(&(px, py)) = points.last() else {
                continue;
            };
            let mut attr = String::new();
            for (x, y) in points {
                let _ = write!(attr, "{x:.1},{y:.1} ");
            }
            let _ = writeln!(
                s,
                r#"<polyline {} points="{}"/>"#,
                line_style(i),
                attr.trim_end()
            );
            if reaches_max(hist, self.nines) {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="{}" stroke="none"/>"#,
                    COLOURS[i % COLOURS.len()]
                );
            }
        }
        s.push_str("</g>\n");
    }
}

/// The stroke attributes of run `i`.
fn line_style(i: usize) -> String {
    let colour = COLOURS[i % COLOURS.len()];
    if i < COLOURS.len() {
        format!(r#"stroke="{colour}""#)
    } else {
        format!(r#"stroke="{colour}" stroke-dasharray="8 4""#)
    }
}

/// Whether the samples of `hist` end within `nines` (10^nines samples or fewer), so that its
/// maximum is on the plot.
fn reaches_max(hist: &Histogram<u64>, nines: u32) -> bool {
    hist.len() <= 10u64.pow(nines)
}

/// Points (nines, nanoseconds) of the latency-by-percentile curve of `hist`, from 0% to the
/// last percentile its samples support (1 - 1/n, at log10(n) nines) or the axis end, whichever
/// comes first. Where the samples end first, the last point is the maximum, straight above:
/// it is the value of every percentile past 1 - 1/n.
fn curve(hist: &Histogram<u64>, nines: u32) -> Vec<(f64, f64)> {
    let end = (hist.len() as f64).log10().min(f64::from(nines));
    let n = (end * f64::from(POINTS_PER_NINE)).ceil().max(1.0) as u32;
    let mut points: Vec<(f64, f64)> = (0..=n)
        .map(|i| {
            let x = end * f64::from(i) / f64::from(n);
            let quantile = 1.0 - 10f64.powf(-x);
            (x, hist.value_at_quantile(quantile) as f64)
        })
        .collect();
    if reaches_max(hist, nines) {
        points.push((end, hist.max() as f64));
    }
    points
}

/// "0%", "90%", "99%", "99.9%", ... for `k` nines.
fn nines_label(k: u32) -> String {
    match k {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        _ => format!("99.{}%", "9".repeat(k as usize - 2)),
    }
}

/// The legend, inside the plot: top left, where latency lines (rising to the right) usually
/// leave room, or else bottom right, whichever of the two covers fewer points of the lines.
fn legend(s: &mut String, runs: &[(&str, &Histogram<u64>)], lines: &[Vec<(f64, f64)>]) {
    if runs.is_empty() {
        return;
    }
    let texts: Vec<String> = runs
        .iter()
        .map(|(label, hist)| {
            if hist.is_empty() {
                format!("{label} (no samples)")
            } else {
                format!(
                    "{label} (n = {}, p99 = {}, max = {})",
                    group_digits(hist.len()),
                    latency_text(hist.value_at_quantile(0.99)),
                    latency_text(hist.max())
                )
            }
        })
        .collect();
    // Helvetica at 13 px averages under 7 px a character.
    let longest = texts.iter().map(|t| t.chars().count()).max().unwrap_or(0);
    let row = 20.0;
    let width = (44.0 + longest as f64 * 7.0).min(RIGHT - LEFT - 24.0);
    let height = row * runs.len() as f64 + 10.0;
    let covered = |(x, y): (f64, f64)| {
        let inside = |&&(px, py): &&(f64, f64)| {
            px >= x - 4.0 && px <= x + width + 4.0 && py >= y - 4.0 && py <= y + height + 4.0
        };
        lines.iter().flatten().filter(inside).count()
    };
    let top_left = (LEFT + 12.0, TOP + 12.0);
    let bottom_right = (RIGHT - 12.0 - width, BOTTOM - 12.0 - height);
    let (x, y) = if covered(top_left) <= covered(bottom_right) {
        top_left
    } else {
        bottom_right
    };
    let _ = writeln!(
        s,
        "<g>\n<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{height}\" fill=\"white\" fill-opacity=\"0.9\" stroke=\"#bbb\"/>"
    );
    for (i, text) in texts.iter().enumerate() {
        let cy = y + 15.0 + row * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" {} stroke-width="2.5"/>"#,
            x + 8.0,
            x + 30.0,
            line_style(i)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            x + 38.0,
            cy + 4.5,
            escape(text)
        );
    }
    s.push_str("</g>\n");
}

/// A latency as [`format_nanos`] writes it, with the micro sign the axis labels use.
fn latency_text(nanos: u64) -> String {
    let text = format_nanos(nanos as f64);
    match text.strip_suffix("us") {
        Some(value) => format!("{value}µs"),
        None => text,
    }
}

/// `1234567` as `1,234,567`.
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Mantissas of the y ticks when decades are tall enough to label each of 1 to 9 (the closest
/// two, 8 and 9, are 0.05 decade apart: 18 px at 360 px a decade).
const FINE: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
const FINE_MIN_PX_PER_DECADE: f64 = 360.0;
/// Mantissas otherwise; each of them is labelled from 60 px a decade (2 to 5 is 0.4 decade).
const COARSE: &[f64] = &[1.0, 2.0, 5.0];
const COARSE_MIN_PX_PER_DECADE: f64 = 60.0;

/// The y axis: from a round value at or below the smallest latency to one at or above the
/// largest, in nanoseconds, with grid lines at round values in between. Round means one of
/// `mantissas` times a power of ten: 1 to 9 for a range well under a decade, else 1, 2 and 5.
struct YAxis {
    lo: f64,
    hi: f64,
    mantissas: &'static [f64],
}

impl YAxis {
    fn new(min_nanos: u64, max_nanos: u64) -> YAxis {
        let fine = YAxis::with(FINE, min_nanos, max_nanos);
        if fine.px_per_decade() >= FINE_MIN_PX_PER_DECADE {
            fine
        } else {
            YAxis::with(COARSE, min_nanos, max_nanos)
        }
    }

    fn with(mantissas: &'static [f64], min_nanos: u64, max_nanos: u64) -> YAxis {
        let lo = round_value(min_nanos.max(1) as f64, mantissas, Round::Down);
        let mut hi = round_value((max_nanos as f64).max(lo), mantissas, Round::Up);
        if hi <= lo * (1.0 + 1e-9) {
            hi = round_value(lo * 1.01, mantissas, Round::Up);
        }
        YAxis { lo, hi, mantissas }
    }

    /// Every round value from `lo` to `hi`, each with whether it is a power of ten.
    fn ticks(&self) -> Vec<(f64, bool)> {
        let mut ticks = Vec::new();
        let mut decade = 10f64.powf(self.lo.log10().floor());
        while decade <= self.hi * (1.0 + 1e-9) {
            for &m in self.mantissas {
                let v = m * decade;
                // Relative tolerance: the bounds are computed the same way, up to rounding.
                if v >= self.lo * (1.0 - 1e-9) && v <= self.hi * (1.0 + 1e-9) {
                    ticks.push((v, m == 1.0));
                }
            }
            decade *= 10.0;
        }
        ticks
    }

    /// Whether every tick gets a label, or only the powers of ten.
    fn labels_every_tick(&self) -> bool {
        self.px_per_decade() >= COARSE_MIN_PX_PER_DECADE
    }

    /// Height of one decade in pixels.
    fn px_per_decade(&self) -> f64 {
        (BOTTOM - TOP) / (self.hi.log10() - self.lo.log10())
    }
}

enum Round {
    Down,
    Up,
}

/// The nearest value of the form m times a power of ten, m one of `mantissas` (which start at
/// 1 and ascend), at or below (or above) `v`.
fn round_value(v: f64, mantissas: &[f64], round: Round) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    let candidates = mantissas.iter().chain(&[10.0]).map(|m| m * decade);
    // Tolerance: log10 and powf may land a hair off an exact round value.
    let tol = v * 1e-9;
    match round {
        Round::Down => candidates.filter(|&c| c <= v + tol).fold(decade, f64::max),
        Round::Up => candidates
            .into_iter()
            .find(|&c| c >= v - tol)
            .unwrap_or(10.0 * decade),
    }
}

/// A round latency as a label: `200ns`, `1µs`, `50µs`, `2ms`, `1s`.
fn tick_label(nanos: f64) -> String {
    let (unit, scale) = match nanos {
        n if n < 999.5 => ("ns", 1.0),
        n if n < 999_500.0 => ("µs", 1e3),
        n if n < 999_500_000.0 => ("ms", 1e6),
        _ => ("s", 1e9),
    };
    format!("{}{unit}", (nanos / scale).round())
}

/// `text` with the five XML special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::histogram;

    fn run(count: u64, scale: u64) -> Histogram<u64> {
        let mut hist = histogram();
        for i in 1..=count {
            // A body near 20 us and a tail that grows toward the top percentiles.
            let tail = if i % 100 == 0 { i % 7_919 * 40 } else { 0 };
            hist.record(scale * (20_000 + i % 5_000 + tail)).unwrap();
        }
        hist
    }

    /// Checks that every tag closes, in order: the well-formedness that matters here (the
    /// attribute values are all generated and escaped).
    fn assert_balanced(svg: &str) {
        let mut open: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = start + rest[start..].find('>').expect("tag closes");
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name), "closing </{name}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap();
                open.push(name);
            }
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
        assert!(!rest.contains('>'), "stray >");
    }

    #[test]
    fn well_formed_with_every_label() {
        let a = run(100_000, 1);
        let b = run(20_000, 2);
        let empty = histogram();
        let image = svg(
            "echo <4 cores> & friends",
            &[
                ("ringwire", &a),
                ("tokio \"baseline\"", &b),
                ("idle", &empty),
            ],
        );
        assert!(image.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(image.ends_with("</svg>\n"));
        assert_balanced(&image);
        assert!(image.contains("echo &lt;4 cores&gt; &amp; friends"));
        assert!(image.contains(">ringwire (n = 100,000,"));
        assert!(image.contains(">tokio &quot;baseline&quot; (n = 20,000,"));
        assert!(image.contains(">idle (no samples)<"));
        assert_eq!(image.matches("<polyline").count(), 2);
        // 100000 samples: five nines.
        assert!(image.contains(">99.999%<"));
        assert!(!image.contains(">99.9999%<"));
    }

    #[test]
    fn no_runs_still_draws_axes() {
        let image = svg("nothing", &[]);
        assert_balanced(&image);
        assert!(image.contains(">99%<"));
    }

    #[test]
    fn nines_labels() {
        let labels: Vec<String> = (0..=5).map(nines_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn y_axis_spans_round_bounds() {
        let y = YAxis::new(31_000, 2_490_000_000);
        assert_eq!((y.lo, y.hi), (20_000.0, 5e9));
        let ticks: Vec<String> = y.ticks().iter().map(|&(v, _)| tick_label(v)).collect();
        assert_eq!(ticks.first().map(String::as_str), Some("20µs"));
        assert_eq!(ticks.last().map(String::as_str), Some("5s"));
        assert!(ticks.contains(&"100µs".to_string()) && ticks.contains(&"1ms".to_string()));
        let decades = y.ticks().iter().filter(|t| t.1).count();
        assert_eq!(decades, 5); // 100us, 1ms, 10ms, 100ms, 1s

        assert!(y.labels_every_tick());

        // Exact round values are their own bounds.
        let y = YAxis::new(1_000, 5_000);
        assert_eq!((y.lo, y.hi), (1_000.0, 5_000.0));
        // Under a decade: a tick at each of 1 to 9.
        let y = YAxis::new(420_000, 857_000);
        assert_eq!((y.lo, y.hi), (400_000.0, 900_000.0));
        let ticks: Vec<String> = y.ticks().iter().map(|&(v, _)| tick_label(v)).collect();
        assert_eq!(
            ticks,
            ["400µs", "500µs", "600µs", "700µs", "800µs", "900µs"]
        );
        // One value still gets a range.
        let y = YAxis::new(250, 250);
        assert!(y.lo <= 250.0 && y.hi > 250.0, "{} {}", y.lo, y.hi);
        let y = YAxis::new(0, 0);
        assert!(y.lo >= 1.0 && y.hi > y.lo);
        // Eleven decades: only powers of ten are labelled.
        assert!(!YAxis::new(1, 100_000_000_000).labels_every_tick());
    }

    #[test]
    fn labels_and_digits() {
        assert_eq!(tick_label(200.0), "200ns");
        assert_eq!(tick_label(1_000.0), "1µs");
        assert_eq!(tick_label(500_000.0), "500µs");
        assert_eq!(tick_label(2e6), "2ms");
        assert_eq!(tick_label(1e9), "1s");
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_000), "1,000");
        assert_eq!(group_digits(1_234_567), "1,234,567");
    }

    #[test]
    fn curve_ends_at_the_maximum() {
        let hist = run(1_000, 1);
        let points = curve(&hist, 4);
        let last = *points.last().unwrap();
        assert_eq!(last, (3.0, hist.max() as f64));
        assert!(points.windows(2).all(|w| w[0].1 <= w[1].1));
        // More samples than the axis shows: the line stops at the axis end, below the max.
        let points = curve(&hist, 2);
        let last = *points.last().unwrap();
        assert_eq!(last.0, 2.0);
        assert!(last.1 < hist.max() as f64);
    }
}
