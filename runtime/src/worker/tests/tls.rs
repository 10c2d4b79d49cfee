//! TLS sessions of the core, driven by an in-memory rustls client through the fake driver:
//! what a failing, closing, draining or slow peer does to a session, each found by a review
//! and each failing without its fix.
use super::*;
use crate::tls::rustls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{Read, Write};

/// A self-signed certificate for "localhost" and its key (DER), made once per test process.
fn pki() -> &'static (Vec<u8>, Vec<u8>) {
    static PKI: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (ck.cert.der().to_vec(), ck.signing_key.serialize_der())
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config() -> Arc<rustls::ServerConfig> {
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(pki().0.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki().1.clone())),
            )
            .unwrap(),
    )
}

struct Peer {
    tls: rustls::ClientConnection,
    plain: Vec<u8>,
    closed: bool,
    error: Option<rustls::Error>,
}

impl Peer {
    fn new() -> Peer {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(pki().0.clone())).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = rustls::ClientConnection::new(
            Arc::new(cfg),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        Peer {
            tls,
            plain: Vec::new(),
            closed: false,
            error: None,
        }
    }
    fn wire(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut v).unwrap();
        }
        v
    }
    fn take_in(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.error.is_none() {
            if self.tls.read_tls(&mut bytes).unwrap() == 0 {
                break;
            }
            match self.tls.process_new_packets() {
                Ok(st) => self.closed |= st.peer_has_closed(),
                Err(e) => self.error = Some(e),
            }
            let mut buf = [0u8; 4096];
            loop {
                match self.tls.reader().read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.plain.extend_from_slice(&buf[..n]),
                }
            }
        }
    }
}

#[allow(clippy::arc_with_non_send_sync)]
fn tls_worker(t: Timeouts, high_water: usize) -> (TestWorker, Log, Arc<CoreStats>, Arc<Control>) {
    tls_worker_with(t, high_water, Some(server_config()), None)
}

#[allow(clippy::arc_with_non_send_sync)]
fn tls_worker_with(
    t: Timeouts,
    high_water: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
    tls_connect: Option<crate::tls::TlsConnect>,
) -> (TestWorker, Log, Arc<CoreStats>, Arc<Control>) {
    let log: Log = Rc::default();
    let stats = Arc::new(CoreStats::default());
    let factory_log = log.clone();
    let factory: Box<dyn Fn(&mut CoreCtx) -> TestHandler> = Box::new(move |_| TestHandler {
        log: factory_log.clone(),
        timers: Vec::new(),
        rearm: Vec::new(),
    });
    let cfg = WorkerConfig {
        core: 0,
        max_sessions: 4,
        max_frame: 1024,
        outbound_max_frame: 1024,
        timeouts: t,
        high_water,
        low_water: 2,
        max_output: 1 << 20,
        max_timers: 3,
        max_replies: 2,
        core_tick: None,
        nodelay: true,
        connect_timeout: None,
        connect: None,
        latency: None,
        linger: None,
        tls,
        tls_connect,
        handshake_timeout: None,
        kernel_tls: false,
    };
    let control = Arc::new(Control::new());
    let w = Worker::new(
        cfg,
        Bytes,
        Arc::new(factory),
        stats.clone(),
        control.clone(),
        CoreCtx::for_test(Box::new(())),
    );
    (w, log, stats, control)
}

/// Ends turns, handing every send to the peer (if any) and completing it in full, until a
/// turn sends nothing; returns the other commands seen.
fn run_turns(w: &mut TestWorker, ops: &mut FakeOps, mut peer: Option<&mut Peer>) -> Vec<Cmd> {
    let mut others = Vec::new();
    for _ in 0..50 {
        ops.end_turn(w);
        let cmds = ops.take();
        let mut sent = false;
        for c in cmds {
            match c {
                Cmd::Send(slot, bytes, _) => {
                    if let Some(p) = peer.as_deref_mut() {
                        p.take_in(&bytes);
                    }
                    ops.sent(w, slot, Ok(bytes.len()));
                    sent = true;
                }
                other => others.push(other),
            }
        }
        if !sent {
            others.extend(ops.take());
            return others;
        }
    }
    panic!("turns never settled");
}

