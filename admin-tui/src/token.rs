//! Where the admin bearer token comes from.
//!
//! The reference server writes its token to [`default_token_path`] (mode 0600) at first start;
//! `palisade-top` reads it from there unless told otherwise. Precedence: `--token`, then
//! `--token-file`, then the `PALISADE_ADMIN_TOKEN` environment variable, then the default file.

use std::fmt;
use std::path::{Path, PathBuf};

pub use palisade::admin::token::{default_token_path, token_path_from};

/// Where to read the bearer token; files are re-read on every connection attempt, so a server
/// that regenerates its token is picked up without restarting the dashboard.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// No token: requests go out unauthenticated (and the server answers 401).
    None,
    /// A token given on the command line or in the environment.
    Literal(String),
    /// A token file.
    File {
        /// The file.
        path: PathBuf,
        /// Named explicitly (`--token-file`): a missing file is an error. The default path
        /// may not exist yet, which just means "no token".
        explicit: bool,
    },
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Literal(_) => f.write_str("Literal(<redacted>)"),
            Self::File { path, explicit } => f
                .debug_struct("File")
                .field("path", path)
                .field("explicit", explicit)
                .finish(),
        }
    }
}

/// A token file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read token file {path}: {reason}")]
pub struct TokenError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl TokenSource {
    /// Picks the source by precedence: `--token`, `--token-file`, `PALISADE_ADMIN_TOKEN`, the
    /// default file.
    ///
    /// ```
    /// use palisade_top::TokenSource;
    /// let s = TokenSource::resolve(None, None, Some("from-env".into()), Some("/d".into()));
    /// assert_eq!(s, TokenSource::Literal("from-env".into()));
    /// let s = TokenSource::resolve(None, Some("/t".into()), Some("from-env".into()), None);
    /// assert_eq!(s, TokenSource::File { path: "/t".into(), explicit: true });
    /// ```
    pub fn resolve(
        token: Option<String>,
        token_file: Option<PathBuf>,
        env_token: Option<String>,
        default_file: Option<PathBuf>,
    ) -> Self {
        if let Some(t) = token.filter(|t| !t.trim().is_empty()) {
            return Self::Literal(t.trim().to_owned());
        }
        if let Some(path) = token_file {
            return Self::File {
                path,
                explicit: true,
            };
        }
        if let Some(t) = env_token.filter(|t| !t.trim().is_empty()) {
            return Self::Literal(t.trim().to_owned());
        }
        match default_file {
            Some(path) => Self::File {
                path,
                explicit: false,
            },
            None => Self::None,
        }
    }

    /// Reads the token now. `Ok(None)` means "send no token".
    pub fn load(&self) -> Result<Option<String>, TokenError> {
        match self {
            Self::None => Ok(None),
            Self::Literal(t) => Ok(Some(t.clone())),
            Self::File { path, explicit } => match std::fs::read_to_string(path) {
                Ok(s) => {
                    let t = s.trim();
                    if t.is_empty() {
                        Err(TokenError {
                            path: path.clone(),
                            reason: "the file is empty".into(),
                        })
                    } else {
                        Ok(Some(t.to_owned()))
                    }
                }
                Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(TokenError {
                    path: path.clone(),
                    reason: e.to_string(),
                }),
            },
        }
    }

    /// A human description for the status screen (never the secret).
    pub fn describe(&self) -> String {
        match self {
            Self::None => "no token (use --token-file or PALISADE_ADMIN_TOKEN)".into(),
            Self::Literal(_) => "token from the command line or PALISADE_ADMIN_TOKEN".into(),
            Self::File { path, .. } => format!("token file {}", display_path(path)),
        }
    }
}

fn display_path(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_flag_then_file_then_env_then_default() {
        let s = TokenSource::resolve(
            Some("flag".into()),
            Some("/f".into()),
            Some("env".into()),
            Some("/d".into()),
        );
        assert_eq!(s, TokenSource::Literal("flag".into()));
        let s = TokenSource::resolve(None, None, None, Some("/d".into()));
        assert_eq!(
            s,
            TokenSource::File {
                path: "/d".into(),
                explicit: false
            }
        );
        assert_eq!(
            TokenSource::resolve(None, None, Some(" ".into()), None),
            TokenSource::None
        );
    }

    #[test]
    fn missing_default_file_means_no_token_but_explicit_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("palisade-top-token-{}", std::process::id()));
        let missing = dir.join("nope.token");
        let implicit = TokenSource::File {
            path: missing.clone(),
            explicit: false,
        };
        assert_eq!(implicit.load(), Ok(None));
        let explicit = TokenSource::File {
            path: missing,
            explicit: true,
        };
        assert!(explicit.load().is_err());
    }

    #[test]
    fn file_token_is_trimmed_and_reread() {
        let path =
            std::env::temp_dir().join(format!("palisade-top-token-{}.txt", std::process::id()));
        std::fs::write(&path, "secret-1\n").unwrap();
        let src = TokenSource::File {
            path: path.clone(),
            explicit: true,
        };
        assert_eq!(src.load().unwrap().as_deref(), Some("secret-1"));
        std::fs::write(&path, "secret-2").unwrap();
        assert_eq!(src.load().unwrap().as_deref(), Some("secret-2"));
        std::fs::write(&path, "  \n").unwrap();
        assert!(src.load().is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = format!("{:?}", TokenSource::Literal("hunter2".into()));
        assert!(!s.contains("hunter2"));
    }
}
