//! End-to-end tests of the reference API on a real `palisade` process over real sockets.

use http::Method;
use palisade_tests::http::Client;
use palisade_tests::server::ServerProcess;
use serde_json::json;

#[tokio::test]
async fn users_crud_happy_path() {
    let server = ServerProcess::start();
    let client = Client::new();

    let res = client
        .get(&server.url("/api/v1/users?limit=2&offset=1"))
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    let page = res.json();
    assert_eq!(page["users"].as_array().unwrap().len(), 2);
    assert_eq!(page["users"][0]["id"], 2);
    assert_eq!(page["total"], 3);

    let body = json!({"name": "Barbara Liskov", "email": "barbara@example.com"});
    let res = client
        .json(Method::POST, &server.url("/api/v1/users"), &[], &body)
        .await
        .unwrap();
    assert_eq!(res.status, 201);
    let id = res.json()["id"].as_u64().unwrap();
    assert_eq!(
        res.header("location"),
        Some(format!("/api/v1/users/{id}").as_str())
    );

    let res = client
        .get(&server.url(&format!("/api/v1/users/{id}")))
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["name"], "Barbara Liskov");

    let body = json!({"name": "B. Liskov", "email": "bl@example.com"});
    let url = server.url(&format!("/api/v1/users/{id}"));
    let res = client.json(Method::PUT, &url, &[], &body).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["email"], "bl@example.com");

    let res = client.request(Method::DELETE, &url, &[], "").await.unwrap();
    assert_eq!(res.status, 204);
    let res = client.get(&url).await.unwrap();
    assert_eq!(res.status, 404);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn users_error_paths_are_problem_documents() {
    let server = ServerProcess::start();
    let client = Client::new();
    let users = server.url("/api/v1/users");

    // Malformed JSON → 400.
    let res = client
        .request(
            Method::POST,
            &users,
            &[("content-type", "application/json")],
            "{\"name\":",
        )
        .await
        .unwrap();
    assert_eq!(res.status, 400);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert_eq!(res.json()["status"], 400);

    // Wrong shape → 422; missing content type → 415.
    let res = client
        .json(Method::POST, &users, &[], &json!({"name": 5}))
        .await
        .unwrap();
    assert_eq!(res.status, 422);
    let res = client
        .request(Method::POST, &users, &[], "{}")
        .await
        .unwrap();
    assert_eq!(res.status, 415);

    // Invalid values → 422 naming both fields.
    let res = client
        .json(
            Method::POST,
            &users,
            &[],
            &json!({"name": "", "email": "nope"}),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 422);
    let fields: Vec<_> = res.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["name", "email"]);

    // Duplicate email → 409.
    let res = client
        .json(
            Method::POST,
            &users,
            &[],
            &json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 409);

    // Bad ids → 400, unknown → 404, bad paging → 400.
    for path in [
        "/api/v1/users/abc",
        "/api/v1/users/0",
        "/api/v1/users/-1",
        "/api/v1/users/%FF%FE",
    ] {
        let res = client.get(&server.url(path)).await.unwrap();
        assert_eq!(res.status, 400, "{path}");
    }
    let res = client
        .get(&server.url("/api/v1/users/999999"))
        .await
        .unwrap();
    assert_eq!(res.status, 404);
    let res = client
        .get(&server.url("/api/v1/users?limit=0"))
        .await
        .unwrap();
    assert_eq!(res.status, 400);
    let res = client
        .get(&server.url("/api/v1/users?limit=x"))
        .await
        .unwrap();
    assert_eq!(res.status, 400);
    let res = client.get(&server.url("/no/such/../route")).await.unwrap();
    assert_eq!(res.status, 404);
}

