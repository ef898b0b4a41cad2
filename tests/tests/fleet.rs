//! Fleet mode end to end: three real servers (separate supervisor processes with their own
//! workers and ports, each in a network namespace of its own where the test may create one)
//! sharing a private redis-server. A limit lowered through one node's admin API answers 429 on
//! every node within 1 s; a node-local override stays local; a killed node leaves the fleet
//! view within three heartbeats; a change one node refuses is rolled back on every node; with
//! Redis down fleet changes are refused and nodes keep serving, and when Redis comes back
//! (empty) the fleet re-seeds it and carries on, and a node joining later starts from the
//! fleet's settings. `palisade-top --fleet` (in tmux) shows the three nodes, and a limit edited
//! there answers 429 on all of them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Method;
use palisade_tests::free_port;
use palisade_tests::http::Client;
use palisade_tests::load::{BASE, eventually_async};
use palisade_tests::netns::Hosts;
use palisade_tests::redis::RedisServer;
use palisade_tests::server::ServerProcess;
use palisade_tests::tmux::Tmux;
use serde_json::{Value, json};

/// The heartbeat the nodes run with; a node silent for three of them leaves the view.
const HEARTBEAT: Duration = Duration::from_millis(500);

fn node(
    hosts: &Hosts,
    i: usize,
    redis: &RedisServer,
    workers: usize,
    env: &[(&str, &str)],
) -> ServerProcess {
    let ip = hosts.node_ip(i);
    let addr = SocketAddr::new(ip, free_port());
    let admin = SocketAddr::new(ip, free_port());
    let token = std::env::temp_dir().join(format!(
        "palisade-fleet-{}-{i}-{}.token",
        std::process::id(),
        admin.port()
    ));
    for ext in ["db", "db-wal", "db-shm"] {
        let _ = std::fs::remove_file(token.with_extension(ext));
    }
    let mut builder = ServerProcess::builder()
        .args(BASE.iter().copied())
        .args(["--workers", &workers.to_string()])
        .args([
            "--set".to_owned(),
            format!("fleet.redis_url={}", redis.url_on(hosts.gateway_ip(i))),
            "--set".to_owned(),
            format!("fleet.node_id=node{i}"),
            "--set".to_owned(),
            format!("fleet.heartbeat={}ms", HEARTBEAT.as_millis()),
            "--set".to_owned(),
            "admin.allow_non_loopback=true".to_owned(),
        ])
        .wrapped(hosts.wrapper(i));
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    builder.spawn_at(addr, admin, token)
}

async fn admin(
    server: &ServerProcess,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (k, v) = server.admin_auth();
    let client = Client::new();
    let url = server.admin_url(path);
    let res = match body {
        Some(body) => client.json(method, &url, &[(&k, &v)], &body).await,
        None => client.request(method, &url, &[(&k, &v)], "").await,
    }
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    let json = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
    (res.status.as_u16(), json)
}

