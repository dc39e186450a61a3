//! The benchmark's client-side helper (see `bench/README.md`): sets up
//! tokens faster than a shell loop could, and drives the two loads that wrk
//! cannot express (every token exactly once; a burst of concurrent requests).
//!
//! - `issue`: issues `--count` access tokens, each with a stored downstream
//!   credential under `custom.credentials.<--credential>` (`none`: no
//!   custom data at all), and writes them
//!   one per line to `--out`. `--mode mutate` does what a middle tier does
//!   (client_credentials as `app`, then `/oauth2/mutate` as `middle`);
//!   `--mode arbitrary` mints each in one request (`arbitrary_token` as
//!   `minter`, the credential in `arbitrary_json`), twice as fast for bulk.
//! - `touch`: requests `--path` through the proxy once with every token.
//! - `storm`: fires `--requests` requests at once (one connection each),
//!   spread round-robin over the tokens.
//!
//! `touch` and `storm` print one JSON line `{"sent","ok","errors","statuses",
//! "seconds"}` and exit 1 when any answer was not 200.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{json, Value};

struct Args {
    command: String,
    flags: BTreeMap<String, String>,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut it = std::env::args().skip(1);
        let command = it
            .next()
            .ok_or("a command is needed: issue, touch or storm")?;
        let mut flags = BTreeMap::new();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("`{flag}` is not a --flag"))?;
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            flags.insert(name.to_string(), value);
        }
        Ok(Args { command, flags })
    }

    fn text(&self, name: &str, default: Option<&str>) -> Result<String, String> {
        self.flags
            .get(name)
            .cloned()
            .or(default.map(str::to_string))
            .ok_or_else(|| format!("--{name} is required"))
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.flags.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: `{v}` is not a number")),
        }
    }
}

fn main() {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => fail(&e),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.number("threads", 2).unwrap_or(2))
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        match args.command.as_str() {
            "issue" => issue(&args).await,
            "touch" => touch(&args).await,
            "storm" => storm(&args).await,
            other => Err(format!("unknown command `{other}`")),
        }
    });
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("bench_tokens: {message}");
    std::process::exit(2)
}

fn client(pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `text` followed by `x` up to `bytes` bytes.
fn padded(mut text: String, bytes: usize) -> String {
    while text.len() < bytes {
        text.push('x');
    }
    text
}

/// Issues tokens with credentials; writes them to `--out`.
async fn issue(args: &Args) -> Result<bool, String> {
    let base = args.text("token-service", None)?;
    let out = args.text("out", None)?;
    let mode = args.text("mode", Some("arbitrary"))?;
    let count: usize = args.number("count", 1)?;
    let concurrency: usize = args.number("concurrency", 32)?;
    let credential = args.text("credential", Some("photos"))?;
    let authority = args.text("authority", Some("bench-as"))?;
    let expires_in: i64 = args.number("expires-in", 86_400)?;
    let label = args.text("label", Some("bench"))?;
    let scope = args.text("scope", Some("photos.read"))?;
    // Pads each downstream access token with `x` to this many bytes (a
    // realistic signed token is several hundred); 0 leaves them short.
    let credential_bytes: usize = args.number("credential-bytes", 0)?;
    if mode != "arbitrary" && mode != "mutate" {
        return Err(format!("--mode must be arbitrary or mutate, not `{mode}`"));
    }
    let http = client(concurrency);
    let expires_at = unix_now() + expires_in;
    // Refresh tokens unique across runs: the authority rotates strictly.
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let started = Instant::now();
    let results: Vec<Result<String, String>> = futures::stream::iter(0..count)
        .map(|i| {
            let stored = json!({
                "access_token": padded(format!("down-{label}-{i}"), credential_bytes),
                "refresh_token": format!("rt-{label}-{nonce}-{i}"),
                "token_type": "Bearer",
                "expires_at": expires_at,
                "authority": authority,
                "scope": scope,
            });
            // `--credential none`: tokens without custom data.
            let custom = if credential == "none" {
                json!({})
            } else {
                json!({ "credentials": { credential.as_str(): stored } })
            };
            let (http, base, mode, scope) = (&http, &base, &mode, &scope);
            async move {
                if mode == "mutate" {
                    issue_by_mutate(http, base, scope, custom).await
                } else {
                    issue_arbitrary(http, base, scope, i, custom).await
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut tokens = String::with_capacity(count * 56);
    for result in results {
        tokens.push_str(&result?);
        tokens.push('\n');
    }
    std::fs::write(&out, tokens).map_err(|e| format!("cannot write {out}: {e}"))?;
    eprintln!(
        "bench_tokens: issued {count} tokens ({mode}) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(true)
}

async fn post_form(
    http: &reqwest::Client,
    url: String,
    client: (&str, &str),
    form: &[(&str, &str)],
) -> Result<Value, String> {
    let response = http
        .post(&url)
        .basic_auth(client.0, Some(client.1))
        .form(form)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("POST {url}: {status} {body}"));
    }
    Ok(body)
}

fn access_token(body: &Value) -> Result<String, String> {
    body["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no access_token in {body}"))
}

/// What a middle tier does: a token for the app, then the credential
/// stored inside its grant.
async fn issue_by_mutate(
    http: &reqwest::Client,
    base: &str,
    scope: &str,
    custom: Value,
) -> Result<String, String> {
    let body = post_form(
        http,
        format!("{base}/oauth2/token"),
        ("app", "app-secret"),
        &[("grant_type", "client_credentials"), ("scope", scope)],
    )
    .await?;
    let token = access_token(&body)?;
    let url = format!("{base}/oauth2/mutate");
    let response = http
        .post(&url)
        .basic_auth("middle", Some("middle-secret"))
        .json(&json!({ "token": token, "patch": custom }))
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(format!("POST {url}: {status} {text}"));
    }
    Ok(token)
}

/// One request: `arbitrary_token` with the credential as custom data.
async fn issue_arbitrary(
    http: &reqwest::Client,
    base: &str,
    scope: &str,
    i: usize,
    custom: Value,
) -> Result<String, String> {
    let subject = format!("bench-user-{i}");
    let custom = custom.to_string();
    let mut form = vec![
        ("grant_type", "arbitrary_token"),
        ("subject", &subject),
        ("issuer", "https://bench.invalid"),
        ("scope", scope),
    ];
    if custom != "{}" {
        form.push(("arbitrary_json", &custom));
    }
    let body = post_form(
        http,
        format!("{base}/oauth2/token"),
        ("minter", "minter-secret"),
        &form,
    )
    .await?;
    access_token(&body)
}

fn read_tokens(args: &Args) -> Result<Vec<String>, String> {
    let path = args.text("tokens", None)?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let tokens: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        return Err(format!("{path} holds no tokens"));
    }
    Ok(tokens)
}

/// Status counts of a batch of requests.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<String, u64>,
    ok: u64,
    errors: u64,
}

