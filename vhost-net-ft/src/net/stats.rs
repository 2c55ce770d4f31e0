//! Counters. Nothing is dropped without being counted here (and logged).
//!
//! The counters live for the whole process (they are shared by the backends of successive
//! connections) and are logged at `info` level when a connection ends and at exit.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Process-wide data path counters.
        #[derive(Debug, Default)]
        pub struct NetStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A plain copy of [`NetStats`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct NetStatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl NetStats {
            /// Reads all counters.
            pub fn snapshot(&self) -> NetStatsSnapshot {
                NetStatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl fmt::Display for NetStatsSnapshot {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut first = true;
                $(
                    if self.$name != 0 {
                        if !first { write!(f, " ")?; }
                        write!(f, "{}={}", stringify!($name), self.$name)?;
                        first = false;
                    }
                )*
                if first { write!(f, "(all zero)")?; }
                Ok(())
            }
        }
    };
}

counters! {
    /// Frames delivered to the guest.
    rx_frames,
    /// Bytes delivered to the guest (frames without virtio-net header).
    rx_bytes,
    /// RX chains refused (bad direction, outside memory, too short, broken) and returned with
    /// length 0.
    rx_bad_chains,
    /// Frames from the TAP refused because of their virtio-net header (offload requested).
    rx_dropped_bad_header,
    /// Frames from the TAP refused because of their length (runt, or larger than the guest's
    /// buffers).
    rx_dropped_bad_length,
    /// Frames that had been read from the TAP but were still waiting for a guest buffer when
    /// the frontend disconnected or reset the device.
    rx_dropped_no_queue,
    /// Errors reading the TAP (other than "would block").
    rx_tap_errors,
    /// Times the backend stopped polling the TAP because the guest had no RX buffer.
    rx_no_buffer,
    /// Frames sent to the TAP.
    tx_frames,
    /// Bytes sent to the TAP (frames without virtio-net header).
    tx_bytes,
    /// TX chains refused (bad direction, outside memory, too short/long, broken, bad header)
    /// and returned with length 0.
    tx_bad_chains,
    /// TX frames the TAP did not accept (write error, including "would block").
    tx_tap_errors,
    /// Used-ring updates that failed (the queue itself is unusable).
    used_ring_errors,
    /// RARP announcements of the guest MAC written to the TAP.
    announces,
    /// FT control connections accepted (handshake passed).
    ft_connections,
    /// FT control connections dropped for a bad handshake, garbage or a send failure.
    ft_bad_connections,
    /// Completions sent to the VMM instead of being written to the used ring.
    ft_completions,
    /// TX frames announced to the VMM and held until released.
    ft_outputs,
    /// Held TX frames discarded, never sent, because their FT connection ended before the
    /// VMM released them (a frame whose announcement failed included).
    ft_outputs_discarded,
}

impl NetStats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to a counter and returns the new value.
    pub fn inc(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    /// Whether the `n`-th occurrence of a repeating data-path error should be logged: the
    /// first ten, then every power of two (a misbehaving guest or a downed TAP must not flood
    /// the log; the counters still count everything).
    pub fn sampled(n: u64) -> bool {
        n <= 10 || n.is_power_of_two()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_non_zero_counters() {
        let s = NetStats::default();
        assert_eq!(s.snapshot().to_string(), "(all zero)");
        assert_eq!(NetStats::inc(&s.rx_frames), 1);
        NetStats::add(&s.tx_bytes, 60);
        assert_eq!(s.snapshot().to_string(), "rx_frames=1 tx_bytes=60");
    }

    #[test]
    fn sampling_logs_first_ten_then_powers_of_two() {
        let logged: Vec<u64> = (1..=100).filter(|&n| NetStats::sampled(n)).collect();
        assert_eq!(logged, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32, 64]);
    }
}
