//! Admin bearer tokens on disk: generated once into a private file, reused afterwards.
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("palisade-token-doc-{}", std::process::id()));
//! let path = dir.join("admin.token");
//! let first = palisade::admin::token::load_or_create(&path).unwrap();
//! assert_eq!(first.len(), 64);
//! assert_eq!(palisade::admin::token::load_or_create(&path).unwrap(), first);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Random bytes in a generated token (hex-encoded to twice as many characters).
pub const TOKEN_BYTES: usize = 32;

/// The file name of the token inside the state directory.
const TOKEN_FILE: &str = "admin.token";

/// The default token file: `$XDG_STATE_HOME/palisade/admin.token`, falling back to
/// `~/.local/state/palisade/admin.token` (`HOME`; on Windows `USERPROFILE` when `HOME` is
/// unset). `None` when no variable is usable.
///
/// The reference server writes its generated token here and `palisade-top` reads it from here,
/// so both sides agree with no flags.
pub fn default_token_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME");
    #[cfg(windows)]
    let home = home.or_else(|| std::env::var_os("USERPROFILE"));
    token_path_from(std::env::var_os("XDG_STATE_HOME"), home)
}

/// [`default_token_path`] computed from explicit values of `XDG_STATE_HOME` and `HOME`.
///
/// Following the XDG base directory specification, an empty or relative `XDG_STATE_HOME` is
/// ignored.
///
/// ```
/// use palisade::admin::token::token_path_from;
/// use std::path::Path;
/// let p = token_path_from(Some("/var/state".into()), Some("/home/ops".into())).unwrap();
/// assert_eq!(p, Path::new("/var/state/palisade/admin.token"));
/// let p = token_path_from(Some("relative".into()), Some("/home/ops".into())).unwrap();
/// assert_eq!(p, Path::new("/home/ops/.local/state/palisade/admin.token"));
/// assert!(token_path_from(None, None).is_none());
/// ```
pub fn token_path_from(
    xdg_state_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let base = match xdg_state_home.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => {
            let home = PathBuf::from(home.filter(|h| !h.is_empty())?);
            home.join(".local").join("state")
        }
    };
    Some(base.join("palisade").join(TOKEN_FILE))
}

/// Whether [`ensure`] found the token file or wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The file existed and was read.
    Loaded,
    /// The file was missing; a new token was generated and written.
    Created,
}

/// Reads the token in `path`, or generates one into a new file (mode 0600, parent directories
/// created with mode 0700) when there is none. See [`ensure`] to also learn which happened.
///
/// # Errors
/// I/O errors, an empty file, or no system randomness.
pub fn load_or_create(path: &Path) -> io::Result<String> {
    ensure(path).map(|(token, _)| token)
}

/// [`load_or_create`], also telling whether the file was created (so a server can print its
/// path once). A file readable by group or others is used but reported with a warning.
///
/// # Errors
/// I/O errors, an empty file, or no system randomness.
pub fn ensure(path: &Path) -> io::Result<(String, Origin)> {
    match read(path) {
        Ok(token) => return Ok((token, Origin::Loaded)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    let token = generate()?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(token.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "generated a new admin token");
            Ok((token, Origin::Created))
        }
        // Another process created it between our read and our create: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read(path).map(|t| (t, Origin::Loaded))
        }
        Err(e) => Err(e),
    }
}

/// A new random token: [`TOKEN_BYTES`] bytes from the operating system's CSPRNG (through the
/// `getrandom` crate, so on Linux, macOS and Windows alike), hex-encoded.
///
/// # Errors
/// When the system has no randomness to give.
pub fn generate() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(io::Error::other)?;
    let mut out = String::with_capacity(TOKEN_BYTES * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn read(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("admin token file {} is empty", path.display()),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "admin token file is readable by other users; chmod 600 it"
            );
        }
    }
    Ok(token.to_owned())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdg_state_home_wins_over_home() {
        let p = token_path_from(Some("/x".into()), Some("/h".into())).unwrap();
        assert_eq!(p, Path::new("/x/palisade/admin.token"));
    }

    #[test]
    fn empty_xdg_state_home_falls_back_to_home() {
        let p = token_path_from(Some("".into()), Some("/h".into())).unwrap();
        assert_eq!(p, Path::new("/h/.local/state/palisade/admin.token"));
        assert!(token_path_from(Some("".into()), Some("".into())).is_none());
    }

    #[test]
    fn generated_tokens_are_hex_and_distinct() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_eq!(a.len(), TOKEN_BYTES * 2);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{a}"
        );
        assert_ne!(a, b);
    }
}
