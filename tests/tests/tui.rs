//! `palisade-top` end to end: the real dashboard in tmux against a real two-worker server.
//! It shows both worker pids, a breaker's state and a cache's hit ratio, edits a limit with
//! keystrokes (acknowledged by both workers on screen, checked through the admin API and by the
//! 429s that follow), survives the server going away (stale data, reconnecting) and reconnects
//! when it returns.

use std::path::PathBuf;
use std::time::Duration;

use palisade_tests::http::Client;
use palisade_tests::server::ServerProcess;
use palisade_tests::tmux::Tmux;
use palisade_tests::wait_until;

fn top_binary() -> PathBuf {
    palisade_tests::server::binary().with_file_name("palisade-top")
}

fn worker_pids(server: &ServerProcess) -> Vec<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (k, v) = server.admin_auth();
        let res = Client::new()
            .request(
                http::Method::GET,
                &server.admin_url("/admin/v1/snapshot"),
                &[(&k, &v)],
                "",
            )
            .await
            .unwrap();
        res.json()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["pid"].as_u64().unwrap())
            .collect()
    })
}

#[test]
fn dashboard_shows_workers_edits_limits_and_survives_restarts() {
    let server = ServerProcess::builder().args(["--workers", "2"]).spawn();
    let admin_addr = server.admin_addr.unwrap();
    let command = format!(
        "{} --url http://{} --token-file {}",
        top_binary().display(),
        admin_addr,
        server.token_file.display()
    );
    let Some(tmux) = Tmux::start(&command) else {
        return;
    };

    // Both worker pids appear in the workers table.
    let mut pids = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        pids = worker_pids(&server);
        pids.len() == 2
    }));
    tmux.wait_for("both worker pids", Duration::from_secs(15), |s| {
        s.contains("LIVE") && pids.iter().all(|p| s.contains(&p.to_string()))
    });

    // Some traffic, so the users cache has lookups to show a hit ratio for.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::without_keep_alive();
        for _ in 0..6 {
            let res = client.get(&server.url("/api/v1/users/1")).await.unwrap();
            assert_eq!(res.status, 200);
        }
    });

    // Breakers lead with the state; caches with their hit ratio, on first view.
    tmux.keys(&["5"]);
    tmux.wait_for("a breaker's state", Duration::from_secs(10), |s| {
        s.contains("STATE") && s.contains("FAIL%") && s.contains("CLOSED")
    });
    tmux.keys(&["6"]);
    tmux.wait_for("a cache's hit ratio", Duration::from_secs(15), |s| {
        s.contains("L1 HIT%")
            && s.lines()
                .any(|l| l.contains("users") && l.split_whitespace().any(|w| w.ends_with('%')))
    });

    // Limits panel (fields: rate, per, burst, mode): rate 1, then burst 2, each confirmed;
    // each answer says every worker applied it (the acknowledgement: nothing to wait for).
    tmux.keys(&["4"]);
    tmux.wait_for("the limits table", Duration::from_secs(5), |s| {
        s.contains("api") && s.contains("RATE")
    });
    tmux.keys(&["e", "C-u", "1", "Enter", "y"]);
    tmux.wait_for(
        "the first change applied on both workers",
        Duration::from_secs(15),
        |s| s.contains("rate 1000 → 1") && s.contains("applied on 2/2 workers"),
    );
    tmux.keys(&["l", "l", "e", "C-u", "2", "Enter", "y"]);
    tmux.wait_for(
        "the second change applied on both workers",
        Duration::from_secs(15),
        |s| s.contains("burst 200 → 2") && s.contains("applied on 2/2 workers"),
    );

    let settings = rt.block_on(async {
        let (k, v) = server.admin_auth();
        let res = Client::new()
            .request(
                http::Method::GET,
                &server.admin_url("/admin/v1/limits/api"),
                &[(&k, &v)],
                "",
            )
            .await
            .unwrap();
        res.json()["settings"].clone()
    });
    assert_eq!(
        (settings["rate"].as_u64(), settings["burst"].as_u64()),
        (Some(1), Some(2)),
        "{}\n{}",
        settings,
        tmux.screen()
    );

    // The change applies to requests on every worker: a burst of 2, then 429s. The burst was
    // spent by nothing else since the change (health checks are exempt), so no waiting.
    let statuses: Vec<u16> = rt.block_on(async {
        let client = Client::without_keep_alive();
        let mut out = Vec::new();
        for _ in 0..8 {
            out.push(
                client
                    .get(&server.url("/api/v1/users/1"))
                    .await
                    .unwrap()
                    .status
                    .as_u16(),
            );
        }
        out
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        6,
        "{statuses:?}"
    );

    // The server goes away: the dashboard keeps running and shows stale data.
    let token_file = server.token_file.clone();
    let addr = server.addr;
    drop(server);
    tmux.wait_for("the stale banner", Duration::from_secs(15), |s| {
        s.contains("STALE")
    });
    assert!(
        tmux.alive(),
        "palisade-top exited when the server went away"
    );

    // It comes back on the same ports: the dashboard reconnects by itself.
    let restarted = ServerProcess::builder()
        .args(["--workers", "2"])
        .spawn_at(addr, admin_addr, token_file);
    let new_pids = worker_pids(&restarted);
    tmux.keys(&["1"]);
    tmux.wait_for(
        "reconnection with the new workers",
        Duration::from_secs(30),
        |s| {
            s.contains("LIVE")
                && !s.contains("STALE")
                && new_pids.iter().all(|p| s.contains(&p.to_string()))
        },
    );
}
