//! `docs/configuration.md` against the real binary, so the reference cannot drift: every key
//! `palisade --print-config` prints has a row with the same default and environment variable,
//! every row is a real key, every flag `palisade --help` maps to a key is in its row, and every
//! optional key the page lists is accepted by `--set`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use palisade_tests::server::binary;

/// One printed key.
#[derive(Debug)]
struct Printed {
    value: String,
    env: String,
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .env_clear()
        .output()
        .expect("run palisade");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses `--print-config` output: `[section]` headers, then `name = value  # source; env VAR`.
fn parse_printed(text: &str) -> BTreeMap<String, Printed> {
    let mut keys = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (name, rest) = line
            .split_once(" = ")
            .unwrap_or_else(|| panic!("unexpected --print-config line {line:?}"));
        let (value, comment) = rest
            .rsplit_once("  # ")
            .unwrap_or_else(|| panic!("no source comment in {line:?}"));
        let env = comment
            .split_once("env ")
            .map(|(_, env)| env.to_owned())
            .unwrap_or_else(|| panic!("no environment variable in {line:?}"));
        let key = if section.is_empty() {
            name.to_owned()
        } else {
            format!("{section}.{name}")
        };
        keys.insert(
            key,
            Printed {
                value: value.to_owned(),
                env,
            },
        );
    }
    keys
}

/// Long flags of `--help` that name a key (`... (server.backlog)`), by key; and every long flag.
fn parse_help(text: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut by_key = BTreeMap::new();
    let mut all = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') && line.starts_with("  ") {
            current = trimmed
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .map(str::to_owned);
            all.extend(current.clone());
            continue;
        }
        let Some(flag) = &current else { continue };
        if let Some(key) = trimmed
            .strip_suffix(')')
            .and_then(|l| l.rsplit_once('('))
            .map(|(_, key)| key)
            .filter(|k| {
                k.contains('.')
                    && k.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'
                    })
            })
        {
            by_key.insert(key.to_owned(), flag.clone());
        }
    }
    (by_key, all)
}

/// The rows of the tables whose header starts with `header`, as trimmed cells.
fn table_rows(doc: &str, header: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in doc.lines() {
        let line = line.trim();
        if line.starts_with(header) {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if in_table && !line.starts_with("|---") {
            let cells = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            rows.push(cells);
        }
    }
    rows
}

fn unquote(cell: &str) -> &str {
    cell.strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .unwrap_or(cell)
}

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

const REGENERATE: &str = "docs/configuration.md is out of date with `palisade --print-config`";

#[test]
fn every_printed_key_is_documented_with_its_default_env_and_flag() {
    let (code, printed, err) = run(&["--print-config"]);
    assert_eq!(code, 0, "{err}");
    let printed = parse_printed(&printed);
    assert!(printed.len() > 40, "suspiciously few keys: {printed:?}");
    let (help_code, help, help_err) = run(&["--help"]);
    assert_eq!(help_code, 0, "{help_err}");
    let (flag_of, all_flags) = parse_help(&help);
    assert!(flag_of.contains_key("server.bind"), "{help}");

    let doc = doc();
    let rows = table_rows(&doc, "| key | default | environment | flag |");
    let mut documented = BTreeMap::new();
    for row in &rows {
        assert_eq!(row.len(), 5, "a reference row needs 5 cells: {row:?}");
        let key = unquote(&row[0]).to_owned();
        assert!(
            documented.insert(key.clone(), row.clone()).is_none(),
            "{key} is documented twice"
        );
    }

    let printed_keys: BTreeSet<&String> = printed.keys().collect();
    let documented_keys: BTreeSet<&String> = documented.keys().collect();
    let undocumented: Vec<_> = printed_keys.difference(&documented_keys).collect();
    let unknown: Vec<_> = documented_keys.difference(&printed_keys).collect();
    assert!(
        undocumented.is_empty(),
        "{REGENERATE}: undocumented keys {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "{REGENERATE}: documented keys that do not exist {unknown:?}"
    );

    for (key, p) in &printed {
        let row = &documented[key];
        let (default, env, flag) = (&row[1], &row[2], &row[3]);
        assert_eq!(
            unquote(env),
            p.env,
            "{REGENERATE}: environment variable of {key}"
        );
        if p.value == "# (unset)" {
            assert_eq!(default, "(unset)", "{REGENERATE}: default of {key}");
        } else if p.value.starts_with("[{") {
            assert_eq!(default, "see below", "{REGENERATE}: default of {key}");
            assert!(
                doc.contains(&p.value),
                "{REGENERATE}: the default of {key} is not quoted in full: {}",
                p.value
            );
        } else {
            assert_eq!(unquote(default), p.value, "{REGENERATE}: default of {key}");
        }
        match flag_of.get(key) {
            Some(f) => assert!(
                flag.split(", ").any(|c| unquote(c) == f),
                "{REGENERATE}: {key} is set by {f}, the page says {flag}"
            ),
            None => assert_eq!(
                flag, "—",
                "{REGENERATE}: {key} has no flag, the page says {flag}"
            ),
        }
    }
    for f in &all_flags {
        assert!(
            doc.contains(&format!("`{f}")),
            "{REGENERATE}: flag {f} is not mentioned"
        );
    }
}

#[test]
fn every_optional_key_is_accepted_and_printed_once_set() {
    let (_, defaults, _) = run(&["--print-config"]);
    let defaults = parse_printed(&defaults);
    let rows = table_rows(&doc(), "| optional key | example |");
    for row in &rows {
        assert_eq!(row.len(), 3, "an optional-key row needs 3 cells: {row:?}");
        let key = unquote(&row[0]);
        let example = unquote(&row[1]);
        assert!(
            !defaults.contains_key(key),
            "{REGENERATE}: {key} is printed now; it belongs in the reference tables"
        );
        let set = format!("{key}={example}");
        let (code, out, err) = run(&["--print-config", "--set", &set]);
        assert_eq!(code, 0, "--set {set} was refused: {err}");
        let printed = parse_printed(&out);
        let value = printed
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not printed after --set {set}:\n{out}"));
        assert_eq!(value.value.trim_matches('"'), example, "{key}");
    }
}

#[test]
fn the_parsers_read_what_the_binary_writes() {
    // Guards the checks above against passing vacuously on a format change.
    let (_, out, _) = run(&["--print-config", "--set", "server.backlog=77"]);
    let printed = parse_printed(&out);
    assert_eq!(printed["server.backlog"].value, "77");
    assert_eq!(printed["server.backlog"].env, "PALISADE_SERVER_BACKLOG");
    let (_, help, _) = run(&["--help"]);
    let (flag_of, all) = parse_help(&help);
    assert_eq!(flag_of["server.backlog"], "--backlog");
    assert!(all.contains("--print-config") && all.contains("--set"));
    let rows = table_rows(&doc(), "| key | default | environment | flag |");
    assert!(
        rows.iter()
            .any(|r| r[0] == "`server.backlog`" && r[3] == "`--backlog`"),
        "{rows:?}"
    );
}
