//! # palisade-server
//!
//! The Palisade reference server: the seed REST API behind every Palisade layer, served by a
//! supervisor and worker processes (or a single process), with an admin endpoint.
//!
//! The binary is `palisade`; `palisade --help` lists every option and `palisade --print-config`
//! shows the effective configuration and where each value came from.
//!
//! Unix only (Linux, macOS): the supervisor forks and execs workers that inherit the listener,
//! a control channel and shared-memory zones by descriptor number. The `palisade` library and
//! `palisade-top` build on every platform.
#![deny(missing_docs)]

#[cfg(not(unix))]
compile_error!(
    "palisade-server runs on unix systems only (Linux, macOS): its supervisor forks and execs \
     workers that inherit descriptors. The `palisade` library and `palisade-top` build everywhere."
);

pub mod admin;
pub mod api;
pub mod app;
pub mod balance;
pub mod channel;
pub mod cli;
pub mod config;
pub mod db;
pub mod fd;
pub mod fleet;
pub mod log_limit;
pub mod settings;
pub mod supervisor;
#[cfg(feature = "tls")]
pub mod tls;
pub mod worker;
