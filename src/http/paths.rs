//! Paths are decided on as written (SPEC §5.2): the public-path check, the route table and the
//! services all compare the raw path. A path that means something else once normalised
//! (`/api/v1/webhooks/shopify/../../orders`), or that hides a separator (`%2f`, `%5c`, `%2e`), is
//! refused with a 400 before any of them looks at it, so no two of them can disagree on it.

use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Whether `path` is already in normal form: no `.` or `..` segment, no backslash, and no
/// percent-encoded dot, slash or backslash. One pass over the bytes: every request is checked.
pub fn is_normalised(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut segment_start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        match byte {
            b'\\' => return false,
            b'/' => {
                if is_dot_segment(&bytes[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            b'%' if encodes_dot_or_separator(bytes.get(i + 1..i + 3)) => return false,
            _ => {}
        }
    }
    !is_dot_segment(&bytes[segment_start..])
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

/// Whether the two bytes after a `%` encode a dot, a slash or a backslash (`2e`, `2f`, `5c`, in
/// either case).
fn encodes_dot_or_separator(hex: Option<&[u8]>) -> bool {
    matches!(
        hex,
        Some([b'2', b'e' | b'E' | b'f' | b'F'] | [b'5', b'c' | b'C'])
    )
}

/// Whether `path` is `base` or below it, by whole segment: `/api/v1/orders/7` is under
/// `/api/v1/orders`, `/api/v1/orders-x` is not. The one definition for the route table, the public
/// paths and the rate limiter's classes.
pub fn is_under(path: &str, base: &str) -> bool {
    path.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether a Socket.IO (engine.io) request opens a session: the handshake carries no `sid` yet,
/// every later request of the session does. The gateway (which leases the opening request to its
/// sign-in) and the order service (which verifies and trims it) decide it alike.
pub fn opens_engine_io_session(query: Option<&str>) -> bool {
    !query.is_some_and(|query| query.split('&').any(|pair| pair.starts_with("sid=")))
}

/// The 400 for a path not in normal form ([`is_normalised`]), before anything else looks at it;
/// `None` for a path in normal form.
pub fn refuse_unnormalised(path: &str) -> Option<Response> {
    (!is_normalised(path)).then(|| {
        ApiError::bad_request("The path must not contain dot segments or encoded separators")
            .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::{is_normalised, is_under};

    #[test]
    fn under_is_by_whole_segment() {
        assert!(is_under("/api/v1/orders", "/api/v1/orders"));
        assert!(is_under("/api/v1/orders/7", "/api/v1/orders"));
        assert!(!is_under("/api/v1/orders-x", "/api/v1/orders"));
        assert!(!is_under("/api/v1", "/api/v1/orders"));
    }

    /// The definition, written as it reads: the one-pass check must agree with it.
    fn is_normalised_by_definition(path: &str) -> bool {
        if path.contains('\\') {
            return false;
        }
        if path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return false;
        }
        !path.as_bytes().windows(3).any(|w| {
            w[0] == b'%'
                && matches!(
                    (w[1], w[2].to_ascii_lowercase()),
                    (b'2', b'e') | (b'2', b'f') | (b'5', b'c')
                )
        })
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_definition() {
        // Every string of up to five characters from an alphabet of every character either
        // looks at (both cases of the hex digits) and one it does not, then a few more.
        let alphabet = [
            '/', '.', '%', '2', 'e', 'E', 'f', 'F', '5', 'c', 'C', '\\', 'a',
        ];
        let mut paths = vec![String::new()];
        let mut checked = 0;
        for _ in 0..5 {
            let mut longer = Vec::new();
            for path in &paths {
                for c in alphabet {
                    let mut next = path.clone();
                    next.push(c);
                    assert_eq!(
                        is_normalised(&next),
                        is_normalised_by_definition(&next),
                        "{next:?}"
                    );
                    checked += 1;
                    longer.push(next);
                }
            }
            paths = longer;
        }
        assert_eq!(checked, 13 + 169 + 2_197 + 28_561 + 371_293);
        for path in [
            "", "/", ".", "..", "/..", "../", "%", "%2", "%2E", "/a/%5c", "/é/%2é",
        ] {
            assert_eq!(
                is_normalised(path),
                is_normalised_by_definition(path),
                "{path:?}"
            );
        }
    }

    #[test]
    fn dot_segments_and_encoded_separators_are_not_normal() {
        for bad in [
            "/api/v1/webhooks/shopify/../../orders",
            "/api/v1/webhooks/shopify/..",
            "/api/v1/./orders",
            "/api/v1/webhooks/shopify/%2e%2e/%2E%2E/orders",
            "/api/v1/webhooks/shopify%2f..%2forders",
            "/api/v1/webhooks/shopify%5C..",
            "/api/v1/webhooks\\..\\orders",
        ] {
            assert!(!is_normalised(bad), "{bad}");
        }
        for good in [
            "/",
            "/api/v1/orders/42",
            "/api/v1/orders/..x",
            "/api/v1/orders/a%20b",
            "/docs/swagger-ui.css",
        ] {
            assert!(is_normalised(good), "{good}");
        }
    }
}
