//! Latency histograms recorded per core without locks, merged on demand.
//!
//! Each recording thread (a core, a load-generator connection thread) owns a [`Recorder`]: a
//! fixed-size HdrHistogram that it writes with plain memory stores. Every so often, off the hot
//! path, the thread [publishes](Recorder::publish) what it recorded: it adds its local histogram
//! into a shared one behind a mutex and starts afresh. Any thread holding a [`LatencyHandle`]
//! can copy out what has been published ([`LatencyHandle::snapshot`]) and [`merge`] the copies
//! of several cores.
//!
//! Invariant: recording never allocates and never takes a lock. Every histogram made here comes
//! from [`histogram`], has the same fixed range ([`LOWEST_NANOS`]..=[`HIGHEST_NANOS`]) and
//! precision ([`SIGNIFICANT_FIGURES`]), and never auto-resizes; values outside the range are
//! clamped into it. Because all of them share one layout, adding one into another is a
//! straight walk over two arrays of the same length, which never allocates either.
//!
//! What a snapshot misses: whatever the recorders recorded since their last publish (at most
//! one publish interval per recorder). A dropped [`Recorder`] publishes what it holds.
//!
//! ```
//! use std::time::Duration;
//! use ringwire_runtime::latency::Recorder;
//!
//! let (mut rec, handle) = Recorder::new(Duration::from_millis(50));
//! let worker = std::thread::spawn(move || {
//!     for micros in 1..=1000 {
//!         rec.record(micros * 1_000);
//!     }
//!     rec.publish();
//! });
//! worker.join().unwrap();
//! let hist = handle.snapshot();
//! assert_eq!(hist.len(), 1000);
//! assert!(hist.value_at_quantile(0.5).abs_diff(500_000) < 500);
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use hdrhistogram::Histogram;

/// The lowest value a histogram tells apart from zero: 1 ns.
pub const LOWEST_NANOS: u64 = 1;

/// The highest value a histogram tracks: 100 s. Larger values are recorded as this.
pub const HIGHEST_NANOS: u64 = 100_000_000_000;

/// Decimal digits of precision: every recorded value is kept within 0.1% of itself.
pub const SIGNIFICANT_FIGURES: u8 = 3;

/// A fixed-size latency histogram: nanoseconds from [`LOWEST_NANOS`] to [`HIGHEST_NANOS`] with
/// [`SIGNIFICANT_FIGURES`] significant figures, auto-resize off (about 230 KiB of counters).
///
/// Recording into it never allocates. Use this for every histogram that meets the ones made
/// here, so that [`merge`] and [`Recorder::publish`] take their fast path.
pub fn histogram() -> Histogram<u64> {
    let mut hist = Histogram::new_with_bounds(LOWEST_NANOS, HIGHEST_NANOS, SIGNIFICANT_FIGURES)
        .expect("constant histogram bounds are valid");
    // Already off for `new_with_bounds`; said again because the no-allocation promise rests on it.
    hist.auto(false);
    hist
}

/// Adds histograms together into a new one made by [`histogram`].
///
/// A histogram of another layout is added value by value, and values above [`HIGHEST_NANOS`]
/// are clamped to it, so the result always has the fixed layout and merging never fails.
pub fn merge<'a>(hists: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut total = histogram();
    for hist in hists {
        add_saturating(&mut total, hist);
    }
    total
}

/// Adds `src` into `dst`, clamping values that `dst` cannot hold.
fn add_saturating(dst: &mut Histogram<u64>, src: &Histogram<u64>) {
    // `add` checks the range before it touches anything, so on error `dst` is unchanged.
    if dst.add(src).is_err() {
        let high = dst.high();
        for v in src.iter_recorded() {
            dst.saturating_record_n(v.value_iterated_to().min(high), v.count_at_value());
        }
    }
}

