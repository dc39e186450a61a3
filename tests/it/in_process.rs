//! refgate served from inside another program: [`refgate::app::run`] takes
//! listening sockets its caller bound (here on port 0, blocking, as std
//! binds them), serves both faces on them, and returns once its shutdown
//! future completes. The other
//! suites start the real binary, whose logs, environment, signals and
//! exit code they observe per instance.

use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn app_run_serves_on_listeners_it_is_given_and_returns_on_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_listener = loopback_listener();
    let proxy_listener = loopback_listener();
    let token_port = token_listener.local_addr().expect("address").port();
    let proxy_port = proxy_listener.local_addr().expect("address").port();
    let path = dir.path().join("refgate.toml");
    std::fs::write(
        &path,
        format!(
            r#"issuer = "http://127.0.0.1:{token_port}"

[listen]
proxy = "127.0.0.1:{proxy_port}"
token_service = "127.0.0.1:{token_port}"

[store]
url = "sqlite://data/refgate.db"
data_key = "{DATA_KEY}"

{clients}
"#,
            clients = standard_clients()
        ),
    )
    .expect("write config");
    let config = refgate::config::load(&path, refgate::config::LoadMode::Serve).expect("config");
    let listeners = refgate::listeners::Listeners {
        token_service: token_listener,
        proxy: Some(proxy_listener),
        metrics: None,
        admin: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = std::thread::spawn(move || {
        refgate::app::run(config, listeners, async {
            let _ = stopped.await;
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = http();
        let base = format!("http://127.0.0.1:{token_port}");
        let started = Instant::now();
        while !raw_get_ok(token_port, "/healthz") || !proxy_answers(proxy_port) {
            assert!(!serving.is_finished(), "app::run ended before serving");
            assert!(started.elapsed() < Duration::from_secs(20), "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let issued: serde_json::Value = client
            .post(format!("{base}/oauth2/token"))
            .basic_auth("app", Some("app-secret"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "photos.read"),
            ])
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token JSON");
        let token = issued["access_token"].as_str().expect("a token");
        assert!(token.starts_with("rgat_"), "{issued}");
        let introspected: serde_json::Value = client
            .post(format!("{base}/oauth2/introspect"))
            .basic_auth("introspector", Some("introspector-secret"))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspection")
            .json()
            .await
            .expect("introspection JSON");
        assert_eq!(introspected["active"], true, "{introspected}");
        // The proxy answers on its listener too (no route: 404 JSON).
        let answer = client
            .get(format!("http://127.0.0.1:{proxy_port}/nowhere"))
            .send()
            .await
            .expect("proxy answer");
        assert_eq!(answer.status(), 404);
    });

    stop.send(()).expect("refgate is still running");
    let started = Instant::now();
    while !serving.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "app::run did not return after shutdown"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    serving
        .join()
        .expect("app::run panicked")
        .expect("app::run failed");
}
