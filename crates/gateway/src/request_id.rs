//! Request IDs: `x-request-id` taken from the client when it is a sane one (1 to 128 visible
//! ASCII characters), else generated; returned on the response, sent upstream, and a field of
//! the request's tracing span, so every log line of the request carries it.
//!
//! tower-http's `SetRequestIdLayer` keeps whatever the client sent, so [`drop_unusable`] runs
//! first and removes an ID that is too long or not printable: it is replaced, never echoed.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use tower_http::request_id::{MakeRequestId, RequestId};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-chosen ID kept.
pub const MAX_LEN: usize = 128;

/// Whether a client's ID may be used as it is: it will be echoed in a header and written to
/// logs, so only visible ASCII, bounded.
pub fn usable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// Removes every `x-request-id` unless there is exactly one and it is usable.
pub async fn drop_unusable(mut req: Request, next: Next) -> Response {
    let mut values = req.headers().get_all(&HEADER).iter();
    let keep = matches!((values.next(), values.next()), (Some(v), None) if usable(v));
    if !keep {
        req.headers_mut().remove(&HEADER);
    }
    next.run(req).await
}

/// New IDs: 128 random bits as 32 hex digits.
#[derive(Clone, Copy, Default)]
pub struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        HeaderValue::from_str(&hex::encode(bytes))
            .ok()
            .map(RequestId::new)
    }
}

/// The ID of a request, for its span (`-` if none was set).
pub fn of<B>(req: &http::Request<B>) -> &str {
    req.headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_printable_ids_are_kept() {
        assert!(usable(&HeaderValue::from_static("abc-123_XYZ.req:1")));
        assert!(usable(&HeaderValue::from_str(&"a".repeat(128)).unwrap()));
        assert!(!usable(&HeaderValue::from_str(&"a".repeat(129)).unwrap()));
        assert!(!usable(&HeaderValue::from_static("has space")));
        assert!(!usable(&HeaderValue::from_static("")));
        assert!(!usable(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()));
        assert!(!usable(&HeaderValue::from_bytes(b"tab\there").unwrap()));
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let req = http::Request::new(());
        let a = MakeId.make_request_id(&req).unwrap();
        let b = MakeId.make_request_id(&req).unwrap();
        assert_ne!(a.header_value(), b.header_value());
        let s = a.header_value().to_str().unwrap();
        assert_eq!(s.len(), 32);
        assert!(s.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
