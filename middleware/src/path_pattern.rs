//! Path patterns (`/health/*`, `/metrics`, `*`) for policies and exemptions, shared by the
//! rate-limit, timeout and concurrency-limit layers.

use std::fmt;

/// An exact path (`/metrics`), a prefix ending in `/*` (`/health/*` matches `/health` and
/// everything below it), or `*` (every path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathPattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl PathPattern {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::Any);
        }
        if !s.starts_with('/') {
            return Err("must start with `/` or be `*`".into());
        }
        match s.strip_suffix("/*") {
            Some(prefix) if !prefix.contains('*') => Ok(Self::Prefix(prefix.to_owned())),
            None if !s.contains('*') => Ok(Self::Exact(s.to_owned())),
            _ => Err("`*` is only allowed as a final `/*` segment".into()),
        }
    }

    #[inline]
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }

    /// Parses every pattern; the errors name the offending pattern.
    #[cfg_attr(
        not(any(feature = "timeout", feature = "concurrency-limit")),
        allow(dead_code, reason = "used by the timeout and concurrency-limit layers")
    )]
    pub(crate) fn parse_all(patterns: &[String]) -> Result<Vec<Self>, (String, String)> {
        patterns
            .iter()
            .map(|p| Self::parse(p).map_err(|reason| (p.clone(), reason)))
            .collect()
    }

    /// Whether any pattern matches `path`.
    #[inline]
    #[cfg_attr(
        not(any(feature = "timeout", feature = "concurrency-limit")),
        allow(dead_code, reason = "used by the timeout and concurrency-limit layers")
    )]
    pub(crate) fn any_matches(patterns: &[Self], path: &str) -> bool {
        patterns.iter().any(|p| p.matches(path))
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(p) => f.write_str(p),
            Self::Prefix(p) => write!(f, "{p}/*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PathPattern;

    #[test]
    fn prefix_matches_the_prefix_and_below_only() {
        let p = PathPattern::parse("/health/*").unwrap();
        assert!(p.matches("/health"));
        assert!(p.matches("/health/ready"));
        assert!(!p.matches("/healthz"));
        assert!(PathPattern::parse("/a*b").is_err());
        assert!(PathPattern::parse("metrics").is_err());
        assert_eq!(
            PathPattern::parse("/health/*").unwrap().to_string(),
            "/health/*"
        );
    }
}
