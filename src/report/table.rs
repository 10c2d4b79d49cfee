//! The percentile table: the few numbers a reader takes in at a glance.

use std::fmt;

use hdrhistogram::Histogram;

/// The headline numbers of a latency histogram. Latencies are in microseconds.
///
/// Every field but `count` is 0.0 for an empty histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// Number of recorded values.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// The numbers of `hist`, whose values are nanoseconds.
    pub fn of(hist: &Histogram<u64>) -> Summary {
        if hist.is_empty() {
            return Summary::default();
        }
        let us = |nanos: u64| nanos as f64 / 1_000.0;
        Summary {
            count: hist.len(),
            min: us(hist.min()),
            mean: hist.mean() / 1_000.0,
            p50: us(hist.value_at_quantile(0.5)),
            p90: us(hist.value_at_quantile(0.9)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            p9999: us(hist.value_at_quantile(0.9999)),
            max: us(hist.max()),
        }
    }
}

/// Column width of the table.
const WIDTH: usize = 10;

/// The table: a header line and a line of numbers, as [`table`] prints them.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let heads = [
            "count", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max",
        ];
        for head in heads {
            write!(f, "{head:>WIDTH$}")?;
        }
        writeln!(f)?;
        write!(f, "{:>WIDTH$}", self.count)?;
        let values = [
            self.mean, self.p50, self.p90, self.p99, self.p999, self.p9999, self.max,
        ];
        for micros in values {
            let cell = if self.count == 0 {
                "-".to_string()
            } else {
                format_nanos(micros * 1_000.0)
            };
            write!(f, "{cell:>WIDTH$}")?;
        }
        Ok(())
    }
}

/// The percentile table of `hist` (values in nanoseconds), two lines without a final newline:
///
/// ```text
///      count      mean       p50       p90       p99     p99.9    p99.99       max
///     123456    41.2us    38.1us    52.0us    88.3us   140.2us   201.0us    2.31ms
/// ```
///
/// Each latency is printed in the largest unit (ns, us, ms, s) in which it is at least 1, with
/// three or four significant digits. An empty histogram prints `-` for each latency.
pub fn table(hist: &Histogram<u64>) -> String {
    Summary::of(hist).to_string()
}

/// A latency in nanoseconds, written in the largest unit that keeps it at least 1, with one
/// decimal from 10 up and two below: `850ns`, `4.25us`, `41.2us`, `140.2us`, `2.31ms`, `1.50s`.
///
/// ```
/// use ringwire::report::format_nanos;
/// assert_eq!(format_nanos(41_230.0), "41.2us");
/// assert_eq!(format_nanos(2_310_000.0), "2.31ms");
/// assert_eq!(format_nanos(999_999.0), "1.00ms");
/// ```
pub fn format_nanos(nanos: f64) -> String {
    if !nanos.is_finite() {
        return format!("{nanos}");
    }
    if nanos.abs() < 999.5 {
        return format!("{nanos:.0}ns");
    }
    const UNITS: [(&str, f64); 3] = [("us", 1e3), ("ms", 1e6), ("s", 1e9)];
    for (i, (unit, scale)) in UNITS.iter().enumerate() {
        let value = nanos / scale;
        let decimals = if value.abs() < 9.995 { 2 } else { 1 };
        let text = format!("{value:.decimals$}");
        // Move up a unit when rounding has made this one reach 1000 (999.96us is 1.00ms).
        let rounded: f64 = text.parse().unwrap_or(value);
        if rounded.abs() < 1000.0 || i == UNITS.len() - 1 {
            return format!("{text}{unit}");
        }
    }
    unreachable!("the last unit always returns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::histogram;

    #[test]
    fn units_scale() {
        assert_eq!(format_nanos(0.0), "0ns");
        assert_eq!(format_nanos(850.0), "850ns");
        assert_eq!(format_nanos(999.4), "999ns");
        assert_eq!(format_nanos(999.6), "1.00us");
        assert_eq!(format_nanos(4_250.0), "4.25us");
        assert_eq!(format_nanos(9_996.0), "10.0us");
        assert_eq!(format_nanos(41_230.0), "41.2us");
        assert_eq!(format_nanos(140_200.0), "140.2us");
        assert_eq!(format_nanos(999_960.0), "1.00ms");
        assert_eq!(format_nanos(2_310_000.0), "2.31ms");
        assert_eq!(format_nanos(1.5e9), "1.50s");
        assert_eq!(format_nanos(2_500e9), "2500.0s");
    }

    /// 1..=10000 microseconds, each once: every percentile is known.
    fn uniform() -> Histogram<u64> {
        let mut hist = histogram();
        for us in 1..=10_000u64 {
            hist.record(us * 1_000).unwrap();
        }
        hist
    }

    #[test]
    fn summary_of_a_known_distribution() {
        let s = Summary::of(&uniform());
        assert_eq!(s.count, 10_000);
        // Three significant figures: each value within 0.1% of the exact one.
        let near = |got: f64, want: f64| (got - want).abs() <= want * 1e-3;
        assert!(near(s.min, 1.0), "{s:?}");
        assert!(near(s.mean, 5_000.5), "{s:?}");
        assert!(near(s.p50, 5_000.0), "{s:?}");
        assert!(near(s.p90, 9_000.0), "{s:?}");
        assert!(near(s.p99, 9_900.0), "{s:?}");
        assert!(near(s.p999, 9_990.0), "{s:?}");
        assert!(near(s.p9999, 9_999.0), "{s:?}");
        assert!(near(s.max, 10_000.0), "{s:?}");
    }

    #[test]
    fn table_of_a_known_distribution() {
        let text = table(&uniform());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let heads: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            heads,
            ["count", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max"]
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            ["10000", "5.00ms", "5.00ms", "9.00ms", "9.90ms", "9.99ms", "10.0ms", "10.0ms"]
        );
        // Columns line up: every cell ends where its heading ends.
        assert_eq!(lines[0].len(), lines[1].len());
    }

    #[test]
    fn table_of_an_empty_histogram() {
        let text = table(&histogram());
        let cells: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(cells, ["0", "-", "-", "-", "-", "-", "-", "-"]);
    }
}
