//! On-behalf-of at an external authority: a route with
//! `[routes.exchange] authority = …` exchanges the subject token the
//! inbound grant keeps (see [`crate::core::kept`]) at that authority, by
//! RFC 8693 or Entra's on-behalf-of request, and stores the answer as the
//! credential named after the route, marked `exchanged`. From then on it is
//! refreshed like any credential; when its refresh is refused, or it has no
//! refresh token, it is exchanged again while the kept subject token is
//! valid.
//!
//! What is sent where is decided by the configuration alone: the route
//! names the authority; custom data names nothing (a client can neither
//! plant a subject token, nor make an entry `exchanged`, nor change one).
//! Exchanges take the same flight and store lease as refreshes, so of many
//! requests on many instances one exchanges.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tracing::Instrument;

use super::authority_client::Outcome;
use super::{for_use, request_span, Need, Refresher, WAIT_POLL};
use crate::config::{ExternalExchange, RouteAccess};
use crate::core::kept;
use crate::credential::{Credential, StoredCredential};
use crate::gateway::errors::GatewayError;
use crate::gateway::GatewayState;
use crate::lookup::now;
use crate::telemetry::Untrusted;

/// The external exchange of route `name`, when `current` is what it
/// obtained (from the authority the route names now).
pub(super) fn route_of(
    state: &GatewayState,
    name: &str,
    current: &StoredCredential,
) -> Option<ExternalExchange> {
    if !current.exchanged() {
        return None;
    }
    state
        .config
        .routes
        .iter()
        .find_map(|route| match &route.access {
            RouteAccess::ExternalExchange(x)
                if route.name == name && current.authority.as_deref() == Some(&x.authority) =>
            {
                Some(x.clone())
            }
            _ => None,
        })
}

impl Refresher {
    /// The credential of an external-exchange route: the stored one when
    /// fresh, refreshed when it can be, else a new exchange.
    pub async fn exchange_external(
        self: &Arc<Self>,
        state: Arc<GatewayState>,
        grant_id: &str,
        route_name: &str,
        exchange: &ExternalExchange,
        request_id: &str,
    ) -> Result<Arc<Credential>, GatewayError> {
        let this = self.clone();
        let (task_grant_id, name) = (grant_id.to_string(), route_name.to_string());
        let task_exchange = exchange.clone();
        let patience = state.config.gateway.authority_timeout;
        let task = self.control.spawn(
            async move {
                let key = format!("{task_grant_id}/{name}");
                let flight = this.flights.flight(&key);
                let result = {
                    let _turn = flight.lock().await;
                    this.external_in_turn(&state, &task_grant_id, &name, &key, &task_exchange)
                        .await
                };
                this.flights.land(&key, flight);
                result
            }
            .instrument(request_span(request_id)),
        );
        // A request waits as long as for a refresh; the exchange goes on
        // and its answer is stored.
        match tokio::time::timeout(patience, task).await {
            Ok(joined) => joined.map_err(|_| GatewayError::AuthorityUnavailable)?,
            Err(_) => {
                // The old credential while it is valid (a refresh taking
                // long), else 503.
                match self.stored(grant_id, route_name).await? {
                    Some(current)
                        if current.exchanged()
                            && current.authority.as_deref() == Some(&exchange.authority)
                            && !current.reauth_required()
                            && !current.access_token.is_empty() =>
                    {
                        Self::fall_back(&current)
                    }
                    _ => Err(GatewayError::AuthorityUnavailable),
                }
            }
        }
    }

