#!/usr/bin/env python3
"""Generates docs/configuration.md from `palisade --print-config` and `palisade --help`.

Descriptions are kept here, by key; a printed key without a description is an error, so a new
key cannot slip into the doc undocumented. tests/tests/config_doc.rs checks the result.
"""
import re
import subprocess
import sys

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/palisade"
OUT = sys.argv[2] if len(sys.argv) > 2 else "docs/configuration.md"

printed = subprocess.run([BIN, "--print-config"], capture_output=True, text=True, env={}, check=True).stdout
help_text = subprocess.run([BIN, "--help"], capture_output=True, text=True, env={}, check=True).stdout

keys = []  # (key, section, name, value, env)
section = ""
for line in printed.splitlines():
    line = line.rstrip()
    if not line:
        continue
    if line.startswith("[") and line.endswith("]"):
        section = line[1:-1]
        continue
    name, rest = line.split(" = ", 1)
    value, comment = rest.rsplit("  # ", 1)
    env = comment.split("env ", 1)[1]
    key = f"{section}.{name}" if section else name
    keys.append((key, section, name, value, env))

flags = {}
current = None
for line in help_text.splitlines():
    m = re.match(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", line)
    if m:
        current = m.group(1)
        continue
    if current:
        k = re.search(r"\(([a-z0-9_]+(?:\.[a-z0-9_]+)+)\)\s*$", line)
        if k:
            flags[k.group(1)] = current
short = {"--workers": "-w", "--config": "-c"}

D = {
    # server
    "server.bind": "Address and port of the public listener. One TCP address.",
    "server.backlog": "Listen backlog (`listen(2)`); the kernel caps it at `net.core.somaxconn`.",
    "server.tcp_nodelay": "Disable Nagle's algorithm on accepted connections.",
    "server.reuse_port": "Set `SO_REUSEPORT` on the listener, so another server can bind the same port. Workers always share the one listener.",
    "server.keep_alive_timeout_secs": "Close keep-alive connections idle this long; 0 disables keep-alive. Keep it above the idle timeout of the proxy in front.",
    "server.header_read_timeout_ms": "Close connections whose request head has not fully arrived within this time (slowloris).",
    "server.max_headers": "Most request headers (1 to 10000); more answer `431`.",
    "server.max_header_bytes": "Largest request head (request line + headers), at least 1024; more answer `431`. HTTP/1 buffers at least 8192 bytes.",
    "server.body_limit_bytes": "Largest request body; more answer `413` before the handler runs.",
    "server.http2": "Also serve HTTP/2 over cleartext (h2c, prior knowledge) next to HTTP/1.1; with `[server.tls]`, whether ALPN offers `h2`.",
    "server.max_connections": "Most open client connections per process; more wait in the backlog.",
    "server.body_read_timeout_ms": "Close a connection whose request body sends nothing for this long while the handler waits for it; the request answers `408` (`Connection: close`). Measured between reads, like nginx's `client_body_timeout`, so a slow but steady upload is not cut.",
    # workers
    "workers.count": "Worker processes; 0 means one per CPU (at most `workers.max`).",
    "workers.single_process": "Serve in this process, without a supervisor or workers.",
    "workers.threads": "Runtime threads per worker; 0 means one per CPU in single-process mode and one per worker under the supervisor.",
    "workers.heartbeat_interval_ms": "How often workers report to the supervisor.",
    "workers.worker_timeout_secs": "A worker without a heartbeat, or whose event loop lags, this long is killed and replaced. Must exceed the heartbeat interval.",
    "workers.startup_timeout_secs": "A starting worker not ready within this time is killed (a rolling restart then stops and keeps the old worker).",
    "workers.max_requests": "Recycle a worker after this many requests; 0 never. The replacement starts first.",
    "workers.max_requests_jitter": "Up to this many requests are added at random to `max_requests` per worker.",
    "workers.max_age_secs": "Recycle a worker after this many seconds (up to 10 % jitter added); 0 never.",
    "workers.max_rss_mb": "Recycle a worker whose resident memory exceeds this many MiB; 0 never.",
    "workers.restart_backoff_max_ms": "Longest wait between restarts of a crashing worker (the backoff doubles up to this).",
    "workers.max": "Most worker processes, whichever way more are asked for: `workers.count` above it is a configuration error, `POST /admin/v1/workers/scale` above it answers `400`, SIGTTIN at it is ignored. 0 means four per CPU; at most 1024.",
    "workers.max_starting": "Most workers starting (spawned, not ready yet) at once; a scale-up or crash restarts start the rest as these become ready, so a large scale-up cannot flood the machine into startup timeouts. 0 means one per CPU.",
    # shutdown
    "shutdown.drain_delay_ms": "After a drain starts, `/health/ready` answers 503 for this long before the listener stops accepting, so load balancers notice.",
    "shutdown.graceful_timeout_secs": "Longest a drain waits for in-flight requests (after accept stopped) before cutting them; at least 1.",
    # admin
    "admin.enabled": "Serve the admin API (used by `palisade-top`).",
    "admin.addr": "Address of the admin listener; must be loopback unless `admin.allow_non_loopback`.",
    "admin.token_file": "File holding the read-write bearer token; created (mode 0600) when missing. Unset: `$XDG_STATE_HOME/palisade/admin.token` (or `~/.local/state/palisade/admin.token`), where `palisade-top` looks too.",
    "admin.read_only_token_file": "File holding a read-only bearer token (`GET` only; changes get `403`), for dashboards and monitoring; created (mode 0600) when missing. Unset: no read-only token.",
    "admin.allow_non_loopback": "Permit binding the admin API to a non-loopback address (serve it behind TLS then).",
    "admin.allowed_hosts": "Host names the admin listener answers besides `localhost` and its bind address (any IP address when bound to `0.0.0.0`/`::`); other `Host` headers get `421`, which defeats DNS rebinding from a browser. `[\"*\"]` accepts any.",
    "admin.metrics_public": "Serve `GET /metrics` on the admin port without a token. By default it needs the read-write or read-only token, like every admin route (see operations.md for a Prometheus scrape config with a bearer token).",
    "admin.allow_readable_token_file": "Start even when the read-write token file can be read by group or others. By default the server refuses to start and asks for `chmod 600`.",
    "admin.header_read_timeout_ms": "Close an admin connection whose request head has not fully arrived within this time (also the idle time of a keep-alive connection).",
    "admin.body_read_timeout_ms": "Close an admin connection whose request body sends nothing for this long; the request answers `408`.",
    "admin.max_connections": "Most open admin connections (streams included); more wait in the backlog.",
    # log
    "log.format": "`compact` (one line per event), `pretty` (multi-line) or `json` (one object per line). Logs go to stderr.",
    "log.level": "A `tracing` filter such as `info` or `palisade=debug,info`; `RUST_LOG` overrides it.",
    # demo
    "demo.slow_max_ms": "Longest delay `GET /slow?ms=` accepts.",
    # rate_limit
    "rate_limit.trusted_proxies": "CIDRs of proxies whose forwarding header is believed; empty means the socket peer is the client.",
    "rate_limit.forwarded_header": "The header trusted proxies set: `x-forwarded-for`, `forwarded` (RFC 7239) or `none`.",
    "rate_limit.ipv6_prefix": "IPv6 clients are keyed by this prefix length (0 to 128).",
    "rate_limit.exempt_paths": "Paths never limited (`/exact`, `/prefix/*`).",
    "rate_limit.exempt_cidrs": "Client networks never limited.",
    "rate_limit.headers": "Which responses carry `RateLimit` / `RateLimit-Policy`: `all`, `rejected` or `none` (`Retry-After` is always sent on a 429).",
    "rate_limit.policy": "The policies, evaluated in order; every policy that applies must pass. See [Rate-limit policies](#rate-limit-policies).",
    # cache
    "cache.enabled": "Use the caches at all; off: handlers go straight to the store and `/names` has no response cache.",
    # breaker
    "breaker.window_kind": "`count` (the last `window_size` calls) or `time` (the calls of the last `window_size` seconds).",
    "breaker.window_size": "Calls (count window, 1 to 100000) or seconds (time window, 1 to 3600).",
    "breaker.minimum_calls": "Calls the window must hold before any rate is evaluated (at least 1; at most `window_size` for a count window).",
    "breaker.failure_rate_threshold": "Failure rate in percent, in (0, 100], at or above which the breaker opens.",
    "breaker.slow_call_rate_threshold": "Slow-call rate in percent, in (0, 100], at or above which the breaker opens.",
    "breaker.wait_in_open_ms": "How long the breaker stays open before admitting probes (1 ms to 1 day).",
    "breaker.half_open_max_calls": "Probe calls admitted in half-open (1 to 10000).",
    # tls
    "admin.tls.cert": "PEM certificate chain for the admin endpoint; with `admin.tls.key`, the admin API (and its `/metrics`) is served over HTTPS only, h2 or HTTP/1.1 by ALPN. SIGHUP reloads the files in place (a failed load keeps the old certificate). `palisade-top --url https://127.0.0.1:9901 --ca-file ca.pem` connects to it.",
    "admin.tls.client_auth": "As `server.tls.client_auth`, for the admin endpoint.",
    "admin.tls.client_ca": "As `server.tls.client_ca`, for the admin endpoint.",
    "admin.tls.key": "PEM private key for `admin.tls.cert`.",
    "server.tls.cert": "PEM file with the certificate chain, leaf first. Set together with `server.tls.key` to serve HTTPS ([TLS](#tls)).",
    "server.tls.client_auth": 'With `client_ca`: `"required"` (the default: no valid client certificate, no request) or `"optional"` (a certificate that is presented must be valid).',
    "server.tls.client_ca": "PEM file with the CA certificates client certificates must chain to (mTLS). Unset: no client certificate is asked for.",
    "server.tls.key": "PEM file with the private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).",
    # database
    "database.connect_timeout_ms": 'How long the start-up migration waits for the database before giving up (exit 69).',
    "database.max_connections": 'Pooled connections per worker (1 to 1000); SQLite adds one write connection.',
    "database.query_timeout_ms": "Longest a query, waiting for a connection included, may take before the request answers `503`; also PostgreSQL's `statement_timeout` (plus 500 ms) and SQLite's busy timeout.",
    "database.url": '`postgres://user:pass@host:5432/db` (or `postgresql://`), `sqlite:///path/users.db`; unset: SQLite in the state directory.',
    # timeout
    "timeout.enabled": 'Time requests at all.',
    "timeout.exempt_paths": 'Paths never timed (`/exact`, `/prefix/*`).',
    "timeout.timeout_ms": 'Deadline for the response head, milliseconds (1 to 86400000). Keep it above `demo.slow_max_ms` if `/slow` must finish, and above the timeouts of the dependencies.',
    # concurrency
    "concurrency.algorithm": '`fixed` (the limit is `max_in_flight`) or `aimd` (adaptive between `min_in_flight` and `max_in_flight`).',
    "concurrency.backoff_percent": '`aimd`: after a slow or overloaded response the limit is multiplied by this percentage (50 to 99).',
    "concurrency.enabled": 'Limit requests at all.',
    "concurrency.exempt_paths": 'Paths never limited (`/exact`, `/prefix/*`): probes reach an overloaded worker.',
    "concurrency.latency_threshold_ms": '`aimd`: a response slower than this lowers the limit, milliseconds.',
    "concurrency.max_in_flight": 'Requests in flight per worker (`fixed`), or the ceiling (`aimd`); 1 to 1000000.',
    "concurrency.min_in_flight": '`aimd`: the floor of the limit (1 to `max_in_flight`).',
    "concurrency.retry_after_secs": '`Retry-After` of a shed request, seconds (1 to 3600).',
    # log (access)
    "log.access": "One `request completed` line per request at `info` (method, route, status, latency, `trace_id`, `request_id`); off: only `5xx` answers are logged (at `warn`). Every line logged while a request is served carries its `trace_id` and `request_id` either way.",
    # otel
    "otel.endpoint": "The OTLP/HTTP collector: `http://host:port` (`/v1/traces` is appended) or a full URL with its own path. Plain HTTP (a local collector or agent). Unset: no export.",
    "otel.sampling_ratio": "Ratio (0.0 to 1.0) of new traces that are sampled and exported; a request whose `traceparent` comes from a caller follows the caller's sampled flag (parent-based). The response's `traceparent` carries the decision.",
    "otel.service_name": "The `service.name` resource attribute.",
    "fleet.change_timeout": "How long a fleet-wide change waits for every other node's answer before it is rolled back everywhere (1s to 120s).",
    "fleet.heartbeat": "How often the node writes its heartbeat and checks that it runs the fleet's settings version (100ms to 60s); a node silent for three heartbeats leaves the fleet view.",
    "fleet.name": "The fleet: servers with the same Redis and name form one fleet (letters, digits, `.`, `-`, `_`).",
    "fleet.node_id": "This node's id, unique in the fleet; empty: `<hostname>-<port of server.bind>`.",
    "fleet.redis_url": "`redis://host:6379/`: turns fleet mode on; the Redis holding the fleet's settings, nodes and audit. Unset: not part of a fleet.",
    "otel.headers": "Headers sent with every export, `\"name: value\"` (for example a collector's API key).",
    "otel.max_queue_size": "Spans held for export per worker at most; when the collector is slow or down, newer spans are dropped, never requests slowed.",
    "otel.scheduled_delay_ms": "How long finished spans wait for a batch before they are sent.",
    "otel.export_timeout_ms": "Deadline of one export request (connect included).",
}

CACHE_FIELDS = {
    "name": "Name in metrics labels, logs and the admin API (fixed at runtime).",
    "namespace": "Namespace of the L2 keys and invalidation channel (fixed at runtime).",
    "l1_capacity_bytes": "L1 capacity in bytes (each entry weighs its key, its value and about 160 bytes).",
    "l1_eviction": "`tiny_lfu` (LRU eviction with TinyLFU admission) or `lru`.",
    "ttl_ms": "Freshness of a loaded value.",
    "l1_ttl_ms": "Freshness of the L1 copy when an L2 is configured (at most `ttl_ms`).",
    "max_stale_ms": "Fail-safe horizon: how long past its freshness a value is kept and served when the loader or L2 fails; 0 disables.",
    "fail_safe_throttle_ms": "After serving a stale value, the failing origin is retried at most once per this period.",
    "negative_ttl_ms": "Freshness of a \"not found\" result.",
    "jitter_ms": "Up to this much extra freshness per entry, so keys stored together do not expire together.",
    "soft_timeout_ms": "When a stale value exists, a load slower than this returns it and finishes in the background.",
    "hard_timeout_ms": "A load slower than this fails (or serves stale within `max_stale_ms`).",
    "max_key_bytes": "Longest key; longer keys bypass the cache.",
}
NAMES_FIELDS = {
    "max_body_bytes": "Largest response body stored; larger bodies stream through.",
    "max_ttl_ms": "Upper bound of any freshness lifetime and stale window.",
    "allow_authorized": "Also serve and store responses to requests with `Authorization` or `Cookie` when the response is `public` or has `s-maxage`.",
    "include_host": "Include the `Host` in the cache key.",
    "lock_timeout_ms": "How long concurrent misses for one URI wait for the first to fill the cache.",
    "pass_ttl_ms": "After a response was not storable, concurrent misses stop waiting for each other for this long.",
    "invalidate_on_unsafe": "A successful `POST`, `PUT`, `PATCH` or `DELETE` invalidates the cached `GET` of the same URI.",
    "cache_status_name": "The cache's name in the `Cache-Status` header.",
}


def describe(key):
    if key in D:
        return D[key]
    if key.startswith("cache.users."):
        return CACHE_FIELDS.get(key[len("cache.users."):])
    if key.startswith("cache.names.store."):
        return CACHE_FIELDS.get(key[len("cache.names.store."):])
    if key.startswith("cache.names."):
        return NAMES_FIELDS.get(key[len("cache.names."):])
    return None


# Keys with no default: not printed, settable in the file or with --set. (key, example, description)
OPTIONAL = [
    ("cache.redis_url", "redis://127.0.0.1:6379/", "Redis for the L2 and the invalidation backplane of both caches; unset: `redis.url`, and without it L1 only."),
    ("redis.url", "rediss://redis.internal:6380/0", "The shared Redis: the caches' L2 and backplane (unless `cache.redis_url`), `store = \"redis\"` policies (unless `rate_limit.redis.url`) and the optional `redis` readiness check. `redis://host:port/db`, `redis+unix:///path`, or `rediss://` for TLS (rustls; a build without the `tls` feature refuses it)."),
    ("redis.ca_file", "/etc/palisade/redis-ca.pem", "CA certificates (PEM) to trust for `rediss://` instead of the system's roots, e.g. a private CA. Like `cert_file` and `key_file`, it applies to every Redis connection, so every Redis URL in use must then be `rediss://`; the file is read (and checked) at start and on `SIGHUP`."),
    ("redis.cert_file", "/etc/palisade/redis-client.pem", "Client certificate (PEM) for mutual TLS with Redis (`tls-auth-clients yes`); needs `redis.key_file`."),
    ("redis.key_file", "/etc/palisade/redis-client.key", "The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); needs `redis.cert_file`."),
    ("cache.names.default_ttl_ms", "60000", "Freshness given to storable responses that state none; unset: such responses are not stored."),
    ("cache.names.store.l1_ttl_ms", "1000", CACHE_FIELDS["l1_ttl_ms"]),
    ("cache.names.store.negative_ttl_ms", "1000", CACHE_FIELDS["negative_ttl_ms"]),
    ("cache.names.store.soft_timeout_ms", "100", CACHE_FIELDS["soft_timeout_ms"]),
    ("cache.names.store.hard_timeout_ms", "1000", CACHE_FIELDS["hard_timeout_ms"]),
    ("breaker.slow_call_duration_ms", "500", "Calls lasting at least this long are slow; unset turns slow-call tracking off."),
    ("breaker.max_wait_in_half_open_ms", "10000", "Re-open when the probes have not all completed after this long; unset waits for them."),
    ("breaker.call_timeout_ms", "2000", "Time limit per call through the breaker; an expired call answers `504` and counts as a failure. Unset: no limit."),
    ("rate_limit.redis.url", "redis://127.0.0.1:6379/", "Redis for `store = \"redis\"` policies; unset: `redis.url` (the `[rate_limit.redis]` table also takes `timeout`, default `50ms`, and `prefix`, default `palisade:rl:`)."),
]

SERVER_TLS = '#### TLS\n\nWith `[server.tls]` the public listener speaks HTTPS only (rustls, `ring` provider):\n\n```toml\n[server.tls]\ncert = "/etc/palisade/tls/fullchain.pem"\nkey = "/etc/palisade/tls/key.pem"\n# client_ca = "/etc/palisade/tls/clients-ca.pem"   # mTLS\n# client_auth = "optional"                        # default "required"\n```\n\n- ALPN offers `h2` (unless `server.http2 = false`) and `http/1.1`; each connection is served with\n  the protocol it negotiated. Check it by hand with\n  `curl --cacert ca.pem --http2 https://127.0.0.1:8080/health/live` (`curl -w \'%{http_version}\'`\n  prints `2`).\n- The files are loaded when the configuration is: a missing file, a file without a PEM\n  certificate, or a key that does not belong to the certificate stops `palisade` with exit 64\n  and a message naming the file.\n- **Rotating a certificate**: replace the files, then `kill -HUP <supervisor pid>`. The\n  supervisor reloads the configuration (which loads the new files) and rolls the workers: each\n  new worker serves the new certificate, old workers finish their connections with the old one,\n  so no request fails. If the new files do not load, the reload is refused with an error in the\n  log and the running workers keep serving the previous certificate. A single-process server\n  (`--single-process`) swaps the certificate in place on SIGHUP, with the same refusal rule.\n- A TLS handshake must finish within `server.header_read_timeout_ms`.'

printed_keys = {k for (k, *_rest) in keys}
# Optional keys the server prints (as unset) belong in the main tables.
for (k, _ex, desc) in OPTIONAL:
    if k in printed_keys:
        D[k] = desc
OPTIONAL = [o for o in OPTIONAL if o[0] not in printed_keys]
missing = [k for (k, *_r) in keys if not describe(k)]
if missing:
    sys.exit("no description for: " + ", ".join(missing))

SECTION_TITLES = {
    "server": ("`[server]`: listener and connections", "The public HTTP listener and the protocol limits enforced before any handler runs."),
    "workers": ("`[workers]`: worker processes", "How many workers run, how they are watched, and when they are recycled."),
    "shutdown": ("`[shutdown]`: graceful drain", "SIGTERM/SIGINT (and `POST /admin/v1/workers/{id}/drain` for one worker) run the drain sequence of [layers.md](layers.md#drain-graceful-shutdown). The whole drain takes at most `drain_delay_ms` + `graceful_timeout_secs`."),
    "admin": ("`[admin]`: admin API", "The API `palisade-top` connects to ([admin-api.md](admin-api.md))."),
    "log": ("`[log]`: logging", ""),
    "rate_limit": ("`[rate_limit]`: rate limiting", "Semantics, headers and metrics: [layers.md](layers.md#rate-limit)."),
    "cache": ("`[cache]`: caches", "`[cache.users]` configures the two-level cache behind `GET /api/v1/users/{id}`; `[cache.names]` the response cache on `GET /names`, whose `[cache.names.store]` is its two-level cache. Semantics: [layers.md](layers.md#two-level-cache)."),
    "redis": ("`[redis]`: the shared Redis and TLS", "One Redis for every Redis user of the server, and the TLS options of `rediss://` connections. Every key is unset by default (no Redis). A `rediss://` URL with a private CA and mutual TLS:\n\n```toml\n[redis]\nurl = \"rediss://redis.internal:6380/0\"\nca_file = \"/etc/palisade/redis-ca.pem\"\ncert_file = \"/etc/palisade/redis-client.pem\"   # only if Redis asks for client certificates\nkey_file = \"/etc/palisade/redis-client.key\"\n```\n\nA missing or unreadable file, a file without PEM certificates or key, `cert_file` without `key_file`, or TLS options next to a `redis://` URL is a configuration error (exit 64). A Redis that refuses the handshake (wrong CA, expired certificate) is Redis being down: the caches serve from L1 and the database, `store = \"redis\"` policies follow their `failure_mode`, `/health/ready` shows the `redis` check failing with the TLS error, and a warning is logged at most every 10 s per user."),
    "breaker": ("`[breaker]`: circuit breaker on `/flaky`", "The breaker in front of the `/flaky` demo upstream (name `flaky` in the admin API). Semantics: [layers.md](layers.md#circuit-breaker)."),
    "database": ("`[database]`: the users database", "Where `/api/v1/users` keeps its users. Unset, an SQLite file `palisade.db` in the state directory (`$XDG_STATE_HOME/palisade`, else `~/.local/state/palisade`; the admin token's directory), opened in WAL mode and shared by every worker, so the server starts with nothing else running. With `postgres://…` the users live in PostgreSQL. Migrations are embedded and applied once at start by the supervisor (or the single process), before any worker serves: an unreachable database stops the start with exit code 69, a schema newer than the binary with 65. Every worker then has its own pool; each query is limited by `query_timeout_ms` (503 past it) and goes through the circuit breaker `db` (admin API, `palisade-top`). Reads go through the `[cache.users]` cache; writes invalidate it on every worker. See [operations.md](operations.md#database)."),
    "timeout": ("`[timeout]`: request timeout", 'A deadline per request (component `timeout` in the admin API, kind `limit`). A handler that has not produced its response head in time is cut: `504` problem document, or `408` with `Connection: close` when it was waiting for a request body the client had not finished sending. Semantics: [layers.md](layers.md#request-timeout).'),
    "concurrency": ("`[concurrency]`: concurrency limit and load shedding", 'At most `max_in_flight` requests in flight **per worker** (the server-wide limit is the sum); beyond, a request is answered at once with `503` and `Retry-After` (component `concurrency`, kind `limit`). Semantics: [layers.md](layers.md#concurrency-limit).'),
    "otel": ("`[otel]`: OpenTelemetry export", "Each worker exports its request spans over OTLP/HTTP (protobuf) to a collector, continuing the client's `traceparent`: the exported span has the client's trace id, the span id the response's `traceparent` names, and the client's span as parent. Resource attributes: `service.name`, `service.version` (the binary's), `palisade.worker.id`, `service.instance.id` (`<pid>-<worker id>`), `process.pid`. Spans are batched on a background thread with its own HTTP client; a collector that is slow or down costs dropped spans, never slower requests. Queued spans are flushed when a worker exits (drain, restart, recycling). Off unless `endpoint` is set; the other keys are validated either way (exit 64). Semantics: [layers.md](layers.md#opentelemetry-export)."),
    "fleet": ("`[fleet]`: many servers, one control plane", "Fleet mode, off unless `fleet.redis_url` is set (see [fleet.md](fleet.md)). The server registers\nin that Redis with a heartbeat, and a runtime change made through any node's admin API applies on\nevery node of the fleet, all or nothing; `?scope=node` changes one node only. Needs the admin\nAPI (`admin.enabled`)."),
    "demo": ("`[demo]`: demo routes", ""),
}
ORDER = ["server", "workers", "shutdown", "admin", "log", "rate_limit", "cache", "redis", "breaker", "database", "timeout", "concurrency", "otel", "fleet", "demo"]
tops = []
for (k, sec, *_r) in keys:
    top = sec.split(".")[0]
    if top not in tops:
        tops.append(top)
unknown = [t for t in tops if t not in SECTION_TITLES]
if unknown:
    sys.exit("no section title for: " + ", ".join(unknown))
ordered = [t for t in ORDER if t in tops]


def cell_default(value):
    if value == "# (unset)":
        return "(unset)"
    if value.startswith("[{"):
        return "see below"
    return f"`{value}`"


def cell_flag(key):
    f = flags.get(key)
    if not f:
        return "—"
    s = short.get(f)
    return f"`{s}`, `{f}`" if s else f"`{f}`"


out = []


def w(line):
    if line == "" and out and out[-1] == "":
        return
    out.append(line)
w("# Configuration")
w("")
w("This is the reference of every setting of the reference server, `palisade`. A test")
w("(`tests/tests/config_doc.rs`) runs `palisade --print-config` and `palisade --help` and fails")
w("when a key, its default, its environment variable or its flag differs from this page.")
w("")
w("## Where settings come from")
w("")
w("Each layer overrides the previous one:")
w("")
w("1. **Embedded defaults.** `palisade` runs with no file, no environment and no flags.")
w("2. **A TOML file**: `--config FILE` (`-c`), or the `PALISADE_CONFIG` environment variable.")
w("3. **Environment variables**: `PALISADE_` + the dotted key in upper case, dots as underscores.")
w("   `server.backlog` is `PALISADE_SERVER_BACKLOG`. Values are parsed as TOML values (`true`,")
w("   `4096`, `[\"/health/*\"]`), anything else as a string. An unknown `PALISADE_*` variable is an")
w("   error, so a misspelt one cannot be silently ignored.")
w("4. **Command-line flags**: the flags in the tables below, and `--set KEY=VALUE` for any key")
w("   (repeatable), for example `--set workers.max_requests=1000`.")
w("")
w("`palisade --print-config` prints the effective configuration as TOML, each value annotated")
w("with where it came from:")
w("")
w("```text")
w("[server]")
w("backlog = 333  # cli --backlog")
w("max_headers = 44  # env PALISADE_SERVER_MAX_HEADERS")
w("keep_alive_timeout_secs = 9  # file /etc/palisade.toml")
w("tcp_nodelay = true  # default; env PALISADE_SERVER_TCP_NODELAY")
w("```")
w("")
w("Invalid configuration (an unknown key, a wrong type, a value that breaks a rule) prints one")
w("message naming the key and where the value came from, and exits with code 64 (`EX_USAGE`).")
w("On `SIGHUP` the supervisor reads the file again; an invalid file is refused and the running")
w("workers keep the old configuration.")
w("")
w("Other command-line flags: `-c`/`--config FILE`, `--set KEY=VALUE`, `--print-config`,")
w("`-h`/`--help`, `-V`/`--version`. Other environment variables: `PALISADE_CONFIG` (the file),")
w("`RUST_LOG` (overrides `log.level`), `PALISADE_ADMIN_TOKEN` (read by `palisade-top`, not the")
w("server).")
w("")
w("A complete file with every default is what `palisade --print-config` prints (remove the")
w("comments). A small one:")
w("")
w("```toml")
w("[server]")
w("bind = \"0.0.0.0:8080\"")
w("")
w("[workers]")
w("count = 4")
w("max_requests = 10000")
w("max_requests_jitter = 1000")
w("")
w("[shutdown]")
w("drain_delay_ms = 5000          # behind a load balancer")
w("")
w("[[rate_limit.policy]]")
w("name = \"api\"")
w("rate = 100")
w("per = \"1s\"")
w("burst = 20")
w("paths = [\"/api/*\"]")
w("store = \"shm\"                 # one limit shared by every worker")
w("```")
w("")
w("## Reference")
w("")
w("Defaults are shown as `--print-config` prints them. Durations are in the unit their name says")
w("(`_ms`, `_secs`).")

for top in ordered:
    title, intro = SECTION_TITLES[top]
    w("")
    w(f"### {title}")
    w("")
    if intro:
        w(intro)
        w("")
    subs = []
    for (k, sec, *_r) in keys:
        if sec.split(".")[0] == top and sec not in subs:
            subs.append(sec)
    for sec in subs:
        if sec != top:
            w(f"`[{sec}]`")
            w("")
        w("| key | default | environment | flag | description |")
        w("|---|---|---|---|---|")
        for (k, s, name, value, env) in keys:
            if s != sec:
                continue
            w(f"| `{k}` | {cell_default(value)} | `{env}` | {cell_flag(k)} | {describe(k)} |")
        w("")
    if top == "server":
        for line in SERVER_TLS.splitlines():
            w(line)
        w("")
    if top == "rate_limit":
        policy = next(v for (k, s, n, v, e) in keys if k == "rate_limit.policy")
        w("#### Rate-limit policies")
        w("")
        w("The default policy, as printed (one TOML inline table per policy):")
        w("")
        w("```toml")
        w(f"policy = {policy}")
        w("```")
        w("")
        w("that is, 1000 requests per second per client IP on `/api/*`, burst 200, in a shared-memory")
        w("zone so every worker enforces one limit together. Policies are usually written as")
        w("`[[rate_limit.policy]]` tables; a file that sets `rate_limit.policy` replaces the default")
        w("list. Each policy takes:")
        w("")
        w("| field | default | meaning |")
        w("|---|---|---|")
        w("| `name` | (required) | letters, digits, `_`, `-`, `.`; unique; shown in headers, metrics and the admin API |")
        w("| `rate` | (required) | requests replenished per `per` (1 to 1000000000) |")
        w("| `per` | `\"1s\"` | replenishment period, `\"500ms\"`, `\"1s\"`, `\"1m\"`, `\"1h\"`, `\"1d\"` or a number of seconds; `per_secs` is an alias |")
        w("| `burst` | `rate` | requests that may be taken at once (1 to 10000000) |")
        w("| `key` | `\"client_ip\"` | `\"global\"`, `\"client_ip\"`, `\"route\"` (route template) or `{ header = \"x-api-key\" }` |")
        w("| `paths` | every path | patterns `/exact`, `/prefix/*`, `*` |")
        w("| `methods` | every method | e.g. `[\"POST\", \"PUT\"]` |")
        w("| `mode` | `\"enforce\"` | `\"enforce\"`, `\"shadow\"` (count, never reject) or `\"off\"` |")
        w("| `store` | `\"local\"` | `\"local\"` (this process), `\"shm\"` (shared by all workers), `\"redis\"` (shared by all servers; needs `rate_limit.redis.url` or `redis.url`) |")
        w("| `max_keys` | `100000` | size of the local store, or of the local fallback of a Redis policy |")
        w("| `failure_mode` | `\"local_fallback\"` | Redis only, while Redis is unavailable: `\"local_fallback\"`, `\"fail_open\"` or `\"fail_closed\"` |")
        w("")
        w("`rate`, `per`, `burst` and `mode` of each policy can be changed at runtime through the admin")
        w("API (`PUT /admin/v1/limits/{name}`) or `palisade-top`, without a restart and without")
        w("resetting what clients have used.")
        w("")

if OPTIONAL:
    w("### Keys without a default")
    w("")
    w("These optional keys are unset by default, so `--print-config` does not list them. Set them in")
    w("the file or with `--set` (for example `--set breaker.call_timeout_ms=2000`); environment")
    w("variables only reach the keys listed above. The test checks that each one is accepted.")
    w("")
    w("| optional key | example | description |")
    w("|---|---|---|")
    for (k, ex, desc) in OPTIONAL:
        w(f"| `{k}` | `{ex}` | {desc} |")
    w("")
w("The `[cache.users]` and `[cache.names.store]` tables also take a `redis` table (`url`, `tls`,")
w("`key_prefix`, `timeout_ms`, `connect_timeout_ms`, `max_entry_bytes`, `backplane`,")
w("`background_writes`, `breaker_failures`, `breaker_open_ms`; see")
w("[layers.md](layers.md#two-level-cache)); `cache.redis_url` (or `redis.url`) fills in its URL")
w("for both, and the `[redis]` TLS options, when set, their `tls`.")
w("")
w("## Runtime changes")
w("")
w("Rate-limit policies, the request timeout (`limits/timeout`), the concurrency limit")
w("(`limits/concurrency`), the breaker and both caches are also components of the admin API: their")
w("settings can be read and changed while the server runs")
w("(`GET`/`PUT /admin/v1/{limits,breakers,caches}/{name}`, or `palisade-top`), with the same")
w("validation as the file. The supervisor sends a change to every worker and replays it to every")
w("worker started later, including the workers of a `SIGHUP` rolling restart, so a runtime change")
w("wins over the file until the supervisor itself restarts. Changes are not written back to the")
w("file. Every other key takes effect on a `SIGHUP` (the workers restart one at a time with the")
w("new file) or a restart; `server.bind`, `server.backlog`, `server.reuse_port` and the")
w("`[admin]` section only on a restart, since the supervisor binds its listeners once.")
text = "\n".join(out).rstrip() + "\n"
open(OUT, "w").write(text)
print(f"wrote {OUT}: {len(keys)} keys, {len(OPTIONAL)} optional")
