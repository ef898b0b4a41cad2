//! Configuration precedence and invalid configuration, through the real binary.

use std::process::Command;

use palisade_tests::server::{ServerProcess, binary};

fn print_config(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .arg("--print-config")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run palisade --print-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn file_then_env_then_cli() {
    let dir = std::env::temp_dir().join(format!("palisade-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("palisade.toml");
    std::fs::write(
        &file,
        "[server]\nbacklog = 111\nmax_headers = 33\nkeep_alive_timeout_secs = 9\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (code, out, err) = print_config(
        &["--config", file, "--backlog", "333"],
        &[
            ("PALISADE_SERVER_BACKLOG", "222"),
            ("PALISADE_SERVER_MAX_HEADERS", "44"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backlog = 333  # cli --backlog"), "{out}");
    assert!(
        out.contains("max_headers = 44  # env PALISADE_SERVER_MAX_HEADERS"),
        "{out}"
    );
    assert!(
        out.contains(&format!("keep_alive_timeout_secs = 9  # file {file}")),
        "{out}"
    );
    assert!(out.contains("tcp_nodelay = true  # default"), "{out}");
}

#[test]
fn invalid_config_exits_64_naming_the_field() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        (&["--backlog", "0"], &[], "server.backlog"),
        (
            &["--set", "server.max_headers=lots"],
            &[],
            "server.max_headers",
        ),
        (
            &[],
            &[("PALISADE_SERVER_BIND", "not-an-address")],
            "server.bind",
        ),
        (
            &[],
            &[("PALISADE_SERVER_NOPE", "1")],
            "PALISADE_SERVER_NOPE",
        ),
        (&["--set", "server.nope=1"], &[], "server.nope"),
        (&["--admin-addr", "0.0.0.0:9901"], &[], "admin.addr"),
        (
            &["--set", "fleet.redis_url=not a url"],
            &[],
            "fleet.redis_url",
        ),
        (
            &[],
            &[
                ("PALISADE_FLEET_REDIS_URL", "redis://127.0.0.1:6379/"),
                ("PALISADE_FLEET_HEARTBEAT", "10ms"),
            ],
            "fleet.heartbeat",
        ),
        (&["--set", "fleet.node_id=a b"], &[], "fleet.node_id"),
        (
            &[
                "--set",
                "fleet.redis_url=redis://127.0.0.1:6379/",
                "--set",
                "admin.enabled=false",
            ],
            &[],
            "admin.enabled",
        ),
        (
            &["--config", "/definitely/missing.toml"],
            &[],
            "/definitely/missing.toml",
        ),
    ];
    for (args, env, needle) in cases {
        let (code, _, err) = print_config(args, env);
        assert_eq!(code, 64, "{args:?} {env:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?} {env:?}: expected {needle} in: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one clear message: {err}");
    }
}

#[test]
fn malformed_config_file_exits_64() {
    let dir = std::env::temp_dir().join(format!("palisade-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[server\nbacklog = 1\n").unwrap();
    let (code, _, err) = print_config(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn config_file_is_applied_when_serving() {
    let dir = std::env::temp_dir().join(format!("palisade-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.toml");
    std::fs::write(&file, "[demo]\nslow_max_ms = 5\n").unwrap();
    let server = ServerProcess::builder()
        .args(["--config", file.to_str().unwrap()])
        .spawn();
    let status = palisade_tests::server::blocking_status(server.addr, "/slow?ms=10");
    assert_eq!(status, Some(400));
}
