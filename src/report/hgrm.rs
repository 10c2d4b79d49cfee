//! The HdrHistogram percentile distribution text (`.hgrm`), in microseconds.

use std::io::{self, Write};

use hdrhistogram::Histogram;

/// Percentile steps per halving of the distance to 100%, as HdrHistogram's tools use.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Nanoseconds per unit of the output (microseconds).
const SCALE: f64 = 1_000.0;

/// Writes the percentile distribution of `hist` (values in nanoseconds) in microseconds, laid
/// out as Java HdrHistogram's `outputPercentileDistribution(out, 5, 1000.0)` writes it, the
/// `.hgrm` text that HdrHistogram's online plotter reads:
///
/// ```text
///        Value     Percentile TotalCount 1/(1-Percentile)
///
///        1.000 0.000000000000          1           1.00
///      ...
///    10000.000 1.000000000000      10000            inf
/// #[Mean    =     5000.500, StdDeviation   =     2886.896]
/// #[Max     =    10000.000, Total count    =        10000]
/// #[Buckets =           27, SubBuckets     =         2048]
/// ```
///
/// Rows step through the percentiles 5 ticks per halving of the distance to 100% (0%, 10%, ...
/// 50%, 55%, ... 75%, 77.5%, ...), up to the last recorded value at 100%. Values print with as
/// many decimals as the histogram has significant figures.
///
/// One departure from Java: its last row (percentile 1.0) leaves out the `1/(1-Percentile)`
/// column, where this writes `inf`, as HdrHistogram's C library (and so wrk2) does. Every row
/// then has four columns, which suits column-wise readers (awk, pandas); HdrHistogram's online
/// plotter skips that row either way, since its x would be infinite.
pub fn write_hgrm(hist: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    let decimals = usize::from(hist.sigfig());
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;

    // Java's TotalCount is the count at or below the row's value: the running sum of the
    // counts the iterator stepped over.
    let mut total = 0u64;
    for step in hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += step.count_since_last_iteration();
        let value = step.value_iterated_to() as f64 / SCALE;
        let quantile = step.quantile_iterated_to();
        write!(out, "{value:>12.decimals$} {quantile:>2.12} {total:>10} ")?;
        if quantile < 1.0 {
            writeln!(out, "{:>14.2}", 1.0 / (1.0 - quantile))?;
        } else {
            writeln!(out, "{:>14}", "inf")?;
        }
    }

    writeln!(
        out,
        "#[Mean    = {:>12.decimals$}, StdDeviation   = {:>12.decimals$}]",
        hist.mean() / SCALE,
        hist.stdev() / SCALE
    )?;
    writeln!(
        out,
        "#[Max     = {:>12.decimals$}, Total count    = {:>12}]",
        hist.max() as f64 / SCALE,
        hist.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        hist.buckets(),
        sub_bucket_count(hist)
    )
}

/// Java's `subBucketCount`, which the crate keeps private: the counts array holds
/// `(buckets + 1) * subBucketCount / 2` entries.
fn sub_bucket_count(hist: &Histogram<u64>) -> usize {
    2 * hist.distinct_values() / (usize::from(hist.buckets()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::histogram;

    fn hgrm(hist: &Histogram<u64>) -> String {
        let mut out = Vec::new();
        write_hgrm(hist, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// (value, percentile, total count, 1/(1-percentile)) of each row.
    fn rows(text: &str) -> Vec<(f64, f64, u64, f64)> {
        text.lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(cols.len(), 4, "row {line:?}");
                (
                    cols[0].parse().unwrap(),
                    cols[1].parse().unwrap(),
                    cols[2].parse().unwrap(),
                    cols[3].parse().unwrap(), // "inf" parses as f64::INFINITY
                )
            })
            .collect()
    }

    #[test]
    fn layout_matches_hdrhistogram() {
        let mut hist = histogram();
        for us in 1..=10_000u64 {
            hist.record(us * 1_000).unwrap();
        }
        let text = hgrm(&hist);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       1.000 0.000000000000          1           1.00"
        );
        assert_eq!(
            lines[3],
            "    1000.447 0.100000000000       1000           1.11"
        );

        let rows = rows(&text);
        assert!(rows.len() > 50, "{text}");
        for pair in rows.windows(2) {
            assert!(pair[0].1 < pair[1].1, "percentiles increase: {pair:?}");
            assert!(pair[0].0 <= pair[1].0, "values never decrease: {pair:?}");
            assert!(pair[0].2 <= pair[1].2, "counts never decrease: {pair:?}");
        }
        let last = *rows.last().unwrap();
        assert_eq!(last.1, 1.0);
        assert_eq!(last.2, 10_000);
        assert_eq!(last.3, f64::INFINITY);
        let last_line = lines[rows.len() + 1];
        assert!(
            last_line.ends_with(" 1.000000000000      10000            inf"),
            "{last_line:?}"
        );

        let footer = &lines[rows.len() + 2..];
        assert_eq!(footer.len(), 3, "{text}");
        assert!(
            footer[0].starts_with("#[Mean    =     5000."),
            "{}",
            footer[0]
        );
        assert!(footer[0].contains(", StdDeviation   =     288"));
        assert_eq!(
            footer[1],
            "#[Max     =    10002.431, Total count    =        10000]"
        );
        assert_eq!(
            footer[2],
            "#[Buckets =           27, SubBuckets     =         2048]"
        );
    }

    #[test]
    fn single_value_has_a_first_and_last_row() {
        let mut hist = histogram();
        hist.record(250).unwrap();
        let rows = rows(&hgrm(&hist));
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0], (0.25, 0.0, 1, 1.0));
        assert_eq!(rows[1], (0.25, 1.0, 1, f64::INFINITY));
    }

    #[test]
    fn empty_histogram_has_header_and_footer() {
        let text = hgrm(&histogram());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[2].starts_with("#[Mean    =        0.000"));
        assert!(lines[3].ends_with("Total count    =            0]"));
    }
}