fn handshake(w: &mut TestWorker, ops: &mut FakeOps, peer: &mut Peer) -> Vec<Cmd> {
    let mut others = Vec::new();
    for _ in 0..10 {
        let out = peer.wire();
        if !out.is_empty() {
            ops.received(w, 0, &out);
        }
        others.extend(run_turns(w, ops, Some(peer)));
        eprintln!(
            "hs: sent {} others {:?} peer err {:?} hs {} ww {}",
            out.len(),
            others,
            peer.error,
            peer.tls.is_handshaking(),
            peer.tls.wants_write()
        );
        if !peer.tls.is_handshaking() && !peer.tls.wants_write() {
            return others;
        }
    }
    panic!("no handshake");
}

fn state(w: &TestWorker) -> String {
    let c = &w.conns[0];
    format!(
        "phase {:?}, out.len() {}, has_unsent {}, in_flight {}",
        c.phase,
        c.state.out.len(),
        c.state.out.has_unsent(),
        c.state.out.in_flight()
    )
}

/// A reply produced in the same turn as a TLS error is never sealed (`failed`), but stays
/// counted in `pending`: the session never finishes flushing.
#[test]
fn a_reply_left_unsealed_at_a_tls_error_does_not_keep_the_session() {
    let (mut w, log, _, _) = tls_worker(Timeouts::default(), 1 << 20);
    let mut ops = FakeOps::default();
    let mut peer = Peer::new();
    ops.accepted(&mut w, 10);
    ops.take();
    handshake(&mut w, &mut ops, &mut peer);
    peer.tls.writer().write_all(b"hello").unwrap();
    let good = peer.wire();
    // Two segments in one turn: a good record, then one that does not decrypt.
    let mut bad = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    bad.extend_from_slice(&[0u8; 32]);
    ops.received(&mut w, 0, &good);
    ops.received(&mut w, 0, &bad);
    let mut others = run_turns(&mut w, &mut ops, Some(&mut peer));
    eprintln!("after error turn: {others:?}; {}", state(&w));
    eprintln!(
        "peer got alert: {:?}; plaintext {:?}",
        peer.error,
        String::from_utf8_lossy(&peer.plain)
    );
    // The peer closes its side: still nothing.
    ops.read_closed(&mut w, 0, None);
    others.extend(run_turns(&mut w, &mut ops, None));
    eprintln!(
        "after peer FIN: {others:?}; {}; log {:?}",
        state(&w),
        log.borrow()
    );
    assert!(
        others.contains(&Cmd::Close(0)),
        "session never closes: {}",
        state(&w)
    );
}

