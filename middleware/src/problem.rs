//! `application/problem+json` responses (RFC 9457), the shape every Palisade rejection uses.
//!
//! Rejections are responses, not errors: a layer that refuses a request answers it with a small
//! problem document and the right status and headers, so it composes with axum without a
//! `HandleErrorLayer`.
//!
//! ```
//! use http::StatusCode;
//! let res = palisade::problem::Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate limited")
//!     .detail("policy `api` allows 100 requests per second")
//!     .into_response::<http_body_util::Full<bytes::Bytes>>();
//! assert_eq!(res.status(), 429);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! ```

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

/// The media type of problem documents.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem document (RFC 9457).
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI reference naming the problem type; `about:blank` when only the status matters.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A short, human-readable summary.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// A human-readable explanation specific to this occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extra members (e.g. field errors), flattened into the document.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem with a status and a title.
    pub fn new(status: StatusCode, title: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            extensions: serde_json::Map::new(),
        }
    }

    /// Adds a detail message.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds an extension member.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.extensions.insert(key.to_owned(), value);
        self
    }

    /// Serializes the document.
    pub fn to_bytes(&self) -> Bytes {
        // Serializing plain strings and numbers cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Builds the response with any body type that can be made from [`Bytes`].
    pub fn into_response<B>(self) -> Response<B>
    where
        B: From<Bytes>,
    {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = Response::new(B::from(self.to_bytes()));
        *res.status_mut() = status;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        res
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Problem {
    fn into_response(self) -> axum::response::Response {
        Problem::into_response::<axum::body::Body>(self)
    }
}
