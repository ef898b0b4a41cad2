//! Metric handles, registered once per breaker name.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `palisade_circuit_breaker_calls_total` | counter | `breaker`, `outcome` = `success`, `failure`, `slow_success`, `slow_failure`, `ignored`, `cancelled` |
//! | `palisade_circuit_breaker_timeouts_total` | counter | `breaker` (also counted as `failure`) |
//! | `palisade_circuit_breaker_rejected_total` | counter | `breaker` |
//! | `palisade_circuit_breaker_transitions_total` | counter | `breaker`, `from`, `to` |
//! | `palisade_circuit_breaker_state` | gauge | `breaker`, `state`: breakers in that state (one-hot for a single breaker, key counts for a keyed one) |
//!
//! Keys of keyed breakers never become labels.

use std::fmt;
use std::sync::Once;

use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};

use super::State;

pub(crate) const CALLS: &str = "palisade_circuit_breaker_calls_total";
pub(crate) const TIMEOUTS: &str = "palisade_circuit_breaker_timeouts_total";
pub(crate) const REJECTED: &str = "palisade_circuit_breaker_rejected_total";
pub(crate) const TRANSITIONS: &str = "palisade_circuit_breaker_transitions_total";
pub(crate) const STATE: &str = "palisade_circuit_breaker_state";

/// Index into [`Metrics::calls`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum CallKind {
    Success = 0,
    Failure = 1,
    SlowSuccess = 2,
    SlowFailure = 3,
    Ignored = 4,
    Cancelled = 5,
}

impl CallKind {
    pub(crate) const ALL: [CallKind; 6] = [
        Self::Success,
        Self::Failure,
        Self::SlowSuccess,
        Self::SlowFailure,
        Self::Ignored,
        Self::Cancelled,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::SlowSuccess => "slow_success",
            Self::SlowFailure => "slow_failure",
            Self::Ignored => "ignored",
            Self::Cancelled => "cancelled",
        }
    }
}

pub(crate) struct Metrics {
    name: String,
    pub(crate) calls: [Counter; 6],
    pub(crate) timeouts: Counter,
    pub(crate) rejected: Counter,
    pub(crate) state: [Gauge; 6],
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("breaker", &self.name)
            .finish_non_exhaustive()
    }
}

fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        describe_counter!(CALLS, "Calls through a circuit breaker, by outcome.");
        describe_counter!(
            TIMEOUTS,
            "Calls a circuit breaker timed out (also counted as failures)."
        );
        describe_counter!(
            REJECTED,
            "Calls a circuit breaker refused without calling the service."
        );
        describe_counter!(TRANSITIONS, "Circuit breaker state transitions.");
        describe_gauge!(
            STATE,
            "Circuit breakers (or keys of a keyed breaker) in each state."
        );
    });
}

impl Metrics {
    pub(crate) fn new(name: &str) -> Self {
        describe();
        let calls = CallKind::ALL
            .map(|k| counter!(CALLS, "breaker" => name.to_owned(), "outcome" => k.as_str()));
        let state =
            State::ALL.map(|s| gauge!(STATE, "breaker" => name.to_owned(), "state" => s.as_str()));
        Self {
            name: name.to_owned(),
            calls,
            timeouts: counter!(TIMEOUTS, "breaker" => name.to_owned()),
            rejected: counter!(REJECTED, "breaker" => name.to_owned()),
            state,
        }
    }

    pub(crate) fn transition(&self, from: State, to: State) {
        counter!(TRANSITIONS, "breaker" => self.name.clone(), "from" => from.as_str(), "to" => to.as_str())
            .increment(1);
        self.state[from as usize].decrement(1.0);
        self.state[to as usize].increment(1.0);
    }
}
