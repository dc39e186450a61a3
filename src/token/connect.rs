//! The connect flow: refgate obtains a user's downstream credential itself
//! (authorization code with PKCE, RFC 6749 §4.1 and RFC 7636) and stores it
//! in the grant of the refgate token that asked.
//!
//! 1. `POST /oauth2/connect` with the grant's access token as `Bearer`
//!    answers a `connect_uri`: refgate's `/connect/start` with a sealed,
//!    short-lived ticket naming the grant, the authority and `return_to`.
//! 2. `GET /connect/start` (the browser) takes the ticket once, makes the
//!    PKCE verifier, `nonce` and a browser-binding cookie, and redirects to
//!    the authority with a sealed `state` holding all of it.
//! 3. `GET /connect/callback` takes the state once, checks the cookie (the
//!    same browser), redeems the code at the authority's token endpoint,
//!    and stores the credential in the grant under the authority's
//!    `connect_credential`, then sends the browser to `return_to`.
//!
//! Tickets and states are sealed with the data key (every instance opens
//! them; nobody else can read or forge them) and used once: a lease in the
//! store, held until they expire, marks them used across instances.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{no_store, OAuthError};
use super::request::{read_body, Form, FORM_LIMIT};
use super::TokenService;
use crate::config::{Authority, Config, ConnectSettings};
use crate::core::custom::{self, Writer};
use crate::crypto::{token_kind, Random, TokenKind};
use crate::gateway::AuthorityClient;
use crate::lookup::now;
use crate::store::UnixTime;

/// Associated data of sealed tickets and states: neither opens as the other.
const TICKET_PURPOSE: &str = "refgate:connect:ticket";
const STATE_PURPOSE: &str = "refgate:connect:state";
/// The browser-binding cookie's name starts with this; the flow id follows,
/// so that flows started side by side in one browser do not clash.
const COOKIE_PREFIX: &str = "refgate_connect_";
/// Longest query string the start and callback pages read.
const MAX_QUERY: usize = 16 * 1024;

/// What a `connect_uri` carries.
#[derive(Serialize, Deserialize)]
struct Ticket {
    id: String,
    grant: String,
    authority: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    return_to: Option<String>,
    exp: UnixTime,
}

/// What the `state` sent through the authority carries.
#[derive(Serialize, Deserialize)]
struct FlowState {
    id: String,
    grant: String,
    authority: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    return_to: Option<String>,
    exp: UnixTime,
    verifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    /// SHA-256 (hex) of the browser-binding cookie's value.
    browser: String,
}

/// A failed step, shown to the browser (HTML, or JSON when it asks).
struct Failure {
    status: StatusCode,
    code: &'static str,
    description: String,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Failure {
            status,
            code,
            description: description.into(),
        }
    }

    fn bad(code: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, description)
    }

    fn not_configured() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the connect flow is not configured",
        )
    }

    fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the token store is unavailable; retry shortly",
        )
    }

    /// The grant the flow was started for is revoked or has no live token.
    fn grant_inactive() -> Self {
        Self::bad(
            "invalid_token",
            "the token this flow was started for is no longer active",
        )
    }

    fn render(&self, headers: &HeaderMap) -> Response {
        let wants_json = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
        let mut response = if wants_json {
            (
                self.status,
                axum::Json(json!({ "error": self.code, "error_description": self.description })),
            )
                .into_response()
        } else {
            let page = format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Connecting failed</title></head>\
                 <body><h1>Connecting failed</h1><p><code id=\"error\">{}</code>: {}</p></body></html>\n",
                self.code,
                html_escape(&self.description)
            );
            let mut r = (self.status, page).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        };
        browser_headers(&mut response);
        response
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Headers of every page and redirect of the flow: nothing cached, no
/// Referer with a code or state leaves, nothing framed or scripted.
fn browser_headers(response: &mut Response) {
    no_store(response);
    let headers = response.headers_mut();
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

// ------------------------------------------------------------------ begin

/// `POST /oauth2/connect`.
pub async fn begin(State(service): State<Arc<TokenService>>, request: Request<Body>) -> Response {
    match connect(&service, request).await {
        Ok(body) => {
            let mut response = axum::Json(body).into_response();
            no_store(&mut response);
            response
        }
        Err(e) => *e,
    }
}

/// An answer as the error of a `Result` (boxed: a response is large).
fn refuse(error: impl IntoResponse) -> Box<Response> {
    Box::new(error.into_response())
}

/// A 401 for the bearer token (RFC 6750 §3).
fn bearer_refused(code: &'static str, description: &str, challenge: &'static str) -> Response {
    let mut response = OAuthError::new(StatusCode::UNAUTHORIZED, code, description).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// The token of `Authorization: Bearer`, or the answer refusing it.
fn bearer(headers: &HeaderMap) -> Result<&str, Box<Response>> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok(),
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(Box::new(bearer_refused(
                "invalid_request",
                "more than one Authorization header",
                "Bearer realm=\"refgate\", error=\"invalid_request\"",
            )))
        }
    };
    let token = value.and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim_matches(' '))
    });
    match token {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(Box::new(bearer_refused(
            "missing_token",
            "send the refgate access token as Authorization: Bearer",
            "Bearer realm=\"refgate\"",
        ))),
    }
}

