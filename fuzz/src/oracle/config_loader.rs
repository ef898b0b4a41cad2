//! Properties of the reference server's configuration loader (`palisade_server::config::load`).
//!
//! Shared by the `config_loader` fuzz target (fuzz/src/lib.rs) and the proptests in
//! server/tests/proptest_config.rs.

use std::collections::BTreeMap;
use std::path::Path;

use palisade_server::config::{self, Config, ConfigError, Overrides, env_var_for};

/// A config file's text and the process environment.
#[derive(Debug, Clone)]
pub(crate) struct ConfigCase {
    /// The TOML text written to the config file (`None`: no file).
    pub(crate) toml: Option<String>,
    /// Environment variables.
    pub(crate) env: Vec<(String, String)>,
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// Every dotted key of the configuration (from the defaults) and `admin.token_file`.
pub(crate) fn known_keys() -> Vec<String> {
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialize");
    let mut flat = BTreeMap::new();
    flatten("", &defaults, &mut flat);
    let mut keys: Vec<String> = flat.into_keys().collect();
    keys.push("admin.token_file".into());
    keys
}

/// Loads with the file at `path` (written here) and the environment. Never panics; `Ok` only
/// with a configuration that passes `validate()`; an error is a non-empty message whose first
/// line names the file, a key, a section or an environment variable, and which is one line
/// unless it carries the TOML parser's multi-line excerpt of the file (or echoes a key name
/// that contains a line break).
pub(crate) fn check_load(case: &ConfigCase, path: &Path) {
    if let Some(text) = &case.toml {
        std::fs::write(path, text).expect("write the config file");
    }
    let overrides = Overrides {
        file: case.toml.as_ref().map(|_| path.to_path_buf()),
        env: case.env.clone(),
        cli: Vec::new(),
    };
    match config::load(&overrides) {
        Ok(loaded) => {
            if let Err(e) = loaded.config.validate() {
                panic!("load accepted a configuration that validate refuses: {e}");
            }
            assert_eq!(loaded.file, overrides.file);
            let rendered = loaded.render();
            assert!(rendered.contains("[server]"), "{rendered}");
        }
        Err(e) => check_error(&e, case, path),
    }
}

fn check_error(e: &ConfigError, case: &ConfigCase, path: &Path) {
    let message = e.to_string();
    let first = message.lines().next().unwrap_or_default();
    assert!(
        !first.trim().is_empty(),
        "empty error message: {e:?}\n{case:#?}"
    );
    let file = path.display().to_string();
    // Multi-line messages: the TOML parser's excerpt of a file that does not parse, or a name or
    // value echoed verbatim that itself contains a line break (from the environment, or a TOML
    // string written with escapes or as a multi-line string); see docs/reliability.md.
    let excerpt = matches!(e, ConfigError::Parse { origin, .. } if origin.contains(&file));
    let echoed = case
        .env
        .iter()
        .any(|(k, v)| k.chars().chain(v.chars()).any(char::is_control))
        || case
            .toml
            .as_ref()
            .is_some_and(|t| t.contains('\\') || t.contains("\"\"\"") || t.contains("'''"));
    let multi_line_ok = excerpt || echoed;
    assert!(
        multi_line_ok || !message.trim_end().contains('\n'),
        "a multi-line error: {message:?}\n{case:#?}"
    );
    let keys = known_keys();
    let sections = [
        "server",
        "workers",
        "admin",
        "log",
        "shutdown",
        "demo",
        "rate_limit",
        "cache",
        "breaker",
    ];
    let names_something = first.contains(&file)
        || keys.iter().any(|k| first.contains(k.as_str()))
        || keys.iter().any(|k| first.contains(&env_var_for(k)))
        || case
            .env
            .iter()
            .any(|(k, _)| k.starts_with("PALISADE_") && first.contains(k.as_str()))
        || sections.iter().any(|s| {
            first.contains(&format!("{s}."))
                || first.starts_with(&format!("invalid configuration: {s}"))
        })
        || first.contains('`');
    assert!(
        names_something,
        "the error names no key or file: {message:?}\n{case:#?}"
    );
}

/// TOML values worth trying in any key: edge numbers, wrong types, near-valid strings.
pub(crate) const TOML_VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "1024",
    "65536",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999",
    "18446744073709551615",
    "1.5",
    "nan",
    "inf",
    "-0.0",
    "true",
    "false",
    "\"\"",
    "\"x\"",
    "\"1s\"",
    "\"100ms\"",
    "\"127.0.0.1:0\"",
    "\"0.0.0.0:80\"",
    "\"[::1]:9901\"",
    "\"lru\"",
    "\"tiny_lfu\"",
    "\"count\"",
    "\"time\"",
    "\"json\"",
    "\"shm\"",
    "\"local\"",
    "\"redis\"",
    "\"redis://127.0.0.1:1/\"",
    "\"not a url\"",
    "\"client_ip\"",
    "\"/api/*\"",
    "[]",
    "[1, 2]",
    "[\"/health/*\"]",
    "[\"10.0.0.0/8\"]",
    "[\"not-a-cidr\"]",
    "{}",
    "{ header = \"x-api-key\" }",
    "{ header = \"bad header\" }",
    "1979-05-27T07:32:00Z",
    "{ a = 1 }",
];

/// Section names worth trying, known and unknown.
pub(crate) const SECTIONS: &[&str] = &[
    "server",
    "workers",
    "admin",
    "log",
    "shutdown",
    "demo",
    "rate_limit",
    "rate_limit.redis",
    "cache",
    "cache.users",
    "cache.users.redis",
    "cache.names",
    "cache.names.store",
    "breaker",
    "database",
    "timeout",
    "concurrency",
    "server.backlog",
    "nope",
];