/// Garbage instead of a ClientHello: `on_error` (no `on_open` before it) writes a reply,
/// which can never be sealed: stuck in Flushing(TlsError).
#[test]
fn a_failed_handshake_closes_even_when_on_error_replies() {
    let (mut w, log, _, _) = tls_worker(Timeouts::default(), 1 << 20);
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.take();
    ops.received(&mut w, 0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut others = run_turns(&mut w, &mut ops, None);
    ops.read_closed(&mut w, 0, None);
    others.extend(run_turns(&mut w, &mut ops, None));
    eprintln!("{others:?}; {}; log {:?}", state(&w), log.borrow());
    assert!(
        others.contains(&Cmd::Close(0)),
        "session never closes: {}",
        state(&w)
    );
}

/// Plain sessions answer input held by backpressure before an EOF closes them
/// (`input_held_by_a_pause_is_answered_before_the_peers_eof_closes`); a TLS close_notify
/// drops it.
#[test]
fn a_close_notify_lets_input_held_by_backpressure_be_answered() {
    let (mut w, log, _, _) = tls_worker(Timeouts::default(), 8);
    let mut ops = FakeOps::default();
    let mut peer = Peer::new();
    ops.accepted(&mut w, 10);
    ops.take();
    handshake(&mut w, &mut ops, &mut peer);
    peer.tls.writer().write_all(b"[aaaaaaaaaa][b]").unwrap();
    peer.tls.send_close_notify();
    let bytes = peer.wire();
    ops.received(&mut w, 0, &bytes);
    let others = run_turns(&mut w, &mut ops, Some(&mut peer));
    eprintln!(
        "{others:?}; peer got {:?}, close_notify {}; log {:?}",
        String::from_utf8_lossy(&peer.plain),
        peer.closed,
        log.borrow()
    );
    assert_eq!(String::from_utf8_lossy(&peer.plain), "[aaaaaaaaaa][b]");
}

/// A tick (or timer) firing while the close_notify is being written adds plaintext that is
/// never sealed (`closing`): the session never closes.
#[test]
fn output_after_the_close_notify_does_not_keep_the_session() {
    let (mut w, log, _, _) = tls_worker(Timeouts::default(), 1 << 20);
    let mut ops = FakeOps::default();
    let mut peer = Peer::new();
    ops.accepted(&mut w, 10);
    ops.take();
    handshake(&mut w, &mut ops, &mut peer);
    peer.tls.writer().write_all(b"tick").unwrap();
    let b = peer.wire();
    ops.received(&mut w, 0, &b);
    run_turns(&mut w, &mut ops, Some(&mut peer));
    peer.tls.writer().write_all(b"bye").unwrap();
    let b = peer.wire();
    ops.received(&mut w, 0, &b);
    ops.end_turn(&mut w);
    let cmds = ops.take();
    let Some(Cmd::Send(_, ok, _)) = cmds.iter().find(|c| matches!(c, Cmd::Send(..))) else {
        panic!("{cmds:?}")
    };
    peer.take_in(&ok.clone());
    ops.sent(&mut w, 0, Ok(ok.len()));
    ops.end_turn(&mut w);
    let cmds = ops.take();
    let Some(Cmd::Send(_, notify, _)) = cmds.iter().find(|c| matches!(c, Cmd::Send(..))) else {
        panic!("{cmds:?}")
    };
    let notify = notify.clone();
    // The close_notify's send is in flight when the tick fires.
    at(&mut w, &mut ops, 20_000);
    eprintln!("after tick: {:?}; {}", ops.take(), state(&w));
    peer.take_in(&notify);
    ops.sent(&mut w, 0, Ok(notify.len()));
    let others = run_turns(&mut w, &mut ops, Some(&mut peer));
    eprintln!("{others:?}; {}; log {:?}", state(&w), log.borrow());
    assert!(
        others.contains(&Cmd::Close(0)),
        "session never closes: {}",
        state(&w)
    );
}

/// `on_drain` promises a session from the backlog its first request; a TLS session hears it
/// right after the handshake, and the default closes it as idle before the request comes.
#[test]
fn a_drain_waits_for_a_tls_sessions_first_request() {
    let (mut w, log, _, control) = tls_worker(Timeouts::default(), 1 << 20);
    let mut ops = FakeOps::default();
    let mut peer = Peer::new();
    control.request_stop(std::time::Duration::from_secs(3600));
    ops.woken(&mut w);
    ops.take();
    ops.accepted(&mut w, 10);
    ops.take();
    let others = handshake(&mut w, &mut ops, &mut peer);
    eprintln!(
        "{others:?}; log {:?}; peer saw close_notify: {}",
        log.borrow(),
        peer.closed
    );
    assert!(
        !others.contains(&Cmd::Close(0)),
        "closed as idle before its first request"
    );
}

/// The same with a handler whose `on_error` writes nothing: the echo of the good record alone
/// is left unsealed.
#[test]
fn a_reply_left_unsealed_at_a_tls_error_does_not_keep_a_quiet_session() {
    QUIET_ON_ERROR.with(|q| q.set(true));
    let (mut w, log, _, _) = tls_worker(Timeouts::default(), 1 << 20);
    let mut ops = FakeOps::default();
    let mut peer = Peer::new();
    ops.accepted(&mut w, 10);
    ops.take();
    handshake(&mut w, &mut ops, &mut peer);
    peer.tls.writer().write_all(b"hello").unwrap();
    let good = peer.wire();
    let mut bad = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    bad.extend_from_slice(&[0u8; 32]);
    ops.received(&mut w, 0, &good);
    ops.received(&mut w, 0, &bad);
    let mut others = run_turns(&mut w, &mut ops, Some(&mut peer));
    ops.read_closed(&mut w, 0, None);
    others.extend(run_turns(&mut w, &mut ops, None));
    eprintln!("{others:?}; {}; log {:?}", state(&w), log.borrow());
    assert!(
        others.contains(&Cmd::Close(0)),
        "session never closes: {}",
        state(&w)
    );
}

/// A plain session's read timeout closes a frame that never completes; a TLS record that
/// never completes sits in rustls's buffer, which `reader.buffered()` does not see.
#[test]
fn the_read_timeout_sees_a_partial_record() {
    let (mut w, log, _, _) = tls_worker(timeouts(None, Some(100), None), 1 << 20);
    let mut ops = FakeOps::default();
    let mut peer = Peer::new();
    ops.accepted(&mut w, 10);
    ops.take();
    handshake(&mut w, &mut ops, &mut peer);
    peer.tls.writer().write_all(b"[abc]").unwrap();
    let rec = peer.wire();
    ops.received(&mut w, 0, &rec[..rec.len() / 2]);
    ops.end_turn(&mut w);
    ops.take();
    let mut others = Vec::new();
    for t in [50, 150, 1_000, 100_000] {
        at(&mut w, &mut ops, t);
        others.extend(ops.take());
    }
    eprintln!("{others:?}; {}; log {:?}", state(&w), log.borrow());
    assert!(
        others.contains(&Cmd::Close(0)),
        "a record that never completes is never timed out"
    );
}

/// One segment from the peer: a request record of exactly 4096 bytes (rustls reads 4 KiB at a
/// time), then garbage. The request is answered in round one, the garbage fails round two.
#[test]
fn a_request_then_garbage_in_one_segment_closes_the_session() {
    QUIET_ON_ERROR.with(|q| q.set(true));
    let (mut w, log, _, _) = tls_worker(Timeouts::default(), 1 << 20);
    let mut ops = FakeOps::default();
    let mut peer = Peer::new();
    ops.accepted(&mut w, 10);
    ops.take();
    handshake(&mut w, &mut ops, &mut peer);
    peer.tls.writer().write_all(&[b'x'; 4096 - 22]).unwrap();
    let mut seg = peer.wire();
    assert_eq!(seg.len(), 4096);
    seg.extend_from_slice(b"\x17\x03\x03\x00\x20AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    ops.received(&mut w, 0, &seg);
    let mut others = run_turns(&mut w, &mut ops, Some(&mut peer));
    ops.read_closed(&mut w, 0, None);
    others.extend(run_turns(&mut w, &mut ops, None));
    eprintln!("{others:?}; {}; log {:?}", state(&w), log.borrow());
    assert!(
        others.contains(&Cmd::Close(0)),
        "session never closes: {}",
        state(&w)
    );
}

fn client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki().0.clone())).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS connect whose TCP connect took longer than the write timeout: `begin_handshake`
/// queues the ClientHello (so `writing()`) with `write_progress` still the connect's start;
/// the write deadline is in the past, and the Handshaking branch of `check_timers` only
/// reschedules it: `fire_timers` pops the same entry forever.
#[test]
fn a_tls_connect_slower_than_the_write_timeout_does_not_spin() {
    let connect = crate::tls::TlsConnect::new(client_config(), "localhost").unwrap();
    let (mut w, _, stats, _) = tls_worker_with(
        timeouts(None, None, Some(100)),
        1 << 20,
        None,
        Some(connect),
    );
    let mut ops = FakeOps::default();
    ops.accepted(&mut w, 10);
    ops.take();
    ops.received(&mut w, 0, b"dial");
    ops.end_turn(&mut w);
    eprintln!("{:?}", ops.take());
    w.now = 1_000; // Connected 1 ms later.
    ops.connected(&mut w, 1, Ok(()));
    let watch = stats.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        eprintln!(
            "WATCHDOG: fire_timers has not returned after 2 s: {} timer fires",
            watch.snapshot().timer_fires
        );
        std::process::exit(101);
    });
    ops.fire_timers(&mut w);
    eprintln!(
        "fire_timers returned; {} timer fires",
        stats.snapshot().timer_fires
    );
}

