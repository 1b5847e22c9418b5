//! White-label domains (SPEC §5.2, `proxy.tenant_hosts`): a host name that belongs to one tenant.
//!
//! On such a host, a signed-in user (session or bearer token) of another tenant is answered 404
//! for everything that needs a sign-in, exactly as for a path that does not exist, so the domain
//! reveals nothing about its routes to outsiders; the tenant's own users work as anywhere else.
//! Super admins are no exception: the domain is the tenant's, whoever signs in.
//!
//! Public paths are public on every host: webhooks prove their origin by signature, not by the
//! domain they were sent to; health, metrics and the docs describe the deployment, not a tenant;
//! sign-in takes no tenant (e-mail addresses are unique across tenants), and a user of another
//! tenant who signs in there still finds nothing behind it. Hosts not in the map behave as if
//! there were no map. The host is the request's `Host` (the load balancer must pass it through,
//! as `deploy/nginx.conf` does), compared without its port and case-insensitively.
//!
//! A tenant is named by its slug, as operators know it (`forma users create --tenant SLUG`); the
//! slug is resolved to the tenant's id on first use and kept (ids never change). A slug that names
//! no tenant yet is asked again after [`RETRY_MISSING`], so a tenant created later is picked up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::Request;
use axum::http::header;
use tokio::time::Instant;
use uuid::Uuid;

use crate::gateway::auth::Authenticated;
use crate::http::ApiError;
use crate::identity::tenants;
use crate::infra::db::Db;

/// How long an unknown slug is remembered as unknown: long enough that a misconfigured domain
/// costs at most one query per interval, short enough that a new tenant is found soon.
pub const RETRY_MISSING: Duration = Duration::from_secs(30);

pub struct TenantHosts {
    /// Host name (lower case, no port) → tenant slug.
    slugs: HashMap<String, String>,
    resolved: Mutex<HashMap<String, Resolution>>,
}

#[derive(Debug, Clone, Copy)]
enum Resolution {
    Found(Uuid),
    Missing { checked: Instant },
}

impl TenantHosts {
    /// Fails, naming the entry, when a slug could never name a tenant.
    pub fn new(map: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        if let Some((host, slug)) = map.iter().find(|(_, slug)| !tenants::is_valid_slug(slug)) {
            anyhow::bail!(
                "proxy.tenant_hosts: {slug:?} (for {host}) is not a tenant slug \
                 (lower-case letters, digits and dashes)"
            );
        }
        Ok(Self {
            slugs: map
                .iter()
                .map(|(host, slug)| (host.to_ascii_lowercase(), slug.clone()))
                .collect(),
            resolved: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `auth` may be served on the host `request` was sent to: always on hosts not in the
    /// map (and at no cost when the map is empty), else only if its tenant is the host's. The
    /// request is read before the future starts: it is not `Sync`, so the future must not hold it.
    pub fn admits<'a>(
        &'a self,
        db: &'a Db,
        request: &Request,
        auth: &'a Authenticated,
    ) -> impl Future<Output = Result<bool, ApiError>> + Send + use<'a> {
        let slug = if self.slugs.is_empty() {
            None
        } else {
            host_of(request).and_then(|host| self.slug_of(&host))
        };
        async move {
            let Some(slug) = slug else {
                return Ok(true);
            };
            // Boxed: only requests to a white-label domain look the tenant up.
            let tenant = Box::pin(self.tenant_id(db, slug, Instant::now())).await?;
            Ok(tenant == Some(auth.context.tenant_id))
        }
    }

    fn slug_of(&self, host: &str) -> Option<&str> {
        self.slugs.get(host).map(String::as_str)
    }

    /// The id of the tenant `slug` names, as of `now`; `None` while no such tenant exists.
    pub async fn tenant_id(
        &self,
        db: &Db,
        slug: &str,
        now: Instant,
    ) -> Result<Option<Uuid>, ApiError> {
        let known = self.lock().get(slug).copied();
        match known {
            Some(Resolution::Found(id)) => return Ok(Some(id)),
            Some(Resolution::Missing { checked }) if now < checked + RETRY_MISSING => {
                return Ok(None);
            }
            _ => {}
        }
        let found = tenants::find_by_slug(db, slug).await?.map(|t| t.id);
        let resolution = match found {
            Some(id) => Resolution::Found(id),
            None => {
                tracing::warn!(
                    slug,
                    "proxy.tenant_hosts names a tenant that does not exist; its host admits nobody"
                );
                Resolution::Missing { checked: now }
            }
        };
        self.lock().insert(slug.to_owned(), resolution);
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Resolution>> {
        self.resolved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The host a request was sent to, lower-cased, without a port: the `Host` header, else the
/// authority of an absolute request target (HTTP/2).
fn host_of(request: &Request) -> Option<String> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().host())?;
    let name = match host.rsplit_once(':') {
        // `example.com:3000`; a host that is an IPv6 literal is bracketed, `[::1]:3000`.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
#[path = "hosts_tests.rs"]
pub(crate) mod tests;
