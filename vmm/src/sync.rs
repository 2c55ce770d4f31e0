//! Locking shared by the VMM's threads.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, also when another thread panicked while holding it. Every critical section in
/// the VMM is a handful of field updates (a queue push, a timestamp, a counter), so a poisoned
/// lock still guards consistent data; refusing it would turn one thread's panic into a stop
/// of the whole VM (and of its replication).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
