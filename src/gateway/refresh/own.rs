//! refgate's own credentials: the transparent on-behalf-of exchange of an
//! exchange route (SPEC 4.4) and the refresh of what it obtained
//! (authority `self`). Both call the token service's core operations
//! directly and act on the caller's grant, never on data a client wrote.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::authority_client::{Outcome, TokenFields};
use super::{for_use, request_span, Need, Refresher};
use crate::config::{RouteAccess, RouteExchange};
use crate::core::exchange::{self, DerivedRefusal};
use crate::core::{Error, TokenResponse};
use crate::credential::{Credential, StoredCredential, SELF_AUTHORITY};
use crate::gateway::errors::GatewayError;
use crate::gateway::GatewayState;
use crate::lookup::now;
use crate::telemetry::Untrusted;

/// The exchange settings of the exchange route `name`.
fn exchange_route(state: &GatewayState, name: &str) -> Option<RouteExchange> {
    state
        .config
        .routes
        .iter()
        .find_map(|route| match &route.access {
            RouteAccess::Exchange(exchange) if route.name == name => Some(exchange.clone()),
            _ => None,
        })
}

impl Refresher {
    /// The credential for a transparent on-behalf-of route: the stored one
    /// when usable, else a new token exchange for the subject of the grant.
    pub async fn exchange(
        self: &Arc<Self>,
        state: Arc<GatewayState>,
        grant_id: &str,
        route_name: &str,
        exchange: &RouteExchange,
        request_id: &str,
    ) -> Result<Arc<Credential>, GatewayError> {
        let this = self.clone();
        let (grant_id, name) = (grant_id.to_string(), route_name.to_string());
        let exchange = exchange.clone();
        self.control
            .spawn(
                async move {
                    let key = format!("{grant_id}/{name}");
                    let flight = this.flights.flight(&key);
                    let result = {
                        let _turn = flight.lock().await;
                        this.exchange_in_turn(&state, &grant_id, &name, &exchange)
                            .await
                    };
                    this.flights.land(&key, flight);
                    result
                }
                .instrument(crate::traces::exchange(route_name))
                .instrument(request_span(request_id)),
            )
            .await
            .map_err(|_| GatewayError::AuthorityUnavailable)?
    }

    /// Refreshes a credential refgate obtained itself for the exchange
    /// route `name`, only if its refresh token belongs to a grant that the
    /// route's exchange made for this grant: custom data never decides whose
    /// refresh token refgate redeems.
    pub(super) async fn refresh_with_self(
        &self,
        state: &GatewayState,
        grant_id: &str,
        name: &str,
        refresh_token: &str,
    ) -> Result<Outcome, GatewayError> {
        let invalid = || GatewayError::CredentialInvalid(name.to_string());
        let exchange = exchange_route(state, name).ok_or_else(invalid)?;
        let caller = self.fresh_grant(grant_id).await?;
        let top = self.tokens.config();
        let config = top.tenant(&exchange.tenant).ok_or_else(invalid)?;
        let refreshed = exchange::refresh_derived(
            &self.tokens.grants,
            config,
            refresh_token,
            &caller,
            &exchange.client,
            name,
        )
        .await;
        Ok(match refreshed {
            Ok(response) => Outcome::Fresh(TokenFields {
                access_token: response.access_token,
                refresh_token: response.refresh_token,
                token_type: Some(response.token_type.to_string()),
                expires_in: Some(response.expires_in),
                scope: Some(response.scope).filter(|s| !s.is_empty()),
            }),
            // A dead refresh token: exchange again.
            Err(DerivedRefusal::Failed(Error::InvalidGrant(_) | Error::RefreshReplayed { .. })) => {
                Outcome::Refused
            }
            Err(DerivedRefusal::Foreign) => {
                tracing::warn!(
                    credential = name,
                    "a self credential's refresh token belongs to another grant; it is not redeemed"
                );
                return Err(invalid());
            }
            Err(DerivedRefusal::Failed(e)) => Outcome::Unavailable(e.to_string()),
        })
    }

