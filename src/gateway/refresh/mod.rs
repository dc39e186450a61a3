//! Keeping downstream credentials fresh (SPEC 4.2) and obtaining them by
//! transparent on-behalf-of exchange (SPEC 4.4).
//!
//! One refresh per credential at a time: in this process a per-credential
//! async mutex makes concurrent requests wait for one refresh; across
//! instances sharing a store, a short lease in the store does the same, and
//! the instance that did not get it waits for the stored result. Work runs
//! on the control runtime as its own task, so a client that hangs up never
//! abandons a refresh halfway (a rotated refresh token is always stored).
//!
//! Requests wait for a refresh at most `authority_timeout`; the call to the
//! authority itself may run longer ([`LATE_ANSWER_FACTOR`]) and its answer
//! is still stored, because the authority may already have rotated the
//! refresh token: dropping that answer would leave only a consumed refresh
//! token, whose replay revokes the whole grant at a rotating authority.
//! When a refresh fails, the requests that were waiting for it fall back at
//! once instead of each asking the failing authority again in turn.
//!
//! The jobs: `flight` (who refreshes what in this process),
//! `authority_client` (a downstream authority's token endpoint), `own`
//! (credentials refgate obtains from itself: transparent exchange and
//! authority `self`), `external` (credentials obtained by exchanging a
//! grant's kept subject token at an external authority); this file decides
//! when to refresh, takes the lease, and stores the result. refgate's
//! own token service is called directly ([`crate::core`]), never over HTTP.

pub mod authority_client;
mod external;
mod flight;
mod own;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tracing::Instrument;

use super::errors::GatewayError;
use super::GatewayState;
use crate::core::custom::{self, Writer};
use crate::core::Error;
use crate::credential::{Credential, StoredCredential, SELF_AUTHORITY};
use crate::lookup::{now, Grant, TokenLookup};
use crate::telemetry::{Metrics, Untrusted};
use crate::token::TokenService;
use authority_client::{AuthorityClient, Outcome};
use flight::Flights;

/// A span for work done on behalf of a request: a refresh runs as a task
/// of its own, and its log lines carry the id of the request that started
/// it.
fn request_span(request_id: &str) -> tracing::Span {
    tracing::info_span!("refresh", request_id = %request_id)
}

/// The same credential, marked as just obtained for the request at hand:
/// it comes from a refresh that request waited for.
fn obtained(credential: Arc<Credential>) -> Arc<Credential> {
    if credential.just_obtained {
        return credential;
    }
    Arc::new(credential.as_obtained())
}

/// A stored credential in the form the proxy uses.
fn for_use(stored: &StoredCredential) -> Arc<Credential> {
    Arc::new(Credential::from_stored(stored))
}

/// Why a fresh credential is wanted.
#[derive(Debug, Clone)]
pub enum Need {
    /// It expires within the refresh skew.
    Expiring,
    /// The upstream answered 401 to this credential.
    Rejected { sent: Arc<Credential> },
}

/// How often an instance waiting for another's refresh looks at the store.
const WAIT_POLL: Duration = Duration::from_millis(50);
/// A call to an authority may take this many times `authority_timeout`
/// before it is abandoned; requests stop waiting for it after one.
const LATE_ANSWER_FACTOR: u32 = 4;

/// Refreshes and exchanges credentials.
pub struct Refresher {
    /// Cached reads of grants.
    lookup: Arc<TokenLookup>,
    /// The token service: its grants (every write) and configuration.
    tokens: Arc<TokenService>,
    authorities: AuthorityClient,
    metrics: Arc<Metrics>,
    control: tokio::runtime::Handle,
    /// This instance's name in store leases.
    holder: String,
    flights: Flights,
}

impl Refresher {
    pub fn new(
        lookup: Arc<TokenLookup>,
        tokens: Arc<TokenService>,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        control: tokio::runtime::Handle,
    ) -> Self {
        let holder = format!(
            "{}-{}",
            std::process::id(),
            tokens.grants.random().grant_id()
        );
        let authorities = AuthorityClient::new(http, tokens.keys.clone(), tokens.discovery.clone());
        Refresher {
            lookup,
            tokens,
            authorities,
            metrics,
            control,
            holder,
            flights: Flights::default(),
        }
    }

