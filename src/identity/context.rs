//! The user context (SPEC §5.2): who is calling, as established by the gateway and trusted by the
//! services. Over HTTP it travels as `x-user-*` headers plus a timestamp and an HMAC-SHA256
//! signature with the internal key; a service accepts it only with a valid, fresh signature. In
//! role `all` the gateway hands it over in-process as a request extension, which no client can set.
//!
//! The signature covers the request it came with, not only the user: the method, the path and
//! query, and the SHA-256 of the body ([`Binding`]). A context taken from one request is worth
//! nothing on another path, with another method or another body, and the service checks the body
//! digest against the body it actually received ([`verify_body_digest`]) before any handler runs.
//! Timestamps are accepted from `max_age` in the past to [`FUTURE_SKEW`] in the future.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::roles::{Permission, UserRole, permissions_of};
use crate::config::{Config, Secret};
use crate::http::ApiError;

pub const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub const X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");
pub const X_USER_EMAIL: HeaderName = HeaderName::from_static("x-user-email");
pub const X_USER_ROLES: HeaderName = HeaderName::from_static("x-user-roles");
pub const X_USER_PERMISSIONS: HeaderName = HeaderName::from_static("x-user-permissions");
pub const X_IS_SUPER_ADMIN: HeaderName = HeaderName::from_static("x-is-super-admin");
pub const X_CONTEXT_TIMESTAMP: HeaderName = HeaderName::from_static("x-user-context-timestamp");
pub const X_CONTEXT_SIGNATURE: HeaderName = HeaderName::from_static("x-user-context-signature");
pub const X_CONTEXT_BODY_SHA256: HeaderName = HeaderName::from_static("x-user-context-body-sha256");

/// How far ahead of this clock a context's timestamp may be: clocks of replicas differ a little,
/// but a context dated in the future would stay fresh for longer than `max_age`.
pub const FUTURE_SKEW: Duration = Duration::from_secs(2);

/// The request a context is signed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    pub method: &'a str,
    /// Path and query, as sent upstream.
    pub target: &'a str,
    /// Hex SHA-256 of the body ([`body_sha256`]; of no bytes for a request without a body).
    pub body_sha256: &'a str,
}

/// The hex SHA-256 of a request body, as the context's [`Binding`] carries it.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The digest of an empty body, for the many requests without one.
pub fn empty_body_sha256() -> &'static str {
    static EMPTY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| body_sha256(b""))
}

/// `digest` as a header value; the empty body's, which most signed requests carry, without a copy.
fn body_sha256_value(digest: &str) -> Option<HeaderValue> {
    let empty = empty_body_sha256();
    if digest == empty {
        Some(HeaderValue::from_static(empty))
    } else {
        HeaderValue::from_str(digest).ok()
    }
}

/// The body digest [`verify_body_digest`] computed from the body the service received: the only
/// digest the extractor accepts.
#[derive(Debug, Clone)]
struct VerifiedBodySha256(String);

/// A signed-in user as the services see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserContext {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub roles: Vec<UserRole>,
    pub permissions: Vec<Permission>,
    pub is_super_admin: bool,
}

/// A context the gateway verified itself and passes in-process (role `all`).
#[derive(Debug, Clone)]
pub struct InProcessContext(pub std::sync::Arc<UserContext>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("Missing user context")]
    Missing,
    #[error("Malformed user context: {0}")]
    Malformed(&'static str),
    #[error("Invalid user context signature")]
    BadSignature,
    #[error("Stale user context")]
    Stale,
    #[error("The user context was signed for another body")]
    BodyMismatch,
}

type HmacSha256 = Hmac<Sha256>;

impl UserContext {
    /// Super admins hold every permission in every tenant.
    pub fn has(&self, permission: Permission) -> bool {
        self.is_super_admin || self.permissions.contains(&permission)
    }

