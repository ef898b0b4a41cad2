//! End-to-end TLS: a real `palisade` serving HTTPS with certificates from a throwaway CA (rcgen),
//! h2 and HTTP/1.1 chosen by ALPN, client certificates (mTLS), a certificate rotated by SIGHUP
//! under load, the admin endpoint over TLS and the `palisade-top` client with `--ca-file`.
//! Loopback only; only processes the test started are signalled, by pid.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use palisade_tests::http::Client;
use palisade_tests::load::{BASE, Load, eventually, temp_dir, wait_ready_workers, workers_of};
use palisade_tests::server::{ServerBuilder, ServerProcess};
use palisade_tests::tls::{Issued, TestCa, get, handshake};

/// Writes the CA, a server certificate and key into `dir`; their paths.
fn material(dir: &Path, ca: &TestCa, server: &Issued) -> (PathBuf, PathBuf, PathBuf) {
    let (ca_path, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    ca.write(&ca_path);
    server.write(&cert, &key);
    (ca_path, cert, key)
}

fn set(key: &str, value: &Path) -> [String; 2] {
    ["--set".to_owned(), format!("{key}={}", value.display())]
}

fn single(ca: &TestCa) -> ServerBuilder {
    ServerProcess::builder()
        .args(["--single-process", "--workers", "1"])
        .tls(ca.client_config(&["http/1.1"], None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_h2_or_http1_as_alpn_negotiates() {
    let dir = temp_dir("tls-alpn");
    let ca = TestCa::new("palisade test CA");
    let server_cert = ca.server_cert();
    let (ca_path, cert, key) = material(&dir, &ca, &server_cert);
    let server = single(&ca)
        .args(set("server.tls.cert", &cert))
        .args(set("server.tls.key", &key))
        .spawn();

    let h2 = get(
        server.addr,
        ca.client_config(&["h2", "http/1.1"], None),
        "/health/live",
    )
    .await
    .expect("h2 request");
    assert_eq!(h2.status, 200, "{:?}", h2.body);
    assert_eq!(h2.alpn.as_deref(), Some("h2"));
    assert_eq!(h2.version, http::Version::HTTP_2);
    assert_eq!(h2.server_cert.as_ref(), Some(&server_cert.der));

    let h1 = get(
        server.addr,
        ca.client_config(&["http/1.1"], None),
        "/health/live",
    )
    .await
    .expect("http/1.1 request");
    assert_eq!((h1.status, h1.alpn.as_deref()), (200, Some("http/1.1")));
    assert_eq!(h1.version, http::Version::HTTP_11);

    // No ALPN at all: HTTP/1.1.
    let plain = get(server.addr, ca.client_config(&[], None), "/health/live")
        .await
        .expect("request without ALPN");
    assert_eq!((plain.status, plain.alpn), (200, None));

    // A client that does not trust the CA fails the handshake; so does plain HTTP.
    let stranger = TestCa::new("another CA");
    let err = handshake(server.addr, stranger.client_config(&["h2"], None))
        .await
        .expect_err("untrusted certificate accepted");
    assert!(err.contains("handshake"), "{err}");
    assert_eq!(
        palisade_tests::server::blocking_status(server.addr, "/health/live"),
        None,
        "plain HTTP answered on the TLS port"
    );

    // What the docs tell operators to run.
    match std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg("--cacert")
        .arg(&ca_path)
        .arg(format!(
            "https://127.0.0.1:{}/health/live",
            server.addr.port()
        ))
        .output()
    {
        Ok(out) => assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "2 200",
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(error) => eprintln!("SKIPPED the curl check: curl not runnable ({error})"),
    }
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_or_optional() {
    let dir = temp_dir("tls-mtls");
    let ca = TestCa::new("palisade test CA");
    let clients = TestCa::new("client CA");
    let (_, cert, key) = material(&dir, &ca, &ca.server_cert());
    let client_ca = dir.join("clients.pem");
    clients.write(&client_ca);
    let alice = clients.client_cert("alice");
    let mallory = TestCa::new("rogue CA").client_cert("mallory");
    let ready = ca.client_config(&["http/1.1"], Some(&alice));
    let server = single(&ca)
        .tls(ready)
        .args(set("server.tls.cert", &cert))
        .args(set("server.tls.key", &key))
        .args(set("server.tls.client_ca", &client_ca))
        .spawn();

    let ok = get(
        server.addr,
        ca.client_config(&["h2"], Some(&alice)),
        "/health/live",
    )
    .await
    .expect("a client certificate from the client CA is accepted");
    assert_eq!((ok.status, ok.alpn.as_deref()), (200, Some("h2")));
    // Without a certificate, or with one from another CA, no request gets through (TLS 1.3
    // reports the refusal on the first read after the handshake).
    for (who, config) in [
        ("no certificate", ca.client_config(&["h2"], None)),
        (
            "a rogue certificate",
            ca.client_config(&["h2"], Some(&mallory)),
        ),
    ] {
        let refused = get(server.addr, config, "/health/live").await;
        assert!(refused.is_err(), "{who} was accepted: {refused:?}");
    }
    drop(server);

    // Optional: no certificate is fine, a bad one is still refused.
    let server = single(&ca)
        .args(set("server.tls.cert", &cert))
        .args(set("server.tls.key", &key))
        .args(set("server.tls.client_ca", &client_ca))
        .args(["--set", "server.tls.client_auth=optional"])
        .spawn();
    let anonymous = get(server.addr, ca.client_config(&["h2"], None), "/health/live")
        .await
        .expect("optional client auth accepts no certificate");
    assert_eq!(anonymous.status, 200);
    let rogue = get(
        server.addr,
        ca.client_config(&["h2"], Some(&mallory)),
        "/health/live",
    )
    .await;
    assert!(
        rogue.is_err(),
        "a rogue certificate was accepted: {rogue:?}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_under_load_without_a_failed_request() {
    let dir = temp_dir("tls-rotate");
    let ca = TestCa::new("palisade test CA");
    let first = ca.server_cert();
    let (_, cert, key) = material(&dir, &ca, &first);
    let file = dir.join("palisade.toml");
    std::fs::write(
        &file,
        format!(
            "[workers]\ncount = 2\nheartbeat_interval_ms = 200\n\n[server.tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .expect("write config");
    let h1 = ca.client_config(&["http/1.1"], None);
    let server = ServerProcess::builder()
        .args(BASE.iter().copied())
        .args(["--config", file.to_str().expect("utf-8 path")])
        .tls(h1.clone())
        .spawn();
    let sup = server.pid();
    // Ready, not only started: a booting worker still reads the certificate this test breaks.
    wait_ready_workers(&server, &Client::new(), 2).await;
    let load = Load::start_tls(server.addr, h1.clone(), 3, 2, 1);
    assert!(load.progress(200, Duration::from_secs(20)).await);

    // A broken certificate is refused: same workers, same certificate, still serving.
    let before = workers_of(sup);
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("write");
    server.signal(Signal::SIGHUP);
    // Nothing may change: give the supervisor ample time to (not) act.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        workers_of(sup),
        before,
        "workers changed on a broken certificate"
    );
    assert!(load.progress(50, Duration::from_secs(20)).await);
    let still = get(server.addr, h1.clone(), "/health/live")
        .await
        .expect("served");
    assert_eq!(still.server_cert.as_ref(), Some(&first.der));

    // A new certificate and key: the workers roll, new connections get the new certificate.
    let second = ca.server_cert();
    second.write(&cert, &key);
    server.signal(Signal::SIGHUP);
    assert!(
        eventually(Duration::from_secs(30), || {
            let now = workers_of(sup);
            now.len() == 2 && now.is_disjoint(&before)
        })
        .await,
        "workers not replaced after the rotation: {:?}",
        workers_of(sup)
    );
    let mut presented = None;
    for _ in 0..200 {
        presented = get(server.addr, h1.clone(), "/health/live")
            .await
            .ok()
            .and_then(|r| r.server_cert);
        if presented.as_ref() == Some(&second.der) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        presented.as_ref(),
        Some(&second.der),
        "the new certificate is not served"
    );
    assert!(load.progress(100, Duration::from_secs(20)).await);
    let report = load.stop().await;
    assert!(
        report.failures().is_empty(),
        "{} of {} requests failed during the rotation:\n{}",
        report.failures().len(),
        report.records.len(),
        report.describe_failures()
    );
    eprintln!(
        "certificate rotation under TLS load: {} ok, 0 failed, {} unsent-and-resent",
        report.ok(),
        report.unsent
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_over_tls_and_palisade_top_with_ca_file() {
    use palisade_top::TokenSource;
    use palisade_top::client::{AdminClient, Timeouts};
    let dir = temp_dir("tls-admin");
    let ca = TestCa::new("palisade test CA");
    let (ca_path, cert, key) = material(&dir, &ca, &ca.server_cert());
    let server = ServerProcess::builder()
        .args(["--single-process", "--workers", "1"])
        .args(set("admin.tls.cert", &cert))
        .args(set("admin.tls.key", &key))
        .spawn();
    let admin = server.admin_addr.expect("admin address");
    let url = format!("https://127.0.0.1:{}", admin.port());
    let token = TokenSource::Literal(server.admin_token());

    let client =
        AdminClient::with_ca_file(&url, token.clone(), Timeouts::default(), Some(&ca_path))
            .expect("client");
    let snapshot = client.snapshot().await.expect("snapshot over https");
    assert_eq!(snapshot.server.mode, "single");

    // The bundled web PKI roots do not trust the test CA.
    let untrusted = AdminClient::new(&url, token.clone(), Timeouts::default()).expect("client");
    let err = untrusted
        .snapshot()
        .await
        .expect_err("an untrusted admin certificate");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // A CA file without a certificate is refused up front.
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    assert!(AdminClient::with_ca_file(&url, token, Timeouts::default(), Some(&empty)).is_err());
    // The admin endpoint speaks only TLS.
    assert_eq!(
        palisade_tests::server::blocking_status(admin, "/admin/v1/snapshot"),
        None
    );
    // h2 by ALPN there too; `/metrics` on the admin port needs the token like every route.
    let h2 = get(admin, ca.client_config(&["h2"], None), "/metrics")
        .await
        .expect("metrics");
    assert_eq!((h2.status, h2.alpn.as_deref()), (401, Some("h2")));
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
