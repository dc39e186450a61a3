//! The refresh-token rotation rule, written once: both stores apply it
//! inside their rotation transaction, and revocation uses it to tell a
//! live refresh token from a spent one.
//!
//! A refresh token is consumed by its first use. Presented again within
//! `refresh_grace` seconds of that use it is honoured once more (a client
//! that lost the response may retry); later it is a replay, which revokes
//! the grant.

use crate::crypto::TokenKind;
use crate::store::UnixTime;

/// What the store holds about a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented {
    pub kind: TokenKind,
    pub expires_at: UnixTime,
    pub revoked: bool,
    pub grant_revoked: bool,
    /// When an earlier rotation consumed it.
    pub consumed_at: Option<UnixTime>,
}

/// What a rotation does with a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not a live refresh token: nothing happens.
    Inactive,
    /// First use: consume it and store its successors.
    Consume,
    /// Used within the grace window: store successors, it stays consumed.
    Reissue,
    /// Used after the grace window: revoke the grant and its derived grants.
    Replay,
}

/// The rule. `now` is read by the caller before it waits for the store
/// (and maybe on another instance's clock), so it may be earlier than the
/// recorded consumption: `grace > 0` is checked first so that a grace of 0
/// still means no window at all, not a free second success.
pub fn decide(token: &Presented, now: UnixTime, grace: i64) -> Decision {
    if token.kind != TokenKind::Refresh
        || token.revoked
        || token.grant_revoked
        || token.expires_at <= now
    {
        return Decision::Inactive;
    }
    match token.consumed_at {
        None => Decision::Consume,
        Some(at) if grace > 0 && now - at < grace => Decision::Reissue,
        Some(_) => Decision::Replay,
    }
}

/// Whether a token could still be used at `now`: an access token while it
/// is live, a refresh token also while it may still be presented within
/// the grace window.
pub fn still_usable(token: &Presented, now: UnixTime, grace: i64) -> bool {
    let live = !token.revoked && !token.grant_revoked && token.expires_at > now;
    match token.kind {
        TokenKind::Access => live,
        TokenKind::Refresh => !matches!(
            decide(token, now, grace),
            Decision::Inactive | Decision::Replay
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refresh(consumed_at: Option<UnixTime>) -> Presented {
        Presented {
            kind: TokenKind::Refresh,
            expires_at: 2_000,
            revoked: false,
            grant_revoked: false,
            consumed_at,
        }
    }

    #[test]
    fn first_use_consumes_a_reuse_in_the_window_reissues_a_later_one_is_a_replay() {
        assert_eq!(decide(&refresh(None), 1_000, 10), Decision::Consume);
        assert_eq!(decide(&refresh(Some(995)), 1_000, 10), Decision::Reissue);
        assert_eq!(decide(&refresh(Some(990)), 1_000, 10), Decision::Replay);
    }

    #[test]
    fn without_grace_any_reuse_is_a_replay_even_on_a_clock_that_lags() {
        assert_eq!(decide(&refresh(Some(1_000)), 1_000, 0), Decision::Replay);
        assert_eq!(decide(&refresh(Some(1_001)), 1_000, 0), Decision::Replay);
    }

    #[test]
    fn dead_tokens_are_inactive() {
        let expired = Presented {
            expires_at: 1_000,
            ..refresh(None)
        };
        let revoked = Presented {
            revoked: true,
            ..refresh(None)
        };
        let grant = Presented {
            grant_revoked: true,
            ..refresh(None)
        };
        let access = Presented {
            kind: TokenKind::Access,
            ..refresh(None)
        };
        for token in [expired, revoked, grant, access] {
            assert_eq!(decide(&token, 1_000, 10), Decision::Inactive);
        }
        assert!(still_usable(&access, 1_000, 10));
        assert!(still_usable(&refresh(Some(995)), 1_000, 10));
        assert!(!still_usable(&refresh(Some(990)), 1_000, 10));
    }
}
