//! A browser push service, simulated (RFC 8030 §5, as Mozilla's autopush or FCM answer it), with
//! the browsers subscribed to it.
//!
//! [`PushServiceSim::subscribe`] does what a browser's `PushManager.subscribe` does: a fresh P-256
//! key pair and 16-byte auth secret, and an endpoint URL, given as the `PushSubscription` JSON the
//! web app posts to forma. A push request to an endpoint is accepted (201) only when:
//! - its `Authorization: vapid t=…, k=…` carries an ES256 JWT that verifies against `k`, whose
//!   `aud` is the endpoint's origin, whose `exp` is in the future and at most 24 hours away, and
//!   whose `sub` is a `mailto:` or `https:` URI (RFC 8292 §2, §3);
//! - it has a `TTL` and `Content-Encoding: aes128gcm`, and its body decrypts (RFC 8291) with the
//!   subscription's private key and auth secret.
//!
//! Otherwise it answers as push services do (400 for a bad payload, 401/403 for a bad token) and
//! records why. Tests script the answers of an endpoint (410 Gone, 404, 500, no answer at all).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// How the simulated push service answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 201 Created: the message is taken (after the checks above).
    Accept,
    /// 410 Gone: the subscription expired or was withdrawn.
    Gone,
    /// 404 Not Found: no such subscription.
    NotFound,
    /// 503 Service Unavailable.
    Unavailable,
    /// No answer until the simulator stops: the caller's timeout decides.
    Hang,
}

/// A browser's `PushSubscription.toJSON()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowserSubscription {
    pub endpoint: String,
    pub expiration_time: Option<i64>,
    pub keys: BrowserKeys,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrowserKeys {
    pub p256dh: String,
    pub auth: String,
}

/// A message the push service took, decrypted as the browser would.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub endpoint: String,
    /// The decrypted payload, as JSON (`Null` when it was not JSON).
    pub payload: Value,
    pub ttl: u64,
    /// The JWT's `sub`.
    pub subject: String,
}

/// The user agent's side of one subscription.
struct Browser {
    secret: p256::SecretKey,
    auth: [u8; 16],
    /// Answers for the next requests, in order; then `default`.
    script: VecDeque<Answer>,
    default: Answer,
}

#[derive(Default)]
struct Inner {
    origin: String,
    browsers: HashMap<String, Browser>,
    delivered: Vec<Delivered>,
    /// Why requests were refused (bad token, undecryptable body, …).
    refusals: Vec<String>,
    /// Requests per endpoint, whatever their answer.
    requests: HashMap<String, usize>,
}

/// The simulated push service. Cheap to clone.
#[derive(Clone)]
pub struct PushServiceSim {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct SimState {
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
}

impl PushServiceSim {
    /// Starts the service on a free loopback port until `stop` is cancelled.
    pub async fn start(stop: CancellationToken) -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let state = SimState {
            inner: inner.clone(),
            stop: stop.clone(),
        };
        let router = Router::new()
            .route("/push/{id}", post(receive))
            .with_state(state);
        let addr = super::serve_on_loopback(router, stop.clone()).await?;
        lock(&inner).origin = format!("http://{addr}");
        Ok(Self { addr, inner, stop })
    }

    /// A new browser subscription, as `PushManager.subscribe` makes it.
    pub fn subscribe(&self) -> BrowserSubscription {
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let auth: [u8; 16] = rand::random();
        let endpoint = format!("http://{}/push/{}", self.addr, uuid::Uuid::new_v4());
        let subscription = BrowserSubscription {
            endpoint: endpoint.clone(),
            expiration_time: None,
            keys: BrowserKeys {
                p256dh: URL_SAFE_NO_PAD
                    .encode(secret.public_key().to_encoded_point(false).as_bytes()),
                auth: URL_SAFE_NO_PAD.encode(auth),
            },
        };
        let browser = Browser {
            secret,
            auth,
            script: VecDeque::new(),
            default: Answer::Accept,
        };
        lock(&self.inner).browsers.insert(endpoint, browser);
        subscription
    }

    /// The next requests to `endpoint` get `answers`, in order, then the usual answer.
    pub fn answer_next(&self, endpoint: &str, answers: &[Answer]) {
        if let Some(browser) = lock(&self.inner).browsers.get_mut(endpoint) {
            browser.script.extend(answers.iter().copied());
        }
    }

    /// Every later request to `endpoint` gets `answer` (after any scripted ones).
    pub fn answer_always(&self, endpoint: &str, answer: Answer) {
        if let Some(browser) = lock(&self.inner).browsers.get_mut(endpoint) {
            browser.default = answer;
        }
    }

    /// The messages taken, oldest first.
    pub fn delivered(&self) -> Vec<Delivered> {
        lock(&self.inner).delivered.clone()
    }

    /// The messages taken for `endpoint`.
    pub fn delivered_to(&self, endpoint: &str) -> Vec<Delivered> {
        self.delivered()
            .into_iter()
            .filter(|d| d.endpoint == endpoint)
            .collect()
    }

    /// Why requests were refused: empty while forma speaks the protocol right.
    pub fn refusals(&self) -> Vec<String> {
        lock(&self.inner).refusals.clone()
    }