    /// 403 unless the user holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "Missing permission {}",
                permission.as_str()
            )))
        }
    }

    /// Whether this user may change, deactivate or delete a user holding `roles` and the
    /// `is_super_admin` flag, or grant such a user those roles (SPEC §5.1): nobody acts on a user
    /// who holds a permission or flag they lack, and only a super admin manages super admins.
    pub fn may_manage(&self, roles: &[UserRole], is_super_admin: bool) -> bool {
        if self.is_super_admin {
            return true;
        }
        !is_super_admin
            && permissions_of(roles)
                .iter()
                .all(|p| self.permissions.contains(p))
    }

    /// The fields in signing order, one per line: a value can never be confused with the next
    /// (no field may contain a line break: e-mails are validated, the rest we produce). The user's
    /// own lines come first, so a signer can absorb them once for many requests
    /// ([`ContextSigner::prepare`]).
    fn canonical(&self, timestamp_ms: u128, binding: &Binding<'_>) -> String {
        let mut text = self.identity_lines();
        let mut timestamp = itoa::Buffer::new();
        request_pieces(timestamp.format(timestamp_ms), binding, |piece| {
            text.push_str(piece);
        });
        text
    }

    /// The lines of the signed text that describe the user, each ended by a line break.
    fn identity_lines(&self) -> String {
        use std::fmt::Write;
        let mut text = String::with_capacity(256);
        let _ = write!(
            text,
            "{}\n{}\n{}\n",
            self.user_id, self.tenant_id, self.email
        );
        write_joined(&mut text, self.roles.iter().map(|r| r.as_str()));
        text.push('\n');
        write_joined(&mut text, self.permissions.iter().map(|p| p.as_str()));
        let _ = write!(text, "\n{}\n", self.is_super_admin);
        text
    }

    /// Writes the context headers with a signature made now for the request `binding` describes.
    pub fn write_headers(&self, headers: &mut HeaderMap, key: &[u8], binding: &Binding<'_>) {
        self.write_headers_at(headers, key, binding, now_ms());
    }

    fn write_headers_at(
        &self,
        headers: &mut HeaderMap,
        key: &[u8],
        binding: &Binding<'_>,
        timestamp_ms: u128,
    ) {
        if let Some(signer) = ContextSigner::new(key) {
            signer
                .prepare(self)
                .write_at(headers, binding, timestamp_ms);
        }
    }

    /// Reads and verifies the context headers for the request `binding` describes: signature
    /// first (constant time), then freshness.
    pub fn from_headers(
        headers: &HeaderMap,
        key: &[u8],
        max_age: Duration,
        binding: &Binding<'_>,
    ) -> Result<Self, ContextError> {
        Self::from_headers_at(headers, key, max_age, binding, now_ms())
    }

    fn from_headers_at(
        headers: &HeaderMap,
        key: &[u8],
        max_age: Duration,
        binding: &Binding<'_>,
        now_ms: u128,
    ) -> Result<Self, ContextError> {
        let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(signature), Some(timestamp)) =
            (get(&X_CONTEXT_SIGNATURE), get(&X_CONTEXT_TIMESTAMP))
        else {
            return Err(ContextError::Missing);
        };
        let field =
            |name: &HeaderName| get(name).ok_or(ContextError::Malformed("a header is missing"));
        let timestamp_ms: u128 = timestamp
            .parse()
            .map_err(|_| ContextError::Malformed("timestamp"))?;
        let context = UserContext {
            user_id: field(&X_USER_ID)?
                .parse()
                .map_err(|_| ContextError::Malformed("user id"))?,
            tenant_id: field(&X_TENANT_ID)?
                .parse()
                .map_err(|_| ContextError::Malformed("tenant id"))?,
            // UTF-8 (an address may have a non-ASCII local part or domain), which `to_str`
            // refuses: header values carry it as bytes.
            email: headers
                .get(&X_USER_EMAIL)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .ok_or(ContextError::Malformed("a header is missing"))?
                .to_owned(),
            roles: split(field(&X_USER_ROLES)?)
                .map(|r| UserRole::parse(r).ok_or(ContextError::Malformed("role")))
                .collect::<Result<_, _>>()?,
            permissions: split(field(&X_USER_PERMISSIONS)?)
                .map(|p| Permission::parse(p).ok_or(ContextError::Malformed("permission")))
                .collect::<Result<_, _>>()?,
            is_super_admin: field(&X_IS_SUPER_ADMIN)?
                .parse()
                .map_err(|_| ContextError::Malformed("super admin flag"))?,
        };
        verify(key, &context.canonical(timestamp_ms, binding), signature)?;
        let too_old = now_ms.saturating_sub(timestamp_ms) > max_age.as_millis();
        let from_the_future = timestamp_ms.saturating_sub(now_ms) > FUTURE_SKEW.as_millis();
        if too_old || from_the_future {
            return Err(ContextError::Stale);
        }
        Ok(context)
    }
}

