//! RFC 8628 device authorization: a device asks for a device code and a
//! user code ([`authorize`]), a trusted back channel approves or denies the
//! user code for a person ([`decide`]), and the device polls until its
//! grant is issued ([`redeem`]). Only the SHA-256 hashes of both codes are
//! stored; the polling rule ([`decide_poll`]) runs inside the store's
//! transaction, so it holds across instances sharing PostgreSQL.

use super::issue::{issue, whole_seconds, NewGrant, TokenResponse};
use super::{scope, Error, Grants};
use crate::config::{Client, TokenSettings};
use crate::crypto::{hash_token, TokenHash};
use crate::lookup::now;
use crate::store::{DeviceCodeRecord, DevicePoll, DeviceStatus};

/// User codes are drawn from these 31 letters and digits: no `0 O 1 I L`.
pub const USER_CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters of a user code (about 40 bits).
pub const USER_CODE_LEN: usize = 8;
/// Prefix of device codes, so a leaked one is recognisable.
pub const DEVICE_CODE_PREFIX: &str = "rgdc_";
/// How much a `slow_down` raises a device code's interval (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: i64 = 5;
/// Polls this much earlier than the interval are still accepted: the gap
/// between two arrivals may shrink by network jitter.
const POLL_ALLOWANCE_MS: i64 = 250;

/// A new device authorization: the codes in clear, for the device only.
pub struct Authorized {
    pub device_code: String,
    /// Formatted for display: `XXXX-XXXX`.
    pub user_code: String,
    pub expires_in: i64,
    pub interval: i64,
    pub scope: String,
}

/// A user code as a person may type it: case-insensitive, dashes and
/// spaces ignored. `None` when it cannot be a user code.
pub fn normalise_user_code(text: &str) -> Option<String> {
    let code: String = text
        .chars()
        .filter(|c| *c != '-' && *c != ' ')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let valid =
        code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b));
    valid.then_some(code)
}

/// The stored hash of a user code (normalised) of `tenant`.
pub fn user_code_hash(tenant: &str, normalised: &str) -> TokenHash {
    hash_token(tenant, &format!("user_code:{normalised}"))
}

/// A fresh user code: uniform over the alphabet (rejection sampling of
/// random bytes).
fn new_user_code(grants: &Grants) -> String {
    use base64::Engine;
    let alphabet = USER_CODE_ALPHABET.len();
    let limit = 256 - 256 % alphabet;
    let mut code = String::with_capacity(USER_CODE_LEN);
    while code.len() < USER_CODE_LEN {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(grants.random().url_secret())
            .unwrap_or_default();
        for b in bytes {
            if (b as usize) < limit && code.len() < USER_CODE_LEN {
                code.push(USER_CODE_ALPHABET[b as usize % alphabet] as char);
            }
        }
    }
    code
}

/// RFC 8628 §3.1–3.2: a device code and a user code for `client`, for the
/// scopes it asks (within its own).
pub async fn authorize(
    grants: &Grants,
    settings: &TokenSettings,
    client: &Client,
    requested_scope: Option<&str>,
) -> Result<Authorized, Error> {
    let scopes = scope::for_client(client, requested_scope)?;
    let ttl = whole_seconds(settings.device_code_ttl);
    let interval = whole_seconds(settings.device_interval);
    let store = grants.lookup().store();
    // 31^8 codes: a collision with a live code is rare; draw again.
    for _ in 0..8 {
        let device_code = format!("{DEVICE_CODE_PREFIX}{}", grants.random().url_secret());
        let user_code = new_user_code(grants);
        let record = DeviceCodeRecord {
            tenant: client.tenant.clone(),
            device_hash: hash_token(&client.tenant, &device_code),
            user_hash: user_code_hash(&client.tenant, &user_code),
            client_id: client.id.clone(),
            scopes: scopes.clone(),
            status: DeviceStatus::Pending,
            expires_at: now() + ttl,
            interval,
            last_poll_ms: None,
            consumed: false,
        };
        if store.create_device_code(&record).await? {
            return Ok(Authorized {
                device_code,
                user_code: format!("{}-{}", &user_code[..4], &user_code[4..]),
                expires_in: ttl,
                interval,
                scope: scope::join(&scopes),
            });
        }
    }
    Err(Error::Unavailable(
        "no free user code could be drawn".to_string(),
    ))
}

/// Records a person's decision on a user code (already normalised) of
/// `tenant`. `Ok(false)`: no pending, unexpired authorization of that
/// tenant has that code.
pub async fn decide(
    grants: &Grants,
    tenant: &str,
    normalised_user_code: &str,
    decision: &DeviceStatus,
) -> Result<bool, Error> {
    Ok(grants
        .lookup()
        .store()
        .decide_device_code(
            tenant,
            &user_code_hash(tenant, normalised_user_code),
            now(),
            decision,
        )
        .await?)
}

/// What a poll writes back.
#[derive(Debug, PartialEq, Eq)]
pub enum PollWrite {
    Nothing,
    /// The poll time, and the interval from now on.
    Polled {
        last_poll_ms: i64,
        interval: i64,
    },
    /// Tokens are issued: the code is used up.
    Consume,
}

