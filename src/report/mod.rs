//! The histogram reporter (stub).
