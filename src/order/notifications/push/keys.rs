//! The server's VAPID key pair (RFC 8292): `push.vapid_private_key` when configured, else one
//! generated on first use and kept in the database, so that every replica and every restart signs
//! with the key the browsers subscribed with (a new key would orphan every subscription).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use serde::Serialize;

use crate::config::PushConfig;
use crate::infra::db::{Db, DbError};
use crate::on_pool;

/// How long a VAPID token is valid: RFC 8292 §2 allows at most 24 hours; half leaves room for
/// clock skew at the push service.
const TOKEN_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(12);

/// Why the keys cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "push.vapid_private_key must be a P-256 private key: 32 bytes in base64url (as `web-push generate-vapid-keys` prints it)"
    )]
    Malformed,
    #[error("the stored VAPID key is not a P-256 private key")]
    StoredMalformed,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("signing the VAPID token failed: {0}")]
    Signing(String),
}

/// A VAPID key pair, ready to sign.
#[derive(Clone)]
pub struct VapidKeys {
    signing: jsonwebtoken::EncodingKey,
    /// The uncompressed public point in base64url: the browser's `applicationServerKey` and the
    /// `k=` of every request.
    public: String,
}

impl std::fmt::Debug for VapidKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKeys")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: i64,
    sub: &'a str,
}

impl VapidKeys {
    /// Parses a private key in base64url (padding tolerated), as generators print it.
    pub fn parse(encoded: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim().trim_end_matches('='))
            .ok()?;
        // Exactly the 32-byte scalar: `from_slice` would also take a shorter, zero-padded one.
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        let secret = p256::SecretKey::from_bytes(&bytes.into()).ok()?;
        Self::from_secret(&secret)
    }

    /// A new random key pair, and its private key encoded as [`VapidKeys::parse`] reads it.
    pub fn generate() -> Option<(Self, String)> {
        // The OS generator, through the RustCrypto rand_core the p256 crate is built on.
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let encoded = URL_SAFE_NO_PAD.encode(secret.to_bytes());
        Some((Self::from_secret(&secret)?, encoded))
    }

    fn from_secret(secret: &p256::SecretKey) -> Option<Self> {
        let der = secret.to_pkcs8_der().ok()?;
        let public = secret.public_key().to_encoded_point(false);
        Some(Self {
            signing: jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
            public: URL_SAFE_NO_PAD.encode(public.as_bytes()),
        })
    }

    /// The public key in base64url (65 bytes, uncompressed), for `PushManager.subscribe`.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The `Authorization` header of a push request to `audience` (the endpoint's origin):
    /// `vapid t=<ES256 JWT>, k=<public key>` (RFC 8292 §3).
    pub fn authorization(
        &self,
        audience: &str,
        subject: &str,
        now: DateTime<Utc>,
    ) -> Result<String, KeyError> {
        let claims = Claims {
            aud: audience,
            exp: (now + TOKEN_LIFETIME).timestamp(),
            sub: subject,
        };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        let token = jsonwebtoken::encode(&header, &claims, &self.signing)
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        Ok(format!("vapid t={token}, k={}", self.public))
    }
}

/// The configured key, checked at start-up: `None` when none is configured.
pub fn configured(push: &PushConfig) -> Result<Option<VapidKeys>, KeyError> {
    match &push.vapid_private_key {
        Some(key) if !key.expose().trim().is_empty() => VapidKeys::parse(key.expose())
            .map(Some)
            .ok_or(KeyError::Malformed),
        _ => Ok(None),
    }
}

/// The keys every replica uses: the configured ones, else the stored ones, generated and stored
/// first by whichever replica asks first. Racing replicas both insert-if-absent the one row and
/// then read it back, so they end up with the same key.
pub async fn load(push: &PushConfig, db: &Db) -> Result<VapidKeys, KeyError> {
    if let Some(keys) = configured(push)? {
        return Ok(keys);
    }
    if let Some(stored) = stored(db).await? {
        return VapidKeys::parse(&stored).ok_or(KeyError::StoredMalformed);
    }
    let (_, encoded) = VapidKeys::generate().ok_or(KeyError::StoredMalformed)?;
    on_pool!(db, pool => {
        sqlx::query(
            "INSERT INTO push_vapid_keys (id, private_key, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&encoded)
        .bind(Utc::now())
        .execute(pool)
        .await
        .map(drop)
    })
    .map_err(DbError::from)?;
    let stored = stored(db).await?.ok_or(KeyError::StoredMalformed)?;
    if stored == encoded {
        tracing::info!("generated the VAPID key pair for web push and stored it in the database");
    }
    VapidKeys::parse(&stored).ok_or(KeyError::StoredMalformed)
}

async fn stored(db: &Db) -> Result<Option<String>, DbError> {
    let row = on_pool!(db, pool => {
        sqlx::query_scalar::<_, String>("SELECT private_key FROM push_vapid_keys WHERE id = 1")
            .fetch_optional(pool)
            .await
    })?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_as_the_same_key() {
        let (keys, encoded) = VapidKeys::generate().unwrap();
        let again = VapidKeys::parse(&encoded).unwrap();
        assert_eq!(keys.public_key(), again.public_key());
        assert_eq!(URL_SAFE_NO_PAD.decode(keys.public_key()).unwrap().len(), 65);
    }

    #[test]
    fn a_key_that_is_not_a_p256_scalar_is_refused() {
        assert!(VapidKeys::parse("not base64!").is_none());
        assert!(VapidKeys::parse(&URL_SAFE_NO_PAD.encode([7u8; 31])).is_none());
        assert!(VapidKeys::parse(&URL_SAFE_NO_PAD.encode([0u8; 32])).is_none());
    }

    #[test]
    fn a_padded_key_is_read_too() {
        let (keys, encoded) = VapidKeys::generate().unwrap();
        let padded = format!("{encoded}=");
        assert_eq!(
            VapidKeys::parse(&padded).unwrap().public_key(),
            keys.public_key()
        );
    }
}
