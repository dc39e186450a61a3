//! Endpoints of downstream authorities configured by `issuer`: read from
//! the authority's discovery document (OpenID Connect Discovery, then
//! RFC 8414 metadata) and cached per authority for as long as the answer's
//! `Cache-Control: max-age` says (one minute to one day; one hour when it
//! says nothing). A document whose `issuer` is not exactly the configured
//! one is refused: it may be another authority's (mix-up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::Authority;

/// Largest discovery document read.
const MAX_DOCUMENT: usize = 256 * 1024;
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(86_400);

/// The endpoints refgate uses at an authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: String,
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
}

struct Entry {
    endpoints: Arc<Endpoints>,
    ttl: Duration,
}

struct ByMaxAge;

impl moka::Expiry<String, Arc<Entry>> for ByMaxAge {
    fn expire_after_create(&self, _: &String, value: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Discovers and caches authorities' endpoints.
pub struct Discovery {
    http: reqwest::Client,
    cache: moka::sync::Cache<String, Arc<Entry>>,
}

impl Discovery {
    pub fn new(http: reqwest::Client) -> Self {
        Discovery {
            http,
            cache: moka::sync::Cache::builder()
                .max_capacity(1024)
                .expire_after(ByMaxAge)
                .build(),
        }
    }

    /// The token endpoint of `authority`: the configured one, else its
    /// discovery document's.
    pub async fn token_endpoint(
        &self,
        authority: &Authority,
        timeout: Duration,
    ) -> Result<String, String> {
        if !authority.token_endpoint.is_empty() {
            return Ok(authority.token_endpoint.clone());
        }
        Ok(self
            .discovered(authority, timeout)
            .await?
            .token_endpoint
            .clone())
    }

    /// The authorization endpoint of `authority`: the configured one, else
    /// its discovery document's (`None`: it publishes none).
    pub async fn authorization_endpoint(
        &self,
        authority: &Authority,
        timeout: Duration,
    ) -> Result<Option<String>, String> {
        if let Some(endpoint) = &authority.authorization_endpoint {
            return Ok(Some(endpoint.clone()));
        }
        Ok(self
            .discovered(authority, timeout)
            .await?
            .authorization_endpoint
            .clone())
    }

    /// The endpoints in `authority`'s discovery document, cached.
    async fn discovered(
        &self,
        authority: &Authority,
        timeout: Duration,
    ) -> Result<Arc<Endpoints>, String> {
        let Some(issuer) = authority.issuer.as_deref() else {
            return Err("the authority has neither the endpoint nor an issuer".into());
        };
        if let Some(entry) = self.cache.get(issuer) {
            return Ok(entry.endpoints.clone());
        }
        let entry = Arc::new(self.fetch(issuer, timeout).await?);
        self.cache.insert(issuer.to_string(), entry.clone());
        Ok(entry.endpoints.clone())
    }

    async fn fetch(&self, issuer: &str, timeout: Duration) -> Result<Entry, String> {
        let mut last = String::new();
        for url in document_urls(issuer) {
            match self.fetch_one(&url, issuer, timeout).await {
                Ok(entry) => return Ok(entry),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn fetch_one(&self, url: &str, issuer: &str, timeout: Duration) -> Result<Entry, String> {
        let response = self
            .http
            .get(url)
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("discovery request failed: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!("discovery answered {}", response.status()));
        }
        let ttl = max_age(response.headers()).unwrap_or(DEFAULT_TTL);
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading the discovery document failed: {}", e.without_url()))?;
        if body.len() > MAX_DOCUMENT {
            return Err("the discovery document is too large".into());
        }
        let document: Document = serde_json::from_slice(&body)
            .map_err(|_| "the discovery document is not valid JSON metadata".to_string())?;
        if document.issuer != issuer {
            return Err("the discovery document names another issuer".into());
        }
        let endpoint = |value: Option<String>| {
            value.filter(|v| {
                url::Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            })
        };
        let token_endpoint = endpoint(document.token_endpoint)
            .ok_or("the discovery document has no usable token_endpoint")?;
        Ok(Entry {
            endpoints: Arc::new(Endpoints {
                authorization_endpoint: endpoint(document.authorization_endpoint),
                token_endpoint,
            }),
            ttl: ttl.clamp(MIN_TTL, MAX_TTL),
        })
    }
}

/// Where an issuer's metadata may be: OpenID Connect Discovery appends to
/// the issuer; RFC 8414 inserts the well-known segment before its path.
fn document_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let mut urls = vec![format!("{trimmed}/.well-known/openid-configuration")];
    if let Ok(url) = url::Url::parse(issuer) {
        let path = url.path().trim_end_matches('/');
        let origin = url.origin().ascii_serialization();
        urls.push(format!(
            "{origin}/.well-known/oauth-authorization-server{path}"
        ));
    }
    urls
}

fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    if value.contains("no-store") || value.contains("no-cache") {
        return Some(MIN_TTL);
    }
    value.split(',').find_map(|part| {
        let seconds = part.trim().strip_prefix("max-age=")?;
        seconds.parse::<u64>().ok().map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_locations_follow_both_specifications() {
        assert_eq!(
            document_urls("https://as.example"),
            [
                "https://as.example/.well-known/openid-configuration",
                "https://as.example/.well-known/oauth-authorization-server"
            ]
        );
        assert_eq!(
            document_urls("https://as.example/tenant/a"),
            [
                "https://as.example/tenant/a/.well-known/openid-configuration",
                "https://as.example/.well-known/oauth-authorization-server/tenant/a"
            ]
        );
    }
}
