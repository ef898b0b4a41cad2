//! The acknowledged control plane, end to end: a runtime change on a real two-worker server
//! answers with every worker's outcome, takes effect on every worker before the answer, and a
//! change one worker refuses (the `TEST_PALISADE_REFUSE_CHANGES` test hook, built with the
//! `test-routes` feature) is rolled back everywhere and answered with a problem naming the
//! worker. No test waits for a change to "reach" the workers: the answer is the acknowledgement.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use http::Method;
use palisade_tests::http::Client;
use palisade_tests::load::{BASE, Outcome, connect, exchange, parse_worker, workers_of};
use palisade_tests::server::ServerProcess;
use palisade_tests::wait_until;
use serde_json::{Value, json};

fn two_workers(env: &[(&str, &str)]) -> ServerProcess {
    let mut builder = ServerProcess::builder()
        .args(BASE.iter().copied())
        .args(["--workers", "2"]);
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let server = builder.spawn();
    assert!(
        wait_until(Duration::from_secs(20), || workers_of(server.pid()).len()
            == 2),
        "expected 2 workers, have {:?}",
        workers_of(server.pid())
    );
    server
}

async fn put_limit(server: &ServerProcess, patch: &Value) -> (u16, Value) {
    let (k, v) = server.admin_auth();
    let res = Client::new()
        .json(
            Method::PUT,
            &server.admin_url("/admin/v1/limits/api"),
            &[(&k, &v)],
            patch,
        )
        .await
        .expect("PUT /admin/v1/limits/api");
    (res.status.as_u16(), res.json())
}

async fn admin_get(server: &ServerProcess, path: &str) -> Value {
    let (k, v) = server.admin_auth();
    let res = Client::new()
        .request(Method::GET, &server.admin_url(path), &[(&k, &v)], "")
        .await
        .expect("admin GET");
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

/// Three API requests on one keep-alive connection to each worker, right away: the statuses
/// each worker (by slot id) gave.
async fn statuses_per_worker(server: &ServerProcess) -> BTreeMap<u32, Vec<u16>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
    while seen.len() < 2 && Instant::now() < deadline {
        let tries: Vec<_> = (0..4)
            .map(|_| {
                let addr = server.addr;
                tokio::spawn(async move {
                    let mut sender = connect(addr).await.ok()?;
                    let Outcome::Done { body, .. } =
                        exchange(&mut sender, Method::GET, "/health/worker", false).await
                    else {
                        return None;
                    };
                    let worker = parse_worker(&body)?.worker_id;
                    let mut statuses = Vec::new();
                    for _ in 0..3 {
                        match exchange(&mut sender, Method::GET, "/api/v1/users/1", false).await {
                            Outcome::Done { status, .. } => statuses.push(status),
                            other => panic!("request failed: {other:?}"),
                        }
                    }
                    Some((worker, statuses))
                })
            })
            .collect();
        for t in tries {
            if let Ok(Some((worker, statuses))) = t.await {
                seen.entry(worker).or_insert(statuses);
            }
        }
    }
    assert_eq!(seen.len(), 2, "did not reach both workers: {seen:?}");
    seen
}

#[tokio::test]
async fn a_change_answers_with_every_workers_outcome_and_is_live_on_all() {
    let server = two_workers(&[]);
    let (status, body) = put_limit(&server, &json!({"rate": 1, "burst": 1})).await;
    assert_eq!(status, 200, "{body}");
    let workers = body["propagation"]["workers"].as_array().expect("workers");
    let ids: BTreeSet<u64> = workers
        .iter()
        .map(|w| w["worker_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from([0, 1]), "{body}");
    assert!(workers.iter().all(|w| w["outcome"] == "applied"), "{body}");
    assert_eq!(body["propagation"]["rolled_back"], false);

    // The audit entry carries the same outcomes.
    let audit = admin_get(&server, "/admin/v1/audit").await;
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["action"] == "update")
        .expect("an update entry");
    assert_eq!(
        entry["propagation"]["workers"],
        body["propagation"]["workers"]
    );

    // Acknowledged means live: with burst 1 every worker refuses at once.
    for (worker, statuses) in statuses_per_worker(&server).await {
        assert!(
            statuses.iter().filter(|s| **s == 429).count() >= 2,
            "worker {worker} still runs the old limit: {statuses:?}"
        );
    }
}

#[tokio::test]
async fn a_change_one_worker_refuses_is_rolled_back_everywhere() {
    let server = two_workers(&[("TEST_PALISADE_REFUSE_CHANGES", "1")]);
    let before = admin_get(&server, "/admin/v1/limits/api").await["settings"].clone();
    let (status, problem) = put_limit(&server, &json!({"rate": 1, "burst": 1})).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["workers"], json!([1]), "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("refused by worker 1") && detail.contains("rolled back"),
        "{detail}"
    );
    assert_eq!(problem["propagation"]["rolled_back"], true);
    let outcomes: BTreeMap<u64, String> = problem["propagation"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["worker_id"].as_u64().unwrap(),
                w["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        BTreeMap::from([(0, "applied".to_owned()), (1, "refused".to_owned())])
    );

    // The supervisor's settings are the old ones, and so are both workers'.
    assert_eq!(
        admin_get(&server, "/admin/v1/limits/api").await["settings"],
        before
    );
    for (worker, statuses) in statuses_per_worker(&server).await {
        assert_eq!(
            statuses,
            [200, 200, 200],
            "worker {worker} kept the refused change"
        );
    }
    let audit = admin_get(&server, "/admin/v1/audit").await;
    let last = audit.as_array().unwrap().last().expect("an audit entry");
    assert_eq!(last["action"], "update_rolled_back", "{last}");
    assert_eq!(last["propagation"]["rolled_back"], true);
}

#[tokio::test]
async fn worker_operations_report_their_real_outcome() {
    let server = two_workers(&[]);
    let (k, v) = server.admin_auth();
    let client = Client::new();
    let res = client
        .request(
            Method::POST,
            &server.admin_url("/admin/v1/workers/7/drain"),
            &[(&k, &v)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(res.status, 404, "{}", res.text());
    let res = client
        .json(
            Method::POST,
            &server.admin_url("/admin/v1/workers/scale"),
            &[(&k, &v)],
            &json!({"workers": 3}),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 202, "{}", res.text());
    assert_eq!(res.json()["after"]["workers"], 3, "{}", res.text());
    // One lifecycle operation at a time: the restart is refused (409, naming the scale) until
    // the third worker is ready, then accepted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let res = loop {
        let res = client
            .request(
                Method::POST,
                &server.admin_url("/admin/v1/workers/restart"),
                &[(&k, &v)],
                "",
            )
            .await
            .unwrap();
        if res.status != 409 || Instant::now() > deadline {
            break res;
        }
        assert!(res.text().contains("scale to 3 workers"), "{}", res.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(res.status, 202, "{}", res.text());
    assert!(
        res.json()["after"]["replacing"].as_u64().unwrap() >= 2,
        "{}",
        res.text()
    );
}
