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

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// Random bytes in a generated token (hex-encoded to twice as many characters).
pub const TOKEN_BYTES: usize = 32;

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

/// A new random token: [`TOKEN_BYTES`] bytes from the operating system's CSPRNG, hex-encoded.
///
/// # Errors
/// When `/dev/urandom` cannot be read.
pub fn generate() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
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
