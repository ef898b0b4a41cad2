//! # palisade-top
//!
//! A live terminal dashboard for Palisade servers, built on [ratatui]. It connects to the admin
//! API (`/admin/v1/snapshot` and the `/admin/v1/stream` Server-Sent Events), shows workers,
//! latency, throughput, status codes, rate limits, circuit breakers, caches and the audit log,
//! and changes limits and runs operator actions at runtime.
//!
//! The crate follows the Elm architecture, split the way tokio-console is:
//!
//! | module          | role                                                              |
//! |-----------------|-------------------------------------------------------------------|
//! | `state`         | all application state and `update(msg) -> effect`; no I/O        |
//! | `view`          | rendering only, from `&State`                                      |
//! | `input`         | the key map (one table drives dispatch *and* the help overlay)    |
//! | `client`        | the admin HTTP client (hyper, HTTP/1.1), errors classified         |
//! | `sse`           | an incremental Server-Sent Events parser                           |
//! | `connection`    | the connection task: stream, polling fallback, reconnect backoff   |
//! | `term`          | terminal setup and a guard restoring it on exit and on panic      |
//! | `app`           | the main loop: input, connection updates and a fixed-rate redraw  |
//!
//! The default token path is [`palisade::admin::token::default_token_path`], re-exported here:
//! the server writes the token where the dashboard looks, and neither depends on the other.
//!
//! The dashboard never exits on its own: when the server goes away it keeps the last data,
//! dims it, says since when it is stale and why, and reconnects with exponential backoff.
//!
//! ```
//! // The token file the reference server writes and the dashboard reads by default.
//! let path = palisade_top::token_path_from(None, Some("/home/ops".into()));
//! assert_eq!(path.unwrap(), std::path::Path::new("/home/ops/.local/state/palisade/admin.token"));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod app;
pub mod client;
pub mod connection;
#[cfg(test)]
mod fixtures;
pub mod format;
pub mod input;
pub mod sse;
pub mod state;
pub mod term;
pub mod token;
pub mod view;

pub use token::{TokenSource, default_token_path, token_path_from};
