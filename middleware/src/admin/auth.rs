//! Bearer-token authentication, read-only enforcement, the early body-size check and
//! `Cache-Control: no-store` on every admin response.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode, header};

use super::Shared;
use super::config::Access;
use crate::problem::Problem;

/// The authenticated caller, put in the request extensions for the handlers.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The token id (recorded in the audit log).
    pub(crate) id: String,
}

/// Compares a configured secret with a presented one in time that depends only on the
/// secret's length, never on where the first difference is.
pub(crate) fn ct_eq(secret: &[u8], presented: &[u8]) -> bool {
    let mut diff = u8::from(secret.len() != presented.len());
    for (i, s) in secret.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(s ^ p);
    }
    std::hint::black_box(diff) == 0
}

/// The credentials of an `Authorization: Bearer <token>` header, if that is what it holds.
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn unauthorized(invalid: bool) -> Response {
    let (detail, challenge) = if invalid {
        (
            "the bearer token is not valid for this server",
            r#"Bearer realm="palisade-admin", error="invalid_token""#,
        )
    } else {
        (
            "send `Authorization: Bearer <token>`; the token is in the server's admin token file",
            r#"Bearer realm="palisade-admin""#,
        )
    };
    let mut res = Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized")
        .detail(detail)
        .into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    res
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// The admin middleware: 401 without a valid token, 403 for a read-only token on anything but
/// `GET`/`HEAD`, 413 for a declared body over the limit.
pub(crate) async fn authenticate(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = req.headers().get(header::AUTHORIZATION).map(bearer);
    let token = match presented {
        None => return no_store(unauthorized(false)),
        Some(None) => return no_store(unauthorized(false)),
        Some(Some(presented)) => {
            // Compare with every token so timing does not reveal which one matched.
            let mut found = None;
            for token in &shared.config.tokens {
                if ct_eq(token.secret(), presented) {
                    found = Some(token);
                }
            }
            match found {
                Some(t) => t,
                None => {
                    tracing::warn!(method = %req.method(), path = %req.uri().path(), "admin request with an invalid token");
                    return no_store(unauthorized(true));
                }
            }
        }
    };
    if token.access() == Access::ReadOnly && !is_read(req.method()) {
        let res = Problem::new(StatusCode::FORBIDDEN, "Forbidden")
            .detail(format!(
                "token `{}` is read-only; changes need a read-write token",
                token.id()
            ))
            .into_response();
        return no_store(res);
    }
    let limit = shared.config.body_limit;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return no_store(payload_too_large(limit));
    }
    req.extensions_mut().insert(Caller {
        id: token.id().to_owned(),
    });
    no_store(next.run(req).await)
}

/// The 413 problem.
pub(crate) fn payload_too_large(limit: usize) -> Response {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large")
        .detail(format!("admin request bodies are limited to {limit} bytes"))
        .with("limit_bytes", limit)
        .into_response()
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
