//! The histogram reporter: percentile tables, `.hgrm` files and SVG plots of latencies.
//!
//! Latencies are recorded in nanoseconds into the fixed-size histograms of
//! [`ringwire_runtime::latency`], re-exported here: one [`Recorder`] per thread, which publishes
//! into a shared histogram now and then; any thread reads it through a [`LatencyHandle`] and
//! [`merge`]s the histograms of several threads. This module turns a histogram into
//!
//! - a one-line percentile [`table`] (or its numbers, a [`Summary`]) to print at the end of a
//!   run: count, mean, p50 ... p99.99, max, each in a unit that suits it (ns, us, ms, s);
//! - the HdrHistogram percentile distribution text, [`write_hgrm`], which HdrHistogram's
//!   online plotter (`plotFiles.html`) and other `.hgrm` readers take;
//! - an SVG plot of latency by percentile, [`svg`], with several runs on one plot;
//! - all three as files, [`save`].
//!
//! Invariant for whoever edits this module: everything here reads histograms and never records
//! into them; the values are nanoseconds, and each output says in which unit it prints them.
//!
//! Recording on two threads, merging, printing the table:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ringwire::report;
//!
//! let mut handles = Vec::new();
//! let mut threads = Vec::new();
//! for core in 0..2u64 {
//!     let (mut recorder, handle) = report::Recorder::new(Duration::from_millis(50));
//!     handles.push(handle);
//!     threads.push(std::thread::spawn(move || {
//!         for i in 0..10_000u64 {
//!             // 20 us to 60 us, a little slower on core 1.
//!             recorder.record(20_000 + (i * 7919) % 40_000 + core * 1_000);
//!             recorder.maybe_publish(Instant::now());
//!         }
//!         recorder.publish(); // (dropping the recorder would publish too)
//!     }));
//! }
//! for thread in threads {
//!     thread.join().unwrap();
//! }
//!
//! let snapshots: Vec<_> = handles.iter().map(|h| h.snapshot()).collect();
//! let all = report::merge(&snapshots);
//! println!("{}", report::table(&all));
//!
//! let summary = report::Summary::of(&all);
//! assert_eq!(summary.count, 20_000);
//! assert!(summary.p50 > 35.0 && summary.p50 < 45.0); // microseconds
//! assert!(report::table(&all).contains("20000"));
//! ```
//!
//! One handle per thread, as here, keeps the threads apart until they are merged. Recorders
//! made from one handle with [`LatencyHandle::recorder`] add up into its one histogram instead.

mod hgrm;
mod svg;
mod table;

use std::fs;
use std::io::{self, Write};
use std::path::Path;

pub use ringwire_runtime::latency::*;

pub use hgrm::write_hgrm;
pub use svg::svg;
pub use table::{format_nanos, table, Summary};

/// Writes `hist` into the folder `dir` (created if missing) as `<name>.txt` (the [`table`]),
/// `<name>.hgrm` ([`write_hgrm`]) and `<name>.svg` ([`svg`], titled `name`).
///
/// ```no_run
/// # let hist = ringwire::report::histogram();
/// ringwire::report::save("target/latency", "echo-4-cores", &hist)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn save(dir: impl AsRef<Path>, name: &str, hist: &Histogram<u64>) -> io::Result<()> {
    let dir = dir.as_ref();
    fs::create_dir_all(dir)?;
    fs::write(dir.join(format!("{name}.txt")), table(hist) + "\n")?;
    let mut hgrm = io::BufWriter::new(fs::File::create(dir.join(format!("{name}.hgrm")))?);
    write_hgrm(hist, &mut hgrm)?;
    hgrm.flush()?;
    fs::write(dir.join(format!("{name}.svg")), svg(name, &[(name, hist)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_writes_three_files() {
        let dir = std::env::temp_dir().join(format!("ringwire-report-{}", std::process::id()));
        let mut hist = histogram();
        hist.record(1_500).unwrap();
        save(&dir, "run", &hist).unwrap();
        for ext in ["txt", "hgrm", "svg"] {
            let text = fs::read_to_string(dir.join(format!("run.{ext}"))).unwrap();
            assert!(!text.is_empty(), "run.{ext} is empty");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
