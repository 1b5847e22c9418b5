//! The browser session (SPEC §5.1): cookie `forma.sid`, HttpOnly, SameSite=Lax, Secure in
//! production, 24 h sliding; signed with `session.secret` when one is set.

use axum::Router;
use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use tower_sessions::cookie::{Cookie, CookieJar, Key, SameSite};
use tower_sessions::session::{Error as SessionError, Id};
use tower_sessions::session_store;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use uuid::Uuid;

use crate::config::{Config, SessionConfig};
use crate::http::ApiError;
use crate::infra::sessions::Sessions;

pub const COOKIE_NAME: &str = "forma.sid";
const AUTH_KEY: &str = "auth";

/// How often a sliding session is re-saved with a fresh expiry: often enough that 24 h of
/// inactivity is what ends it, rarely enough that requests don't all write to the store.
const REFRESH_EVERY_MINUTES: i64 = 5;

/// What a signed-in session holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionAuth {
    pub user_id: Uuid,
    /// The user's session epoch at sign-in; a bumped epoch revokes the session.
    pub epoch: i64,
    pub refreshed_at: DateTime<Utc>,
}

/// The sign-in a session holds, if any. A store that does not answer (Redis or the database
/// away) is a 503, not "signed out": a 401 would send the web app to its sign-in page while the
/// session still exists and works again once the store is back.
pub async fn read(session: &Session) -> Result<Option<SessionAuth>, ApiError> {
    match session.get::<SessionAuth>(AUTH_KEY).await {
        Ok(auth) => Ok(auth),
        Err(SessionError::Store(session_store::Error::Backend(e))) => Err(unavailable(e)),
        // A record this build cannot read holds no sign-in.
        Err(_) => Ok(None),
    }
}

/// The session store failed: 503, try again shortly.
fn unavailable(cause: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable("Sessions are unavailable; try again shortly", cause)
}

/// A failed session operation (sign-in, sign-out): a store that does not answer is a 503, like a
/// database that does not; anything else is internal.
pub fn failed(error: SessionError) -> ApiError {
    match error {
        SessionError::Store(session_store::Error::Backend(e)) => unavailable(e),
        other => ApiError::internal(other),
    }
}

pub async fn write(
    session: &Session,
    user_id: Uuid,
    epoch: i64,
) -> Result<(), tower_sessions::session::Error> {
    let auth = SessionAuth {
        user_id,
        epoch,
        refreshed_at: Utc::now(),
    };
    session.insert(AUTH_KEY, auth).await
}

/// Re-saves the session when its last refresh is old, which pushes its expiry forward.
pub async fn slide(session: &Session, auth: &SessionAuth) {
    if Utc::now() - auth.refreshed_at > chrono::Duration::minutes(REFRESH_EVERY_MINUTES) {
        let _ = write(session, auth.user_id, auth.epoch).await;
    }
}

/// Wraps `router` in the session layer configured from `config`.
pub fn layer(router: Router, store: Sessions, config: &Config) -> Router {
    let secure = config.secure_cookies();
    let config = &config.session;
    let hours = i64::try_from(config.ttl_hours).unwrap_or(24);
    let manager = SessionManagerLayer::new(store)
        .with_name(COOKIE_NAME)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(secure)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(hours)));
    match signing_key(config) {
        Some(key) => router.layer(manager.with_signed(key)),
        None => router.layer(manager),
    }
}

/// The key session cookies are signed with, when `session.secret` is set.
fn signing_key(config: &SessionConfig) -> Option<Key> {
    let secret = config.secret.as_ref()?;
    // Key wants 64 bytes of key material; SHA-512 stretches any secret to that.
    let material = Sha512::digest(secret.expose().as_bytes());
    Key::try_from(material.as_slice()).ok()
}

/// Reads the session a request's cookie names, as the session layer reads it, for a look in the
/// identity cache before (and instead of) the session layer: the last `forma.sid` cookie of the
/// request's `Cookie` headers, its signature verified when cookies are signed.
#[derive(Clone)]
pub struct SessionCookie {
    key: Option<Key>,
}