#[tokio::test]
async fn demo_and_health_routes() {
    let server = ServerProcess::start();
    let client = Client::new();
    let res = client.get(&server.url("/plaintext")).await.unwrap();
    assert_eq!(
        (res.status.as_u16(), res.text().as_str()),
        (200, "Hello, World!")
    );
    let res = client.get(&server.url("/names")).await.unwrap();
    assert_eq!(res.status, 200);
    assert!(res.json().as_array().unwrap().iter().any(|n| n == "Grace"));
    let res = client.get(&server.url("/slow?ms=20")).await.unwrap();
    assert_eq!(res.status, 200);
    let res = client.get(&server.url("/slow?ms=999999999")).await.unwrap();
    assert_eq!(res.status, 400);
    let res = client
        .get(&server.url("/flaky?fail_pct=100"))
        .await
        .unwrap();
    assert_eq!(res.status, 500);
    let res = client.get(&server.url("/flaky?fail_pct=0")).await.unwrap();
    assert_eq!(res.status, 200);
    let res = client
        .get(&server.url("/flaky?fail_pct=101"))
        .await
        .unwrap();
    assert_eq!(res.status, 400);

    assert_eq!(
        client
            .get(&server.url("/health/live"))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        client
            .get(&server.url("/health/ready"))
            .await
            .unwrap()
            .status,
        200
    );
    let res = client.get(&server.url("/health/worker")).await.unwrap();
    let worker = res.json();
    // Answered by a worker process of the supervisor (not the supervisor itself).
    let pid = worker["pid"].as_u64().unwrap();
    assert!(pid > 0 && pid != u64::from(server.pid()), "{worker}");
    assert!(worker["worker_id"].as_u64().unwrap() < 64);
    assert!(worker["in_flight"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn admin_requires_a_token_and_read_only_tokens_cannot_change() {
    let ro_file = std::env::temp_dir().join(format!("palisade-ro-{}.token", std::process::id()));
    let server = ServerProcess::builder()
        .args([
            "--set",
            &format!("admin.read_only_token_file=\"{}\"", ro_file.display()),
        ])
        .spawn();
    let client = Client::new();
    let limit = server.admin_url("/admin/v1/limits/api");
    assert_eq!(client.get(&limit).await.unwrap().status, 401);
    let ro = format!(
        "Bearer {}",
        std::fs::read_to_string(&ro_file).unwrap().trim()
    );
    let res = client
        .request(Method::GET, &limit, &[("authorization", &ro)], "")
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    let before = res.json()["settings"].clone();
    let res = client
        .json(
            Method::PUT,
            &limit,
            &[("authorization", &ro)],
            &json!({"rate": 1}),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 403);
    // An invalid change with the read-write token: 400 naming the field, nothing changed.
    let (k, v) = server.admin_auth();
    let res = client
        .json(Method::PUT, &limit, &[(&k, &v)], &json!({"burst": 0}))
        .await
        .unwrap();
    assert_eq!(res.status, 400);
    assert!(res.text().contains("burst"), "{}", res.text());
    let res = client
        .request(Method::GET, &limit, &[(&k, &v)], "")
        .await
        .unwrap();
    assert_eq!(res.json()["settings"], before);
    let _ = std::fs::remove_file(&ro_file);
}

#[tokio::test]
async fn names_is_cached_unless_caching_is_disabled() {
    let client = Client::new();
    let on = ServerProcess::start();
    let first = client.get(&on.url("/names")).await.unwrap();
    let second = client.get(&on.url("/names")).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 200);
    assert!(
        first
            .header("cache-status")
            .is_some_and(|s| s.contains("fwd=")),
        "{:?}",
        first.header("cache-status")
    );
    assert!(
        second
            .header("cache-status")
            .is_some_and(|s| s.contains("hit")),
        "{:?}",
        second.header("cache-status")
    );

    let off = ServerProcess::builder()
        .args(["--set", "cache.enabled=false"])
        .spawn();
    for _ in 0..2 {
        let res = client.get(&off.url("/names")).await.unwrap();
        assert_eq!(res.status, 200);
        assert_eq!(res.header("cache-status"), None, "no response cache");
        assert_eq!(res.json(), first.json(), "same document either way");
    }
}
