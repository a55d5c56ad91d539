//! Interop tests only (see `tests/`): the crates.io `lightning-storage-server`
//! 0.5.1 client, written by the VLS project, driving our `lssd`. A claim of
//! wire compatibility without such a test does not count.
