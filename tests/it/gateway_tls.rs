//! HTTPS upstreams, end to end: a test CA (rcgen) signs the upstream's
//! certificate; a route trusts it through `ca_file` (or `[gateway] ca_file`).
//! Certificate and hostname verification must hold on every request: an
//! untrusted chain, a name mismatch or an expired certificate is a 502
//! `upstream_unavailable`, and the upstream never sees the credential —
//! also when another route has a verified connection to the same address
//! pooled.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::common::upstream::Upstream;
use crate::common::*;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use serde_json::Value;

fn start(options: Options) -> Refgate {
    start_with_platform_roots(options, None)
}

/// Starts refgate; with `roots`, it takes that PEM file as the platform's
/// trusted roots (`SSL_CERT_FILE` in its environment, read by
/// rustls-native-certs).
fn start_with_platform_roots(options: Options, roots: Option<&std::path::Path>) -> Refgate {
    let mut env = options.env.clone();
    if let Some(roots) = roots {
        env.push(("SSL_CERT_FILE".into(), roots.display().to_string()));
    }
    Refgate::start_with(Options {
        extra: format!("{AUTHORITY}\n{}", options.extra),
        env,
        ..options
    })
}

fn ca_line(path: &std::path::Path) -> String {
    format!("ca_file = \"{}\"", path.display())
}

