//! [`CacheBody`]: the response body of the response cache.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of responses from [`ResponseCache`](super::ResponseCache): a cached (or
    /// buffered) body, the inner service's body passed through, or a buffered prefix followed
    /// by the rest of a body that exceeded the size cap.
    pub struct CacheBody<B: Body> {
        prefix: Option<Bytes>,
        error: Option<B::Error>,
        // Boxed: rare, and a `HeaderMap` inline would make every response (and its moves) larger.
        trailers: Option<Box<HeaderMap>>,
        rest: Option<Pin<Box<B>>>,
        // A body passed through untouched: held inline, no allocation per response.
        #[pin]
        inline: Option<B>,
    }
}

impl<B: Body> CacheBody<B> {
    /// A complete body.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            prefix: Some(bytes),
            error: None,
            trailers: None,
            rest: None,
            inline: None,
        }
    }

    /// An empty body (HEAD responses).
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// The inner body, untouched.
    pub fn passthrough(body: B) -> Self {
        Self {
            prefix: None,
            error: None,
            trailers: None,
            rest: None,
            inline: Some(body),
        }
    }

    /// Bytes already read from `rest`, then the remainder of `rest`.
    #[cfg(test)]
    pub(crate) fn prefixed(prefix: Bytes, rest: B) -> Self {
        Self::prefixed_boxed(prefix, Box::pin(rest))
    }

    /// Bytes already read from `rest`, then the remainder of `rest`.
    pub(crate) fn prefixed_boxed(prefix: Bytes, rest: Pin<Box<B>>) -> Self {
        Self {
            prefix: Some(prefix),
            error: None,
            trailers: None,
            rest: Some(rest),
            inline: None,
        }
    }

    /// Bytes already read, then the trailers that ended the body.
    pub(crate) fn with_trailers(prefix: Bytes, trailers: HeaderMap) -> Self {
        Self {
            prefix: Some(prefix),
            error: None,
            trailers: Some(Box::new(trailers)),
            rest: None,
            inline: None,
        }
    }

    /// Bytes already read, then the error that cut the body.
    pub(crate) fn failed(prefix: Bytes, error: B::Error) -> Self {
        Self {
            prefix: Some(prefix),
            error: Some(error),
            trailers: None,
            rest: None,
            inline: None,
        }
    }
}

impl<B: Body> From<Bytes> for CacheBody<B> {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

impl<B: Body> Default for CacheBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B: Body> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBody")
            .field("prefix_len", &self.prefix.as_ref().map(Bytes::len))
            .field("streaming", &(self.rest.is_some() || self.inline.is_some()))
            .finish_non_exhaustive()
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Some(prefix) = this.prefix.take()
            && !prefix.is_empty()
        {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        if let Some(inline) = this.inline.as_mut().as_pin_mut() {
            match ready!(inline.poll_frame(cx)) {
                Some(frame) => return Poll::Ready(Some(frame)),
                None => this.inline.set(None),
            }
        }
        if let Some(rest) = this.rest.as_mut() {
            match ready!(rest.as_mut().poll_frame(cx)) {
                Some(frame) => return Poll::Ready(Some(frame)),
                None => *this.rest = None,
            }
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(*trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty)
            && self.error.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
            && self.inline.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = match (&self.inline, &self.rest) {
            (Some(inline), _) => inline.size_hint(),
            (None, Some(rest)) => rest.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(prefix));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(prefix));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn prefixed_body_yields_prefix_then_rest() {
        let body: CacheBody<Full<Bytes>> = CacheBody::prefixed(
            Bytes::from_static(b"ab"),
            Full::new(Bytes::from_static(b"cd")),
        );
        assert_eq!(body.size_hint().exact(), Some(4));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "abcd");
    }

    #[tokio::test]
    async fn full_body_is_exact_and_ends() {
        let body: CacheBody<Full<Bytes>> = CacheBody::full(Bytes::from_static(b"xyz"));
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(3));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "xyz");
        assert!(CacheBody::<Full<Bytes>>::empty().is_end_stream());
    }

    #[tokio::test]
    async fn failed_body_yields_prefix_then_error() {
        type S = StreamBody<futures_util::stream::Empty<Result<Frame<Bytes>, std::io::Error>>>;
        let mut body: CacheBody<S> =
            CacheBody::failed(Bytes::from_static(b"ab"), std::io::Error::other("cut"));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        assert!(body.frame().await.unwrap().is_err());
    }
}
