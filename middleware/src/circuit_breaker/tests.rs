//! Unit tests of the core breaker.

use std::time::Duration;

use tokio::time::advance;

use super::*;

fn count_config(size: u32, min: u32, rate: f64) -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .name("test")
        .count_window(size)
        .minimum_calls(min)
        .failure_rate_threshold(rate)
        .wait_in_open(Duration::from_secs(10))
        .half_open_max_calls(2)
        .build()
        .unwrap()
}

fn record(b: &CircuitBreaker, outcome: Outcome) {
    b.try_acquire().expect("admitted").record(outcome);
}

#[tokio::test(start_paused = true)]
async fn seed_preset_opens_after_five_consecutive_failures() {
    let b = CircuitBreaker::new(CircuitBreakerConfig::five_consecutive_failures());
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    record(&b, Outcome::Success);
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Closed, "the success broke the run");
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
    let open = b.try_acquire().unwrap_err();
    assert_eq!(open.retry_after(), Duration::from_secs(60));
    assert_eq!(open.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn count_window_trips_at_exact_threshold() {
    // 10 calls, 50 %: 4 failures of 10 stay closed, the 5th failure trips.
    let b = CircuitBreaker::new(count_config(10, 10, 50.0));
    for _ in 0..6 {
        record(&b, Outcome::Success);
    }
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.window().failure_rate, Some(40.0));
    record(&b, Outcome::Failure); // replaces a success: 5 of 10
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn minimum_calls_is_respected() {
    let b = CircuitBreaker::new(count_config(10, 5, 50.0));
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Closed, "4 calls < minimum 5");
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn open_moves_to_half_open_after_wait_and_probes_close_it() {
    let b = CircuitBreaker::new(count_config(2, 2, 50.0));
    record(&b, Outcome::Failure);
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
    advance(Duration::from_millis(9_999)).await;
    let open = b.try_acquire().unwrap_err();
    assert_eq!(open.retry_after(), Duration::from_millis(1));
    assert_eq!(open.retry_after_secs(), 1);
    advance(Duration::from_millis(1)).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert_eq!(p1.admitted_in(), State::HalfOpen);
    assert_eq!(
        b.try_acquire().unwrap_err().state(),
        State::HalfOpen,
        "exactly 2 probes"
    );
    p1.success();
    assert_eq!(b.state(), State::HalfOpen);
    p2.success();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.window().calls, 0, "closing starts an empty window");
}

#[tokio::test(start_paused = true)]
async fn half_open_failure_reopens() {
    let b = CircuitBreaker::new(count_config(2, 2, 50.0));
    record(&b, Outcome::Failure);
    record(&b, Outcome::Failure);
    advance(Duration::from_secs(10)).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    p1.failure(); // 1 of 2 probes = 50 %: certain to reach the threshold
    assert_eq!(b.state(), State::Open);
    p2.success(); // stale: cannot close the new open period
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after(),
        Duration::from_secs(10)
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_probe_returns_its_slot() {
    let b = CircuitBreaker::new(count_config(2, 2, 50.0));
    record(&b, Outcome::Failure);
    record(&b, Outcome::Failure);
    advance(Duration::from_secs(10)).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p1);
    let p3 = b
        .try_acquire()
        .expect("the cancelled probe's slot is free again");
    p2.success();
    p3.success();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn cancelled_and_ignored_calls_never_trip() {
    let b = CircuitBreaker::new(count_config(4, 1, 50.0));
    for _ in 0..100 {
        drop(b.try_acquire().unwrap());
        record(&b, Outcome::Ignored);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.window().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_breaker() {
    let config = CircuitBreakerConfig::builder()
        .count_window(4)
        .minimum_calls(4)
        .slow_call(Duration::from_millis(100), 50.0)
        .build()
        .unwrap();
    let b = CircuitBreaker::new(config);
    record(&b, Outcome::Success);
    record(&b, Outcome::Success);
    let p = b.try_acquire().unwrap();
    advance(Duration::from_millis(99)).await;
    p.success(); // 99 ms: not slow
    let p = b.try_acquire().unwrap();
    advance(Duration::from_millis(100)).await;
    p.success(); // 100 ms: slow, but 1 of 4 = 25 %
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.window().slow_calls, 1);
    let p = b.try_acquire().unwrap();
    advance(Duration::from_millis(150)).await;
    p.success(); // 2 of the last 4 slow = 50 %
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn operator_states() {
    let b = CircuitBreaker::new(count_config(2, 1, 50.0));
    b.force_open();
    assert_eq!(b.try_acquire().unwrap_err().state(), State::ForcedOpen);
    advance(Duration::from_secs(3600)).await;
    assert_eq!(b.state(), State::ForcedOpen, "forced open never times out");
    b.force_closed();
    record(&b, Outcome::Failure);
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::ForcedClosed);
    assert_eq!(b.window().failures, 2, "forced closed keeps recording");
    b.disable();
    record(&b, Outcome::Failure);
    assert_eq!(b.window().failures, 2, "disabled records nothing");
    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.window().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn call_helper_times_out_and_counts_failure() {
    let config = CircuitBreakerConfig::builder()
        .count_window(1)
        .minimum_calls(1)
        .call_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let b = CircuitBreaker::new(config);
    let r = b
        .call(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, ()>(())
        })
        .await;
    assert!(matches!(r, Err(CallError::Timeout(d)) if d == Duration::from_millis(50)));
    assert_eq!(b.state(), State::Open);
}