async fn connect(service: &TokenService, request: Request<Body>) -> Result<Value, Box<Response>> {
    let config = super::tenant::scope_of(request.extensions(), service).0;
    let Some(settings) = config.connect.as_ref() else {
        return Err(refuse(OAuthError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the connect flow is not configured",
        )));
    };
    let headers = request.headers().clone();
    let token = bearer(&headers)?.to_string();
    let (parts, body) = read_body(request, FORM_LIMIT).await.map_err(refuse)?;
    let form = Form::parse(&parts.headers, &body).map_err(refuse)?;
    let invalid_token = || {
        Box::new(bearer_refused(
            "invalid_token",
            "the token is unknown, expired or revoked",
            "Bearer realm=\"refgate\", error=\"invalid_token\"",
        ))
    };
    if token_kind(&token) != Some(TokenKind::Access) {
        return Err(invalid_token());
    }
    let Some(active) = service
        .lookup
        .find_active(&config.tenant, &token)
        .await
        .map_err(|e| refuse(OAuthError::from(e)))?
    else {
        return Err(invalid_token());
    };
    let grant = &active.grant;
    if let Some(client) = config.clients.get(&*grant.client_id) {
        service.check_rate(client).map_err(refuse)?;
    }
    // The authority by name, or the one that fills a route's credential.
    let authority = match (form.get("authority"), form.get("route")) {
        (Some(name), None) => connectable(&config, name).ok_or_else(|| {
            refuse(OAuthError::invalid_request(format!(
                "`{}` is not an authority a connect flow can use",
                printable(name)
            )))
        })?,
        (None, Some(route)) => connectable_for_route(&config, route).ok_or_else(|| {
            refuse(OAuthError::invalid_request(format!(
                "route `{}` forwards no credential a connect flow can fill",
                printable(route)
            )))
        })?,
        _ => {
            return Err(refuse(OAuthError::invalid_request(
                "send exactly one of `authority` and `route`",
            )))
        }
    };
    let return_to = match form.get("return_to") {
        None => None,
        Some(url) => Some(allowed_return(settings, url).ok_or_else(|| {
            refuse(OAuthError::invalid_request(
                "return_to is not on the configured allow-list",
            ))
        })?),
    };
    let random = Random::default();
    let ttl = settings.ttl.as_secs() as UnixTime;
    let ticket = Ticket {
        id: random.grant_id(),
        grant: grant.id.to_string(),
        authority: authority.name.clone(),
        return_to,
        exp: now() + ttl,
    };
    let sealed = seal(service, &config, TICKET_PURPOSE, &ticket);
    service.audit.record(
        "connect_started",
        json!({
            "client_id": &*grant.client_id,
            "sub": &*grant.subject,
            "grant_id": &*grant.id,
            "authority": &authority.name,
        }),
    );
    Ok(json!({
        "connect_uri": format!("{}?ticket={sealed}", settings.start_uri),
        "expires_in": ttl,
    }))
}

/// The authority `name` when a connect flow can use it.
fn connectable<'a>(config: &'a Config, name: &str) -> Option<&'a Arc<Authority>> {
    config.connect.as_ref()?;
    config
        .authorities
        .get(name)
        .filter(|a| a.connect_credential.is_some())
}

/// The connectable authority that fills the credential route `name`
/// forwards.
fn connectable_for_route<'a>(config: &'a Config, name: &str) -> Option<&'a Arc<Authority>> {
    let route = config.routes.iter().find(|r| r.name == name)?;
    match &route.access {
        crate::config::RouteAccess::Credential(credential) => config.connectable_for(credential),
        _ => None,
    }
}

