//! The reference server's file schema for the layers: the `[rate_limit]` and `[cache]` tables
//! and how they become the library's layer configurations. The library itself only knows the
//! layer configs (`palisade::rate_limit::RateLimitConfig`, `palisade::cache::CacheConfig`, ...).

pub mod cache;
pub mod rate_limit;
