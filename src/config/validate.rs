//! Checks run before anything starts: a bad setting stops start-up with one line naming it.

use super::{Config, ConfigError, Role};

/// A setting without which a role refuses to start in production (SPEC §2). The same list is
/// checked against `config.example.toml` and `docker-compose.yml` by the packaging test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequiredSetting {
    /// The key in the config file, e.g. `redis.url`.
    pub key: &'static str,
    /// Why the role cannot run without it.
    pub why: &'static str,
}

const DATABASE_URL: RequiredSetting = RequiredSetting {
    key: "database.url",
    why: "replicas must share a PostgreSQL database",
};
const REDIS_URL: RequiredSetting = RequiredSetting {
    key: "redis.url",
    why: "sessions, rate limits and the event bus must not live in process memory",
};
const INTERNAL_KEY: RequiredSetting = RequiredSetting {
    key: "internal.key",
    why: "it authenticates calls between services and signs the user context",
};
const SESSION_SECRET: RequiredSetting = RequiredSetting {
    key: "session.secret",
    why: "it signs session cookies",
};
const ORDER_URL: RequiredSetting = RequiredSetting {
    key: "services.order_url",
    why: "the gateway must reach the order service",
};

/// The settings `role` cannot start without in production.
pub fn required_settings(role: Role) -> &'static [RequiredSetting] {
    match role {
        // The gateway in it signs cookies and tokens: without the secret each start (and each
        // replica) would have its own key, and every session and token would die with it.
        Role::All => &[SESSION_SECRET],
        Role::Gateway => &[
            DATABASE_URL,
            REDIS_URL,
            INTERNAL_KEY,
            SESSION_SECRET,
            ORDER_URL,
        ],
        Role::Order => &[DATABASE_URL, REDIS_URL, INTERNAL_KEY],
    }
}

/// The environment variable that sets `key` (`rate_limit.per_ip` → `FORMA_RATE_LIMIT__PER_IP`).
pub fn env_var_for(key: &str) -> String {
    format!("FORMA_{}", key.replace('.', "__").to_uppercase())
}

/// Minimum length of a secret in production: long enough that guessing is hopeless.
const MIN_SECRET_LEN: usize = 32;

pub(super) fn validate(config: &Config, role: Role) -> Result<(), ConfigError> {
    let mut problems = Vec::new();

    let is_postgres = config.database.is_postgres();
    if !is_postgres && !config.database.url.expose().starts_with("sqlite:") {
        problems.push(format!(
            "database.url must start with sqlite:// or postgres:// (got {})",
            config.database.url.masked()
        ));
    }
    if config.database.max_connections == Some(0) {
        problems.push("database.max_connections must be at least 1".into());
    }
    if let Some(redis) = &config.redis.url {
        if !(redis.expose().starts_with("redis://") || redis.expose().starts_with("rediss://")) {
            problems.push(format!(
                "redis.url must start with redis:// or rediss:// (got {})",
                redis.masked()
            ));
        }
    }
    for (key, urls) in [
        ("services.order_url", &config.services.order_url),
        ("services.print_url", &config.services.print_url),
        ("services.shipping_url", &config.services.shipping_url),
        ("services.gridflock_url", &config.services.gridflock_url),
    ] {
        for (u, shown) in urls.0.iter().zip(urls.masked()) {
            match url::Url::parse(u) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => problems.push(format!(
                    "{key} must be an http:// or https:// URL (got {shown})"
                )),
            }
        }
    }
    if config.server.body_limit_bytes == 0 || config.server.webhook_body_limit_bytes == 0 {
        problems
            .push("server.body_limit_bytes and server.webhook_body_limit_bytes must be > 0".into());
    }

    // The gateway in `all` signs the user context for every upstream it reaches over HTTP.
    let http_upstreams = [
        &config.services.print_url,
        &config.services.shipping_url,
        &config.services.gridflock_url,
    ];
    if role == Role::All
        && config.internal.key.is_none()
        && http_upstreams.iter().any(|urls| !urls.is_empty())
    {
        problems.push(format!(
            "internal.key is required when services.print_url, shipping_url or gridflock_url is set \
             (set {})",
            env_var_for("internal.key")
        ));
    }

    // Split roles talk to each other with the internal key, in every environment.
    if role != Role::All && config.internal.key.is_none() {
        problems.push(format!(
            "internal.key is required when roles run as separate processes (set {})",
            env_var_for("internal.key")
        ));
    }

    if config.is_production() {
        for setting in required_settings(role) {
            if !is_set(config, setting.key) && !problems.iter().any(|p| p.starts_with(setting.key))
            {
                problems.push(format!(
                    "{} is required in production for --role {} ({}); set {}",
                    setting.key,
                    role.as_str(),
                    setting.why,
                    env_var_for(setting.key)
                ));
            }
        }
        if role != Role::All && !is_postgres {
            problems.push(format!(
                "database.url must point to PostgreSQL in production for --role {} ({})",
                role.as_str(),
                DATABASE_URL.why
            ));
        }
        for (key, secret) in [
            ("internal.key", &config.internal.key),
            ("session.secret", &config.session.secret),
        ] {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose().len() < MIN_SECRET_LEN)
            {
                problems.push(format!(
                    "{key} must be at least {MIN_SECRET_LEN} characters in production"
                ));
            }
        }
    }

    problems.extend(shopify_problems(config, role));
    problems.extend(smtp_problems(config));
    problems.extend(sendcloud_problems(config, role));
    problems.extend(duration_problems(config));
    problems.extend(proxy_problems(config));

    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems.join("; ")))
    }
}

