//! WebSocket upgrades through the proxy (Socket.IO's websocket transport, SPEC §6.6). `Upgrade`
//! and `Connection` are hop-by-hop headers, stripped from everything forwarded; a websocket
//! handshake keeps them, the upstream's `101 Switching Protocols` goes back to the client, and
//! then both upgraded connections are spliced: bytes copied both ways until either side closes,
//! or until the credential that opened the connection is revoked ([`super::live`]). hyper performs
//! the upgrade on both sides; frames are not parsed, only their boundaries toward the client are
//! followed, so that a revoked connection ends with a proper close frame.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::balancer::InFlight;
use super::live::Lease;
use super::upstream::strip_hop_by_hop;

/// Whether the request asks to switch to the websocket protocol.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// Puts back the two headers of a websocket handshake after the hop-by-hop headers went.
pub fn keep(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Answers the client with the upstream's `101` and splices the two connections once both
/// upgrades complete; the instance counts the connection as in flight while it lasts, and the
/// `lease` (who opened it) ends it when revoked.
pub(super) fn splice(
    mut response: hyper::Response<Incoming>,
    client: OnUpgrade,
    in_flight: InFlight,
    lease: Option<Lease>,
) -> Response {
    let upstream = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let (client, upstream) = match tokio::join!(client, upstream) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (client, upstream) => {
                tracing::debug!(
                    client = client.err().map(|e| e.to_string()),
                    upstream = upstream.err().map(|e| e.to_string()),
                    "a websocket upgrade did not complete"
                );
                return;
            }
        };
        let mut client = Framed::new(TokioIo::new(client));
        let mut upstream = TokioIo::new(upstream);
        let revoked = async {
            match &lease {
                Some(lease) => lease.stopped().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = copied {
                    tracing::debug!(error = %e, "a proxied websocket ended with an error");
                }
            }
            () = revoked => {
                // Dropping the copy loses nothing the client could use: what was read from the
                // upstream and not yet written is at most the rest of a frame, and then no close
                // frame can follow it; the connection is just shut.
                if client.at_frame_boundary() {
                    let _ = client.io.write_all(&close_frame(POLICY_VIOLATION, SIGNED_OUT)).await;
                }
                let _ = client.io.shutdown().await;
                let _ = upstream.shutdown().await;
                tracing::debug!("a websocket was closed: its credential was revoked");
            }
        }
    });
    let (mut parts, _) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    keep(&mut parts.headers);
    debug_assert_eq!(parts.status, StatusCode::SWITCHING_PROTOCOLS);
    Response::from_parts(parts, Body::empty())
}

/// RFC 6455 §7.4.1: "an endpoint is terminating the connection because it has received a message
/// that violates its policy"; the closest of the defined codes to "your sign-in is over".
const POLICY_VIOLATION: u16 = 1008;
const SIGNED_OUT: &str = "signed out";

/// A close frame from the server: unmasked, FIN, opcode 8, the code and a short reason
/// (RFC 6455 §5.5.1; a control frame's payload stays under 126 bytes).
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x88);
    frame.push(2 + reason.len() as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

/// The client's side of a splice: follows the frame boundaries of what is written to it (the
/// upstream's frames), so that a close frame is only ever sent between two frames. The cost is a
/// few comparisons per write and per frame header; payloads are skipped, never read.
struct Framed<T> {
    io: T,
    frames: FrameCursor,
}

impl<T> Framed<T> {
    fn new(io: T) -> Self {
        Self {
            io,
            frames: FrameCursor::default(),
        }
    }

    fn at_frame_boundary(&self) -> bool {
        self.frames.at_boundary()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Framed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Framed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            this.frames.advance(&buf[..*n]);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Where a stream of websocket frames (RFC 6455 §5.2) stands: inside a header, of which `have`
/// bytes arrived, or inside a payload with `remaining` bytes to come.
#[derive(Debug, Default)]
struct FrameCursor {
    header: [u8; 14],
    have: usize,
    remaining: u64,
}

impl FrameCursor {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// The header's full length once its first two bytes are known.
    fn header_len(&self) -> usize {
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(bytes)
            }
            short => u64::from(short),
        }
    }

    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip =
                    usize::try_from(self.remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                self.remaining -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have >= 2 && self.have == self.header_len() {
                self.remaining = self.payload_len();
                self.have = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_websocket_handshake_is_recognised_by_both_headers() {
        assert!(is_websocket(&headers(&[
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
        ])));
        assert!(!is_websocket(&headers(&[("upgrade", "websocket")])));
        assert!(!is_websocket(&headers(&[
            ("upgrade", "h2c"),
            ("connection", "upgrade"),
        ])));
    }

    fn frame(len: usize, masked: bool) -> Vec<u8> {
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut bytes = vec![0x81];
        match len {
            0..=125 => bytes.push(mask_bit | len as u8),
            126..=0xffff => {
                bytes.push(mask_bit | 126);
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                bytes.push(mask_bit | 127);
                bytes.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            bytes.extend_from_slice(&[1, 2, 3, 4]);
        }
        bytes.extend(std::iter::repeat_n(b'x', len));
        bytes
    }

    #[test]
    fn frame_boundaries_are_followed_however_the_bytes_are_cut() {
        let stream: Vec<u8> = [
            frame(0, false),
            frame(5, false),
            frame(300, false),
            frame(70_000, false),
            frame(7, true),
        ]
        .concat();
        let ends: Vec<usize> = {
            let mut at = 0;
            [0, 5, 300, 70_000, 7]
                .iter()
                .zip([2, 2, 4, 10, 6])
                .map(|(len, header)| {
                    at += len + header;
                    at
                })
                .collect()
        };
        for chunk in [1, 2, 3, 7, 1000, stream.len()] {
            let mut cursor = FrameCursor::default();
            let mut at = 0;
            for piece in stream.chunks(chunk) {
                cursor.advance(piece);
                at += piece.len();
                assert_eq!(
                    cursor.at_boundary(),
                    ends.contains(&at),
                    "chunk {chunk}, at {at}"
                );
            }
        }
    }

    #[test]
    fn the_close_frame_carries_its_code_and_reason() {
        let frame = close_frame(POLICY_VIOLATION, SIGNED_OUT);
        assert_eq!(frame[0], 0x88);
        assert_eq!(usize::from(frame[1]), 2 + SIGNED_OUT.len());
        assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1008);
        assert_eq!(&frame[4..], SIGNED_OUT.as_bytes());
        let mut cursor = FrameCursor::default();
        cursor.advance(&frame);
        assert!(cursor.at_boundary());
    }
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod revocation_tests;