async fn get(server: &Refgate, path: &str, token: &str) -> (StatusCode, Value) {
    let response = http()
        .get(format!("{}{path}", server.proxy))
        .bearer_auth(token)
        .send()
        .await
        .expect("request to the proxy");
    let status = response.status();
    let body = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn assert_bad_gateway(answer: &(StatusCode, Value), case: &str) {
    assert_eq!(answer.0, StatusCode::BAD_GATEWAY, "{case}: {}", answer.1);
    assert_eq!(answer.1["error"], "upstream_unavailable", "{case}");
    assert!(answer.1["error_description"].is_string(), "{case}");
}

// ---------------------------------------------------------------------------
// A test PKI
// ---------------------------------------------------------------------------

/// A certificate authority, its PEM written to a file before refgate starts
/// (the configuration references it).
struct TestCa {
    cert: Certificate,
    key: KeyPair,
    dir: tempfile::TempDir,
    pem_path: PathBuf,
}

/// A leaf certificate and key, PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

enum Name<'a> {
    Ip(&'a str),
    Dns(&'a str),
}

impl TestCa {
    fn new(common_name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let dir = tempfile::tempdir().expect("temp dir");
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, cert.pem()).expect("write CA PEM");
        TestCa {
            cert,
            key,
            dir,
            pem_path,
        }
    }

    fn leaf_params(names: &[Name<'_>]) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "upstream");
        params.subject_alt_names = names
            .iter()
            .map(|n| match n {
                Name::Ip(ip) => SanType::IpAddress(ip.parse::<IpAddr>().expect("IP")),
                Name::Dns(dns) => SanType::DnsName((*dns).try_into().expect("DNS name")),
            })
            .collect();
        params
    }

    /// A leaf for `names`, signed by this CA.
    fn leaf(&self, names: &[Name<'_>]) -> Leaf {
        self.leaf_with(Self::leaf_params(names))
    }

    fn leaf_with(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes another PEM file next to the CA (e.g. a CA bundle).
    fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    }
}

/// A self-signed leaf, trusted by nobody.
fn self_signed(names: &[Name<'_>]) -> Leaf {
    let key = KeyPair::generate().expect("key");
    let cert = TestCa::leaf_params(names)
        .self_signed(&key)
        .expect("self-signed leaf");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

async fn tls_upstream(leaf: &Leaf) -> Upstream {
    Upstream::start_tls(&leaf.cert_pem, &leaf.key_pem).await
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn https_upstream_signed_by_the_routes_ca_is_proxied() {
    let ca = TestCa::new("refgate test CA");
    let upstream = tls_upstream(&ca.leaf(&[Name::Ip("127.0.0.1")])).await;
    assert!(upstream.url().starts_with("https://127.0.0.1:"));
    let server = start(Options {
        extra: credential_route(
            "photos",
            "/photos/",
            &upstream.url(),
            &ca_line(&ca.pem_path),
        ),
        ..Options::default()
    });
    let token = server.token_with_photos().await;

    for i in 0..3 {
        let (status, echo) = get(&server, &format!("/photos/{i}"), &token).await;
        assert_eq!(status, StatusCode::OK, "{echo}");
        assert_eq!(echo["authorization"], "Bearer down-abc");
        assert_eq!(echo["path"], format!("/photos/{i}"));
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        // The upstream offers h2 by ALPN, and the gateway takes it.
        assert_eq!(request.version, "HTTP/2.0");
        for (name, value) in &request.headers {
            assert!(
                !value.windows(5).any(|w| w == b"rgat_"),
                "the reference token reached the upstream in `{name}`"
            );
        }
    }
}

#[tokio::test]
async fn dns_name_upstream_is_verified_against_its_certificate() {
    let ca = TestCa::new("refgate test CA");
    let by_name = tls_upstream(&ca.leaf(&[Name::Dns("localhost")])).await;
    // The same CA, but the certificate names only the IP address.
    let by_ip = tls_upstream(&ca.leaf(&[Name::Ip("127.0.0.1")])).await;
    let trust = ca_line(&ca.pem_path);
    let routes = [
        credential_route(
            "named",
            "/named/",
            &format!("https://localhost:{}", by_name.port),
            &trust,
        ),
        credential_route(
            "named-by-ip",
            "/named-by-ip/",
            &format!("https://127.0.0.1:{}", by_name.port),
            &trust,
        ),
        credential_route(
            "ip-by-name",
            "/ip-by-name/",
            &format!("https://localhost:{}", by_ip.port),
            &trust,
        ),
    ]
    .join("\n");
    let server = start(Options {
        extra: routes,
        ..Options::default()
    });
    let token = server.token_with_photos().await;

    let (status, echo) = get(&server, "/named/x", &token).await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["authorization"], "Bearer down-abc");

    assert_bad_gateway(
        &get(&server, "/named-by-ip/x", &token).await,
        "DNS-only certificate reached by IP",
    );
    assert_bad_gateway(
        &get(&server, "/ip-by-name/x", &token).await,
        "IP-only certificate reached by name",
    );
    assert_eq!(by_name.requests().len(), 1);
    assert!(by_ip.requests().is_empty());
}

#[tokio::test]
async fn upstream_not_trusted_by_the_route_is_502_even_when_another_route_trusts_it() {
    let ca = TestCa::new("refgate test CA");
    let upstream = tls_upstream(&ca.leaf(&[Name::Ip("127.0.0.1")])).await;
    let other_ca = TestCa::new("some other CA");
    let routes = [
        credential_route(
            "trusted",
            "/trusted/",
            &upstream.url(),
            &ca_line(&ca.pem_path),
        ),
        // No ca_file: only the platform roots, which do not know the test CA.
        credential_route("untrusted", "/untrusted/", &upstream.url(), ""),
        // A CA file, but the wrong CA.
        credential_route(
            "wrong-ca",
            "/wrong-ca/",
            &upstream.url(),
            &ca_line(&other_ca.pem_path),
        ),
    ]
    .join("\n");
    let server = start(Options {
        extra: routes,
        ..Options::default()
    });
    let token = server.token_with_photos().await;

    assert_bad_gateway(
        &get(&server, "/untrusted/a", &token).await,
        "untrusted, cold",
    );
    assert_bad_gateway(&get(&server, "/wrong-ca/a", &token).await, "wrong CA, cold");
    // The trusting route now verifies a connection and pools it...
    let (status, echo) = get(&server, "/trusted/a", &token).await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    // ...which the other routes must not reuse: their trust is their own.
    for _ in 0..3 {
        assert_bad_gateway(
            &get(&server, "/untrusted/b", &token).await,
            "untrusted, after the trusted route connected",
        );
        assert_bad_gateway(
            &get(&server, "/wrong-ca/b", &token).await,
            "wrong CA, after the trusted route connected",
        );
    }
    let paths: Vec<String> = upstream.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/trusted/a"], "only the trusting route got through");
}

#[tokio::test]
async fn certificate_for_another_name_is_502() {
    let ca = TestCa::new("refgate test CA");
    let upstream =
        tls_upstream(&ca.leaf(&[Name::Dns("photos.internal"), Name::Ip("10.1.2.3")])).await;
    let server = start(Options {
        extra: credential_route(
            "photos",
            "/photos/",
            &upstream.url(),
            &ca_line(&ca.pem_path),
        ),
        ..Options::default()
    });
    let token = server.token_with_photos().await;
    for _ in 0..2 {
        assert_bad_gateway(&get(&server, "/photos/x", &token).await, "name mismatch");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn self_signed_or_expired_upstream_certificates_are_502() {
    let ca = TestCa::new("refgate test CA");
    let lone = tls_upstream(&self_signed(&[Name::Ip("127.0.0.1")])).await;
    let mut old = TestCa::leaf_params(&[Name::Ip("127.0.0.1")]);
    old.not_before = rcgen::date_time_ymd(2020, 1, 1);
    old.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = tls_upstream(&ca.leaf_with(old)).await;
    let trust = ca_line(&ca.pem_path);
    let routes = [
        credential_route("lone", "/lone/", &lone.url(), &trust),
        credential_route("expired", "/expired/", &expired.url(), &trust),
    ]
    .join("\n");
    let server = start(Options {
        extra: routes,
        ..Options::default()
    });
    let token = server.token_with_photos().await;
    assert_bad_gateway(&get(&server, "/lone/x", &token).await, "self-signed");
    assert_bad_gateway(&get(&server, "/expired/x", &token).await, "expired");
    assert!(lone.requests().is_empty());
    assert!(expired.requests().is_empty());
}

#[tokio::test]
async fn gateway_wide_ca_file_is_trusted_for_every_route() {
    let ca = TestCa::new("refgate test CA");
    let upstream = tls_upstream(&ca.leaf(&[Name::Ip("127.0.0.1")])).await;
    // A bundle: an unrelated CA first, then ours.
    let unrelated = TestCa::new("unrelated CA");
    let bundle = ca.write(
        "bundle.pem",
        &format!("{}{}", unrelated.cert.pem(), ca.cert.pem()),
    );
    let server = start(Options {
        gateway: ca_line(&bundle),
        extra: credential_route("photos", "/photos/", &upstream.url(), ""),
        ..Options::default()
    });
    let token = server.token_with_photos().await;
    let (status, echo) = get(&server, "/photos/x", &token).await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["authorization"], "Bearer down-abc");
}

#[tokio::test]
async fn route_ca_file_adds_to_the_platform_roots_rather_than_replacing_them() {
    // "Platform" roots for this refgate: CA A only.
    let platform = TestCa::new("platform CA");
    let extra = TestCa::new("route CA");
    let by_platform = tls_upstream(&platform.leaf(&[Name::Ip("127.0.0.1")])).await;
    let by_extra = tls_upstream(&extra.leaf(&[Name::Ip("127.0.0.1")])).await;
    let trust_extra = ca_line(&extra.pem_path);
    let routes = [
        credential_route("p-plain", "/p-plain/", &by_platform.url(), ""),
        credential_route("p-extra", "/p-extra/", &by_platform.url(), &trust_extra),
        credential_route("e-extra", "/e-extra/", &by_extra.url(), &trust_extra),
        credential_route("e-plain", "/e-plain/", &by_extra.url(), ""),
    ]
    .join("\n");
    let server = start_with_platform_roots(
        Options {
            extra: routes,
            ..Options::default()
        },
        Some(&platform.pem_path),
    );
    let token = server.token_with_photos().await;

    for path in ["/p-plain/x", "/p-extra/x", "/e-extra/x"] {
        let (status, echo) = get(&server, path, &token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {echo}");
    }
    assert_bad_gateway(
        &get(&server, "/e-plain/x", &token).await,
        "the route CA is trusted only where configured",
    );
    assert_eq!(by_platform.requests().len(), 2);
    assert_eq!(by_extra.requests().len(), 1);
}
