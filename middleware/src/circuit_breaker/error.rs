//! [`CircuitOpen`] (the rejection) and [`CallError`] (the outbound error type).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::State;
use crate::problem::Problem;

/// A call refused because the breaker is open (or half-open with every probe taken, or forced
/// open). Carries how long until the breaker may admit calls again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker `{breaker}` is {state}; retry after {retry_after:?}")]
pub struct CircuitOpen {
    pub(crate) breaker: Arc<str>,
    pub(crate) state: State,
    pub(crate) retry_after: Duration,
}

impl CircuitOpen {
    /// The breaker's name.
    pub fn breaker(&self) -> &str {
        &self.breaker
    }

    /// The state that refused the call: [`State::Open`], [`State::HalfOpen`] (all probes taken)
    /// or [`State::ForcedOpen`].
    pub fn state(&self) -> State {
        self.state
    }

    /// Time until the breaker may admit calls again: the remaining open time when open, one
    /// second when half-open with every probe taken (probes are usually quick), `wait_in_open`
    /// when forced open (an operator decides when it ends).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// [`retry_after`](Self::retry_after) in whole seconds for a `Retry-After` header: rounded
    /// up and never less than 1 (a `Retry-After: 0` invites an immediate retry).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }

    /// The `503 Service Unavailable` problem document for this rejection, with `breaker`,
    /// `state` and `retry_after_ms` members.
    pub fn problem(&self) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
            .detail(format!(
                "circuit breaker `{}` is {}",
                self.breaker, self.state
            ))
            .with("breaker", &*self.breaker)
            .with("state", self.state.as_str())
            .with("retry_after_ms", duration_ms(self.retry_after))
    }

    /// The `503` `application/problem+json` response with a `Retry-After` header.
    pub fn into_response<B>(&self) -> Response<B>
    where
        B: From<Bytes>,
    {
        let mut res = self.problem().into_response::<B>();
        res.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs()),
        );
        res
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The `504 Gateway Timeout` problem response for a call that ran out of `call_timeout_ms`.
pub(crate) fn timeout_response<B: From<Bytes>>(breaker: &str, after: Duration) -> Response<B> {
    Problem::new(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout")
        .detail(format!(
            "call through circuit breaker `{breaker}` timed out"
        ))
        .with("breaker", breaker)
        .with("timeout_ms", duration_ms(after))
        .into_response()
}

/// The error of a call made through a breaker in outbound mode
/// ([`CircuitBreakerLayer::outbound`](super::CircuitBreakerLayer::outbound)) or with
/// [`CircuitBreaker::call`](super::CircuitBreaker::call).
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker refused the call; the service was not called.
    #[error(transparent)]
    Open(CircuitOpen),
    /// The call ran longer than `call_timeout_ms` and was dropped (counted as a failure).
    #[error("call timed out after {0:?}")]
    Timeout(Duration),
    /// The service failed.
    #[error("service failed")]
    Inner(#[source] E),
}

impl<E> CallError<E> {
    /// The rejection, if the breaker refused the call.
    pub fn as_open(&self) -> Option<&CircuitOpen> {
        match self {
            Self::Open(o) => Some(o),
            _ => None,
        }
    }

    /// The service's error, if the service failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(ms: u64) -> CircuitOpen {
        CircuitOpen {
            breaker: "b".into(),
            state: State::Open,
            retry_after: Duration::from_millis(ms),
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(open(0).retry_after_secs(), 1);
        assert_eq!(open(1).retry_after_secs(), 1);
        assert_eq!(open(1000).retry_after_secs(), 1);
        assert_eq!(open(1001).retry_after_secs(), 2);
        assert_eq!(open(59_999).retry_after_secs(), 60);
    }

    #[test]
    fn rejection_is_a_503_problem_with_retry_after() {
        let res = open(2500).into_response::<http_body_util::Full<Bytes>>();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "3");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
}