/// The Shopify app's settings: a token key that is a key, an app URL that is a URL, and in
/// production no OAuth installs without a key to encrypt their tokens with.
fn shopify_problems(config: &Config, role: Role) -> Vec<String> {
    let shopify = &config.shopify;
    let mut problems = Vec::new();
    match shopify.token_key_bytes() {
        Err(problem) => problems.push(problem),
        Ok(None)
            if config.is_production() && role != Role::Gateway && shopify.oauth_configured() =>
        {
            problems.push(format!(
                "shopify.token_key is required in production when shopify.api_key and \
                 shopify.api_secret are set (it encrypts installed shops' access tokens); set {}",
                env_var_for("shopify.token_key")
            ));
        }
        Ok(_) => {}
    }
    if let Some(app_url) = &shopify.app_url {
        match url::Url::parse(app_url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => problems.push(format!(
                "shopify.app_url must be an http:// or https:// URL (got {app_url})"
            )),
        }
    }
    problems
}

/// Sendcloud, where parcels are made (not the gateway's concern): a shipping method to announce
/// them with, without which every label is refused.
fn sendcloud_problems(config: &Config, role: Role) -> Vec<String> {
    let sendcloud = &config.sendcloud;
    if role == Role::Gateway || sendcloud.keys().is_none() {
        return Vec::new();
    }
    match sendcloud.shipping_method_id {
        Some(0) => vec![
            "sendcloud.shipping_method_id must be a shipping method's id (at least 1)".to_owned(),
        ],
        Some(_) => Vec::new(),
        None => vec![format!(
            "sendcloud.shipping_method_id is required with sendcloud.public_key and \
             sendcloud.secret_key: Sendcloud makes no label without a shipping method (the ids \
             of yours are in its GET /shipping_methods); set {}",
            env_var_for("sendcloud.shipping_method_id")
        )],
    }
}

/// E-mail: an SMTP URL lettre can use, and a sender address once e-mails really leave.
fn smtp_problems(config: &Config) -> Vec<String> {
    let Some(url) = &config.smtp.url else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    match url::Url::parse(url.expose()) {
        Ok(parsed) if matches!(parsed.scheme(), "smtp" | "smtps") && parsed.has_host() => {}
        _ => problems.push(format!(
            "smtp.url must be an smtp:// or smtps:// URL with a host (got {})",
            url.masked()
        )),
    }
    if let Err(problem) = config.smtp.from_mailbox() {
        problems.push(problem);
    }
    problems
}

/// The longest any duration setting may be: far past any sensible value, far below where adding
/// it to a clock reading overflows (which would panic at run time instead of failing at start).
const MAX_SECONDS: u64 = 366 * 24 * 60 * 60;