/// `url` normalised, when it starts with an allowed prefix.
fn allowed_return(settings: &ConnectSettings, url: &str) -> Option<String> {
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return None;
    }
    let normal = parsed.to_string();
    settings
        .return_to
        .iter()
        .any(|prefix| normal.starts_with(prefix.as_str()))
        .then_some(normal)
}

/// A value safe to repeat in a message.
fn printable(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Seals a ticket or state for `purpose` in `config`'s tenant: it opens
/// for that purpose in that tenant alone.
fn seal<T: Serialize>(service: &TokenService, config: &Config, purpose: &str, value: &T) -> String {
    let plain = serde_json::to_vec(value).expect("a connect ticket serialises");
    let purpose = format!("{purpose}/{}", config.tenant);
    URL_SAFE_NO_PAD.encode(service.lookup.data_keys().seal(&purpose, 0, &plain))
}

fn open<T: for<'de> Deserialize<'de>>(
    service: &TokenService,
    config: &Config,
    purpose: &str,
    text: &str,
) -> Option<T> {
    let sealed = URL_SAFE_NO_PAD.decode(text).ok()?;
    let purpose = format!("{purpose}/{}", config.tenant);
    let opened = service.lookup.data_keys().open(&purpose, 0, &sealed).ok()?;
    serde_json::from_slice(&opened.plain).ok()
}

/// The parameters of a query string; `None` when one is repeated.
fn query(request: &Parts) -> Result<Vec<(String, String)>, Failure> {
    let raw = request.uri.query().unwrap_or("");
    if raw.len() > MAX_QUERY {
        return Err(Failure::bad(
            "invalid_request",
            "the query string is too long",
        ));
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return Err(Failure::bad(
                "invalid_request",
                format!("parameter `{}` is given more than once", printable(name)),
            ));
        }
    }
    Ok(pairs)
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Marks `id` used for `purpose` until `until`; `false` when it was already.
async fn use_once(
    service: &TokenService,
    purpose: &str,
    id: &str,
    until: UnixTime,
) -> Result<bool, Failure> {
    let holder = Random::default().grant_id();
    service
        .lookup
        .store()
        .try_lease(&format!("{purpose}:{id}"), &holder, now(), until)
        .await
        .map_err(|_| Failure::store_unavailable())
}

/// Whether grant `id` is still live: not revoked, and some token of it
/// still valid.
async fn grant_is_live(service: &TokenService, id: &str) -> Result<bool, Failure> {
    let unavailable = |_| Failure::store_unavailable();
    if service
        .grants
        .find_grant_fresh(id)
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .is_none()
    {
        return Ok(false);
    }
    let at = now();
    Ok(service
        .grants
        .grant_expiry(id, at)
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .is_some_and(|exp| exp > at))
}

// ------------------------------------------------------------------ start

/// `GET /connect/start?ticket=…`.
pub async fn start(State(service): State<Arc<TokenService>>, request: Request<Body>) -> Response {
    let (parts, _) = request.into_parts();
    let headers = parts.headers.clone();
    match redirect_to_authority(&service, &parts).await {
        Ok(response) => response,
        Err(failure) => failure.render(&headers),
    }
}

async fn redirect_to_authority(
    service: &TokenService,
    request: &Parts,
) -> Result<Response, Failure> {
    let config = super::tenant::scope_of(&request.extensions, service).0;
    let settings = config
        .connect
        .as_ref()
        .ok_or_else(Failure::not_configured)?;
    let pairs = query(request)?;
    let ticket: Ticket = param(&pairs, "ticket")
        .and_then(|t| open(service, &config, TICKET_PURPOSE, t))
        .ok_or_else(|| Failure::bad("invalid_request", "this connect link is not valid"))?;
    let at = now();
    if ticket.exp <= at {
        return Err(Failure::bad("expired", "this connect link has expired"));
    }
    if !use_once(service, "connect-ticket", &ticket.id, ticket.exp).await? {
        return Err(Failure::bad(
            "invalid_request",
            "this connect link was used already; ask for a new one",
        ));
    }
    let authority = connectable(&config, &ticket.authority)
        .ok_or_else(|| Failure::bad("invalid_request", "the authority is no longer connectable"))?;
    if !grant_is_live(service, &ticket.grant).await? {
        return Err(Failure::grant_inactive());
    }
    let authorization_endpoint = service
        .discovery
        .authorization_endpoint(authority, config.gateway.authority_timeout)
        .await
        .map_err(|why| {
            tracing::warn!(authority = %authority.name, reason = %why, "connect: discovery failed");
            Failure::new(
                StatusCode::BAD_GATEWAY,
                "authority_unavailable",
                "the authority's metadata could not be read; retry later",
            )
        })?;
    let Some(authorization_endpoint) = authorization_endpoint.as_deref() else {
        return Err(Failure::new(
            StatusCode::BAD_GATEWAY,
            "authority_unavailable",
            "the authority publishes no authorization endpoint",
        ));
    };
    let random = Random::default();
    let verifier = random.url_secret();
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let openid = authority.scopes.iter().any(|s| s == "openid");
    let nonce = openid.then(|| random.url_secret());
    let browser = random.url_secret();
    let state = FlowState {
        id: ticket.id.clone(),
        grant: ticket.grant,
        authority: authority.name.clone(),
        return_to: ticket.return_to,
        exp: ticket.exp,
        verifier,
        nonce: nonce.clone(),
        browser: hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            browser.as_bytes(),
        )),
    };
    let sealed_state = seal(service, &config, STATE_PURPOSE, &state);
    let mut location = url::Url::parse(authorization_endpoint).map_err(|_| {
        Failure::new(
            StatusCode::BAD_GATEWAY,
            "authority_unavailable",
            "the authority's authorization endpoint is not a URL",
        )
    })?;
    {
        let mut q = location.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &authority.client_id)
            .append_pair("redirect_uri", &settings.redirect_uri)
            .append_pair("state", &sealed_state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if !authority.scopes.is_empty() {
            q.append_pair("scope", &authority.scopes.join(" "));
        }
        if let Some(nonce) = &nonce {
            q.append_pair("nonce", nonce);
        }
        // OpenID Connect issues a refresh token for offline_access only
        // after explicit consent.
        if openid && authority.scopes.iter().any(|s| s == "offline_access") {
            q.append_pair("prompt", "consent");
        }
    }
    let mut response = StatusCode::FOUND.into_response();
    browser_headers(&mut response);
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::try_from(location.as_str()).map_err(|_| {
            Failure::new(
                StatusCode::BAD_GATEWAY,
                "authority_unavailable",
                "the authorization URL is not a valid header",
            )
        })?,
    );
    let cookie = cookie(settings, &state.id, &browser, state.exp - at);
    if let Ok(value) = HeaderValue::try_from(cookie) {
        headers.insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// The browser-binding cookie: only the callback gets it back, never
/// script; `SameSite=Lax` still sends it on the authority's top-level
/// redirect to the callback.
fn cookie(settings: &ConnectSettings, id: &str, value: &str, max_age: UnixTime) -> String {
    let (path, secure) = match url::Url::parse(&settings.redirect_uri) {
        Ok(u) => (u.path().to_string(), u.scheme() == "https"),
        Err(_) => ("/connect/callback".to_string(), false),
    };
    format!(
        "{COOKIE_PREFIX}{id}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Lax{}",
        max_age.max(0),
        if secure { "; Secure" } else { "" }
    )
}

/// The value of cookie `name` in the request.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then_some(v)
        })
}