/// A session handed over where the worker allows it: three echo rounds after its handshake;
/// the counters after them. The session must still be in rustls.
fn echo_with_kernel_tls_on() -> crate::stats::CoreSnapshot {
    let (mut w, _, stats, _) = tls_worker(Timeouts::default(), 1 << 20);
    w.cfg.kernel_tls = true;
    let mut ops = FakeOps::default();
    let mut peer = Peer::new();
    ops.accepted(&mut w, 10);
    ops.take();
    handshake(&mut w, &mut ops, &mut peer);
    for round in 0..3 {
        peer.tls.writer().write_all(b"[ping]").unwrap();
        let wire = peer.wire();
        ops.received(&mut w, 0, &wire);
        run_turns(&mut w, &mut ops, Some(&mut peer));
        assert_eq!(
            peer.plain,
            b"[ping]".repeat(round + 1),
            "echoed through rustls"
        );
    }
    assert!(w.conns[0].state.tls.is_some() && !w.conns[0].state.kernel_tls);
    stats.snapshot()
}

/// Where the kernel refuses kernel TLS although its probe passed (here: the session's
/// descriptor is not even a socket, and the probe's answer is overridden), the handover is tried
/// once, after the handshake's last records are written, and the session goes on in rustls.
#[test]
fn a_refused_kernel_handover_leaves_the_session_to_rustls() {
    crate::ktls::ASSUME_TAKEN.set(true);
    let s = echo_with_kernel_tls_on();
    assert_eq!(
        (s.tls_kernel, s.tls_kernel_refused),
        (0, 1),
        "tried once: {s:?}"
    );
}

