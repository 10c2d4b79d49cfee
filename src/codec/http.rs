//! HTTP/1.1 request codec (stub).
