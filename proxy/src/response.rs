//! Answers a proxy gives itself, rather than relaying them.

use http::{header, HeaderValue, StatusCode};

/// A JSON answer `{"message": "…"}` (Kong's shape), for refusals and
/// failures the proxy decides itself.
pub fn message_response<B: From<String>>(status: StatusCode, message: &str) -> http::Response<B> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = http::Response::new(B::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}
