//! A handler factory that opens an outbound connection per accepted session (a per-client
//! upstream) never takes the core past `max_sessions`: the session being made counts.

mod util;

use std::net::TcpListener;

use ringwire::codec::{Len32, Lines};
use ringwire::{CoreCtx, Handler, Server, Session};

struct Front;
impl Handler<Lines> for Front {
    fn on_message(&mut self, s: &mut Session<'_, Lines>, line: &[u8]) {
        let _ = s.send(line);
    }
}
struct Up;
impl Handler<Len32> for Up {
    fn on_message(&mut self, _: &mut Session<'_, Len32>, _: &[u8]) {}
}

#[test]
fn a_factory_connect_at_the_session_bound_leaves_the_core_alive() {
    let backend = TcpListener::bind(util::any_port()).unwrap();
    let addr = backend.local_addr().unwrap();
    let server = util::start(
        Server::new(Lines::new(), move |ctx: &mut CoreCtx| {
            let _ = ctx.connect(addr, Len32, Up);
            Front
        })
        .cores(1)
        .max_sessions(3)
        .bind(util::any_port()),
    );
    let _a = util::connect(server.addr());
    server.wait_total("a and its backend", |t| t.accepted == 1);
    let _b = util::connect(server.addr());
    // b is accepted (3 sessions with a's pair) and its upstream refused for lack of room, or
    // b is refused: either way the core lives and counts it.
    let t = server.wait_total("b handled", |t| t.accepted + t.rejected == 2);
    assert_eq!(t.worker_deaths, 0, "the core died: {t:?}");
    let mut c = util::connect(server.addr());
    std::io::Write::write_all(&mut c, b"still serving\n").ok();
    server.stop_cleanly();
}