/// The published histogram, shared by the recorders that publish into it and the handles that
/// read it.
type Shared = Arc<Mutex<Histogram<u64>>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Histogram<u64>> {
    // A panic while the lock was held leaves a histogram that is still well formed (at worst it
    // lacks part of one publish), so a poisoned lock is used as it is.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records latencies on one thread, and now and then publishes them for other threads to read.
///
/// Recording ([`record`](Self::record), [`record_since`](Self::record_since)) writes a local
/// histogram: no lock, no atomic read-modify-write, no allocation. [`publish`](Self::publish)
/// takes the shared mutex once to add the local histogram into the shared one, then clears
/// the local one; call it from the owning thread's loop through
/// [`maybe_publish`](Self::maybe_publish), which publishes once per interval.
///
/// Every method that records takes `&mut self`: a recorder belongs to one thread (it can be
/// moved to another). Give each thread its own, made from a shared [`LatencyHandle`] with
/// [`LatencyHandle::recorder`] when they should all add up to one histogram.
///
/// Dropping a recorder publishes what it still holds.
pub struct Recorder {
    local: Histogram<u64>,
    shared: Shared,
    interval: Duration,
    last_publish: Instant,
}

impl Recorder {
    /// A recorder that publishes at most once per `interval` through
    /// [`maybe_publish`](Self::maybe_publish), and the handle that reads what it publishes.
    pub fn new(interval: Duration) -> (Recorder, LatencyHandle) {
        let handle = LatencyHandle::new();
        (handle.recorder(interval), handle)
    }

    /// Records one latency in nanoseconds. Values above [`HIGHEST_NANOS`] are recorded as
    /// [`HIGHEST_NANOS`]; zero is recorded as zero.
    #[inline]
    pub fn record(&mut self, nanos: u64) {
        // `saturating_record` alone would accept values a little above `high()` (up to the end
        // of the last bucket); clamping first makes the ceiling exactly `HIGHEST_NANOS`.
        self.local.saturating_record(nanos.min(self.local.high()));
    }

    /// Records a latency given as a [`Duration`].
    #[inline]
    pub fn record_duration(&mut self, latency: Duration) {
        self.record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records the time elapsed since `start`.
    #[inline]
    pub fn record_since(&mut self, start: Instant) {
        self.record_duration(start.elapsed());
    }

    /// Adds what was recorded since the last publish into the shared histogram, and clears the
    /// local one. Takes the shared lock once, and not at all when nothing was recorded.
    pub fn publish(&mut self) {
        self.last_publish = Instant::now();
        if self.local.is_empty() {
            return;
        }
        add_saturating(&mut lock(&self.shared), &self.local);
        self.local.reset();
    }

    /// Publishes if at least the interval given at construction has passed since the last
    /// publish; returns whether it did. `now` is the caller's clock reading for this loop turn.
    pub fn maybe_publish(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last_publish) < self.interval {
            return false;
        }
        self.publish();
        true
    }

    /// A handle that reads what this recorder (and any other recorder sharing its histogram)
    /// has published.
    pub fn handle(&self) -> LatencyHandle {
        LatencyHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// What was recorded and not yet published.
    pub fn unpublished(&self) -> &Histogram<u64> {
        &self.local
    }

    /// The publish interval given at construction.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.publish();
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("unpublished", &self.local.len())
            .field("interval", &self.interval)
            .field("last_publish", &self.last_publish)
            .finish()
    }
}

/// Reads the histogram that one or more [`Recorder`]s publish into. Cheap to clone; usable
/// from any thread.
#[derive(Clone)]
pub struct LatencyHandle {
    shared: Shared,
}

impl LatencyHandle {
    /// A handle to a new, empty shared histogram with no recorders yet.
    pub fn new() -> LatencyHandle {
        LatencyHandle {
            shared: Arc::new(Mutex::new(histogram())),
        }
    }

    /// A new recorder that publishes into this handle's histogram, at most once per `interval`
    /// through [`Recorder::maybe_publish`]. Make one per recording thread.
    pub fn recorder(&self, interval: Duration) -> Recorder {
        Recorder {
            local: histogram(),
            shared: Arc::clone(&self.shared),
            interval,
            last_publish: Instant::now(),
        }
    }

    /// A copy of everything published so far (since the last [`reset`](Self::reset)).
    pub fn snapshot(&self) -> Histogram<u64> {
        lock(&self.shared).clone()
    }

    /// Forgets everything published so far, e.g. at the end of a warm-up. What recorders hold
    /// unpublished is kept and shows up after their next publish.
    pub fn reset(&self) {
        lock(&self.shared).reset();
    }

    /// Copies everything published so far and forgets it, in one step: successive calls give
    /// histograms of consecutive intervals with nothing lost or counted twice between them.
    pub fn take(&self) -> Histogram<u64> {
        let mut shared = lock(&self.shared);
        let copy = shared.clone();
        shared.reset();
        copy
    }
}

impl Default for LatencyHandle {
    fn default() -> Self {
        LatencyHandle::new()
    }
}

impl fmt::Debug for LatencyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHandle")
            .field("published", &lock(&self.shared).len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_publish_snapshot_across_threads() {
        let handle = LatencyHandle::new();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let mut rec = handle.recorder(Duration::from_secs(3600));
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        rec.record(1_000 * (t + 1) + i);
                    }
                    rec.publish();
                    assert!(rec.unpublished().is_empty());
                    // Recorded after the publish: reaches the shared histogram through `Drop`.
                    rec.record(5);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let snap = handle.snapshot();
        assert_eq!(snap.len(), 4 * 1001);
        assert_eq!(snap.min(), 5);
        assert!(snap.equivalent(snap.max(), 4_999));

        handle.reset();
        assert!(handle.snapshot().is_empty());
    }

    #[test]
    fn nothing_is_shared_before_publish() {
        let (mut rec, handle) = Recorder::new(Duration::from_secs(3600));
        rec.record(1_000);
        rec.record_duration(Duration::from_micros(2));
        rec.record_since(Instant::now());
        assert!(handle.snapshot().is_empty());
        assert_eq!(rec.unpublished().len(), 3);
        rec.publish();
        assert_eq!(handle.snapshot().len(), 3);
        assert!(rec.unpublished().is_empty());
    }

    #[test]
    fn maybe_publish_waits_for_the_interval() {
        let (mut rec, handle) = Recorder::new(Duration::from_millis(50));
        let start = rec.last_publish;
        rec.record(7);
        assert!(!rec.maybe_publish(start + Duration::from_millis(49)));
        assert!(handle.snapshot().is_empty());
        assert!(rec.maybe_publish(start + Duration::from_millis(50)));
        assert_eq!(handle.snapshot().len(), 1);
        // A clock reading older than the last publish is not a reason to publish.
        assert!(!rec.maybe_publish(start));
    }

    #[test]
    fn take_splits_intervals() {
        let (mut rec, handle) = Recorder::new(Duration::ZERO);
        rec.record(10);
        rec.publish();
        assert_eq!(handle.take().len(), 1);
        rec.record(20);
        rec.record(30);
        rec.publish();
        let second = handle.take();
        assert_eq!(second.len(), 2);
        assert_eq!(second.min(), 20);
        assert!(handle.snapshot().is_empty());
    }

    #[test]
    fn out_of_range_values_saturate() {
        let (mut rec, handle) = Recorder::new(Duration::ZERO);
        rec.record(u64::MAX);
        rec.record(HIGHEST_NANOS + HIGHEST_NANOS / 5);
        rec.record_duration(Duration::MAX);
        rec.record(0);
        drop(rec);
        let snap = handle.snapshot();
        assert_eq!(snap.len(), 4);
        assert!(snap.equivalent(snap.max(), HIGHEST_NANOS));
        assert_eq!(snap.count_at(HIGHEST_NANOS), 3);
        assert_eq!(snap.min(), 0);
    }

    #[test]
    fn recording_keeps_the_layout_fixed() {
        let (mut rec, _handle) = Recorder::new(Duration::ZERO);
        let layout = |h: &Histogram<u64>| (h.distinct_values(), h.buckets(), h.high());
        let before = layout(rec.unpublished());
        assert!(!rec.unpublished().is_auto_resize());
        for v in [
            0,
            1,
            999,
            1_000_000,
            HIGHEST_NANOS - 1,
            HIGHEST_NANOS,
            u64::MAX,
        ] {
            rec.record(v);
        }
        assert_eq!(layout(rec.unpublished()), before);
        rec.publish();
        assert_eq!(layout(rec.unpublished()), before);
        assert_eq!(layout(&rec.handle().snapshot()), before);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = histogram();
        let mut b = histogram();
        for v in 1..=100 {
            a.record(v * 1_000).unwrap();
        }
        for v in 101..=200 {
            b.record(v * 1_000).unwrap();
        }
        let m = merge([&a, &b]);
        assert_eq!(m.len(), 200);
        assert_eq!(m.min(), 1_000);
        assert!(m.equivalent(m.max(), 200_000));
        assert!(m.equivalent(m.value_at_quantile(0.5), 100_000));
        assert!(merge(std::iter::empty()).is_empty());
    }

    #[test]
    fn merge_clamps_a_wider_histogram() {
        let mut wide = Histogram::<u64>::new_with_bounds(1, u64::MAX / 4, 2).unwrap();
        wide.record(10).unwrap();
        wide.record(HIGHEST_NANOS * 10).unwrap();
        let m = merge([&wide]);
        assert_eq!(m.len(), 2);
        assert!(m.equivalent(m.max(), HIGHEST_NANOS));
        assert_eq!(m.distinct_values(), histogram().distinct_values());
    }
}
