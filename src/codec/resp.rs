//! RESP2 request codec (stub).
