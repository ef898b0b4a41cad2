//! # palisade-server
//!
//! The Palisade reference server: the seed REST API behind every Palisade layer, served by a
//! supervisor and worker processes (or a single process), with an admin endpoint.
//!
//! The binary is `palisade`; `palisade --help` lists every option and `palisade --print-config`
//! shows the effective configuration and where each value came from.
#![deny(missing_docs)]

pub mod admin;
pub mod api;
pub mod app;
pub mod balance;
pub mod channel;
pub mod cli;
pub mod config;
pub mod db;
pub mod fd;
pub mod log_limit;
pub mod settings;
pub mod supervisor;
pub mod tls;
pub mod worker;
