//! Shared code of ringwire's benchmark binaries.