impl Tally {
    fn add(&mut self, outcome: Result<u16, String>) {
        let key = match outcome {
            Ok(200) => {
                self.ok += 1;
                "200".to_string()
            }
            Ok(status) => {
                self.errors += 1;
                status.to_string()
            }
            Err(e) => {
                self.errors += 1;
                if self.errors <= 3 {
                    eprintln!("bench_tokens: {e}");
                }
                "transport_error".to_string()
            }
        };
        *self.statuses.entry(key).or_default() += 1;
    }

    fn report(&self, started: Instant) -> bool {
        println!(
            "{}",
            json!({
                "sent": self.ok + self.errors,
                "ok": self.ok,
                "errors": self.errors,
                "statuses": self.statuses,
                "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            })
        );
        self.errors == 0
    }
}

async fn get_with(http: &reqwest::Client, url: &str, token: &str) -> Result<u16, String> {
    let response = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    // Read the body so the connection goes back to the pool.
    let _ = response.bytes().await;
    Ok(status)
}

/// Every token once through the proxy.
async fn touch(args: &Args) -> Result<bool, String> {
    let proxy = args.text("proxy", None)?;
    let path = args.text("path", Some("/api/touch"))?;
    let concurrency: usize = args.number("concurrency", 32)?;
    let tokens = read_tokens(args)?;
    let http = client(concurrency);
    let url = format!("{proxy}{path}");
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut answers = futures::stream::iter(tokens.iter())
        .map(|t| get_with(&http, &url, t))
        .buffer_unordered(concurrency);
    while let Some(outcome) = answers.next().await {
        tally.add(outcome);
    }
    Ok(tally.report(started))
}

/// `--requests` requests released at once, one connection each, spread
/// round-robin over the tokens.
async fn storm(args: &Args) -> Result<bool, String> {
    let proxy = args.text("proxy", None)?;
    let path = args.text("path", Some("/api/storm"))?;
    let requests: usize = args.number("requests", 1000)?;
    let tokens = Arc::new(read_tokens(args)?);
    let url = Arc::new(format!("{proxy}{path}"));
    // Released together, so the requests really arrive at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(requests + 1));
    let mut tasks = Vec::with_capacity(requests);
    for i in 0..requests {
        let (tokens, url, barrier) = (tokens.clone(), url.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            // A client per request: its own connection, no pooling.
            let http = client(1);
            barrier.wait().await;
            get_with(&http, &url, &tokens[i % tokens.len()]).await
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut tally = Tally::default();
    for task in tasks {
        tally.add(task.await.map_err(|e| e.to_string()).and_then(|r| r));
    }
    Ok(tally.report(started))
}
