//! Classifiers: what a finished call means for the breaker.

use std::fmt;

use http::Response;

use super::Outcome;

/// Decides the [`Outcome`] of a finished call from its result. Slowness is measured separately
/// by the breaker, and timeouts from `call_timeout_ms` are always failures.
pub trait Classify<Res, E> {
    /// The outcome of one call.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;
}

impl<Res, E, C: Classify<Res, E> + ?Sized> Classify<Res, E> for &C {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        (**self).classify(result)
    }
}

/// The default for HTTP services: a service error or a `5xx` response is a failure; every other
/// response (including `4xx`: the dependency answered, the client was wrong) is a success.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpClassifier;

impl<B, E> Classify<Response<B>, E> for HttpClassifier {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(res) if res.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// The default for anything that is not HTTP: `Err` is a failure, `Ok` a success.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorClassifier;

impl<Res, E> Classify<Res, E> for ErrorClassifier {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// A classifier from a closure; see [`classify_fn`].
#[derive(Clone, Copy)]
pub struct ClassifyFn<F>(F);

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFn").finish_non_exhaustive()
    }
}

/// Wraps a closure `Fn(&Result<Res, E>) -> Outcome` as a classifier.
///
/// ```
/// use palisade::circuit_breaker::{Classify, Outcome, classify_fn};
/// // Only gateway errors count; 500s from application bugs do not open the breaker.
/// let gateway = classify_fn(|r: &Result<http::Response<()>, std::io::Error>| match r {
///     Ok(res) if matches!(res.status().as_u16(), 502..=504) => Outcome::Failure,
///     Ok(res) if res.status() == 429 => Outcome::Ignored,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// });
/// let res = http::Response::builder().status(500).body(()).unwrap();
/// assert_eq!(gateway.classify(&Ok(res)), Outcome::Success);
/// ```
pub fn classify_fn<F>(f: F) -> ClassifyFn<F> {
    ClassifyFn(f)
}

impl<F, Res, E> Classify<Res, E> for ClassifyFn<F>
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        (self.0)(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Result<Response<()>, ()> {
        Ok(Response::builder().status(code).body(()).unwrap())
    }

    #[test]
    fn http_default_counts_5xx_and_errors_but_not_4xx() {
        let c = HttpClassifier;
        assert_eq!(c.classify(&status(200)), Outcome::Success);
        assert_eq!(c.classify(&status(404)), Outcome::Success);
        assert_eq!(c.classify(&status(429)), Outcome::Success);
        assert_eq!(c.classify(&status(500)), Outcome::Failure);
        assert_eq!(c.classify(&status(503)), Outcome::Failure);
        assert_eq!(c.classify(&Err::<Response<()>, ()>(())), Outcome::Failure);
    }

    #[test]
    fn error_classifier_counts_errors() {
        assert_eq!(ErrorClassifier.classify(&Ok::<_, ()>(1)), Outcome::Success);
        assert_eq!(
            ErrorClassifier.classify(&Err::<u8, _>(())),
            Outcome::Failure
        );
    }
}
