//! The reference server's file schema for the layers: the `[rate_limit]`, `[cache]` and `[redis]`
//! tables and how they become the library's layer configurations. The library itself only knows the
//! layer configs (`palisade::rate_limit::RateLimitConfig`, `palisade::cache::CacheConfig`, ...).

pub mod cache;
pub mod rate_limit;
pub mod redis;