/// Removes every header a client could use to pass itself off as someone (SPEC §5.2).
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with("x-user-")
                || name.starts_with("x-internal-")
                || name == "x-tenant-id"
                || name == "x-is-super-admin"
        })
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

fn join<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut text = String::new();
    write_joined(&mut text, values);
    text
}

/// Appends `values` to `text`, comma-separated.
fn write_joined<'a>(text: &mut String, values: impl Iterator<Item = &'a str>) {
    for (i, value) in values.enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(value);
    }
}

fn split(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// HMAC accepts keys of any length; the error case of the generic `KeyInit` cannot occur here, and
/// if it ever did, signing yields nothing and verification fails: closed, never open.
fn mac(key: &[u8]) -> Option<HmacSha256> {
    <HmacSha256 as KeyInit>::new_from_slice(key).ok()
}

/// The request's part of the signed text, after the user's lines, as pieces in order: each field,
/// and the line break between two. Verifying appends them to the text it checks
/// ([`UserContext::canonical`]); signing absorbs them one by one ([`PreparedContext`]), without
/// building the text.
fn request_pieces(timestamp: &str, binding: &Binding<'_>, mut piece: impl FnMut(&str)) {
    let fields = [
        timestamp,
        binding.method,
        binding.target,
        binding.body_sha256,
    ];
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            piece("\n");
        }
        piece(field);
    }
}

/// The internal key, made into an HMAC state once: the key schedule (two SHA-256 blocks) is then
/// not repeated for every request the gateway signs, each of which starts from a copy.
#[derive(Clone)]
pub struct ContextSigner(HmacSha256);

impl ContextSigner {
    pub fn new(key: &[u8]) -> Option<Self> {
        mac(key).map(Self)
    }

    /// `context` made ready for signing the many requests of one signed-in user: its lines absorbed
    /// into the HMAC state and its header values made, once.
    pub fn prepare(&self, context: &UserContext) -> PreparedContext {
        let mut mac = self.0.clone();
        mac.update(context.identity_lines().as_bytes());
        let values = [
            (X_USER_ID, context.user_id.to_string()),
            (X_TENANT_ID, context.tenant_id.to_string()),
            (X_USER_EMAIL, context.email.clone()),
            (X_USER_ROLES, join(context.roles.iter().map(|r| r.as_str()))),
            (
                X_USER_PERMISSIONS,
                join(context.permissions.iter().map(|p| p.as_str())),
            ),
            (X_IS_SUPER_ADMIN, context.is_super_admin.to_string()),
        ];
        PreparedContext {
            mac,
            // Every value is ASCII we produced (ids, names, digits, hex), or an e-mail address
            // validated when stored (no control characters; UTF-8, read back as such).
            values: values
                .into_iter()
                .filter_map(|(name, value)| HeaderValue::try_from(value).ok().map(|v| (name, v)))
                .collect(),
        }
    }
}

/// A user context ready to be signed for a request ([`ContextSigner::prepare`]): what remains per
/// request is the request's own lines, the signature, and copies of shared header values.
#[derive(Clone)]
pub struct PreparedContext {
    mac: HmacSha256,
    values: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for PreparedContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedContext").finish_non_exhaustive()
    }
}

