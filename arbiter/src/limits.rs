//! What the arbiter allows a client: how far ahead an epoch may be, how long a connection
//! may stay idle, how many connections it keeps (docs/PROTOCOL.md, "Arbiter").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far an epoch may be ahead of the arbiter's own clock, in ms.
///
/// Why a clock and not "the highest granted epoch + N": a VMM picks an epoch as
/// `max(now in ms since 1970, previous + 1)` when a backup joins (vmm/src/ft/failover.rs,
/// `next_epoch`), so a genuine epoch after a quiet month is a month above the last grant,
/// while it is never ahead of the wall clock by more than the skew between that host's
/// clock and the arbiter's (the `previous + 1` steps are 1 ms per join, and a join takes
/// far longer than 1 ms). A bound relative to the highest grant could also be ratcheted up
/// by repeated claims; the clock cannot. Without the bound one claim of epoch 2^64-1 makes
/// every later genuine epoch stale, and both sides of every failover halt.
///
/// Ten minutes tolerates any clock kept by NTP (and a badly set one by minutes); a claim
/// can at most make the pairings of the next ten minutes stale. A refused epoch becomes
/// acceptable once the arbiter's clock catches up, and a client retries a refusal (it is
/// an error reply, never a grant), so a host whose clock is too far ahead waits instead of
/// splitting the brain.
pub const EPOCH_SLACK_MS: u64 = 10 * 60 * 1000;

/// A connection that has not completed a request for this long is closed. A VMM sends its
/// request as soon as it is connected and closes after the reply (a new connection per
/// attempt), so a few seconds is generous; an idle or trickling socket cannot hold a slot.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections kept per client IP address. A new connection beyond this closes that
/// address's longest-idle one: a flood from one address displaces only its own connections,
/// and a genuine request from a shared address is still accepted (the VMM retries a
/// connection that was closed under it every 200 ms).
pub const MAX_PER_IP: usize = 128;

/// Connections kept in all; beyond this the longest-idle one is closed (also lowered to
/// what RLIMIT_NOFILE allows, see `server::connection_limit`).
pub const MAX_CONNECTIONS: usize = 8192;

/// Bytes of replies queued for a client that does not read them; until they drain the
/// arbiter stops reading that connection's requests.
pub const MAX_QUEUED_REPLY: usize = 64 * 1024;

/// Refuses an epoch more than EPOCH_SLACK_MS ahead of `now_ms`. The error is the text of
/// the `error` reply.
pub fn check_epoch(epoch: u64, now_ms: u64) -> Result<(), String> {
    if epoch > now_ms.saturating_add(EPOCH_SLACK_MS) {
        return Err(format!(
            "epoch {epoch} is more than {EPOCH_SLACK_MS} ms ahead of the arbiter's clock \
             ({now_ms} ms since 1970); refused (epochs are ms since 1970: check this host's clock)"
        ));
    }
    Ok(())
}

/// The wall clock in ms since 1970 (0 if it is set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_bound() {
        let now = 1_700_000_000_000;
        assert!(check_epoch(0, now).is_ok());
        assert!(check_epoch(1, now).is_ok());
        assert!(check_epoch(now, now).is_ok());
        assert!(check_epoch(now + EPOCH_SLACK_MS, now).is_ok());
        let e = check_epoch(now + EPOCH_SLACK_MS + 1, now).unwrap_err();
        assert!(e.contains("ahead of the arbiter's clock"), "{e}");
        assert!(check_epoch(u64::MAX, now).is_err());
        // A clock at the end of time does not overflow.
        assert!(check_epoch(u64::MAX, u64::MAX).is_ok());
    }

    #[test]
    fn a_genuine_next_epoch_is_accepted() {
        // What the VMM sends: next_epoch's "now" on a host whose clock is a minute ahead.
        let now = now_ms();
        assert!(check_epoch(now + 60_000, now).is_ok());
        assert!(now > 1_600_000_000_000);
    }
}
