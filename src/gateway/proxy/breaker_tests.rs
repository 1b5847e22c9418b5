//! Time is passed explicitly (`*_at`), so these tests run instantly and need no paused clock.

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn breaker() -> CircuitBreaker {
    CircuitBreaker::new(
        "test",
        BreakerSettings {
            failure_ratio: 0.5,
            min_requests: 10,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(30),
        },
    )
}

/// Sends `successes` then `failures` requests at `now`.
fn record(breaker: &CircuitBreaker, now: Instant, successes: u32, failures: u32) {
    for success in (0..successes)
        .map(|_| true)
        .chain((0..failures).map(|_| false))
    {
        let permit = breaker.try_acquire_at(now).expect("the circuit is closed");
        permit.settle_at(success, now);
    }
}

/// A breaker that opened at the returned instant.
fn opened() -> (CircuitBreaker, Instant) {
    let breaker = breaker();
    let t0 = Instant::now();
    record(&breaker, t0, 0, 10);
    assert_eq!(breaker.state_at(t0), BreakerState::Open);
    (breaker, t0)
}

#[test]
fn circuit_opens_at_half_failures_over_ten_requests() {
    let breaker = breaker();
    let t0 = Instant::now();
    record(&breaker, t0, 5, 4);
    assert_eq!(breaker.state_at(t0), BreakerState::Closed);
    record(&breaker, t0, 0, 1);
    assert_eq!(breaker.state_at(t0), BreakerState::Open);
    assert_eq!(breaker.state().as_str(), "open");
}

#[test]
fn circuit_stays_closed_with_nine_failures_of_nine_requests() {
    let breaker = breaker();
    let t0 = Instant::now();
    record(&breaker, t0, 0, 9);
    assert_eq!(breaker.state_at(t0), BreakerState::Closed);
    assert!(breaker.try_acquire_at(t0).is_ok());
}

#[test]
fn circuit_stays_closed_at_four_failures_of_ten() {
    let breaker = breaker();
    let t0 = Instant::now();
    record(&breaker, t0, 6, 4);
    assert_eq!(breaker.state_at(t0), BreakerState::Closed);
    assert_eq!(breaker.state().as_str(), "closed");
}

#[test]
fn open_circuit_rejects_fast_with_a_retry_after_counting_down() {
    let (breaker, t0) = opened();
    let open = breaker.try_acquire_at(t0).err().expect("rejected");
    assert_eq!(open.retry_after, 30 * SECOND);
    let open = breaker
        .try_acquire_at(t0 + 10 * SECOND)
        .err()
        .expect("rejected");
    assert_eq!(open.retry_after, 20 * SECOND);
    assert_eq!(breaker.state_at(t0 + 29 * SECOND), BreakerState::Open);
}

#[test]
fn half_open_circuit_lets_exactly_one_trial_through() {
    let (breaker, t0) = opened();
    let later = t0 + 30 * SECOND;
    assert_eq!(breaker.state_at(later), BreakerState::HalfOpen);
    assert_eq!(breaker.state_at(later).as_str(), "half_open");
    let _trial = breaker.try_acquire_at(later).expect("the trial");
    let open = breaker
        .try_acquire_at(later)
        .err()
        .expect("a second trial is rejected");
    assert!(open.retry_after > Duration::ZERO);
}

#[test]
fn dropped_trial_frees_the_half_open_slot() {
    let (breaker, t0) = opened();
    let later = t0 + 30 * SECOND;
    drop(breaker.try_acquire_at(later).expect("the trial"));
    assert_eq!(breaker.state_at(later), BreakerState::HalfOpen);
    assert!(breaker.try_acquire_at(later).is_ok());
}

#[test]
fn successful_trial_closes_the_circuit_with_a_fresh_window() {
    let (breaker, t0) = opened();
    let later = t0 + 30 * SECOND;
    breaker
        .try_acquire_at(later)
        .expect("the trial")
        .settle_at(true, later);
    assert_eq!(breaker.state_at(later), BreakerState::Closed);
    // The ten failures that opened it are forgotten.
    record(&breaker, later, 0, 9);
    assert_eq!(breaker.state_at(later), BreakerState::Closed);
}

#[test]
fn failed_trial_reopens_the_circuit_for_another_open_period() {
    let (breaker, t0) = opened();
    let later = t0 + 30 * SECOND;
    breaker
        .try_acquire_at(later)
        .expect("the trial")
        .settle_at(false, later);
    assert_eq!(breaker.state_at(later), BreakerState::Open);
    let open = breaker
        .try_acquire_at(later + SECOND)
        .err()
        .expect("rejected");
    assert_eq!(open.retry_after, 29 * SECOND);
    assert_eq!(
        breaker.state_at(later + 30 * SECOND),
        BreakerState::HalfOpen
    );
}

#[test]
fn old_failures_age_out_of_the_window() {
    let breaker = breaker();
    let t0 = Instant::now();
    record(&breaker, t0, 0, 9);
    record(&breaker, t0 + 31 * SECOND, 0, 1);
    assert_eq!(breaker.state_at(t0 + 31 * SECOND), BreakerState::Closed);
}

#[test]
fn failures_within_the_window_add_up() {
    let breaker = breaker();
    let t0 = Instant::now();
    record(&breaker, t0, 0, 9);
    record(&breaker, t0 + 20 * SECOND, 0, 1);
    assert_eq!(breaker.state_at(t0 + 20 * SECOND), BreakerState::Open);
}

#[test]
fn verdicts_of_permits_issued_before_a_state_change_are_ignored() {
    let breaker = breaker();
    let t0 = Instant::now();
    let straggler = breaker.try_acquire_at(t0).expect("the circuit is closed");
    record(&breaker, t0, 0, 10);
    let later = t0 + 30 * SECOND;
    breaker
        .try_acquire_at(later)
        .expect("the trial")
        .settle_at(true, later);
    record(&breaker, later, 0, 9);
    // Counted, this would be the tenth failure of ten in the new window.
    straggler.settle_at(false, later);
    assert_eq!(breaker.state_at(later), BreakerState::Closed);
}

#[test]
fn settings_come_from_the_proxy_config() {
    let settings = BreakerSettings::from_config(&ProxyConfig::default());
    assert_eq!(settings.failure_ratio, 0.5);
    assert_eq!(settings.min_requests, 10);
    assert_eq!(settings.window, 30 * SECOND);
    assert_eq!(settings.open_for, 30 * SECOND);
}