impl PreparedContext {
    /// Writes the context headers with a signature made now for the request `binding` describes.
    pub fn write_headers(&self, headers: &mut HeaderMap, binding: &Binding<'_>) {
        self.write_at(headers, binding, now_ms());
    }

    fn write_at(&self, headers: &mut HeaderMap, binding: &Binding<'_>, timestamp_ms: u128) {
        let mut mac = self.mac.clone();
        let mut timestamp = itoa::Buffer::new();
        let timestamp = timestamp.format(timestamp_ms);
        request_pieces(timestamp, binding, |piece| mac.update(piece.as_bytes()));
        // The hex digits go to a buffer on the stack, not a string of their own per request.
        let mut hex_digits = [0u8; 64];
        let signature = hex::encode_to_slice(mac.finalize().into_bytes(), &mut hex_digits)
            .ok()
            .and_then(|()| HeaderValue::from_bytes(&hex_digits).ok());
        for (name, value) in &self.values {
            headers.insert(name.clone(), value.clone());
        }
        let per_request = [
            (X_CONTEXT_TIMESTAMP, HeaderValue::from_str(timestamp).ok()),
            (
                X_CONTEXT_BODY_SHA256,
                body_sha256_value(binding.body_sha256),
            ),
            (X_CONTEXT_SIGNATURE, signature),
        ];
        for (name, value) in per_request {
            if let Some(value) = value {
                headers.insert(name, value);
            }
        }
    }
}

fn verify(key: &[u8], message: &str, signature_hex: &str) -> Result<(), ContextError> {
    let signature = hex::decode(signature_hex).map_err(|_| ContextError::BadSignature)?;
    let mut mac = mac(key).ok_or(ContextError::BadSignature)?;
    mac.update(message.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| ContextError::BadSignature)
}

