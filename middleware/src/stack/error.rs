//! [`StackError`]: why a stack could not be built.

use crate::control::ComponentKind;

/// Why [`Stack::build`](crate::Stack::build) refused; nothing was registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// The response cache's configuration is invalid.
    #[error("response_cache: {0}")]
    ResponseCache(#[source] crate::cache::ConfigError),
    /// Two components of one kind share a name (in this stack, or with a component already in
    /// the registry given to [`Stack::registry`](crate::Stack::registry)).
    #[error(
        "a {kind:?} component named `{name}` is already registered; names must be unique per kind"
    )]
    DuplicateName {
        /// The kind.
        kind: ComponentKind,
        /// The name.
        name: String,
    },
}