    /// How many requests reached `endpoint`.
    pub fn requests_to(&self, endpoint: &str) -> usize {
        lock(&self.inner)
            .requests
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }

    /// Stops the service.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: i64,
}

async fn receive(
    State(state): State<SimState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let (answer, origin, endpoint) = {
        let mut inner = lock(&state.inner);
        let endpoint = format!("{}/push/{id}", inner.origin);
        *inner.requests.entry(endpoint.clone()).or_default() += 1;
        let origin = inner.origin.clone();
        let Some(browser) = inner.browsers.get_mut(&endpoint) else {
            return (StatusCode::NOT_FOUND, "no such subscription".into());
        };
        let answer = browser.script.pop_front().unwrap_or(browser.default);
        (answer, origin, endpoint)
    };
    match answer {
        Answer::Accept => {}
        Answer::Gone => return (StatusCode::GONE, "subscription expired".into()),
        Answer::NotFound => return (StatusCode::NOT_FOUND, "no such subscription".into()),
        Answer::Unavailable => {
            return (StatusCode::SERVICE_UNAVAILABLE, "try again later".into());
        }
        Answer::Hang => {
            state.stop.cancelled().await;
            return (StatusCode::SERVICE_UNAVAILABLE, "stopping".into());
        }
    }
    let checked = check(&state, &headers, &body, &origin, &endpoint);
    let mut inner = lock(&state.inner);
    match checked {
        Ok(delivered) => {
            inner.delivered.push(delivered);
            (StatusCode::CREATED, String::new())
        }
        Err((status, why)) => {
            inner.refusals.push(format!("{status}: {why}"));
            (status, why)
        }
    }
}

/// The checks of a real push service and of the browser that decrypts.
fn check(
    state: &SimState,
    headers: &HeaderMap,
    body: &[u8],
    origin: &str,
    endpoint: &str,
) -> Result<Delivered, (StatusCode, String)> {
    let unauthorized = |why: &str| (StatusCode::UNAUTHORIZED, why.to_owned());
    let bad = |why: &str| (StatusCode::BAD_REQUEST, why.to_owned());
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());

    // RFC 8292 §3: `vapid t=<JWT>, k=<public key>`.
    let authorization = header_text(header::AUTHORIZATION.as_str())
        .ok_or_else(|| unauthorized("no Authorization header"))?;
    let params = authorization
        .strip_prefix("vapid ")
        .ok_or_else(|| unauthorized("the Authorization scheme is not vapid"))?;
    let param = |name: &str| {
        params.split(',').find_map(|p| {
            let (key, value) = p.trim().split_once('=')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    let token = param("t").ok_or_else(|| unauthorized("no t= in the vapid header"))?;
    let key = param("k").ok_or_else(|| unauthorized("no k= in the vapid header"))?;
    let key = URL_SAFE_NO_PAD
        .decode(&key)
        .ok()
        .filter(|k| k.len() == 65 && k[0] == 4)
        .ok_or_else(|| unauthorized("k= is not an uncompressed P-256 key"))?;
    let decoding = jsonwebtoken::DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&key[1..33]),
        &URL_SAFE_NO_PAD.encode(&key[33..65]),
    )
    .map_err(|e| unauthorized(&format!("k= is unusable: {e}")))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.leeway = 0;
    validation.set_audience(&[origin]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Claims>(&token, &decoding, &validation)
        .map_err(|e| unauthorized(&format!("the VAPID token does not verify: {e}")))?
        .claims;
    let now = chrono::Utc::now().timestamp();
    if claims.exp > now + 24 * 60 * 60 {
        return Err(unauthorized("exp is more than 24 hours away"));
    }
    let subject = claims.sub.unwrap_or_default();
    if !(subject.starts_with("mailto:") || subject.starts_with("https:")) {
        return Err(unauthorized("sub is not a mailto: or https: URI"));
    }

    // RFC 8030 §5.2: TTL is required.
    let ttl = header_text("ttl")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| bad("no TTL header"))?;
    if header_text(header::CONTENT_ENCODING.as_str()) != Some("aes128gcm") {
        return Err(bad("the Content-Encoding is not aes128gcm"));
    }
    // RFC 8030 §7.2: a push service must take 4096 bytes of body, and may refuse more.
    if body.len() > 4096 {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body exceeds 4096 bytes".into(),
        ));
    }
    // RFC 8291 §3.4, done by the browser: the crate's decryption with the user agent's keys.
    let (secret, auth) = {
        let inner = lock(&state.inner);
        let browser = inner
            .browsers
            .get(endpoint)
            .ok_or((StatusCode::NOT_FOUND, "no such subscription".to_owned()))?;
        (browser.secret.clone(), browser.auth)
    };
    let plaintext =
        web_push_native::decrypt(body.to_vec(), &secret, &web_push_native::Auth::from(auth))
            .map_err(|e| bad(&format!("the payload does not decrypt: {e}")))?;
    Ok(Delivered {
        endpoint: endpoint.to_owned(),
        payload: serde_json::from_slice(&plaintext).unwrap_or(json!(null)),
        ttl,
        subject,
    })
}

#[cfg(test)]
#[path = "push_tests.rs"]
mod tests;