// --------------------------------------------------------------- callback

/// `GET /connect/callback?code=…&state=…` (or `error=…`).
pub async fn callback(
    State(service): State<Arc<TokenService>>,
    request: Request<Body>,
) -> Response {
    let (parts, _) = request.into_parts();
    let headers = parts.headers.clone();
    match finish(&service, &parts).await {
        Ok(response) => response,
        Err(failure) => failure.render(&headers),
    }
}

async fn finish(service: &TokenService, request: &Parts) -> Result<Response, Failure> {
    let config = super::tenant::scope_of(&request.extensions, service).0;
    let settings = config
        .connect
        .as_ref()
        .ok_or_else(Failure::not_configured)?;
    let pairs = query(request)?;
    let state: FlowState = param(&pairs, "state")
        .and_then(|s| open(service, &config, STATE_PURPOSE, s))
        .ok_or_else(|| {
            Failure::bad(
                "invalid_request",
                "the state is missing or was not made by refgate",
            )
        })?;
    if state.exp <= now() {
        return Err(Failure::bad(
            "expired",
            "this connect flow has expired; start again",
        ));
    }
    let cookie_name = format!("{COOKIE_PREFIX}{}", state.id);
    let same_browser = cookie_value(&request.headers, &cookie_name).is_some_and(|v| {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, v.as_bytes())) == state.browser
    });
    if !same_browser {
        return Err(Failure::bad(
            "invalid_request",
            "this connect flow was started in another browser",
        ));
    }
    let authority = connectable(&config, &state.authority)
        .ok_or_else(|| Failure::bad("invalid_request", "the authority is no longer connectable"))?;
    // RFC 9207: an authority that names itself must be the one asked.
    if let (Some(iss), Some(expected)) = (param(&pairs, "iss"), authority.issuer.as_deref()) {
        if iss != expected {
            return Err(Failure::bad(
                "invalid_request",
                "the answer comes from another authority than the one asked",
            ));
        }
    }
    if !use_once(service, "connect-state", &state.id, state.exp).await? {
        return Err(Failure::bad(
            "invalid_request",
            "this connect flow was completed already",
        ));
    }
    let done = |response: Result<Response, Failure>| -> Result<Response, Failure> {
        let mut response = response?;
        forget_cookie(&mut response, settings, &cookie_name);
        Ok(response)
    };
    if let Some(error) = param(&pairs, "error") {
        let code = oauth_code(error);
        service.audit.record(
            "connect_failed",
            json!({ "grant_id": &state.grant, "authority": &authority.name, "reason": code }),
        );
        if let Some(return_to) = &state.return_to {
            return done(Ok(redirect_back(return_to, Some(&code))));
        }
        return done(Err(Failure::bad(
            "access_denied",
            format!("the authority answered `{code}`"),
        )));
    }
    let code = param(&pairs, "code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Failure::bad("invalid_request", "the authority sent no code"))?;
    if !grant_is_live(service, &state.grant).await? {
        return done(Err(Failure::grant_inactive()));
    }
    let Some(grant) = service
        .grants
        .find_grant_fresh(&state.grant)
        .await
        .ok()
        .flatten()
    else {
        return done(Err(Failure::grant_inactive()));
    };
    let fields = redeem(service, &config, authority, settings, code, &state).await?;
    // The person who signed in at the authority must be the grant's
    // subject when the grant's subject came from that same issuer.
    if let (Some(idp), Some(issuer), Some(sub)) = (
        grant.idp(),
        authority.issuer.as_deref(),
        fields.subject.as_deref(),
    ) {
        if idp == issuer && sub != &*grant.subject {
            return done(Err(Failure::bad(
                "access_denied",
                "the account signed in at the authority is not the token's subject",
            )));
        }
    }
    let Some(name) = authority.connect_credential.as_deref() else {
        return done(Err(Failure::bad(
            "invalid_request",
            "the authority is no longer connectable",
        )));
    };
    let at = now();
    let credential = json!({
        "access_token": fields.access_token,
        "refresh_token": fields.refresh_token,
        "token_type": fields.token_type.unwrap_or_else(|| "Bearer".into()),
        "expires_at": fields.expires_in.map(|s| at + s.clamp(0, 10 * 365 * 86_400)),
        "authority": &authority.name,
        "scope": fields.scope,
        "reauth_required": Value::Null,
    });
    let patch = json!({ "credentials": { name: credential } });
    match custom::patch(
        &service.grants,
        &config,
        &state.grant,
        &patch,
        None,
        Writer::Refgate,
    )
    .await
    {
        Ok(_) => {}
        Err(crate::core::Error::TokenInactive) => return done(Err(Failure::grant_inactive())),
        Err(e) => {
            tracing::error!(error = %e, "connect: could not store the credential");
            return done(Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the credential could not be stored; start again",
            )));
        }
    }
    service.audit.record(
        "credential_connected",
        json!({
            "client_id": &*grant.client_id,
            "sub": &*grant.subject,
            "grant_id": &state.grant,
            "authority": &authority.name,
            "credential": name,
        }),
    );
    match &state.return_to {
        Some(return_to) => done(Ok(redirect_back(return_to, None))),
        None => {
            let page = format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Connected</title></head>\
                 <body><h1 id=\"connected\">Connected</h1><p>{} is connected. You can close this window.</p></body></html>\n",
                html_escape(&authority.name)
            );
            let mut response = (StatusCode::OK, page).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            browser_headers(&mut response);
            done(Ok(response))
        }
    }
}

