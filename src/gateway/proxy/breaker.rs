//! The circuit breaker of one upstream (SPEC §5.2): opens at ≥ 50 % failures over ≥ 10 requests in
//! 30 s, rejects fast while open, and lets one trial request through after 30 s.
//!
//! Every caller asks for a [`Permit`] before calling the upstream and gives it a verdict afterwards.
//! Verdicts from permits handed out before the last state change are ignored: a slow request that
//! started while the circuit was closed must not reopen a circuit its trial just closed.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ProxyConfig;

/// The window is counted in this many buckets, so memory stays constant however busy the upstream.
const BUCKETS: u32 = 30;

/// How long a caller is told to wait while the one half-open trial is still under way.
const TRIAL_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// The circuit opens when at least this share of the window's requests failed…
    pub failure_ratio: f64,
    /// …and the window holds at least this many requests.
    pub min_requests: u32,
    pub window: Duration,
    /// How long the circuit stays open before a trial request is let through.
    pub open_for: Duration,
}

impl BreakerSettings {
    pub fn from_config(config: &ProxyConfig) -> Self {
        Self {
            failure_ratio: config.breaker_failure_ratio,
            min_requests: config.breaker_min_requests,
            window: Duration::from_secs(config.breaker_window_secs),
            open_for: Duration::from_secs(config.breaker_open_secs),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the `gateway_circuit_state` gauge.
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// The circuit is open: the request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub retry_after: Duration,
}

/// One upstream's breaker; clones share the same state.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    /// Bumped on every transition; permits remember the generation they were issued in.
    generation: u64,
    window: Window,
}

#[derive(Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

impl CircuitBreaker {
    pub fn new(name: &str, settings: BreakerSettings) -> Self {
        let breaker = Self {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                settings,
                inner: Mutex::new(Inner {
                    state: State::Closed,
                    generation: 0,
                    window: Window::new(settings.window, Instant::now()),
                }),
            }),
        };
        breaker.shared.publish(BreakerState::Closed);
        breaker
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Asks to send one request; `Err` means the circuit is open and the request must not be sent.
    pub fn try_acquire(&self) -> Result<Permit, Open> {
        self.try_acquire_at(Instant::now())
    }

    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    fn state_at(&self, now: Instant) -> BreakerState {
        let mut inner = self.shared.lock();
        self.shared.expire_open(&mut inner, now);
        inner.state.public()
    }

    fn try_acquire_at(&self, now: Instant) -> Result<Permit, Open> {
        let mut inner = self.shared.lock();
        self.shared.expire_open(&mut inner, now);
        let (trial, retry_after) = match &mut inner.state {
            State::Closed => (false, None),
            State::HalfOpen { trial_in_flight } if !*trial_in_flight => {
                *trial_in_flight = true;
                (true, None)
            }
            State::HalfOpen { .. } => (false, Some(TRIAL_RETRY_AFTER)),
            State::Open { until } => (false, Some(until.saturating_duration_since(now))),
        };
        if let Some(retry_after) = retry_after {
            metrics::counter!("gateway_circuit_rejections_total", "upstream" => self.shared.name.clone())
                .increment(1);
            return Err(Open { retry_after });
        }
        Ok(Permit {
            shared: self.shared.clone(),
            generation: inner.generation,
            trial,
            settled: false,
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent across a panic elsewhere: every update is a plain assignment.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open → HalfOpen happens lazily, when someone looks after `open_for` has passed.
    fn expire_open(&self, inner: &mut Inner, now: Instant) {
        if matches!(inner.state, State::Open { until } if now >= until) {
            self.transition(
                inner,
                State::HalfOpen {
                    trial_in_flight: false,
                },
            );
        }
    }

    fn transition(&self, inner: &mut Inner, to: State) {
        inner.state = to;
        inner.generation += 1;
        let state = to.public();
        tracing::info!(upstream = %self.name, state = state.as_str(), "circuit breaker state changed");
        self.publish(state);
    }

    fn publish(&self, state: BreakerState) {
        metrics::gauge!("gateway_circuit_state", "upstream" => self.name.clone())
            .set(state.gauge());
    }

    fn settle(&self, generation: u64, success: bool, now: Instant) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        match inner.state {
            State::Closed => {
                inner.window.record(now, success);
                let (requests, failures) = inner.window.totals(now);
                let settings = &self.settings;
                if requests >= settings.min_requests.max(1)
                    && f64::from(failures) >= settings.failure_ratio * f64::from(requests)
                {
                    let until = now + settings.open_for;
                    self.transition(&mut inner, State::Open { until });
                }
            }
            // Only the trial holds a permit of the half-open generation.
            State::HalfOpen { .. } if success => {
                inner.window.reset();
                self.transition(&mut inner, State::Closed);
            }
            State::HalfOpen { .. } => {
                let until = now + self.settings.open_for;
                self.transition(&mut inner, State::Open { until });
            }
            State::Open { .. } => {}
        }
    }

    /// A trial dropped without a verdict frees the slot, or the circuit would stay half-open forever.
    fn release_trial(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if let State::HalfOpen { trial_in_flight } = &mut inner.state {
            *trial_in_flight = false;
        }
    }
}

impl State {
    fn public(self) -> BreakerState {
        match self {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// Leave to send one request. Give it a verdict with [`Permit::success`] or [`Permit::failure`];
/// dropping it without one counts as neither.
#[must_use = "a permit must be given a verdict"]
pub struct Permit {
    shared: Arc<Shared>,
    generation: u64,
    trial: bool,
    settled: bool,
}

impl Permit {
    pub fn success(self) {
        self.settle_at(true, Instant::now());
    }

    pub fn failure(self) {
        self.settle_at(false, Instant::now());
    }

    fn settle_at(mut self, success: bool, now: Instant) {
        self.settled = true;
        self.shared.settle(self.generation, success, now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.trial && !self.settled {
            self.shared.release_trial(self.generation);
        }
    }
}

/// Requests and failures over the last `window`, in fixed buckets.
struct Window {
    origin: Instant,
    width: Duration,
    buckets: Vec<Bucket>,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Which bucket-width slice of time since `origin` this bucket currently counts.
    slice: u64,
    requests: u32,
    failures: u32,
}

impl Window {
    fn new(window: Duration, origin: Instant) -> Self {
        Self {
            origin,
            width: (window / BUCKETS).max(Duration::from_millis(1)),
            buckets: vec![Bucket::default(); BUCKETS as usize],
        }
    }

    fn slice(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.width.as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&mut self, now: Instant, success: bool) {
        let slice = self.slice(now);
        let bucket = &mut self.buckets[(slice % u64::from(BUCKETS)) as usize];
        if bucket.slice != slice {
            *bucket = Bucket {
                slice,
                ..Bucket::default()
            };
        }
        bucket.requests = bucket.requests.saturating_add(1);
        if !success {
            bucket.failures = bucket.failures.saturating_add(1);
        }
    }

    /// (requests, failures) in the buckets still inside the window.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let current = self.slice(now);
        self.buckets
            .iter()
            .filter(|b| current.saturating_sub(b.slice) < u64::from(BUCKETS))
            .fold((0u32, 0u32), |(r, f), b| {
                (r.saturating_add(b.requests), f.saturating_add(b.failures))
            })
    }

    fn reset(&mut self) {
        self.buckets.fill(Bucket::default());
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
