//! The route table (SPEC §5.2): path prefixes under `/api/v1`, matched by whole path segment, the
//! longest prefix first; and Socket.IO (SPEC §6.6), which the order service serves at `/socket.io`.

use std::sync::Arc;

use crate::config::{RouteConfig, Service};
use crate::http::paths::is_under;

pub const API_PREFIX: &str = "/api/v1";

/// Where Socket.IO is served, outside `/api/v1` (engine.io's default path, which clients assume).
pub const SOCKET_IO: &str = "/socket.io";
/// A long-poll is held open until there is something to send or the next ping (every 25 s): the
/// deadline for its response head is well above that, or an idle poll would end in a 504.
const SOCKET_IO_TIMEOUT_MS: u64 = 60_000;

/// Each route with its metrics label, made once here rather than formatted per request.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<(RouteConfig, Arc<str>)>,
    socket_io: (RouteConfig, Arc<str>),
}

impl RouteTable {
    pub fn new(routes: &[RouteConfig]) -> Self {
        let mut routes: Vec<(RouteConfig, Arc<str>)> = routes
            .iter()
            .map(|r| (r.clone(), label(r).into()))
            .collect();
        routes.sort_by_key(|(r, _)| std::cmp::Reverse(r.prefix.len()));
        let socket_io = RouteConfig {
            prefix: SOCKET_IO.to_owned(),
            service: Service::Order,
            timeout_ms: Some(SOCKET_IO_TIMEOUT_MS),
            cache_ttl_secs: None,
        };
        let socket_io_label = label(&socket_io).into();
        Self {
            routes,
            socket_io: (socket_io, socket_io_label),
        }
    }

    /// The route serving `path`: `/api/v1/orders/7` matches `/orders`, `/api/v1/orders-x` does not.
    pub fn find(&self, path: &str) -> Option<&RouteConfig> {
        self.find_labelled(path).map(|(route, _)| route)
    }

    /// [`find`](Self::find), with the route's metrics label ([`label`]).
    pub fn find_labelled(&self, path: &str) -> Option<(&RouteConfig, &Arc<str>)> {
        if is_socket_io(path) {
            return Some((&self.socket_io.0, &self.socket_io.1));
        }
        let rest = path.strip_prefix(API_PREFIX)?;
        self.routes
            .iter()
            .find(|(route, _)| {
                let prefix = route.prefix.trim_end_matches('/');
                is_under(rest, prefix)
            })
            .map(|(route, label)| (route, label))
    }
}

/// `/socket.io` and below, by whole segment.
pub fn is_socket_io(path: &str) -> bool {
    is_under(path, SOCKET_IO)
}

/// The route template a proxied request is counted under in the request metrics.
pub fn label(route: &RouteConfig) -> String {
    let prefix = route.prefix.trim_end_matches('/');
    if prefix == SOCKET_IO {
        format!("{SOCKET_IO}/*")
    } else {
        format!("{API_PREFIX}{prefix}/*")
    }
}

/// `/internal/**` (and `/api/v1/internal/**`) is for services only and never routed.
pub fn is_internal(path: &str) -> bool {
    is_under(path, "/internal") || is_under(path, "/api/v1/internal")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyConfig;

    fn table() -> RouteTable {
        RouteTable::new(&ProxyConfig::default().routes)
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        let table = table();
        let service = |path| table.find(path).map(|r| r.service);
        assert_eq!(service("/api/v1/orders"), Some(Service::Order));
        assert_eq!(service("/api/v1/orders/42/cancel"), Some(Service::Order));
        assert_eq!(service("/api/v1/orders-x"), None);
        assert_eq!(service("/api/v1/ordersx/1"), None);
        assert_eq!(service("/orders"), None, "only under /api/v1");
        assert_eq!(service("/api/v1/print-jobs/1/retry"), Some(Service::Print));
        assert_eq!(
            service("/api/v1/webhooks/sendcloud"),
            Some(Service::Shipping)
        );
        assert_eq!(
            service("/api/v1/webhooks/shopify/orders/create"),
            Some(Service::Order)
        );
        assert_eq!(service("/api/v1/webhooks/other"), None);
        assert_eq!(
            service("/api/v1/gridflock/plates"),
            Some(Service::Gridflock)
        );
        assert_eq!(service("/socket.io/"), Some(Service::Order));
        assert_eq!(service("/socket.io"), Some(Service::Order));
        assert_eq!(service("/socket.iox/"), None);
        assert_eq!(service("/api/v1/socket.io/"), None);
    }

    #[test]
    fn internal_paths_are_recognised_by_segment() {
        assert!(is_internal("/internal/orders/1"));
        assert!(is_internal("/api/v1/internal"));
        assert!(is_internal("/api/v1/internal/audit-logs"));
        assert!(!is_internal("/internals"));
        assert!(!is_internal("/api/v1/orders/internal"));
    }
}