    /// A credential fresh enough to use, refreshing it when `need` says so
    /// and nobody else already did. Waits at most `authority_timeout`; after
    /// that the refresh goes on without this request, which gets the old
    /// credential while it is valid, else `AuthorityUnavailable`.
    pub async fn refresh(
        self: &Arc<Self>,
        state: Arc<GatewayState>,
        grant: &Grant,
        name: &str,
        need: Need,
        request_id: &str,
    ) -> Result<Arc<Credential>, GatewayError> {
        let grant_id = &*grant.id;
        let patience = state.config.gateway.authority_timeout;
        let this = self.clone();
        let (task_grant_id, task_name) = (grant_id.to_string(), name.to_string());
        let tenant = grant.tenant().to_string();
        let waiting_since = Instant::now();
        let traced = crate::traces::refresh(name);
        let span = traced.in_scope(|| request_span(request_id));
        // Audit lines of the refresh name the grant's client and subject.
        let audited = crate::audit::RequestScope {
            request_id: request_id.to_string(),
            client_id: Some(grant.client_id.to_string()),
            sub: Some(grant.subject.to_string()),
            tenant: Some(grant.tenant().to_string()).filter(|t| !t.is_empty()),
        };
        let task = self.control.spawn(crate::audit::with_request(
            audited,
            async move {
                let key = format!("{task_grant_id}/{task_name}");
                let flight = this.flights.flight(&key);
                let result = {
                    let (_turn, waited) = match flight.try_lock() {
                        Ok(turn) => (turn, false),
                        Err(_) => (flight.lock().await, true),
                    };
                    let result = this
                        .refresh_in_turn(
                            &state,
                            &tenant,
                            &task_grant_id,
                            &task_name,
                            &need,
                            waiting_since,
                        )
                        .await;
                    match result {
                        // Renewed by the refresh this request waited for.
                        Ok(c) if waited && matches!(need, Need::Expiring) => Ok(obtained(c)),
                        other => other,
                    }
                };
                this.flights.land(&key, flight);
                result
            }
            .instrument(traced)
            .instrument(span.clone()),
        ));
        match tokio::time::timeout(patience, task).await {
            Ok(joined) => joined.map_err(|_| GatewayError::AuthorityUnavailable)?,
            Err(_) => {
                span.in_scope(|| {
                    tracing::info!(
                        credential = name,
                        "stopped waiting for a credential refresh; it goes on in the background"
                    )
                });
                let current = self.usable(grant_id, name).await?;
                Self::fall_back(&current)
            }
        }
    }

    /// The stored credential, read from the store (not the cache).
    /// The stored credential, unless it is missing or its authority asked
    /// for consent again (then the error to answer).
    async fn usable(&self, grant_id: &str, name: &str) -> Result<StoredCredential, GatewayError> {
        let current = self
            .stored(grant_id, name)
            .await?
            .ok_or_else(|| GatewayError::CredentialMissing(name.to_string()))?;
        if current.reauth_required() {
            return Err(GatewayError::ReauthRequired(name.to_string()));
        }
        Ok(current)
    }

