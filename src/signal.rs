//! Stopping a server on SIGINT or SIGTERM, as a service under a supervisor (systemd,
//! Kubernetes, a terminal's Ctrl-C) expects: the first signal drains (stops accepting, serves
//! the open sessions until their peers close or the drain deadline passes), a second stops at
//! once, and a third terminates the process whatever the stop waits for.
//!
//! Invariant: while a watch is active the two signals are caught (they do not kill the
//! process); when the last watch ends they terminate the process again, as they do by default.

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use signal_hook::SigId;

use ringwire_runtime::Stopper;

/// Watches in progress, and the actions that give the signals their default back once none
/// is (signal-hook cannot uninstall its handler; it can run the default action).
static WATCHES: Mutex<(usize, Vec<SigId>)> = Mutex::new((0, Vec::new()));

/// Stops a server on SIGINT or SIGTERM while it lives: see [`drain_on_signal`]. Dropping it
/// ends the watch.
#[must_use = "dropping the watch stops watching for signals"]
pub struct SignalWatch {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

/// Watches for SIGINT and SIGTERM on a thread of its own: the first makes `stopper` drain for
/// at most `drain` ([`Stopper::shutdown`]), a second stops at once ([`Stopper::stop`]). Each
/// is logged at `warn`. The watch ends when the returned value is dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use ringwire::{codec::Len32, handlers::Echo, signal, Server};
///
/// let server = Server::new(Len32, || Echo).start()?;
/// let _watch = signal::drain_on_signal(server.stopper(), Duration::from_secs(10))?;
/// server.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn drain_on_signal(stopper: Stopper, drain: Duration) -> io::Result<SignalWatch> {
    let signals = catch_signals()?;
    Ok(watch(signals, stopper, drain))
}

/// Starts catching SIGINT and SIGTERM (queued until the watch thread reads them).
pub(crate) fn catch_signals() -> io::Result<Signals> {
    let mut watches = WATCHES.lock().unwrap_or_else(|e| e.into_inner());
    // The defaults would kill the process before the watch drains: off first, so that no
    // signal in between kills it (one in between is ignored instead).
    let defaults = !watches.1.is_empty();
    for id in watches.1.drain(..) {
        signal_hook::low_level::unregister(id);
    }
    match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => {
            watches.0 += 1;
            Ok(signals)
        }
        Err(e) => {
            if defaults {
                register_defaults(&mut watches.1);
            }
            Err(e)
        }
    }
}

/// Stops catching what [`catch_signals`] caught, without a watch ever having run.
pub(crate) fn release(signals: Signals) {
    signals.handle().close();
    drop(signals);
    restore_defaults();
}

/// Acts on the signals `signals` caught, on a thread of its own.
pub(crate) fn watch(mut signals: Signals, stopper: Stopper, drain: Duration) -> SignalWatch {
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("ringwire-signals".into())
        .spawn(move || {
            let mut caught = 0;
            for sig in signals.forever() {
                caught += 1;
                if caught == 1 {
                    log::warn!("ringwire: signal {sig}: draining for at most {drain:?}");
                    stopper.shutdown(drain);
                } else {
                    log::warn!("ringwire: signal {sig} again: stopping now");
                    stopper.stop();
                    // A third kills, whatever the stop is waiting for.
                    let mut watches = WATCHES.lock().unwrap_or_else(|e| e.into_inner());
                    if watches.1.is_empty() {
                        register_defaults(&mut watches.1);
                    }
                }
            }
        });
    let thread = match thread {
        Ok(thread) => Some(thread),
        Err(e) => {
            // Without the thread the signals would be caught and ignored: stop at once on
            // the first rather than never.
            log::error!("ringwire: cannot spawn the signal thread ({e}); signals stop at once");
            restore_defaults();
            None
        }
    };
    SignalWatch { handle, thread }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            restore_defaults();
        }
    }
}

/// Gives SIGINT and SIGTERM their default action back once no watch is left.
fn restore_defaults() {
    let mut watches = WATCHES.lock().unwrap_or_else(|e| e.into_inner());
    watches.0 = watches.0.saturating_sub(1);
    if watches.0 > 0 || !watches.1.is_empty() {
        return;
    }
    register_defaults(&mut watches.1);
}

/// Registers the default action (terminate) for SIGINT and SIGTERM.
fn register_defaults(ids: &mut Vec<SigId>) {
    for sig in [SIGINT, SIGTERM] {
        match signal_hook::flag::register_conditional_default(sig, Arc::new(AtomicBool::new(true)))
        {
            Ok(id) => ids.push(id),
            Err(e) => log::error!("ringwire: cannot restore signal {sig}'s default: {e}"),
        }
    }
}
