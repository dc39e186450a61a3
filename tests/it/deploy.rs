//! The alerting rules and the dashboard in `deploy/`: promtool accepts the
//! rules and their unit tests pass, and every metric they name is one a
//! running refgate exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use reqwest::StatusCode;

use crate::common::upstream::Upstream;
use crate::common::*;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy_dir().join("prometheus"))
        .output()
        .expect("promtool (scripts/setup --with-test-peers installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules_and_their_tests_pass() {
    promtool(&["check", "rules", "refgate-alerts.yml"]);
    promtool(&["test", "rules", "refgate-alerts.test.yml"]);
}

/// Every `refgate_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("refgate_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[tokio::test]
async fn every_metric_the_rules_and_dashboard_name_is_exported() {
    let rules =
        std::fs::read_to_string(deploy_dir().join("prometheus/refgate-alerts.yml")).expect("rules");
    let dashboard = std::fs::read_to_string(deploy_dir().join("grafana/refgate-dashboard.json"))
        .expect("dashboard");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut wanted = metric_names(&rules);
    wanted.extend(metric_names(&dashboard));
    assert!(wanted.len() >= 6, "{wanted:?}");

    // A refgate that has served enough to export every family: a proxied
    // request, a refresh at an authority that is down, a rate-limited one.
    let upstream = Upstream::start().await;
    let url = upstream.url();
    let mut server = Refgate::start_with(Options {
        extra: format!(
            "{}{}",
            photos_route(&url),
            public_route("open", "/open/", &url, "rate_limit = \"1/min\"")
        ),
        ..Options::default()
    });
    let metrics_port = server.reserve_metrics_port();
    let config = std::fs::read_to_string(&server.config_path).expect("config");
    let config = config.replacen(
        "[listen]\n",
        &format!("[listen]\nmetrics = \"127.0.0.1:{metrics_port}\"\n"),
        1,
    );
    std::fs::write(&server.config_path, config).expect("config");
    server.restart();

    let fresh = server.token_with_photos().await;
    let get = |token: Option<&str>, path: &str| {
        let mut request = http().get(format!("{}{path}", server.proxy));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        get(Some(&fresh), "/photos/a")
            .await
            .expect("proxy")
            .status(),
        StatusCode::OK
    );
    let expired = server.access_token("app").await;
    server
        .store_credential(
            &expired,
            "photos",
            serde_json::json!({
                "access_token": "down-old",
                "token_type": "Bearer",
                "refresh_token": "down-refresh",
                "expires_at": unix_now() - 10,
                "authority": "photos-as",
            }),
        )
        .await;
    assert_eq!(
        get(Some(&expired), "/photos/a")
            .await
            .expect("proxy")
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    for _ in 0..2 {
        get(None, "/open/x").await.expect("proxy");
    }

    let exported = http()
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let exported: BTreeSet<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}\nexported: {exported:?}"
    );
}
