//! When a new signing key is due, as a pure function of the keys there are
//! and the time: the store and the clock stay outside, so the rules can be
//! read (and tested) here.

use crate::config::SigningSettings;
use crate::store::UnixTime;

/// What the schedule needs to know of a stored key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub generation: i64,
    pub signs_from: UnixTime,
    pub signs_until: UnixTime,
}

/// The next key to add: its generation and when it signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    pub generation: i64,
    pub signs_from: UnixTime,
    pub signs_until: UnixTime,
}

fn secs(d: std::time::Duration) -> i64 {
    d.as_secs().min(i64::MAX as u64) as i64
}

/// The key to add now for the regular schedule, if one is due. `keys` must
/// hold the latest generation.
///
/// - No key at all, or the latest one has stopped signing (every instance
///   was down past its turn): a key that signs at once, since there is
///   nothing verifiers could have cached that it would break.
/// - The latest key's turn ends within `publish_ahead`: its successor,
///   signing from the end of that turn, published from now.
pub fn due(keys: &[Span], now: UnixTime, settings: &SigningSettings) -> Option<Next> {
    let rotate = secs(settings.rotate_every);
    let Some(latest) = keys.iter().max_by_key(|k| k.generation) else {
        return Some(Next {
            generation: 1,
            signs_from: now,
            signs_until: now + rotate,
        });
    };
    if latest.signs_until <= now {
        return Some(Next {
            generation: latest.generation + 1,
            signs_from: now,
            signs_until: now + rotate,
        });
    }
    if now >= latest.signs_until - secs(settings.publish_ahead) {
        return Some(Next {
            generation: latest.generation + 1,
            signs_from: latest.signs_until,
            signs_until: latest.signs_until + rotate,
        });
    }
    None
}

/// The key a forced rotation adds: published now, signing `publish_ahead`
/// from now (so verifiers that cache the key set fetch it first), when the
/// key signing now stops. With no key signing now it signs at once.
pub fn forced(keys: &[Span], now: UnixTime, settings: &SigningSettings) -> Next {
    let generation = keys.iter().map(|k| k.generation).max().unwrap_or(0) + 1;
    let signing_now = keys
        .iter()
        .any(|k| k.signs_from <= now && now < k.signs_until);
    let signs_from = if signing_now {
        now + secs(settings.publish_ahead)
    } else {
        now
    };
    Next {
        generation,
        signs_from,
        signs_until: signs_from + secs(settings.rotate_every),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningAlgorithm;
    use std::time::Duration;

    fn settings() -> SigningSettings {
        SigningSettings {
            algorithm: SigningAlgorithm::Es256,
            rotate_every: Duration::from_secs(1000),
            publish_ahead: Duration::from_secs(100),
            jwt_ttl: Duration::from_secs(10),
        }
    }

    fn span(generation: i64, signs_from: i64, signs_until: i64) -> Span {
        Span {
            generation,
            signs_from,
            signs_until,
        }
    }

    #[test]
    fn first_key_signs_at_once() {
        assert_eq!(
            due(&[], 5, &settings()),
            Some(Next {
                generation: 1,
                signs_from: 5,
                signs_until: 1005
            })
        );
    }

    #[test]
    fn successor_is_due_publish_ahead_before_the_turn_ends() {
        let keys = [span(1, 0, 1000)];
        assert_eq!(due(&keys, 899, &settings()), None);
        assert_eq!(
            due(&keys, 900, &settings()),
            Some(Next {
                generation: 2,
                signs_from: 1000,
                signs_until: 2000
            })
        );
        // Once the successor exists, nothing more is due.
        let keys = [span(1, 0, 1000), span(2, 1000, 2000)];
        assert_eq!(due(&keys, 950, &settings()), None);
    }

    #[test]
    fn a_lapsed_schedule_starts_again_at_once() {
        let keys = [span(3, 0, 1000)];
        assert_eq!(
            due(&keys, 5000, &settings()),
            Some(Next {
                generation: 4,
                signs_from: 5000,
                signs_until: 6000
            })
        );
    }

    #[test]
    fn forced_rotation_signs_after_publish_ahead() {
        let keys = [span(1, 0, 1000)];
        assert_eq!(
            forced(&keys, 10, &settings()),
            Next {
                generation: 2,
                signs_from: 110,
                signs_until: 1110
            }
        );
        assert_eq!(forced(&[], 10, &settings()).signs_from, 10);
    }
}