    async fn stored(
        &self,
        grant_id: &str,
        name: &str,
    ) -> Result<Option<StoredCredential>, GatewayError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "store unavailable while refreshing a credential");
            GatewayError::StoreUnavailable
        };
        let record = self
            .tokens
            .grants
            .find_grant(grant_id)
            .await
            .map_err(|e| unavailable(&e))?
            .filter(|g| !g.revoked)
            .ok_or(GatewayError::InvalidToken)?;
        // Unreadable custom data (logged): the grant counts as inactive.
        let custom = self
            .lookup
            .open_custom(&record)
            .map_err(|_| GatewayError::InvalidToken)?;
        Ok(crate::credential::stored(&custom, name))
    }

    fn still_needed(current: &StoredCredential, need: &Need, skew: i64) -> bool {
        match need {
            Need::Expiring => current.needs_refresh(now(), skew),
            Need::Rejected { sent } => Credential::from_stored(current).same_header(sent),
        }
    }

    /// The client of downstream authorities' token endpoints (one client
    /// authentication for every request made to them).
    pub fn authority_client(&self) -> &AuthorityClient {
        &self.authorities
    }

    /// The audit trail the token service writes too.
    pub fn audit(&self) -> &crate::audit::Audit {
        &self.tokens.audit
    }

    async fn refresh_in_turn(
        &self,
        state: &GatewayState,
        tenant: &str,
        grant_id: &str,
        name: &str,
        need: &Need,
        waiting_since: Instant,
    ) -> Result<Arc<Credential>, GatewayError> {
        // The flight's key, which is also the store lease's.
        let key = &format!("{grant_id}/{name}");
        let skew = state.config.gateway.refresh_skew.as_secs() as i64;
        let current = self.usable(grant_id, name).await?;
        if !Self::still_needed(&current, need, skew) {
            return Ok(for_use(&current));
        }
        if self.flights.failed_since(key, waiting_since) {
            return Self::fall_back(&current);
        }
        if matches!(need, Need::Rejected { .. })
            && !self
                .flights
                .rejection_may_refresh(key, state.config.gateway.min_refresh_interval)
        {
            // A path that always answers 401 must not rotate the
            // credential on every request: the caller passes the 401 on.
            tracing::debug!(
                credential = name,
                "the upstream rejected a credential refreshed for a 401 shortly before; not refreshing again yet"
            );
            return Ok(for_use(&current));
        }
        let store = &self.tokens.grants;
        let call_limit = Self::call_limit(state);
        let lease_seconds = call_limit.as_secs() as i64 + 5;
        let mut leased = store
            .try_lease(key, &self.holder, now(), now() + lease_seconds)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        let mut current = current;
        if !leased {
            // Another instance is refreshing it: wait for its result.
            let deadline = Instant::now() + Duration::from_secs(lease_seconds as u64);
            while Instant::now() < deadline {
                tokio::time::sleep(WAIT_POLL).await;
                current = self.usable(grant_id, name).await?;
                if !Self::still_needed(&current, need, skew) {
                    self.count("-", "waited");
                    return Ok(Arc::new(Credential::obtained(&current)));
                }
                leased = store
                    .try_lease(key, &self.holder, now(), now() + lease_seconds)
                    .await
                    .map_err(|_| GatewayError::StoreUnavailable)?;
                if leased {
                    break;
                }
            }
            if !leased {
                return Self::fall_back(&current);
            }
        }
        // Another instance may have finished just before this one got the
        // lease, whether at once or after waiting: `current` was read
        // before, and its refresh token may be spent (a rotating authority
        // revokes the grant when it is presented again).
        current = self.usable(grant_id, name).await?;
        if !Self::still_needed(&current, need, skew) {
            let _ = store.release_lease(key, &self.holder).await;
            return Ok(for_use(&current));
        }
        let result = self
            .refresh_now(state, tenant, grant_id, name, key, current)
            .await;
        if let Err(e) = store.release_lease(key, &self.holder).await {
            tracing::warn!(error = %e, "could not release a refresh lease; it expires by itself");
        }
        result
    }

    /// How long a call to an authority may take before it is abandoned.
    fn call_limit(state: &GatewayState) -> Duration {
        state.config.gateway.authority_timeout * LATE_ANSWER_FACTOR
    }

    /// Old token while it is valid, else 503.
    fn fall_back(current: &StoredCredential) -> Result<Arc<Credential>, GatewayError> {
        if current.still_valid(now()) {
            Ok(for_use(current))
        } else {
            Err(GatewayError::AuthorityUnavailable)
        }
    }

    fn count(&self, authority: &str, outcome: &str) {
        self.metrics
            .refreshes
            .with_label_values(&[authority, outcome])
            .inc();
    }

    async fn refresh_now(
        &self,
        state: &GatewayState,
        tenant: &str,
        grant_id: &str,
        name: &str,
        key: &str,
        current: StoredCredential,
    ) -> Result<Arc<Credential>, GatewayError> {
        let authority_name = current.authority.clone().unwrap_or_default();
        let external = external::route_of(state, name, &current);
        let Some(refresh_token) = current.refresh_token.clone() else {
            if authority_name == SELF_AUTHORITY {
                // SPEC 4.4: no refresh token, so exchange again.
                return self.exchange_again(state, grant_id, name).await;
            }
            if let Some(exchange) = &external {
                return self
                    .exchange_external_now(state, grant_id, name, key, exchange, &current)
                    .await;
            }
            return if current.still_valid(now()) {
                Ok(for_use(&current))
            } else {
                Err(GatewayError::ReauthRequired(name.to_string()))
            };
        };
        let started = Instant::now();
        let outcome = if authority_name == SELF_AUTHORITY {
            self.refresh_with_self(state, grant_id, name, &refresh_token)
                .await?
        } else {
            // The authorities of the grant's tenant alone.
            let authority = state
                .config
                .tenant(tenant)
                .and_then(|c| c.authorities.get(&authority_name));
            match authority {
                Some(authority) => {
                    self.authorities
                        .refresh(authority, &refresh_token, Self::call_limit(state))
                        .await
                }
                None => {
                    tracing::warn!(
                        credential = name,
                        authority = %Untrusted(&authority_name),
                        "the credential names no configured authority; it cannot be refreshed"
                    );
                    return Err(GatewayError::CredentialInvalid(name.to_string()));
                }
            }
        };
        self.metrics
            .refresh_seconds
            .with_label_values(&[&authority_name])
            .observe(started.elapsed().as_secs_f64());
        self.flights
            .note_failure(key, matches!(outcome, Outcome::Unavailable(_)));
        match outcome {
            Outcome::Fresh(fields) => {
                self.count(&authority_name, "refreshed");
                let stored = StoredCredential {
                    access_token: fields.access_token,
                    refresh_token: fields.refresh_token.or(current.refresh_token.clone()),
                    token_type: fields.token_type.or(current.token_type.clone()),
                    expires_at: fields.expires_in.map(|s| now() + s.max(0)),
                    authority: current.authority.clone(),
                    scope: fields.scope.or(current.scope.clone()),
                    reauth_required: None,
                    exchanged: current.exchanged,
                };
                self.store_credential(grant_id, name, &stored).await;
                let fresh = Arc::new(Credential::obtained(&stored));
                if !fresh.is_sendable() {
                    return Err(GatewayError::CredentialInvalid(name.to_string()));
                }
                Ok(fresh)
            }
            Outcome::Refused if authority_name == SELF_AUTHORITY => {
                // The exchanged grant was revoked or its refresh token
                // expired; no consent is needed to exchange again.
                self.count(&authority_name, "refused");
                tracing::info!(
                    credential = name,
                    "refgate refused to refresh its own exchanged credential; exchanging again"
                );
                self.exchange_again(state, grant_id, name).await
            }
            Outcome::Refused
                if external.is_some() && self.subject_still_valid(grant_id).await? =>
            {
                // The kept subject token is still good: no consent is
                // needed to exchange it again.
                self.count(&authority_name, "refused");
                tracing::info!(
                    credential = name,
                    "the authority refused to refresh an exchanged credential; exchanging again"
                );
                let exchange = external.as_ref().expect("checked by the guard");
                self.exchange_external_now(state, grant_id, name, key, exchange, &current)
                    .await
            }
            Outcome::Refused => {
                self.count(&authority_name, "refused");
                tracing::info!(
                    credential = name,
                    authority = %Untrusted(&authority_name),
                    "the authority refused the refresh; the credential needs re-consent"
                );
                self.tokens.audit.record(
                    "refresh_refused",
                    json!({
                        "grant_id": grant_id,
                        "credential": name,
                        "authority": authority_name,
                    }),
                );
                let patch = json!({ "credentials": { name: { "reauth_required": true } } });
                if let Err(e) = self.patch_custom(grant_id, &patch).await {
                    tracing::warn!(error = %e, "could not mark the credential for re-consent");
                }
                Err(GatewayError::ReauthRequired(name.to_string()))
            }
            Outcome::Unavailable(why) => {
                self.count(&authority_name, "unavailable");
                tracing::warn!(credential = name, authority = %Untrusted(&authority_name), reason = %Untrusted(&why), "credential refresh failed");
                Self::fall_back(&current)
            }
        }
    }

    /// Writes a credential refgate obtained into the grant's custom data.
    async fn patch_custom(&self, grant_id: &str, patch: &Value) -> Result<i64, Error> {
        let config = self.tokens.config();
        custom::patch(
            &self.tokens.grants,
            &config,
            grant_id,
            patch,
            None,
            Writer::Refgate,
        )
        .await
    }

    /// Stores a refreshed credential; it must not be lost (the old refresh
    /// token may already be dead), so storage is retried.
    async fn store_credential(&self, grant_id: &str, name: &str, stored: &StoredCredential) {
        let mut value = serde_json::to_value(stored).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            // Merge patch: absent members would keep old values; null clears.
            for member in [
                "refresh_token",
                "token_type",
                "expires_at",
                "scope",
                "reauth_required",
                "exchanged",
            ] {
                map.entry(member).or_insert(Value::Null);
            }
        }
        let patch = json!({ "credentials": { name: value } });
        for attempt in 0..3 {
            match self.patch_custom(grant_id, &patch).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(error = %e, attempt, "could not store a refreshed credential");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}
