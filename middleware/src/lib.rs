//! # Palisade
//!
//! Production-ready [tower] layers for HTTP services: rate limiting, circuit breaking,
//! two-level caching, graceful drain, tracing and metrics. Every layer is built as a pair
//! `(layer, handle)`: the layer goes into your service stack, the handle reads live statistics
//! and changes settings at runtime without losing state. Handles register in a
//! [`control::Registry`], which the [`admin`](crate#features) router exposes over HTTP.
//!
//! ## Features
//!
//! | feature           | what it enables                                              |
//! |-------------------|--------------------------------------------------------------|
//! | `rate-limit`      | GCRA rate limiting (local, shared-memory and Redis stores)   |
//! | `circuit-breaker` | circuit breaking for inbound routes and outbound clients     |
//! | `cache`           | moka L1 + optional Redis L2 cache, HTTP response cache layer |
//! | `redis`           | Redis L2, distributed limits, invalidation backplane         |
//! | `shutdown`        | graceful drain coordinator                                   |
//! | `observe`         | request ids, trace context, spans, metrics, live histograms  |
//! | `admin`           | the admin HTTP router over the control registry              |
//!
//! All are on by default; Redis is only *used* when configured.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "circuit-breaker")]
pub mod circuit_breaker;
pub mod control;
#[cfg(feature = "observe")]
pub mod observe;
pub mod problem;
#[cfg(feature = "rate-limit")]
pub mod rate_limit;
#[cfg(feature = "shutdown")]
pub mod shutdown;
