//! The downstream authorization server for gateway tests: panva's
//! `oidc-provider` (tests/peers/oidc-as), started as a real Node process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// A running oidc-provider.
pub struct OidcAs {
    pub port: u16,
    child: Child,
}

/// Client of the gateway at the authorization server.
pub const CLIENT_ID: &str = "gateway";
pub const CLIENT_SECRET: &str = "gateway-secret";

impl OidcAs {
    /// Starts it with access tokens living `access_ttl` seconds.
    pub fn start(access_ttl: u64) -> Self {
        Self::start_with_env(access_ttl, &[])
    }

    /// Starts it with extra environment variables (`CLIENTS`,
    /// `SUBJECT_JWKS_FILE`, … see tests/peers/oidc-as/README.md).
    pub fn start_with_env(access_ttl: u64, env: &[(&str, String)]) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/oidc-as");
        assert!(
            std::path::Path::new(dir).join("node_modules").exists(),
            "run `npm ci` in tests/peers/oidc-as first (.ci/run does)"
        );
        let mut child = Command::new("node")
            .arg("server.js")
            .current_dir(dir)
            .env("PORT", "0")
            .env("ACCESS_TTL", access_ttl.to_string())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().expect("stdout");
        // Read on a thread of its own: a peer that hangs before printing
        // fails the test after a while instead of hanging the suite.
        let (sender, first_line) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let Ok(line) = first_line.recv_timeout(std::time::Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("oidc-as printed no LISTENING line within 60 s");
        };
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from oidc-as: {line:?}"));
        OidcAs { port, child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The `[[authorities]]` entry for this server.
    pub fn authority_toml(&self, name: &str) -> String {
        format!(
            "[[authorities]]\nname = \"{name}\"\ntoken_endpoint = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\nauth_method = \"client_secret_basic\"\n",
            self.url("/token")
        )
    }

    /// Mints a real access/refresh token pair for `sub`.
    pub async fn mint(&self, sub: &str) -> (String, String, i64) {
        let response = client()
            .post(self.url("/token"))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "urn:refgate:test:mint"),
                ("sub", sub),
                ("scope", "openid offline_access api"),
            ])
            .send()
            .await
            .expect("mint")
            .error_for_status()
            .unwrap_or_else(|e| panic!("oidc-as: {e}"));
        let body: Value = response.json().await.expect("mint JSON");
        (
            body["access_token"]
                .as_str()
                .expect("access_token")
                .to_string(),
            body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_string(),
            body["expires_in"].as_i64().unwrap_or(60),
        )
    }

    /// The server's request counters.
    pub async fn stats(&self) -> Value {
        client()
            .get(self.url("/_stats"))
            .send()
            .await
            .expect("stats")
            .error_for_status()
            .unwrap_or_else(|e| panic!("oidc-as: {e}"))
            .json()
            .await
            .expect("stats JSON")
    }

    /// Number of refresh_token grant requests received.
    pub async fn refresh_count(&self) -> i64 {
        self.stats().await["refresh"].as_i64().unwrap_or(-1)
    }

    pub async fn reset(&self) {
        client()
            .post(self.url("/_reset"))
            .send()
            .await
            .expect("reset")
            .error_for_status()
            .unwrap_or_else(|e| panic!("oidc-as: {e}"));
    }

    /// `normal`, `down`, `error500` or `slow` (with `delay_ms`).
    pub async fn set_mode(&self, mode: &str, delay_ms: u64) {
        client()
            .post(self.url("/_mode"))
            .json(&json!({ "mode": mode, "delay_ms": delay_ms }))
            .send()
            .await
            .expect("mode")
            .error_for_status()
            .unwrap_or_else(|e| panic!("oidc-as: {e}"));
    }

    /// Deletes every grant: later refreshes get `invalid_grant`.
    pub async fn revoke_all(&self) {
        client()
            .post(self.url("/_revoke_all"))
            .send()
            .await
            .expect("revoke all")
            .error_for_status()
            .unwrap_or_else(|e| panic!("oidc-as: {e}"));
    }

    /// Whether the server considers `access_token` active.
    pub async fn is_active(&self, access_token: &str) -> bool {
        let body: Value = client()
            .post(self.url("/token/introspection"))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[("token", access_token)])
            .send()
            .await
            .expect("introspect")
            .error_for_status()
            .unwrap_or_else(|e| panic!("oidc-as: {e}"))
            .json()
            .await
            .expect("introspection JSON");
        body["active"] == true
    }
}

impl Drop for OidcAs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}