    async fn external_in_turn(
        &self,
        state: &GatewayState,
        grant_id: &str,
        name: &str,
        key: &str,
        exchange: &ExternalExchange,
    ) -> Result<Arc<Credential>, GatewayError> {
        let skew = state.config.gateway.refresh_skew.as_secs() as i64;
        let ours = |c: &StoredCredential| {
            c.exchanged() && c.authority.as_deref() == Some(&exchange.authority)
        };
        if let Some(stored) = self.stored(grant_id, name).await? {
            if !stored.exchanged() {
                tracing::warn!(
                    credential = name,
                    "an external exchange route's credential was not obtained by refgate; it is not used"
                );
                return Err(GatewayError::CredentialInvalid(name.to_string()));
            }
            if ours(&stored) {
                if stored.reauth_required() {
                    return Err(GatewayError::ReauthRequired(name.to_string()));
                }
                if !stored.needs_refresh(now(), skew) {
                    // Another request got here first.
                    return Ok(for_use(&stored));
                }
                // Refreshed (or exchanged again when that is refused) under
                // the refresh's own lease.
                return self
                    .refresh_in_turn(
                        state,
                        &exchange.tenant,
                        grant_id,
                        name,
                        &Need::Expiring,
                        Instant::now(),
                    )
                    .await;
            }
            // Exchanged at another authority (the route changed since): a
            // new exchange replaces it.
        }
        let store = &self.tokens.grants;
        let lease_seconds = Self::call_limit(state).as_secs() as i64 + 5;
        let try_lease = || async {
            store
                .try_lease(key, &self.holder, now(), now() + lease_seconds)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)
        };
        let mut leased = try_lease().await?;
        if !leased {
            // Another instance is exchanging: wait for its result.
            let deadline = Instant::now() + Duration::from_secs(lease_seconds as u64);
            while !leased && Instant::now() < deadline {
                tokio::time::sleep(WAIT_POLL).await;
                if let Some(stored) = self.stored(grant_id, name).await?.filter(ours) {
                    if stored.reauth_required() {
                        return Err(GatewayError::ReauthRequired(name.to_string()));
                    }
                    if !stored.needs_refresh(now(), skew) {
                        self.count(&exchange.authority, "waited");
                        return Ok(Arc::new(Credential::obtained(&stored)));
                    }
                }
                leased = try_lease().await?;
            }
            if !leased {
                return Err(GatewayError::AuthorityUnavailable);
            }
        }
        // Another instance may have finished just before the lease came.
        let result = match self.stored(grant_id, name).await? {
            Some(stored) if ours(&stored) && !stored.needs_refresh(now(), skew) => {
                if stored.reauth_required() {
                    Err(GatewayError::ReauthRequired(name.to_string()))
                } else {
                    Ok(for_use(&stored))
                }
            }
            current => {
                let current = current.filter(ours).unwrap_or_default();
                self.exchange_external_now(state, grant_id, name, key, exchange, &current)
                    .await
            }
        };
        if let Err(e) = store.release_lease(key, &self.holder).await {
            tracing::warn!(error = %e, "could not release an exchange lease; it expires by itself");
        }
        result
    }

    /// Whether the grant's kept subject token is still valid.
    pub(super) async fn subject_still_valid(&self, grant_id: &str) -> Result<bool, GatewayError> {
        Ok(self
            .kept_subject(grant_id)
            .await?
            .is_some_and(|k| k.valid_at(now())))
    }

    async fn kept_subject(
        &self,
        grant_id: &str,
    ) -> Result<Option<kept::KeptSubject>, GatewayError> {
        kept::open(&self.tokens.grants, grant_id)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "store unavailable while reading a kept subject token");
                GatewayError::StoreUnavailable
            })
    }

    /// Exchanges the grant's kept subject token at the route's authority
    /// and stores the answer; `current` is the credential it replaces (a
    /// default one when there is none). The caller holds the lease.
    pub(super) async fn exchange_external_now(
        &self,
        state: &GatewayState,
        grant_id: &str,
        name: &str,
        key: &str,
        exchange: &ExternalExchange,
        current: &StoredCredential,
    ) -> Result<Arc<Credential>, GatewayError> {
        let authority = state
            .config
            .tenant(&exchange.tenant)
            .and_then(|c| c.authorities.get(&exchange.authority));
        let Some(authority) = authority else {
            // `refgate check` refuses this; a reload cannot bring it in.
            return Err(GatewayError::CredentialInvalid(name.to_string()));
        };
        let subject = self
            .kept_subject(grant_id)
            .await?
            .ok_or_else(|| GatewayError::CredentialMissing(name.to_string()))?;
        if !subject.valid_at(now()) {
            tracing::info!(
                credential = name,
                "the kept subject token has expired; the subject must sign in again"
            );
            self.mark_reauth(grant_id, name, &exchange.authority).await;
            return Err(GatewayError::ReauthRequired(name.to_string()));
        }
        let started = Instant::now();
        let outcome = self
            .authorities
            .exchange(authority, exchange, &subject.token, Self::call_limit(state))
            .await;
        self.metrics
            .refresh_seconds
            .with_label_values(&[&exchange.authority])
            .observe(started.elapsed().as_secs_f64());
        self.flights
            .note_failure(key, matches!(outcome, Outcome::Unavailable(_)));
        match outcome {
            Outcome::Fresh(fields) => {
                self.count(&exchange.authority, "exchanged");
                let stored = StoredCredential {
                    access_token: fields.access_token,
                    refresh_token: fields.refresh_token,
                    token_type: fields.token_type,
                    expires_at: fields.expires_in.map(|s| now() + s.max(0)),
                    authority: Some(exchange.authority.clone()),
                    scope: fields.scope.or(exchange.scope.clone()),
                    reauth_required: None,
                    exchanged: Some(true),
                };
                self.store_credential(grant_id, name, &stored).await;
                let fresh = Arc::new(Credential::obtained(&stored));
                if !fresh.is_sendable() {
                    return Err(GatewayError::CredentialInvalid(name.to_string()));
                }
                Ok(fresh)
            }
            Outcome::Refused => {
                self.count(&exchange.authority, "refused");
                tracing::info!(
                    credential = name,
                    authority = %exchange.authority,
                    "the authority refused to exchange the kept subject token"
                );
                self.mark_reauth(grant_id, name, &exchange.authority).await;
                Err(GatewayError::ReauthRequired(name.to_string()))
            }
            Outcome::Unavailable(why) => {
                self.count(&exchange.authority, "unavailable");
                tracing::warn!(
                    credential = name,
                    authority = %exchange.authority,
                    reason = %Untrusted(&why),
                    "external exchange failed"
                );
                if current.access_token.is_empty() {
                    return Err(GatewayError::AuthorityUnavailable);
                }
                Self::fall_back(current)
            }
        }
    }

    /// Records that the credential needs the subject to sign in again, so
    /// the authority is not asked again for it with this grant.
    async fn mark_reauth(&self, grant_id: &str, name: &str, authority: &str) {
        self.tokens.audit.record(
            "refresh_refused",
            json!({ "grant_id": grant_id, "credential": name, "authority": authority }),
        );
        // The access token goes: it is not to be sent any more (and an
        // entry needs one to be read at all).
        let patch = json!({ "credentials": { name: {
            "access_token": "",
            "authority": authority,
            "exchanged": true,
            "reauth_required": true,
        } } });
        if let Err(e) = self.patch_custom(grant_id, &patch).await {
            tracing::warn!(error = %e, "could not mark the credential for re-consent");
        }
    }
}
