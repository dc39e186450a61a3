//! The connect flow once in a real browser: headless Chromium driven over
//! WebDriver (chromedriver, fantoccini) opens the `connect_uri`, signs in
//! at the real oidc-provider and lands on refgate's "Connected" page; the
//! gateway then forwards the credential the browser obtained.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

use crate::common::*;
use crate::connect_flow::{connect_uri, setup, Setup};

/// chromedriver on a port it picks itself (`--port=0`) and reports once
/// it listens.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver, up to three times: on a busy machine it has been
/// seen to exit before it listened. The panic carries what it printed.
fn start_driver() -> Driver {
    let mut printed = String::new();
    for attempt in 1..=3 {
        match try_start_driver() {
            Ok(driver) => return driver,
            Err(output) => printed.push_str(&format!("attempt {attempt}:\n{output}\n")),
        }
    }
    panic!("chromedriver did not start; it printed:\n{printed}");
}

/// One start: the driver once it reports its port, or what it printed
/// (its output and errors, in order) before it exited or went quiet.
fn try_start_driver() -> Result<Driver, String> {
    // Through sh only to merge stderr into stdout; `exec` keeps the pid
    // chromedriver's, for the kill in `Drop`.
    let mut child = Command::new("sh")
        .args(["-c", "exec chromedriver --port=0 2>&1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver (scripts/setup --with-test-peers installs it)");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, port) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut output = String::new();
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        for line in lines.by_ref() {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let _ = sender.send(Ok(digits));
                // Read on until it exits: a closed pipe would end it at its
                // next line of output.
                lines.for_each(drop);
                return;
            }
            output.push_str(&line);
            output.push('\n');
        }
        let _ = sender.send(Err(output));
    });
    // Killed and reaped on every path out, by `Drop`.
    let mut driver = Driver {
        child,
        url: String::new(),
    };
    match port.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(port)) => {
            driver.url = format!("http://127.0.0.1:{port}");
            Ok(driver)
        }
        Ok(Err(output)) => Err(output),
        Err(_) => Err("(no port reported within 30 s)".to_string()),
    }
}

#[tokio::test]
async fn a_person_connects_in_a_real_browser() {
    let Setup {
        server,
        upstream,
        oidc: _oidc,
    } = setup(false, "").await;
    let token = server.access_token("app").await;
    let uri = connect_uri(&server, &token, None).await;

    let driver = start_driver();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session");

    let outcome = async {
        browser.goto(&uri).await?;
        // The authority's sign-in page, reached through refgate's redirect.
        let login = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Id("login"))
            .await?;
        let asked = browser.find(Locator::Id("scope")).await?.text().await?;
        login.send_keys("alice").await?;
        browser.find(Locator::Id("allow")).await?.click().await?;
        let connected = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Id("connected"))
            .await?;
        let heading = connected.text().await?;
        let landed = browser.current_url().await?;
        Ok::<_, fantoccini::error::CmdError>((asked, heading, landed))
    }
    .await;
    let seen = match &outcome {
        Ok(_) => String::new(),
        Err(_) => format!(
            "{:?}\n{}\nrefgate's log:\n{}",
            browser.current_url().await.map(|u| u.to_string()),
            browser.source().await.unwrap_or_default(),
            server.log()
        ),
    };
    let _ = browser.close().await;
    let (asked, heading, landed) =
        outcome.unwrap_or_else(|e| panic!("the browser walked the flow: {e}\n{seen}"));
    assert_eq!(asked, "openid offline_access api");
    assert_eq!(heading, "Connected");
    assert!(
        landed
            .as_str()
            .starts_with(&server.url("/connect/callback")),
        "{landed}"
    );

    // The gateway now forwards the credential the browser obtained.
    let response = http()
        .get(format!("{}/api/photos", server.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .expect("proxy request");
    assert_eq!(response.status(), StatusCode::OK);
    let sent = upstream
        .requests()
        .last()
        .and_then(|r| r.header("authorization"))
        .expect("the upstream got the credential");
    assert!(
        sent.starts_with("Bearer ") && !sent.contains("rgat_"),
        "{sent}"
    );
}
