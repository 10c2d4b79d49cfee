//! TLS for servers and clients: rustls configurations from PEM files, and what a session's
//! handshake settled.
//!
//! A server serves TLS with [`Server::tls`](crate::Server::tls); a client (or a handler's
//! `CoreCtx::connect_tls`) speaks it with a [`TlsConnect`].

pub use ringwire_runtime::tls::{rustls, TlsConnect, TlsInfo};
