//! Which paths need no session (SPEC §5.2, `proxy.public_paths`).

use crate::http::paths::is_under;

/// Patterns: an exact path; `prefix*` (any continuation); `prefix/**` (the prefix and below, by
/// whole segment).
#[derive(Debug, Clone)]
pub struct PublicPaths {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Subtree(String),
}

impl PublicPaths {
    pub fn new(patterns: &[String]) -> Self {
        let patterns = patterns
            .iter()
            .map(|p| {
                if let Some(base) = p.strip_suffix("/**") {
                    Pattern::Subtree(base.to_owned())
                } else if let Some(prefix) = p.strip_suffix('*') {
                    Pattern::Prefix(prefix.to_owned())
                } else {
                    Pattern::Exact(p.clone())
                }
            })
            .collect();
        Self { patterns }
    }

    pub fn matches(&self, path: &str) -> bool {
        self.patterns.iter().any(|pattern| match pattern {
            Pattern::Exact(exact) => path == exact,
            Pattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Pattern::Subtree(base) => is_under(path, base),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::PublicPaths;
    use crate::config::ProxyConfig;

    #[test]
    fn the_default_public_paths_of_the_spec() {
        let public = PublicPaths::new(&ProxyConfig::default().public_paths);
        for open in [
            "/api/v1/auth/login",
            "/api/v1/auth/token",
            "/api/v1/webhooks/shopify",
            "/api/v1/webhooks/shopify/orders/create",
            "/api/v1/shopify/callback",
            "/health",
            "/health/ready",
            "/live",
            "/docs/",
            "/openapi.json",
            "/metrics",
        ] {
            assert!(public.matches(open), "{open} is public");
        }
        for closed in [
            "/api/v1/auth/me",
            "/api/v1/auth/logout",
            "/api/v1/orders",
            "/api/v1/webhooksx",
            "/api/v1/shopify/callbackx",
            "/api/v1/shopify/install",
            "/metrics/x",
        ] {
            assert!(!public.matches(closed), "{closed} needs a session");
        }
    }
}
