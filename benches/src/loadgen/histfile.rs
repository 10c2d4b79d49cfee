//! A histogram as a small text file, so that runs made by separate processes can be plotted
//! together: one `value count` line per recorded bucket, values in nanoseconds.
//!
//! ```text
//! # ringwire-bench histogram v1: value_ns count
//! 20015 3
//! 20031 11
//! ```
//!
//! Each value is the highest value its bucket holds, so reading it back into a histogram of the
//! same layout ([`report::histogram`]) restores the same counts in the same buckets.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use ringwire::report::{self, Histogram};

const HEADER: &str = "# ringwire-bench histogram v1: value_ns count";

/// Writes `hist` to `path`.
pub fn write(path: &Path, hist: &Histogram<u64>) -> io::Result<()> {
    let mut out = io::BufWriter::new(fs::File::create(path)?);
    writeln!(out, "{HEADER}")?;
    for v in hist.iter_recorded() {
        writeln!(out, "{} {}", v.value_iterated_to(), v.count_at_value())?;
    }
    out.flush()
}

/// Reads a histogram that [`write()`] wrote.
pub fn read(path: &Path) -> io::Result<Histogram<u64>> {
    let text = fs::read_to_string(path)?;
    let bad = |line: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a histogram line: {line:?}", path.display()),
        )
    };
    let mut hist = report::histogram();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(value), Some(count)) = (parts.next(), parts.next()) else {
            return Err(bad(line));
        };
        let (Ok(value), Ok(count)) = (value.parse::<u64>(), count.parse::<u64>()) else {
            return Err(bad(line));
        };
        hist.saturating_record_n(value.min(hist.high()), count);
    }
    Ok(hist)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_bucket() {
        let mut hist = report::histogram();
        for v in [1u64, 999, 20_000, 20_001, 5_000_000, 90_000_000_000] {
            hist.record_n(v, v % 7 + 1).unwrap();
        }
        let path = std::env::temp_dir().join(format!("histfile-{}.txt", std::process::id()));
        write(&path, &hist).unwrap();
        let back = read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(back.len(), hist.len());
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(
                back.value_at_quantile(q),
                hist.value_at_quantile(q),
                "q {q}"
            );
        }
    }
}