impl SessionCookie {
    pub fn new(config: &Config) -> Self {
        Self {
            key: signing_key(&config.session),
        }
    }

    /// The session id the request's cookie carries; `None` without one, or when it does not
    /// verify or is no session id.
    pub fn session_id(&self, headers: &HeaderMap) -> Option<Id> {
        let cookie = last_session_cookie(headers)?;
        let cookie = match &self.key {
            Some(key) => CookieJar::new().signed(key).verify(cookie)?,
            None => cookie,
        };
        cookie.value().parse().ok()
    }
}

/// The `;`-separated pieces of the request's `Cookie` headers, as the session layer (tower-cookies)
/// splits them; a header that is not UTF-8 has none.
pub fn cookie_pieces(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
        .flat_map(|value| value.split(';'))
}

/// The name of `piece` (one of [`cookie_pieces`]) as it came, before any decoding.
fn raw_name(piece: &str) -> &str {
    piece.split('=').next().unwrap_or_default().trim()
}

/// `piece` (one of [`cookie_pieces`]) as a `forma.sid` cookie, read as the session layer reads
/// it: percent-decoded, so `forma%2Esid` is the session cookie too. Only a name with a `%` in it
/// reads differently decoded, so any other piece is told by its name before it is parsed.
fn session_cookie(piece: &str) -> Option<Cookie<'_>> {
    let name = raw_name(piece);
    if !name.contains('%') {
        if name != COOKIE_NAME {
            return None;
        }
        if !piece.contains('%') {
            // What parsing makes of it, without the parse (most of the cost of reading the
            // cookie on every request): nothing to decode, and no attributes, as a piece holds
            // no `;`.
            let (_, value) = piece.split_once('=')?;
            return Some(Cookie::new(name, value.trim()));
        }
    }
    Cookie::parse_encoded(piece)
        .ok()
        .filter(|cookie| cookie.name() == COOKIE_NAME)
}

/// Whether `piece` (one of [`cookie_pieces`]) is a `forma.sid` cookie to the session layer, or
/// is named `forma.sid` and does not parse.
pub fn is_session_cookie(piece: &str) -> bool {
    raw_name(piece) == COOKIE_NAME || session_cookie(piece).is_some()
}

/// The request's last `forma.sid` cookie as it came (its signature not checked): the one the
/// session layer reads.
pub fn last_session_cookie(headers: &HeaderMap) -> Option<Cookie<'static>> {
    // Only the value is copied: the name is ours, whatever percent-encoding it came in.
    cookie_pieces(headers)
        .filter_map(session_cookie)
        .last()
        .map(|cookie| Cookie::new(COOKIE_NAME, cookie.value().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The session layer's reading of a piece: the cookie crate's parse, percent-decoded.
    fn parsed(piece: &str) -> Option<(String, String)> {
        Cookie::parse_encoded(piece)
            .ok()
            .filter(|cookie| cookie.name() == COOKIE_NAME)
            .map(|cookie| (cookie.name().to_owned(), cookie.value().to_owned()))
    }

    #[test]
    fn a_session_cookie_read_without_the_parse_is_what_the_parse_reads() {
        for piece in [
            "forma.sid=abc",
            " forma.sid=abc ",
            "forma.sid = abc",
            "forma.sid=",
            "forma.sid= ",
            "forma.sid",
            "forma.sid=a=b",
            "forma.sid=\"quoted\"",
            "forma.sid=\u{a0}abc\u{3000}",
            "\tforma.sid=abc\t",
            "forma.sid=abc%2B",
            "forma%2Esid=abc",
            "forma.sidx=abc",
            "xforma.sid=abc",
            "other=forma.sid",
            "",
            "=",
        ] {
            let read = session_cookie(piece)
                .map(|cookie| (cookie.name().to_owned(), cookie.value().to_owned()));
            assert_eq!(read, parsed(piece), "{piece:?}");
        }
    }
}
