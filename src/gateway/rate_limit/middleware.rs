//! Counting a request against its limits: the charges (one per limit that applies), admitting or
//! refusing the request on them, and the per-client-IP middleware for what is served without
//! authentication. The auth layer admits a signed-in request on both charges at once.

use std::fmt::{Display, Write};
use std::net::{IpAddr, SocketAddr};

use arrayvec::{ArrayString, ArrayVec};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::client_ip::{Bucket, client_ip};
use super::gcra::Gcra;
use super::{Decision, Decisions, RateLimiter, RouteClass, classify};
use crate::http::paths::is_under;

/// At most this many charges per request: its client's and its user's.
pub const MAX_CHARGES: usize = 2;

/// The charges one request is counted against, in order: its client's, then its user's.
pub type Charges = ArrayVec<Charge, MAX_CHARGES>;

/// One limit a request is counted against: the client's address or the signed-in user.
#[derive(Debug, Clone)]
pub struct Charge {
    key: Key,
    gcra: Gcra,
    scope: &'static str,
    class: RouteClass,
}

impl Charge {
    fn key(&self) -> &str {
        match &self.key {
            Key::Inline(key) => key.as_str(),
            Key::Spilled(key) => key,
        }
    }
}

/// A limiter key, built on the stack (every request is checked): `user:` and a UUID, or `ip:`, a
/// class and an address. Anything longer (a test's user name) is counted under its own name
/// rather than not at all.
#[derive(Debug, Clone)]
enum Key {
    Inline(ArrayString<96>),
    Spilled(String),
}

impl Key {
    fn of(args: std::fmt::Arguments<'_>) -> Self {
        let mut inline = ArrayString::new();
        match inline.write_fmt(args) {
            Ok(()) => Key::Inline(inline),
            Err(_) => Key::Spilled(args.to_string()),
        }
    }
}

/// The decisions a request was admitted on, whose headers its response carries.
#[derive(Debug, Default)]
#[must_use]
pub struct Admitted(Decisions);

impl Admitted {
    /// Puts the tightest decision's `RateLimit-*` headers on `response`: the budget a client runs
    /// out of first is the one worth showing (on a tie, the first charge's: the client's).
    pub fn apply(&self, response: &mut Response) {
        if let Some(tightest) = self.0.iter().min_by_key(|decision| decision.remaining) {
            tightest.apply_headers(response.headers_mut());
        }
    }

    /// Admitted on `other`'s charges too.
    pub fn and(mut self, other: Admitted) -> Self {
        for decision in other.0 {
            // Full only when more charges were admitted than a request has: keep the first ones.
            let _ = self.0.try_push(decision);
        }
        self
    }
}

impl RateLimiter {
    /// The per-IP charge of `request` from `peer` (`X-Forwarded-For` believed from a trusted proxy
    /// only): `None` when its path is exempt or its class's limit is off.
    pub fn ip_charge(&self, request: &Request, peer: IpAddr) -> Option<Charge> {
        self.ip_charge_in(counted_class(request.uri().path())?, request, peer)
    }

    /// The per-user charge of `user`'s request for `path`: `None` where the limit does not apply.
    pub fn user_charge(&self, path: &str, user: &(impl Display + ?Sized)) -> Option<Charge> {
        self.user_charge_in(counted_class(path)?, user)
    }

    /// The charges of `request` from `peer`, signed in as `user` when that is known: its
    /// client's, then its user's, each where its limit applies.
    pub fn charges<U: Display + ?Sized>(
        &self,
        request: &Request,
        peer: IpAddr,
        user: Option<&U>,
    ) -> Charges {
        let Some(class) = counted_class(request.uri().path()) else {
            return Charges::new();
        };
        let client = self.ip_charge_in(class, request, peer);
        let user = user.and_then(|user| self.user_charge_in(class, user));
        [client, user].into_iter().flatten().collect()
    }

    fn ip_charge_in(&self, class: RouteClass, request: &Request, peer: IpAddr) -> Option<Charge> {
        let gcra = Gcra::new(self.ip_limit(class), self.window())?;
        let ip = client_ip(peer, request.headers(), self.trusted_proxies());
        Some(Charge {
            key: Key::of(format_args!("ip:{}:{}", class.as_str(), Bucket(ip))),
            gcra,
            scope: "ip",
            class,
        })
    }

    fn user_charge_in(&self, class: RouteClass, user: &(impl Display + ?Sized)) -> Option<Charge> {
        // Webhooks act for no user; a stray subject there must not spend a user's budget.
        if class == RouteClass::Webhooks {
            return None;
        }
        let gcra = Gcra::new(self.user_limit(), self.window())?;
        Some(Charge {
            key: Key::of(format_args!("user:{user}")),
            gcra,
            scope: "user",
            class,
        })
    }

    /// Counts the request against `charges` in order (one round trip to Redis for all of them):
    /// admitted when every one allows it, else the 429 of the first that does not. Charges before
    /// the refusing one stay spent, as if they had been checked one after another; the refusing
    /// one and those after it are not spent.
    pub async fn admit(&self, charges: &Charges) -> Result<Admitted, Response> {
        if charges.is_empty() {
            return Ok(Admitted::default());
        }
        let limits = charges
            .iter()
            .map(|charge| (charge.key(), charge.gcra))
            .collect();
        let decisions = self.count(&limits).await;
        match charges.iter().zip(&decisions).find(|(_, d)| !d.allowed) {
            Some((charge, decision)) => {
                metrics::counter!(
                    "gateway_rate_limit_rejections_total",
                    "scope" => charge.scope,
                    "class" => charge.class.as_str()
                )
                .increment(1);
                Err(reject(*decision))
            }
            None => Ok(Admitted(decisions)),
        }
    }
}

/// Per-IP limit of the path's route class, for what is served without the auth layer (which
/// counts the client itself, together with the user).
pub async fn limit_by_ip(
    State(limiter): State<RateLimiter>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let charges = limiter.ip_charge(&request, peer.ip()).into_iter().collect();
    let admitted = match limiter.admit(&charges).await {
        Ok(admitted) => admitted,
        Err(rejected) => return rejected,
    };
    let mut response = next.run(request).await;
    admitted.apply(&mut response);
    response
}

/// The route class `path` is counted under; `None` when it is exempt from every limit.
fn counted_class(path: &str) -> Option<RouteClass> {
    (!is_exempt(path)).then(|| classify(path))
}

/// Orchestrators and scrapers probe these constantly; limiting them would fail health checks.
fn is_exempt(path: &str) -> bool {
    is_under(path, "/health")
        || is_under(path, "/docs")
        || matches!(path, "/live" | "/ready" | "/metrics" | "/openapi.json")
}

fn reject(decision: Decision) -> Response {
    decision.rejection().into_response()
}