/// The polling rule (RFC 8628 §3.5), applied by the stores inside their
/// transaction: another client's or a used code is unknown; then expiry;
/// an approved code is consumed; a denied one stays denied; a pending one
/// polled sooner than its interval after the previous poll answers
/// `slow_down` and its interval grows by [`SLOW_DOWN_STEP`].
pub fn decide_poll(
    record: &DeviceCodeRecord,
    client_id: &str,
    now_ms: i64,
) -> (DevicePoll, PollWrite) {
    if record.client_id != client_id || record.consumed {
        return (DevicePoll::Unknown, PollWrite::Nothing);
    }
    if record.expires_at * 1000 <= now_ms {
        return (DevicePoll::Expired, PollWrite::Nothing);
    }
    match &record.status {
        DeviceStatus::Approved { subject, idp } => (
            DevicePoll::Approved {
                subject: subject.clone(),
                idp: idp.clone(),
                scopes: record.scopes.clone(),
            },
            PollWrite::Consume,
        ),
        DeviceStatus::Denied => (DevicePoll::Denied, PollWrite::Nothing),
        DeviceStatus::Pending => {
            let too_soon = record.last_poll_ms.is_some_and(|last| {
                now_ms.saturating_sub(last) < record.interval * 1000 - POLL_ALLOWANCE_MS
            });
            if too_soon {
                let interval = record.interval + SLOW_DOWN_STEP;
                (
                    DevicePoll::SlowDown(interval),
                    PollWrite::Polled {
                        last_poll_ms: now_ms,
                        interval,
                    },
                )
            } else {
                (
                    DevicePoll::Pending,
                    PollWrite::Polled {
                        last_poll_ms: now_ms,
                        interval: record.interval,
                    },
                )
            }
        }
    }
}

/// The current time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The outcome of a device's poll that issued nothing: each is an RFC
/// 8628 §3.5 error on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    Pending,
    SlowDown,
    Denied,
    Expired,
}

/// A device's poll with `device_code` (RFC 8628 §3.4): the grant's tokens
/// once a person approved it, through the one grant-creation path, with
/// the approved subject and its issuer as `idp`. A refresh token only
/// with `offline_access` and the refresh_token grant.
pub async fn redeem(
    grants: &Grants,
    client: &Client,
    device_code: &str,
) -> Result<Result<TokenResponse, Waiting>, Error> {
    let poll = grants
        .lookup()
        .store()
        .poll_device_code(
            &client.tenant,
            &hash_token(&client.tenant, device_code),
            &client.id,
            now_ms(),
        )
        .await?;
    let (subject, idp, scopes) = match poll {
        DevicePoll::Unknown => {
            return Err(Error::InvalidGrant(
                "the device_code is unknown, used, or not this client's".into(),
            ))
        }
        DevicePoll::Expired => return Ok(Err(Waiting::Expired)),
        DevicePoll::SlowDown(_) => return Ok(Err(Waiting::SlowDown)),
        DevicePoll::Pending => return Ok(Err(Waiting::Pending)),
        DevicePoll::Denied => return Ok(Err(Waiting::Denied)),
        DevicePoll::Approved {
            subject,
            idp,
            scopes,
        } => (subject, idp, scopes),
    };
    let response = issue(
        grants,
        client,
        NewGrant {
            subject,
            scopes,
            access_ttl: whole_seconds(client.access_token_ttl),
            allow_refresh: client.may_use(crate::config::GrantType::RefreshToken),
            idp: Some(idp),
            ..NewGrant::default()
        },
    )
    .await?;
    Ok(Ok(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> DeviceCodeRecord {
        DeviceCodeRecord {
            tenant: String::new(),
            device_hash: hash_token("", "d"),
            user_hash: hash_token("", "u"),
            client_id: "tv".into(),
            scopes: vec![],
            status: DeviceStatus::Pending,
            expires_at: 1_000,
            interval: 5,
            last_poll_ms: None,
            consumed: false,
        }
    }

    #[test]
    fn user_codes_ignore_case_and_dashes_and_refuse_ambiguous_letters() {
        assert_eq!(
            normalise_user_code("abcd-efgh").as_deref(),
            Some("ABCDEFGH")
        );
        assert_eq!(
            normalise_user_code("ABCD EFGH").as_deref(),
            Some("ABCDEFGH")
        );
        assert_eq!(normalise_user_code("ABCD-EFG0"), None);
        assert_eq!(normalise_user_code("ABCDEFGI"), None);
        assert_eq!(normalise_user_code("ABCDEFG"), None);
        assert_eq!(normalise_user_code("ABCDEFGHJ"), None);
    }

    #[test]
    fn polls_follow_the_interval() {
        let mut r = record();
        assert_eq!(decide_poll(&r, "tv", 100_000).0, DevicePoll::Pending);
        r.last_poll_ms = Some(100_000);
        let (answer, write) = decide_poll(&r, "tv", 102_000);
        assert_eq!(answer, DevicePoll::SlowDown(10));
        assert_eq!(
            write,
            PollWrite::Polled {
                last_poll_ms: 102_000,
                interval: 10
            }
        );
        assert_eq!(decide_poll(&r, "tv", 105_000).0, DevicePoll::Pending);
        assert_eq!(decide_poll(&r, "other", 105_000).0, DevicePoll::Unknown);
        assert_eq!(decide_poll(&r, "tv", 1_000_000).0, DevicePoll::Expired);
        r.consumed = true;
        assert_eq!(decide_poll(&r, "tv", 105_000).0, DevicePoll::Unknown);
    }
}
