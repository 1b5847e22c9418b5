//! Writes from another origin's pages refused (cross-site request forgery, in depth).
//!
//! The session cookie is `SameSite=Lax`, so a browser leaves it off the writes other sites' pages
//! make. But a sibling subdomain (`blog.example.com` beside `forma.example.com`) is the same site:
//! a page there, or script injected into it, could still make the signed-in browser write through
//! forma. A browser names the origin of the page behind every write in `Origin`; a write signed in
//! with the session cookie is taken only when that origin is forma's own (the host the request came
//! to, `server.public_url`) or one of `cors.origins`. A write without `Origin` is not a
//! cross-origin browser request (browsers send it on every cross-origin write), and a bearer token
//! is not sent by a browser on its own: neither is checked.

use axum::http::{HeaderMap, Method, header};

use crate::config::Config;

/// The origins, besides the request's own host, whose pages may write with the session cookie.
#[derive(Debug, Clone, Default)]
pub struct WriteOrigins {
    /// `scheme://host[:port]`, lower case, without a trailing slash.
    allowed: Vec<String>,
}

impl WriteOrigins {
    pub fn from_config(config: &Config) -> Self {
        let allowed = config
            .server
            .public_url
            .iter()
            .chain(&config.cors.origins)
            .filter_map(|url| url::Url::parse(url.trim()).ok())
            .map(|url| url.origin().ascii_serialization())
            .filter(|origin| origin != "null")
            .collect();
        Self { allowed }
    }

    /// Whether a request with `method` and `headers`, signed in with the session cookie, may be
    /// served: a read always; a write unless a page of another origin made it.
    pub fn admits(&self, method: &Method, headers: &HeaderMap) -> bool {
        if matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) {
            return true;
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        // `null` (a sandboxed frame, a `data:` page) or anything unreadable: not forma's.
        let Some(origin) = origin
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .filter(|url| url.has_host())
        else {
            return false;
        };
        let serialized = origin.origin().ascii_serialization();
        if self.allowed.contains(&serialized) {
            return true;
        }
        // The page came from the host the request was made to. Compared without the port: an
        // edge may drop it from `Host` (nginx's `$host`), and another port of the same host is
        // the same site to the cookie anyway.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| url::Url::parse(&format!("http://{h}")).ok())
            .and_then(|url| url.host_str().map(str::to_owned));
        host.is_some_and(|host| origin.host_str() == Some(host.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    fn origins() -> WriteOrigins {
        let mut config = Config::default();
        config.server.public_url = Some("https://forma.example.com/".into());
        config.cors.origins = vec!["https://ops.example.net".into()];
        WriteOrigins::from_config(&config)
    }

    #[test]
    fn a_write_from_forma_its_host_or_a_cors_origin_is_taken() {
        let origins = origins();
        for (host, origin) in [
            ("127.0.0.1:3000", Some("http://127.0.0.1:3000")),
            ("forma.example.com", Some("https://forma.example.com")),
            ("forma.example.com", Some("https://forma.example.com:8443")),
            ("FORMA.example.com:443", Some("https://forma.example.com")),
            ("gateway-1:3000", Some("https://forma.example.com")),
            ("gateway-1:3000", Some("https://ops.example.net")),
            ("prints.acme.example", Some("https://prints.acme.example")),
            ("forma.example.com", None),
        ] {
            assert!(
                origins.admits(&Method::POST, &headers(host, origin)),
                "{host} {origin:?}"
            );
        }
    }

    #[test]
    fn a_write_from_another_origins_page_is_refused_and_a_read_never() {
        let origins = origins();
        for origin in [
            "https://blog.example.com",
            "https://forma.example.com.evil.test",
            "http://ops.example.net",
            "null",
            "not an origin",
        ] {
            let headers = headers("forma.example.com", Some(origin));
            for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
                assert!(!origins.admits(&method, &headers), "{method} {origin}");
            }
            assert!(origins.admits(&Method::GET, &headers), "GET {origin}");
        }
    }
}
