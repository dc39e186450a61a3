//! The grant version check, written once: a write names the version it
//! read, and lands only if the grant is still live and at that version.
//! Both stores apply it inside their compare-and-set, and the mutate
//! operation applies it to `if_version` before it does any work.

use crate::store::GrantUpdate;

/// The version a write at `expected` gives the grant, or why it may not
/// land: `current` is the stored grant's version and revoked flag (`None`:
/// no such grant).
pub fn next(current: Option<(i64, bool)>, expected: i64) -> Result<i64, GrantUpdate> {
    match current {
        None | Some((_, true)) => Err(GrantUpdate::Gone),
        Some((version, false)) if version != expected => Err(GrantUpdate::Conflict(version)),
        Some((version, false)) => Ok(version + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_lands_only_on_the_version_it_read() {
        assert_eq!(next(Some((3, false)), 3), Ok(4));
        assert_eq!(next(Some((4, false)), 3), Err(GrantUpdate::Conflict(4)));
        assert_eq!(next(Some((3, true)), 3), Err(GrantUpdate::Gone));
        assert_eq!(next(None, 3), Err(GrantUpdate::Gone));
    }
}