/// Every duration setting out of range, named.
fn duration_problems(config: &Config) -> Vec<String> {
    let secs = [
        (
            "server.shutdown_timeout_secs",
            Some(config.server.shutdown_timeout_secs),
        ),
        (
            "server.header_read_timeout_secs",
            Some(config.server.header_read_timeout_secs),
        ),
        (
            "session.ttl_hours",
            Some(config.session.ttl_hours.saturating_mul(3600)),
        ),
        (
            "rate_limit.window_secs",
            Some(config.rate_limit.window_secs),
        ),
        (
            "proxy.breaker_window_secs",
            Some(config.proxy.breaker_window_secs),
        ),
        (
            "proxy.breaker_open_secs",
            Some(config.proxy.breaker_open_secs),
        ),
        (
            "proxy.user_context_max_age_secs",
            Some(config.proxy.user_context_max_age_secs),
        ),
        (
            "simplyprint.reconcile_secs",
            config.simplyprint.reconcile_secs,
        ),
    ];
    let millis = [
        ("session.cache_ms", Some(config.session.cache_ms)),
        ("services.timeout_ms", Some(config.services.timeout_ms)),
        (
            "services.health_timeout_ms",
            Some(config.services.health_timeout_ms),
        ),
        ("sendcloud.timeout_ms", config.sendcloud.timeout_ms),
        ("shopify.timeout_ms", config.shopify.timeout_ms),
        ("smtp.timeout_ms", config.smtp.timeout_ms),
        ("push.timeout_ms", config.push.timeout_ms),
    ]
    .into_iter()
    .chain(
        config
            .proxy
            .routes
            .iter()
            .map(|r| ("proxy.routes.timeout_ms", r.timeout_ms)),
    );
    let mut problems: Vec<String> = secs
        .into_iter()
        .filter(|(_, v)| v.is_some_and(|v| v > MAX_SECONDS))
        .map(|(key, _)| format!("{key} must be at most {MAX_SECONDS} seconds (a year)"))
        .collect();
    problems.extend(
        millis
            .filter(|(_, v)| v.is_some_and(|v| v > MAX_SECONDS * 1000))
            .map(|(key, _)| {
                format!(
                    "{key} must be at most {} milliseconds (a year)",
                    MAX_SECONDS * 1000
                )
            }),
    );
    for (key, value) in [
        ("sendcloud.timeout_ms", config.sendcloud.timeout_ms),
        ("shopify.timeout_ms", config.shopify.timeout_ms),
        ("smtp.timeout_ms", config.smtp.timeout_ms),
        ("push.timeout_ms", config.push.timeout_ms),
    ] {
        if value == Some(0) {
            problems.push(format!("{key} must be at least 1"));
        }
    }
    if config.proxy.health_check_interval_ms == 0 {
        problems.push("proxy.health_check_interval_ms must be at least 1".to_owned());
    }
    if config.server.header_read_timeout_secs == 0 {
        problems.push("server.header_read_timeout_secs must be at least 1".to_owned());
    }
    problems
}

/// The response cache and the white-label hosts: a TTL that caches, an entry cap that fits in
/// the cache, and host names and tenant slugs that can match anything.
fn proxy_problems(config: &Config) -> Vec<String> {
    let proxy = &config.proxy;
    let mut problems = Vec::new();
    for route in &proxy.routes {
        match route.cache_ttl_secs {
            Some(0) => problems.push(format!(
                "proxy.routes: cache_ttl_secs of {} must be at least 1 (leave it out to not cache)",
                route.prefix
            )),
            Some(ttl) if ttl > MAX_SECONDS => problems.push(format!(
                "proxy.routes: cache_ttl_secs of {} must be at most {MAX_SECONDS} seconds (a year)",
                route.prefix
            )),
            _ => {}
        }
    }
    if proxy.cache_max_entry_bytes == 0 || proxy.cache_max_entry_bytes > proxy.cache_max_bytes {
        problems.push(format!(
            "proxy.cache_max_entry_bytes must be at least 1 and at most proxy.cache_max_bytes ({})",
            proxy.cache_max_bytes
        ));
    }
    // The slugs are checked by the gateway when it starts (a tenant rule, not configuration's).
    for host in proxy.tenant_hosts.keys() {
        if !is_host_name(host) {
            problems.push(format!(
                "proxy.tenant_hosts: {host:?} must be a lower-case host name without a port \
                 (e.g. \"prints.example.com\")"
            ));
        }
    }
    problems
}

/// A DNS name as a `Host` header carries it, lower-cased: dot-separated labels of letters, digits
/// and inner dashes.
fn is_host_name(host: &str) -> bool {
    (1..=253).contains(&host.len())
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether a required key was given explicitly (defaults do not count).
fn is_set(config: &Config, key: &str) -> bool {
    match key {
        "database.url" => true, // always has a value; production checks its scheme instead
        "redis.url" => config.redis.url.is_some(),
        "internal.key" => config.internal.key.is_some(),
        "session.secret" => config.session.secret.is_some(),
        "services.order_url" => !config.services.order_url.is_empty(),
        _ => false,
    }
}
