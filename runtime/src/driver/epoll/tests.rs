//! The epoll driver on a real listener: what a core abandoned after its worker died does with
//! the listener a Unix server's cores share.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::driver::{Command, Core, SendBuf};
use crate::unix::UnixAddr;

/// Counts what the driver hands over; closes every accepted connection, as the abandoning
/// turn does.
#[derive(Default)]
struct Abandoning {
    accepted: usize,
    cmds: Vec<Command>,
}

impl Core for Abandoning {
    fn turn_started(&mut self) {}
    fn has_pending_work(&self) -> bool {
        false
    }
    fn connected(&mut self, _: u32, _: io::Result<()>) {}
    fn accepted(&mut self, fd: OwnedFd) {
        self.accepted += 1;
        drop(fd);
    }
    fn accept_failed(&mut self, _: &io::Error) {}
    fn received(&mut self, _: u32, _: &[u8]) {}
    fn read_closed(&mut self, _: u32, _: Option<io::Error>) {}
    fn sent(&mut self, _: u32, _: Box<SendBuf>, _: io::Result<usize>) {}
    fn closed(&mut self, _: u32) {}
    fn woken(&mut self) {}
    fn wait_bound(&self) -> Option<Duration> {
        None
    }
    fn commands(&mut self) -> &mut Vec<Command> {
        &mut self.cmds
    }
}

/// A core abandoned on the listener every core of a Unix server shares takes nothing from its
/// backlog: the connections queued there are the live cores' to serve.
#[test]
fn an_abandoned_core_leaves_a_shared_backlog_to_the_others() {
    let name = format!("ringwire-epoll-test-{}", std::process::id());
    let addr = UnixSocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    let other_core: OwnedFd = listener.try_clone().unwrap().into();
    let config = Config {
        max_sessions: 4,
        unix: Some(UnixAddr::Abstract(name.into_bytes())),
        ..Config::default()
    };
    let wake = Arc::new(crate::sys::eventfd().unwrap());
    let stats = Arc::new(crate::stats::CoreStats::default());
    let mut d = EpollDriver::new(&config, Some(listener.into()), wake, stats).unwrap();
    let _client = UnixStream::connect_addr(&addr).unwrap();
    let mut core = Abandoning::default();
    d.abort_all();
    for _ in 0..3 {
        d.turn(Some(Duration::from_millis(10)), &mut core).unwrap();
    }
    assert_eq!(core.accepted, 0, "the abandoned core took a connection");
    assert!(d.is_quiescent());
    drop(d);
    assert!(
        crate::sys::accept(other_core.as_fd(), false).is_ok(),
        "the connection is not in the backlog for the other cores"
    );
}
