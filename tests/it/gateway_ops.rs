//! Operations (SPEC 4.6 and 1): Prometheus metrics, request ids in the
//! logs, configuration reload on file change and SIGHUP without dropping
//! requests, refusal of an invalid configuration, and SIGTERM draining.

use crate::common::oidc::OidcAs;
use crate::common::upstream::Upstream;
use crate::common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

async fn get(url: String, token: Option<&str>) -> reqwest::Response {
    let mut request = http().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

/// Polls `condition` every 100 ms for up to `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends a route to the configuration file.
fn append_to_config(server: &Refgate, text: &str) {
    let mut config = std::fs::read_to_string(&server.config_path).expect("read config");
    config.push('\n');
    config.push_str(text);
    std::fs::write(&server.config_path, config).expect("write config");
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("label pair");
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().expect("sample value"),
            }
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`, 0 if none.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Turns on the metrics listener (a restart: listeners are not reloaded)
/// and returns its `/metrics` URL.
async fn enable_metrics(server: &mut Refgate) -> String {
    let port = server.reserve_metrics_port();
    let config = std::fs::read_to_string(&server.config_path).expect("read config");
    let config = config.replacen(
        "[listen]\n",
        &format!("[listen]\nmetrics = \"127.0.0.1:{port}\"\n"),
        1,
    );
    std::fs::write(&server.config_path, config).expect("write config");
    server.restart();
    format!("http://127.0.0.1:{port}/metrics")
}

/// An app token whose grant holds credential `photos` of `oidc`.
async fn app_with_credential(server: &Refgate, oidc: &OidcAs, expires_at: i64) -> String {
    let (access, refresh, _) = oidc.mint("ops-user").await;
    let body = server.client_token("app", None).await;
    let app = str_of(&body, "access_token").to_string();
    let (status, answer) = server
        .mutate(&json!({"token": app, "patch": {"credentials": {"photos": {
            "access_token": access, "refresh_token": refresh, "token_type": "Bearer",
            "expires_at": expires_at, "authority": "photos-as",
        }}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_cache_lookups_refreshes_and_upstream_latency() {
    let oidc = OidcAs::start(3600);
    let upstream = Upstream::start().await;
    let mut server = Refgate::start_with(Options {
        gateway: "authority_timeout = \"20s\"".into(),
        extra: format!(
            "{}\n{}",
            oidc.authority_toml("photos-as"),
            photos_route(&upstream.url())
        ),
        ..Options::default()
    });
    let metrics_url = enable_metrics(&mut server).await;

    let app = app_with_credential(&server, &oidc, unix_now() - 10).await;
    for _ in 0..3 {
        let response = get(format!("{}/photos/a", server.proxy), Some(&app)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = get(format!("{}/photos/a", server.proxy), None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A token this process never saw is a cache miss (the app token was
    // cached when it was mutated).
    let unknown = format!("rgat_{}", "A".repeat(43));
    let response = get(format!("{}/photos/a", server.proxy), Some(&unknown)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = get(format!("{}/nowhere", server.proxy), None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // A refresh the authority refuses.
    let refused = app_with_credential(&server, &oidc, unix_now() - 10).await;
    oidc.revoke_all().await;
    let response = get(format!("{}/photos/a", server.proxy), Some(&refused)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A request is counted in pingora's logging hook, after its answer
    // went out: wait until the last one has been.
    let mut text = String::new();
    for _ in 0..50 {
        let response = http().get(&metrics_url).send().await.expect("metrics");
        assert_eq!(response.status(), StatusCode::OK);
        text = response.text().await.expect("metrics text");
        // The requests above: 3 × 200 and 3 × 401 on the route, one 404.
        // (Other requests, the harness's readiness probes, may be counted
        // too: they are not what this waits for.)
        let counted: f64 = parse_metrics(&text)
            .iter()
            .filter(|s| {
                let label = |name: &str| s.labels.get(name).map(String::as_str);
                s.name == "refgate_requests_total"
                    && (label("route") == Some("photos") || label("status") == Some("404"))
            })
            .map(|s| s.value)
            .sum();
        if counted >= 7.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let samples = parse_metrics(&text);
    let requests = |status: &str| {
        value(
            &samples,
            "refgate_requests_total",
            &[("route", "photos"), ("status", status)],
        )
    };
    assert_eq!(requests("200"), 3.0, "{text}");
    assert_eq!(requests("401"), 3.0, "{text}");
    assert_eq!(
        value(&samples, "refgate_requests_total", &[("status", "404")]),
        1.0,
        "{text}"
    );
    let lookups = |result: &str| {
        value(
            &samples,
            "refgate_token_cache_total",
            &[("route", "photos"), ("result", result)],
        )
    };
    // Every lookup counts once. The unknown token is a miss; so is a
    // lookup right after its grant changed (the refresh stored a new
    // credential), which reads the store again. The last request with the
    // refreshed credential came from the cache.
    assert!(lookups("miss") >= 2.0, "{text}");
    assert!(lookups("hit") >= 1.0, "{text}");
    assert_eq!(lookups("hit") + lookups("miss"), 5.0, "{text}");
    let refreshes = |outcome: &str| {
        value(
            &samples,
            "refgate_credential_refreshes_total",
            &[("authority", "photos-as"), ("outcome", outcome)],
        )
    };
    assert_eq!(refreshes("refreshed"), 1.0, "{text}");
    assert_eq!(refreshes("refused"), 1.0, "{text}");
    assert_eq!(
        value(
            &samples,
            "refgate_credential_refresh_seconds_count",
            &[("authority", "photos-as")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            "refgate_upstream_seconds_count",
            &[("route", "photos")]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            "refgate_upstream_seconds_bucket",
            &[("route", "photos"), ("le", "+Inf")]
        ),
        3.0,
        "{text}"
    );
    assert!(
        value(
            &samples,
            "refgate_upstream_seconds_sum",
            &[("route", "photos")]
        ) > 0.0,
        "{text}"
    );
    // Tokens and secrets never show up in metrics.
    assert!(!text.contains(&app), "{text}");
    assert!(!text.contains("rgat_"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_in_the_log_lines_of_their_requests() {
    let oidc = OidcAs::start(3600);
    let upstream = Upstream::start().await;
    let dead = closed_port();
    let server = Refgate::start_with(Options {
        gateway: "authority_timeout = \"20s\"".into(),
        extra: format!(
            "{}\n{}\n{}\n{}",
            oidc.authority_toml("photos-as"),
            photos_route(&upstream.url()),
            public_route("open", "/open/", &upstream.url(), ""),
            public_route(
                "dead",
                "/dead/",
                &format!("http://127.0.0.1:{}", dead.port),
                ""
            )
        ),
        ..Options::default()
    });

    // A client's own id is kept, sent upstream and logged.
    let response = http()
        .get(format!("{}/open/x", server.proxy))
        .header("x-request-id", "ops-given-1234")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "ops-given-1234");
    assert_eq!(
        upstream.requests()[0].header("x-request-id").as_deref(),
        Some("ops-given-1234")
    );

    // Without one, refgate makes one up, also on its own error answers.
    let response = get(format!("{}/photos/x", server.proxy), None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let generated = response.headers()["x-request-id"]
        .to_str()
        .expect("ASCII id")
        .to_string();
    assert!(!generated.is_empty());

    // An authority failure is logged with the id of the request that
    // triggered the refresh.
    let app = app_with_credential(&server, &oidc, unix_now() - 10).await;
    oidc.set_mode("down", 0).await;
    let response = http()
        .get(format!("{}/photos/x", server.proxy))
        .bearer_auth(&app)
        .header("x-request-id", "ops-refresh-5678")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    let access = |log: &str, id: &str| {
        log.lines()
            .filter(|l| l.contains("refgate::access") && l.contains(id))
            .count()
    };
    // So is a failure to reach the upstream, also in pingora's own lines.
    let response = http()
        .get(format!("{}/dead/x", server.proxy))
        .header("x-request-id", "ops-dead-9012")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);

    let mut log = String::new();
    // Access lines are written once the response went out.
    eventually(Duration::from_secs(5), "access log lines", || {
        log = server.log();
        let done = access(&log, "ops-refresh-5678") > 0 && access(&log, "ops-dead-9012") > 0;
        async move { done }
    })
    .await;
    let access = |id: &str| access(&log, id);
    assert_eq!(access("ops-given-1234"), 1, "{log}");
    assert_eq!(access(&generated), 1, "{log}");
    assert_eq!(access("ops-refresh-5678"), 1, "{log}");
    let failure = log
        .lines()
        .find(|l| l.contains("credential refresh failed"))
        .unwrap_or_else(|| panic!("no refresh failure logged:\n{log}"));
    assert!(failure.contains("ops-refresh-5678"), "{failure}");
    let about_the_dead_upstream: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("/dead/x") || l.contains("upstream unavailable"))
        .collect();
    assert!(about_the_dead_upstream.len() >= 2, "{log}");
    for line in about_the_dead_upstream {
        assert!(line.contains("ops-dead-9012"), "{line}");
    }
    assert!(!log.contains(&app), "the reference token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_added_to_the_file_serves_while_an_in_flight_request_completes() {
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        extra: public_route("held", "/hold/", &upstream.url(), ""),
        ..Options::default()
    });
    let response = get(format!("{}/fresh/x", server.proxy), None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // The upstream holds this request until the test releases it.
    let in_flight = tokio::spawn(get(format!("{}/hold/x", server.proxy), None));
    eventually(Duration::from_secs(5), "the held request upstream", || {
        let arrived = upstream.requests().iter().any(|r| r.path == "/hold/x");
        async move { arrived }
    })
    .await;
    append_to_config(
        &server,
        &public_route("fresh", "/fresh/", &upstream.url(), ""),
    );

    let proxy = server.proxy.clone();
    eventually(Duration::from_secs(10), "the new route", || {
        let url = format!("{proxy}/fresh/x");
        async move { get(url, None).await.status() == StatusCode::OK }
    })
    .await;
    assert!(
        !in_flight.is_finished(),
        "the held request finished before the reload"
    );
    upstream.release();
    let response = in_flight.await.expect("request task");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("upstream echo");
    assert_eq!(body["path"], "/hold/x");
    // The old route still serves.
    let response = get(format!("{}/hold/y", server.proxy), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(server.log().contains("configuration reloaded"));
}

/// The pid of the refgate process serving `config_path`: the harness keeps
/// its child's pid to itself, so find it among our children in /proc.
fn refgate_pid(config_path: &Path) -> i32 {
    let wanted = config_path.to_string_lossy().to_string();
    let ours = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after `)`.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if args.contains(&wanted) && args.iter().any(|a| a == "serve") && parent == Some(&ours) {
            return pid;
        }
    }
    panic!("no refgate process serves {wanted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_configuration() {
    let upstream = Upstream::start().await;
    let route = public_route("fresh", "/fresh/", &upstream.url(), "");
    // A comment as long as the route to add: replacing one with the other
    // keeps the file's size, and its mtime is put back, so only SIGHUP can
    // make refgate notice.
    let padding = format!("#{}\n", "x".repeat(route.len() - 2));
    let server = Refgate::start_with(Options {
        extra: format!(
            "{}\n{padding}",
            public_route("old", "/old/", &upstream.url(), "")
        ),
        ..Options::default()
    });

    let before = std::fs::metadata(&server.config_path).expect("metadata");
    let config = std::fs::read_to_string(&server.config_path).expect("read config");
    let changed = config.replacen(&padding, &route, 1);
    assert_eq!(changed.len(), config.len());
    // Written aside with the old mtime, then renamed over the file: the
    // file refgate polls never shows a new mtime or a partial length.
    let aside = server.config_path.with_extension("toml.new");
    std::fs::write(&aside, &changed).expect("write config");
    std::fs::File::options()
        .write(true)
        .open(&aside)
        .expect("open config")
        .set_modified(before.modified().expect("mtime"))
        .expect("restore mtime");
    std::fs::rename(&aside, &server.config_path).expect("replace config");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = get(format!("{}/fresh/x", server.proxy), None).await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "reloaded without a signal"
    );

    let pid = refgate_pid(&server.config_path);
    // SAFETY: signalling a child process of this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let proxy = server.proxy.clone();
    eventually(
        Duration::from_secs(10),
        "the route added before SIGHUP",
        || {
            let url = format!("{proxy}/fresh/x");
            async move { get(url, None).await.status() == StatusCode::OK }
        },
    )
    .await;
    let response = get(format!("{}/old/x", server.proxy), None).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_and_the_old_one_keeps_serving() {
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        extra: public_route("old", "/old/", &upstream.url(), ""),
        ..Options::default()
    });
    let good = std::fs::read_to_string(&server.config_path).expect("read config");

    // Not TOML at all.
    server.mark_log("broken TOML");
    std::fs::write(&server.config_path, "issuer = [this is not toml\n").expect("write config");
    let refusals = || server.log().matches("reload refused").count();
    eventually(Duration::from_secs(10), "a refusal in the log", || {
        let n = refusals();
        async move { n >= 1 }
    })
    .await;
    let response = get(format!("{}/old/x", server.proxy), None).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Valid TOML, invalid configuration (an unknown key), along with a new
    // route that must not be applied.
    std::fs::write(
        &server.config_path,
        format!(
            "{good}\n{}unknown_key = 1\n",
            public_route("fresh", "/fresh/", &upstream.url(), "")
        ),
    )
    .expect("write config");
    eventually(Duration::from_secs(10), "a second refusal", || {
        let n = refusals();
        async move { n >= 2 }
    })
    .await;
    let response = get(format!("{}/fresh/x", server.proxy), None).await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "part of an invalid configuration was applied"
    );
    let response = get(format!("{}/old/x", server.proxy), None).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Fixing the file is picked up.
    std::fs::write(
        &server.config_path,
        format!(
            "{good}\n{}",
            public_route("fresh", "/fresh/", &upstream.url(), "")
        ),
    )
    .expect("write config");
    let proxy = server.proxy.clone();
    eventually(Duration::from_secs(10), "the fixed configuration", || {
        let url = format!("{proxy}/fresh/x");
        async move { get(url, None).await.status() == StatusCode::OK }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_and_exits_zero() {
    let upstream = Upstream::start().await;
    let mut server = Refgate::start_with(Options {
        extra: public_route("held", "/hold/", &upstream.url(), ""),
        ..Options::default()
    });

    // The upstream holds the request until shutdown has begun.
    let in_flight = tokio::spawn(get(format!("{}/hold/x", server.proxy), None));
    eventually(Duration::from_secs(5), "the held request upstream", || {
        let arrived = !upstream.requests().is_empty();
        async move { arrived }
    })
    .await;
    let started = Instant::now();
    let log_path = server.log_path.clone();
    let stopping = tokio::task::spawn_blocking(move || (server.stop(), server));
    let log = tokio::task::spawn_blocking(move || wait_for_text(&log_path, "SIGTERM received"))
        .await
        .expect("log");
    assert!(!in_flight.is_finished(), "answered before shutdown:\n{log}");
    upstream.release();
    let (code, server) = stopping.await.expect("stop");
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{}", server.log());
    assert!(took < Duration::from_secs(8), "stopping took {took:?}");
    let response = in_flight.await.expect("request task");
    assert_eq!(response.status(), StatusCode::OK, "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_within_seconds_despite_a_request_that_never_ends() {
    let upstream = Upstream::start().await;
    let mut server = Refgate::start_with(Options {
        extra: public_route("slow", "/slow/", &upstream.url(), ""),
        ..Options::default()
    });

    let in_flight = tokio::spawn(http().get(format!("{}/slow/60000/x", server.proxy)).send());
    eventually(Duration::from_secs(5), "the slow request upstream", || {
        let arrived = !upstream.requests().is_empty();
        async move { arrived }
    })
    .await;
    let started = Instant::now();
    let (code, server) = tokio::task::spawn_blocking(move || (server.stop(), server))
        .await
        .expect("stop");
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{}", server.log());
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    // The client is not left hanging either: its connection is closed.
    let outcome = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the client was left hanging")
        .expect("request task");
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_authority_is_used_for_the_next_refresh() {
    let oidc = OidcAs::start(3600);
    let upstream = Upstream::start().await;
    // The gateway's secret at the authority is wrong at first.
    let authority = oidc
        .authority_toml("photos-as")
        .replace("gateway-secret", "not-the-secret");
    let server = Refgate::start_with(Options {
        gateway: "authority_timeout = \"20s\"".into(),
        extra: format!("{authority}\n{}", photos_route(&upstream.url())),
        ..Options::default()
    });
    let app = app_with_credential(&server, &oidc, unix_now() - 10).await;

    let response = get(format!("{}/photos/x", server.proxy), Some(&app)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "authority_unavailable");
    assert_eq!(oidc.stats().await["refresh_failed"], 1);
    assert!(
        !server.log().contains("not-the-secret"),
        "a secret was logged"
    );

    let config = std::fs::read_to_string(&server.config_path).expect("read config");
    std::fs::write(
        &server.config_path,
        config.replace("not-the-secret", "gateway-secret"),
    )
    .expect("write config");
    eventually(Duration::from_secs(10), "the reload", || {
        let done = server.log().contains("configuration reloaded");
        async move { done }
    })
    .await;

    let response = get(format!("{}/photos/x", server.proxy), Some(&app)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stats = oidc.stats().await;
    assert_eq!(stats["refresh_ok"], 1, "{stats}");
    let sent = upstream.requests()[0]
        .header("authorization")
        .expect("authorization");
    assert!(oidc.is_active(sent.trim_start_matches("Bearer ")).await);
}