/// An OAuth error code as sent back: only the RFC 6749 characters.
fn oauth_code(error: &str) -> String {
    let code: String = error
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if code.is_empty() {
        "access_denied".into()
    } else {
        code
    }
}

fn redirect_back(return_to: &str, error: Option<&str>) -> Response {
    let mut target = return_to.to_string();
    if let Ok(mut url) = url::Url::parse(return_to) {
        if let Some(code) = error {
            url.query_pairs_mut().append_pair("error", code);
        } else {
            url.query_pairs_mut().append_pair("connected", "true");
        }
        target = url.to_string();
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    browser_headers(&mut response);
    if let Ok(value) = HeaderValue::try_from(target) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn forget_cookie(response: &mut Response, settings: &ConnectSettings, name: &str) {
    let expired = cookie(settings, name.trim_start_matches(COOKIE_PREFIX), "", 0);
    if let Ok(value) = HeaderValue::try_from(expired) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// What the authority's token endpoint answered for the code.
#[derive(Deserialize)]
struct CodeAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
}

struct Redeemed {
    access_token: String,
    refresh_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<i64>,
    scope: Option<String>,
    /// `sub` of the id_token, when one came.
    subject: Option<String>,
}

async fn redeem(
    service: &TokenService,
    config: &Config,
    authority: &Authority,
    settings: &ConnectSettings,
    code: &str,
    state: &FlowState,
) -> Result<Redeemed, Failure> {
    let unavailable = |why: String| {
        tracing::warn!(authority = %authority.name, reason = %why, "connect: redeeming the code failed");
        Failure::new(
            StatusCode::BAD_GATEWAY,
            "authority_unavailable",
            "the authority could not be reached to finish connecting; start again",
        )
    };
    let timeout = config.gateway.authority_timeout;
    let form: Vec<(&str, &str)> = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &settings.redirect_uri),
        ("code_verifier", &state.verifier),
    ];
    let client = AuthorityClient::new(
        service.http.clone(),
        service.keys.clone(),
        service.discovery.clone(),
    );
    let (status, body) = client
        .post_token_form(authority, form, timeout)
        .await
        .map_err(unavailable)?;
    if !status.is_success() {
        let code = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(oauth_code))
            .unwrap_or_else(|| status.as_u16().to_string());
        tracing::warn!(authority = %authority.name, %status, error = %code, "connect: the authority refused the code");
        return Err(Failure::bad(
            "access_denied",
            format!("the authority refused the authorization code ({code})"),
        ));
    }
    let answer: CodeAnswer = serde_json::from_slice(&body)
        .ok()
        .filter(|a: &CodeAnswer| !a.access_token.is_empty())
        .ok_or_else(|| unavailable("the token response is not valid JSON".into()))?;
    let subject = match (&state.nonce, &answer.id_token) {
        (Some(nonce), Some(id_token)) => {
            Some(check_id_token(id_token, authority, nonce).map_err(|why| {
                tracing::warn!(authority = %authority.name, reason = why, "connect: the id_token does not fit the flow");
                Failure::bad("access_denied", format!("the authority's id_token was refused: {why}"))
            })?)
        }
        (Some(_), None) => {
            return Err(Failure::bad(
                "access_denied",
                "the authority sent no id_token for an openid request",
            ))
        }
        (None, _) => None,
    };
    Ok(Redeemed {
        access_token: answer.access_token,
        refresh_token: answer.refresh_token,
        token_type: answer.token_type,
        expires_in: answer.expires_in,
        scope: answer.scope,
        subject,
    })
}

/// Checks an id_token received straight from the token endpoint over the
/// connection refgate opened (OpenID Connect Core §3.1.3.7 lets TLS stand
/// in for the signature there): its `nonce`, `aud`, `iss` and `exp`.
/// Returns its `sub`.
fn check_id_token(token: &str, authority: &Authority, nonce: &str) -> Result<String, &'static str> {
    let payload = token.split('.').nth(1).ok_or("not a JWT")?;
    let claims: Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("not a JWT")?;
    if claims["nonce"].as_str() != Some(nonce) {
        return Err("its nonce is not the flow's");
    }
    let audience_ok = match &claims["aud"] {
        Value::String(a) => *a == authority.client_id,
        Value::Array(list) => list
            .iter()
            .any(|a| a.as_str() == Some(&authority.client_id)),
        _ => false,
    };
    if !audience_ok {
        return Err("it is not meant for refgate's client");
    }
    if let Some(issuer) = authority.issuer.as_deref() {
        if claims["iss"].as_str() != Some(issuer) {
            return Err("it names another issuer");
        }
    }
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now()) {
        return Err("it has expired");
    }
    claims["sub"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or("it has no sub")
}