/// Middleware of the services: for a request carrying a signed context, reads the body (within the
/// body limit already on it), checks it against the digest the context was signed with, and
/// records the verified digest for the [`UserContext`] extractor. Requests without a context (a
/// webhook, say) stream through untouched.
pub async fn verify_body_digest(request: Request, next: Next) -> Response {
    if !request.headers().contains_key(&X_CONTEXT_SIGNATURE) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match crate::http::limits::collect(body).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let digest = if bytes.is_empty() {
        empty_body_sha256().to_owned()
    } else {
        body_sha256(&bytes)
    };
    let signed = parts
        .headers
        .get(&X_CONTEXT_BODY_SHA256)
        .map(|v| v.as_bytes());
    if signed != Some(digest.as_bytes()) {
        tracing::warn!("refused a user context signed for another body");
        return ApiError::unauthorized(ContextError::BodyMismatch.to_string()).into_response();
    }
    parts.extensions.insert(VerifiedBodySha256(digest));
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// What a service checks a signed user context with: `internal.key` and
/// `proxy.user_context_max_age_secs`, read once at start-up. Cheap to clone (once per request).
#[derive(Clone)]
pub struct ContextVerifier {
    /// `None`: no signed context is accepted (in-process contexts still are).
    key: Option<Arc<Secret>>,
    max_age: Duration,
}

impl ContextVerifier {
    pub fn from_config(config: &Config) -> Self {
        Self {
            key: config.internal.key.clone().map(Arc::new),
            max_age: Duration::from_secs(config.proxy.user_context_max_age_secs),
        }
    }
}

/// Handlers of the services take a `UserContext` argument: in-process from the gateway (role
/// `all`), or verified from signed headers; anything else is a 401. The router state provides
/// the [`ContextVerifier`], nothing more.
impl<S> FromRequestParts<S> for UserContext
where
    S: Send + Sync,
    ContextVerifier: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(InProcessContext(context)) = parts.extensions.get::<InProcessContext>() {
            return Ok(UserContext::clone(context));
        }
        let verifier = ContextVerifier::from_ref(state);
        let Some(key) = verifier.key.as_deref() else {
            return Err(ApiError::unauthorized(ContextError::Missing.to_string()));
        };
        let max_age = verifier.max_age;
        let refused = |e: ContextError| {
            tracing::warn!(error = %e, "refused a user context");
            ApiError::unauthorized(e.to_string())
        };
        // Only a digest computed here from the received body counts, never the header's word.
        let Some(VerifiedBodySha256(body)) = parts.extensions.get::<VerifiedBodySha256>() else {
            return Err(refused(ContextError::Missing));
        };
        let binding = Binding {
            method: parts.method.as_str(),
            target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            body_sha256: body,
        };
        UserContext::from_headers(&parts.headers, key.expose().as_bytes(), max_age, &binding)
            .map_err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"an-internal-key-of-thirty-two-bytes!";

    fn operator() -> UserContext {
        UserContext {
            user_id: Uuid::new_v4(),
            tenant_id: Uuid::new_v4(),
            email: "ops@example.com".into(),
            roles: vec![UserRole::Operator],
            permissions: UserRole::Operator.permissions(),
            is_super_admin: false,
        }
    }

    const GET_ORDERS: Binding<'static> = Binding {
        method: "GET",
        target: "/api/v1/orders?page=2",
        body_sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    };

    fn signed(context: &UserContext, at: u128) -> HeaderMap {
        let mut headers = HeaderMap::new();
        context.write_headers_at(&mut headers, KEY, &GET_ORDERS, at);
        headers
    }

    fn read(headers: &HeaderMap, at: u128) -> Result<UserContext, ContextError> {
        UserContext::from_headers_at(headers, KEY, AGE, &GET_ORDERS, at)
    }

    const AGE: Duration = Duration::from_secs(30);

    #[test]
    fn a_signed_context_reads_back_identical() {
        let context = operator();
        let headers = signed(&context, 1_000_000);
        assert_eq!(read(&headers, 1_000_500), Ok(context));
    }

    #[test]
    fn a_context_with_a_non_ascii_address_reads_back_identical() {
        let mut context = operator();
        context.email = "josé@bücher.example".into();
        let headers = signed(&context, 1_000_000);
        assert_eq!(read(&headers, 1_000_500), Ok(context));
    }

    #[test]
    fn a_prepared_context_signs_each_request_as_the_whole_text_would() {
        let context = operator();
        let prepared = ContextSigner::new(KEY).unwrap().prepare(&context);
        let cancel = Binding {
            method: "POST",
            target: "/api/v1/orders/1/cancel",
            body_sha256: "ab",
        };
        for (binding, at) in [(GET_ORDERS, 1_000_000), (cancel, 1_000_100)] {
            let mut headers = HeaderMap::new();
            prepared.write_at(&mut headers, &binding, at);
            let mut whole = mac(KEY).unwrap();
            whole.update(context.canonical(at, &binding).as_bytes());
            let expected = hex::encode(whole.finalize().into_bytes());
            assert_eq!(headers[&X_CONTEXT_SIGNATURE], expected);
            let read = UserContext::from_headers_at(&headers, KEY, AGE, &binding, at);
            assert_eq!(read, Ok(context.clone()));
        }
    }

    #[test]
    fn a_changed_field_breaks_the_signature() {
        let mut headers = signed(&operator(), 1_000_000);
        headers.insert(
            X_USER_PERMISSIONS,
            HeaderValue::from_static("users.manage,audit.read"),
        );
        assert_eq!(read(&headers, 1_000_000), Err(ContextError::BadSignature));
        let mut headers = signed(&operator(), 1_000_000);
        headers.insert(X_IS_SUPER_ADMIN, HeaderValue::from_static("true"));
        assert_eq!(read(&headers, 1_000_000), Err(ContextError::BadSignature));
    }

    #[test]
    fn another_key_does_not_verify() {
        let headers = signed(&operator(), 1_000_000);
        let other =
            UserContext::from_headers_at(&headers, b"another-key", AGE, &GET_ORDERS, 1_000_000);
        assert_eq!(other, Err(ContextError::BadSignature));
    }

    #[test]
    fn an_old_or_future_context_is_stale() {
        let headers = signed(&operator(), 1_000_000);
        let late = read(&headers, 1_000_000 + 30_001);
        assert_eq!(late, Err(ContextError::Stale));
        assert!(read(&headers, 1_000_000 + 30_000).is_ok());
        let early = read(&headers, 1_000_000 - 2_001);
        assert_eq!(early, Err(ContextError::Stale), "from the future");
        assert!(read(&headers, 1_000_000 - 2_000).is_ok(), "within the skew");
    }

    #[test]
    fn a_context_is_worth_nothing_on_another_request() {
        let headers = signed(&operator(), 1_000_000);
        for other in [
            Binding {
                method: "DELETE",
                ..GET_ORDERS
            },
            Binding {
                target: "/api/v1/users",
                ..GET_ORDERS
            },
            Binding {
                target: "/api/v1/orders?page=3",
                ..GET_ORDERS
            },
            Binding {
                body_sha256: "00",
                ..GET_ORDERS
            },
        ] {
            assert_eq!(
                UserContext::from_headers_at(&headers, KEY, AGE, &other, 1_000_000),
                Err(ContextError::BadSignature),
                "{other:?}"
            );
        }
    }

    #[test]
    fn unsigned_or_garbled_contexts_are_refused() {
        let mut headers = signed(&operator(), 1_000_000);
        headers.remove(X_CONTEXT_SIGNATURE);
        assert_eq!(read(&headers, 1_000_000), Err(ContextError::Missing));
        let mut headers = signed(&operator(), 1_000_000);
        headers.insert(X_CONTEXT_SIGNATURE, HeaderValue::from_static("zz"));
        assert_eq!(read(&headers, 1_000_000), Err(ContextError::BadSignature));
        let mut headers = signed(&operator(), 1_000_000);
        headers.insert(X_USER_ROLES, HeaderValue::from_static("emperor"));
        assert!(matches!(
            read(&headers, 1_000_000),
            Err(ContextError::Malformed(_))
        ));
    }

    #[test]
    fn identity_headers_from_clients_are_stripped() {
        let mut headers = HeaderMap::new();
        for name in [
            "x-user-id",
            "x-tenant-id",
            "x-user-email",
            "x-user-roles",
            "x-user-permissions",
            "x-is-super-admin",
            "x-internal-key",
            "x-user-context-signature",
            "x-user-context-timestamp",
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static("forged"),
            );
        }
        headers.insert("x-request-id", HeaderValue::from_static("keep-me"));
        strip_identity_headers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-request-id"));
    }

    #[test]
    fn only_users_holding_no_more_than_the_actor_are_manageable() {
        let operator = operator();
        assert!(operator.may_manage(&[UserRole::Operator], false));
        assert!(
            !operator.may_manage(&[UserRole::Viewer], false),
            "viewers hold queues.read, operators do not"
        );
        assert!(
            !operator.may_manage(&[UserRole::Admin], false),
            "admins hold users.manage"
        );
        let admin = UserContext {
            roles: vec![UserRole::Admin],
            permissions: UserRole::Admin.permissions(),
            ..operator.clone()
        };
        assert!(admin.may_manage(&[UserRole::Admin], false));
        assert!(
            !admin.may_manage(&[UserRole::Viewer], true),
            "only super admins manage super admins"
        );
        let root = UserContext {
            is_super_admin: true,
            ..operator
        };
        assert!(root.may_manage(&[UserRole::Admin], true));
    }

    #[test]
    fn permissions_are_checked_and_super_admins_hold_all() {
        let context = operator();
        assert!(context.require(Permission::OrdersWrite).is_ok());
        assert_eq!(
            context
                .require(Permission::UsersManage)
                .unwrap_err()
                .status(),
            403
        );
        let admin = UserContext {
            is_super_admin: true,
            permissions: vec![],
            ..operator()
        };
        assert!(admin.has(Permission::AuditRead));
    }
}