    /// The grant, read from the store; `InvalidToken` when it is gone.
    async fn fresh_grant(&self, grant_id: &str) -> Result<Arc<crate::lookup::Grant>, GatewayError> {
        self.lookup
            .find_grant_fresh(grant_id)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "store unavailable while renewing a credential");
                GatewayError::StoreUnavailable
            })?
            .ok_or(GatewayError::InvalidToken)
    }

    async fn exchange_in_turn(
        &self,
        state: &GatewayState,
        grant_id: &str,
        name: &str,
        exchange: &RouteExchange,
    ) -> Result<Arc<Credential>, GatewayError> {
        let skew = state.config.gateway.refresh_skew.as_secs() as i64;
        if let Some(stored) = self.stored(grant_id, name).await? {
            let current = for_use(&stored);
            let usable = |c: &Credential| c.is_sendable() && !c.reauth_required();
            if usable(&current) && !current.needs_refresh(now(), skew) {
                // Another request got here first.
                return Ok(current);
            }
            if usable(&current) && current.refreshable() {
                // One this request did not see (a stale cache): renewing it
                // beats leaving its grant behind for a new one.
                let renewed = self
                    .refresh_in_turn(
                        state,
                        &exchange.tenant,
                        grant_id,
                        name,
                        &Need::Expiring,
                        Instant::now(),
                    )
                    .await;
                match renewed {
                    Ok(c) if usable(&c) && c.still_valid(now()) => return Ok(c),
                    Err(e @ (GatewayError::StoreUnavailable | GatewayError::InvalidToken)) => {
                        return Err(e)
                    }
                    _ => {}
                }
            }
        }
        self.exchange_now(grant_id, name, exchange).await
    }

    /// Renews a transparent on-behalf-of credential by a new exchange for
    /// its grant's subject, as the route of the same name says. For when
    /// no access token of the inbound grant is at hand.
    pub(super) async fn exchange_again(
        &self,
        state: &GatewayState,
        grant_id: &str,
        name: &str,
    ) -> Result<Arc<Credential>, GatewayError> {
        let exchange = exchange_route(state, name).ok_or_else(|| {
            tracing::warn!(
                credential = name,
                "no exchange route of that name any more; the credential cannot be renewed"
            );
            GatewayError::CredentialInvalid(name.to_string())
        })?;
        self.exchange_now(grant_id, name, &exchange).await
    }

    /// A new exchange for the subject of the grant, as the route `name`
    /// says; the result is stored as the route's credential.
    async fn exchange_now(
        &self,
        grant_id: &str,
        name: &str,
        exchange: &RouteExchange,
    ) -> Result<Arc<Credential>, GatewayError> {
        let grant = self.fresh_grant(grant_id).await?;
        let started = Instant::now();
        let top = self.tokens.config();
        let config = top
            .tenant(&exchange.tenant)
            .ok_or_else(|| GatewayError::CredentialInvalid(name.to_string()))?;
        let result = exchange::for_route(
            &self.tokens.grants,
            config,
            &exchange.client,
            &grant,
            &exchange.scopes,
            exchange.audience.as_deref(),
            name,
        )
        .await;
        self.metrics
            .refresh_seconds
            .with_label_values(&[SELF_AUTHORITY])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(response) => Ok(self.store_exchanged(grant_id, name, response).await),
            Err(e) => Err(self.exchange_failed(name, e)),
        }
    }

    /// Stores the result of a transparent exchange as the credential.
    async fn store_exchanged(
        &self,
        grant_id: &str,
        name: &str,
        response: TokenResponse,
    ) -> Arc<Credential> {
        self.count(SELF_AUTHORITY, "exchanged");
        let stored = StoredCredential {
            access_token: response.access_token,
            refresh_token: response.refresh_token,
            token_type: Some("Bearer".into()),
            expires_at: Some(now() + response.expires_in),
            authority: Some(SELF_AUTHORITY.into()),
            scope: Some(response.scope).filter(|s| !s.is_empty()),
            reauth_required: None,
            exchanged: None,
        };
        self.store_credential(grant_id, name, &stored).await;
        Arc::new(Credential::obtained(&stored))
    }

    fn exchange_failed(&self, name: &str, e: Error) -> GatewayError {
        match e {
            // The inbound token went inactive in the meantime.
            Error::SubjectInactive => GatewayError::InvalidToken,
            Error::Unavailable(why) => {
                tracing::warn!(error = %why, "store unavailable during a transparent exchange");
                GatewayError::StoreUnavailable
            }
            e => {
                tracing::error!(route = name, reason = %Untrusted(&e.to_string()), "transparent exchange failed");
                GatewayError::CredentialInvalid(name.to_string())
            }
        }
    }
}