/// The node ids in `server`'s fleet view (empty while Redis cannot be read).
async fn fleet_ids(server: &ServerProcess) -> Vec<String> {
    let (status, body) = admin(server, Method::GET, "/admin/v1/fleet/nodes", None).await;
    if status != 200 {
        return Vec::new();
    }
    body["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["node_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Four API requests on one connection: how many answered 429.
async fn rejected(server: &ServerProcess) -> usize {
    let client = Client::new();
    let mut n = 0;
    for _ in 0..4 {
        let res = client
            .get(&server.url("/api/v1/users/1"))
            .await
            .expect("GET /api/v1/users/1");
        if res.status == 429 {
            n += 1;
        }
    }
    n
}

async fn limit_settings(server: &ServerProcess) -> Value {
    let (status, body) = admin(server, Method::GET, "/admin/v1/limits/api", None).await;
    assert_eq!(status, 200, "{body}");
    body["settings"].clone()
}

async fn wait_for_fleet(nodes: &[&ServerProcess], expected: usize) {
    for server in nodes {
        let ok = eventually_async(
            Duration::from_secs(15),
            Duration::from_millis(50),
            || async { fleet_ids(server).await.len() == expected },
        )
        .await;
        assert!(
            ok,
            "the fleet view never showed {expected} nodes: {:?}",
            fleet_ids(server).await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_every_node_within_a_second_and_a_killed_node_leaves() {
    let hosts = Hosts::create(3);
    let Some(redis) = RedisServer::start_on(&hosts.gateways()) else {
        return;
    };
    eprintln!(
        "fleet test nodes: {} (isolated in network namespaces: {})",
        (0..3)
            .map(|i| hosts.node_ip(i).to_string())
            .collect::<Vec<_>>()
            .join(", "),
        hosts.isolated()
    );
    let n0 = node(&hosts, 0, &redis, 2, &[]);
    let n1 = node(&hosts, 1, &redis, 2, &[]);
    let mut n2 = node(&hosts, 2, &redis, 2, &[]);
    wait_for_fleet(&[&n0, &n1, &n2], 3).await;
    for server in [&n0, &n1, &n2] {
        assert_eq!(rejected(server).await, 0, "nothing is limited yet");
    }

    // A limit lowered through node 0 answers 429 on every node within a second.
    let started = Instant::now();
    let (status, body) = admin(
        &n0,
        Method::PUT,
        "/admin/v1/limits/api",
        Some(json!({"rate": 1, "burst": 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let propagation = &body["propagation"];
    assert_eq!(
        propagation["workers"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
    let nodes = propagation["nodes"].as_array().expect("per-node outcomes");
    assert_eq!(nodes.len(), 2, "{body}");
    for n in nodes {
        assert_eq!(n["outcome"], "applied", "{body}");
        assert_eq!(n["workers"].as_array().map(Vec::len), Some(2), "{body}");
    }
    for server in [&n0, &n1, &n2] {
        let limited = eventually_async(
            Duration::from_secs(1),
            Duration::from_millis(10),
            || async { rejected(server).await > 0 },
        )
        .await;
        assert!(
            limited,
            "no 429 from {} after the fleet change",
            server.addr
        );
    }
    let took = started.elapsed();
    eprintln!(
        "fleet change to 429 on all 3 nodes: {} ms",
        took.as_millis()
    );
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    for server in [&n1, &n2] {
        assert_eq!(limit_settings(server).await["rate"], 1);
    }

    // A node-local override stays on its node and is reported.
    let (status, body) = admin(
        &n1,
        Method::PUT,
        "/admin/v1/limits/api?scope=node",
        Some(json!({"rate": 100000, "burst": 100000})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["propagation"].get("nodes").is_none(), "{body}");
    assert_eq!(rejected(&n1).await, 0);
    assert!(rejected(&n0).await > 0 && rejected(&n2).await > 0);
    let reported = eventually_async(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async {
            let (_, body) = admin(&n0, Method::GET, "/admin/v1/fleet/nodes", None).await;
            body["nodes"].as_array().is_some_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n["node_id"] == "node1" && n["overrides"] == json!(["limits/api"]))
            })
        },
    )
    .await;
    assert!(reported, "the override of node1 is not in the nodes view");

    // Fleet-wide traffic: totals add up, and the latency histograms add up exactly.
    let (status, snap) = admin(&n2, Method::GET, "/admin/v1/fleet/snapshot", None).await;
    assert_eq!(status, 200, "{snap}");
    let nodes = snap["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    let sum = |f: &dyn Fn(&Value) -> u64| nodes.iter().map(f).sum::<u64>();
    assert_eq!(
        snap["traffic"]["requests_total"].as_u64(),
        Some(sum(&|n| n["requests_total"].as_u64().unwrap_or(0)))
    );
    let long = |v: &Value| v["latency"][1].clone();
    assert_eq!(long(&snap["traffic"])["window_secs"], 60);
    assert_eq!(
        long(&snap["traffic"])["count"].as_u64(),
        Some(sum(&|n| long(n)["count"].as_u64().unwrap_or(0)))
    );
    assert!(long(&snap["traffic"])["count"].as_u64() > Some(0), "{snap}");
    let max = nodes
        .iter()
        .map(|n| long(n)["max_ms"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);
    assert_eq!(
        long(&snap["traffic"])["max_ms"].as_f64(),
        Some(max),
        "{snap}"
    );

    // The fleet audit, read from another node.
    let (status, audit) = admin(&n1, Method::GET, "/admin/v1/fleet/audit", None).await;
    assert_eq!(status, 200, "{audit}");
    let last = audit["entries"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["origin"], "node0", "{audit}");
    assert_eq!(last["target"], "limits/api");
    assert_eq!(last["outcome"], "applied");
    assert_eq!(last["after"]["rate"], 1);

    // A killed node leaves the view within three heartbeats.
    n2.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = n2.wait_timeout(Duration::from_secs(5));
    let killed = Instant::now();
    let gone = eventually_async(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { !fleet_ids(&n0).await.contains(&"node2".to_owned()) },
    )
    .await;
    let took = killed.elapsed();
    eprintln!(
        "killed node left the fleet view after {} ms",
        took.as_millis()
    );
    assert!(gone, "node2 is still in the fleet view");
    assert!(
        took <= HEARTBEAT * 3 + Duration::from_millis(300),
        "took {took:?}"
    );
    assert_eq!(
        fleet_ids(&n1).await,
        vec!["node0".to_owned(), "node1".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_one_node_refuses_is_rolled_back_on_every_node() {
    let hosts = Hosts::loopback(3);
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let n0 = node(&hosts, 0, &redis, 1, &[]);
    let n1 = node(&hosts, 1, &redis, 1, &[]);
    // Worker 0 of node 2 refuses every change (test hook, `test-routes` builds only).
    let n2 = node(
        &hosts,
        2,
        &redis,
        1,
        &[("TEST_PALISADE_REFUSE_CHANGES", "0")],
    );
    wait_for_fleet(&[&n0, &n1, &n2], 3).await;
    let before = limit_settings(&n0).await;

    let (status, body) = admin(
        &n0,
        Method::PUT,
        "/admin/v1/limits/api",
        Some(json!({"rate": 5})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["nodes"], json!(["node2"]), "{body}");
    assert_eq!(body["propagation"]["rolled_back"], true, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("node node2"),
        "{body}"
    );
    for server in [&n0, &n1, &n2] {
        assert_eq!(
            limit_settings(server).await,
            before,
            "not rolled back on {}",
            server.addr
        );
    }
    let (_, audit) = admin(&n1, Method::GET, "/admin/v1/fleet/audit", None).await;
    let last = audit["entries"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["outcome"], "rolled_back", "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_nodes_keep_serving_and_resync_when_it_returns() {
    let hosts = Hosts::loopback(4);
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let n0 = node(&hosts, 0, &redis, 1, &[]);
    let n1 = node(&hosts, 1, &redis, 1, &[]);
    let n2 = node(&hosts, 2, &redis, 1, &[]);
    wait_for_fleet(&[&n0, &n1, &n2], 3).await;
    let (status, body) = admin(
        &n0,
        Method::PUT,
        "/admin/v1/limits/api",
        Some(json!({"rate": 1, "burst": 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    redis.kill();
    // Fleet changes are refused with a clear problem; nothing changed anywhere.
    let (status, body) = admin(
        &n1,
        Method::PUT,
        "/admin/v1/limits/api",
        Some(json!({"rate": 2})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("Redis"),
        "{body}"
    );
    for server in [&n0, &n1, &n2] {
        assert_eq!(limit_settings(server).await["rate"], 1);
        assert!(
            rejected(server).await > 0,
            "{} lost the fleet's limit",
            server.addr
        );
    }
    let (status, _) = admin(&n1, Method::GET, "/admin/v1/fleet/nodes", None).await;
    assert_eq!(status, 503);
    // A node-local change still applies.
    let (status, body) = admin(
        &n2,
        Method::PUT,
        "/admin/v1/limits/api?scope=node",
        Some(json!({"burst": 2})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Redis comes back empty: the nodes re-register and re-seed the fleet's settings.
    redis.restart();
    let back = eventually_async(
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            let (status, body) = admin(&n0, Method::GET, "/admin/v1/fleet/nodes", None).await;
            status == 200
                && body["version"].as_u64() >= Some(1)
                && body["nodes"].as_array().is_some_and(|n| n.len() == 3)
        },
    )
    .await;
    assert!(back, "the fleet did not come back after Redis restarted");

    // The next change reaches every node, from the version the fleet had.
    let (status, body) = admin(
        &n1,
        Method::PUT,
        "/admin/v1/limits/api",
        Some(json!({"rate": 3})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["propagation"]["nodes"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
    for server in [&n0, &n1, &n2] {
        let settings = limit_settings(server).await;
        assert_eq!(settings["rate"], 3, "{}: {settings}", server.addr);
        assert_eq!(settings["burst"], 1, "{}: {settings}", server.addr);
    }
    let (_, audit) = admin(&n0, Method::GET, "/admin/v1/fleet/audit", None).await;
    let last = audit["entries"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .unwrap_or_default();
    assert!(
        last["version"].as_u64() >= Some(2),
        "versions never go back: {audit}"
    );

    // A node joining now starts from the fleet's settings.
    let n3 = node(&hosts, 3, &redis, 1, &[]);
    let joined = eventually_async(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async {
            let s = limit_settings(&n3).await;
            s["rate"] == 3 && s["burst"] == 1
        },
    )
    .await;
    assert!(joined, "the new node runs {}", limit_settings(&n3).await);
    let synced = eventually_async(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let (_, body) = admin(&n3, Method::GET, "/admin/v1/fleet/nodes", None).await;
            body["nodes"]
                .as_array()
                .is_some_and(|nodes| nodes.len() == 4 && nodes.iter().all(|n| n["in_sync"] == true))
        },
    )
    .await;
    assert!(
        synced,
        "not every node reports the fleet's settings version"
    );
}

#[test]
fn palisade_top_fleet_shows_every_node_and_an_edit_there_limits_all_of_them() {
    let hosts = Hosts::loopback(3);
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let nodes: Vec<ServerProcess> = (0..3).map(|i| node(&hosts, i, &redis, 1, &[])).collect();
    rt.block_on(wait_for_fleet(&nodes.iter().collect::<Vec<_>>(), 3));
    let command = format!(
        "{} --fleet --url http://{} --token-file {}",
        palisade_tests::server::binary()
            .with_file_name("palisade-top")
            .display(),
        nodes[0].admin_addr.expect("admin"),
        nodes[0].token_file.display()
    );
    let Some(tmux) = Tmux::start(&command) else {
        return;
    };
    tmux.wait_for("a live connection", Duration::from_secs(15), |s| {
        s.contains("LIVE")
    });
    tmux.keys(&["8"]);
    tmux.wait_for("the three nodes", Duration::from_secs(15), |s| {
        s.contains("3 nodes") && ["node0", "node1", "node2"].iter().all(|n| s.contains(n))
    });

    // Rate 1, then burst 1, in the Limits panel: each answered with every node's outcome.
    tmux.keys(&["4"]);
    tmux.wait_for("the limits table", Duration::from_secs(5), |s| {
        s.contains("api") && s.contains("RATE")
    });
    tmux.keys(&["e", "C-u", "1", "Enter", "y"]);
    tmux.wait_for(
        "the rate applied on every node",
        Duration::from_secs(15),
        |s| {
            s.contains("rate 1000 → 1")
                && s.contains("2/2 other nodes")
                && s.contains("node1 ✓")
                && s.contains("node2 ✓")
        },
    );
    tmux.keys(&["l", "l", "e", "C-u", "1", "Enter", "y"]);
    tmux.wait_for(
        "the burst applied on every node",
        Duration::from_secs(15),
        |s| s.contains("burst 200 → 1") && s.contains("2/2 other nodes"),
    );
    rt.block_on(async {
        for server in &nodes {
            assert!(rejected(server).await > 0, "no 429 from {}", server.addr);
        }
    });
}