/// A cipher the kernel's probe refused is never tried: no attach, no refusal counted.
#[test]
fn a_cipher_the_kernel_refused_at_the_probe_is_never_tried() {
    if crate::probe::kernel_tls().is_ok() {
        eprintln!("skipped: this kernel has kernel TLS, which may take the negotiated cipher");
        return;
    }
    let s = echo_with_kernel_tls_on();
    assert_eq!((s.tls_kernel, s.tls_kernel_refused), (0, 0), "{s:?}");
}

/// An idle TLS session whose close_notify is never written (the peer stopped reading once the
/// kernel's send buffer filled, so the send never completes) still closes, after the grace.
#[test]
fn an_idle_close_notify_the_peer_never_takes_does_not_keep_the_session() {
    let t = Timeouts::new(Some(std::time::Duration::from_micros(100)), None, None);
    let (mut w, _, _, _) = tls_worker(t, 1 << 20);
    let mut ops = FakeOps::default();
    let mut peer = Peer::new();
    ops.accepted(&mut w, 10);
    ops.take();
    handshake(&mut w, &mut ops, &mut peer);
    let start = w.now;
    // The idle timeout passes: the close_notify goes out, and its send never completes.
    w.now = start + 1_000;
    ops.fire_timers(&mut w);
    ops.end_turn(&mut w);
    let cmds = ops.take();
    assert!(
        cmds.iter().any(|c| matches!(c, Cmd::Send(0, ..))),
        "the close_notify is sent: {cmds:?}"
    );
    assert!(
        !cmds.contains(&Cmd::Close(0)),
        "not closed before its grace"
    );
    w.now = start + 1_000 + super::super::deadline::CLOSE_NOTIFY_GRACE;
    ops.fire_timers(&mut w);
    ops.end_turn(&mut w);
    let cmds = ops.take();
    assert!(
        cmds.contains(&Cmd::Close(0)),
        "closed after the grace: {cmds:?}"
    );
}

/// A session whose cipher the kernel does not take (here: no kernel TLS at all) never waits
/// for a handover: the wait list is walked every settled turn.
#[test]
fn a_session_the_kernel_cannot_take_never_waits_for_it() {
    if crate::probe::kernel_tls().is_ok() {
        eprintln!("skipped: this kernel has kernel TLS");
        return;
    }
    let (mut w, _, _, _) = tls_worker(Timeouts::default(), 1 << 20);
    w.cfg.kernel_tls = true;
    let mut ops = FakeOps::default();
    let mut peer = Peer::new();
    ops.accepted(&mut w, 10);
    ops.take();
    handshake(&mut w, &mut ops, &mut peer);
    assert!(w.kernel_wait.is_empty(), "{} waiting", w.kernel_wait.len());
}
