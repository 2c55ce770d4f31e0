//! The sending half of the FT connection.
//!
//! Messages to the VMM (`Completion`, `OutputReady`) come from several threads (the vring
//! worker, the NBD reader); the mutex keeps each frame whole. A failed write (including
//! `ft_backend`'s write timeout) means the connection is broken: [`VmmConn::send`] shuts it
//! down, the server's reader then sees the end and puts the backend back into plain mode,
//! and the caller falls back to plain behaviour for the message it could not send.

use std::sync::{Mutex, MutexGuard};

use ft_backend::VmmConn;
use ft_control::{ControlError, Message};

#[derive(Default)]
struct State {
    conn: Option<VmmConn>,
    /// FT mode: completions go to the VMM.
    primary: bool,
}

/// The writer side of the current FT connection, if any.
#[derive(Default)]
pub struct Link {
    state: Mutex<State>,
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A VMM connected: answers its `Hello` and installs the connection, under one lock so
    /// that no other message can precede the answer.
    pub fn install(&self, mut conn: VmmConn, primary: bool) -> Result<(), ControlError> {
        let mut st = self.lock();
        conn.greet()?;
        st.conn = Some(conn);
        st.primary = primary;
        Ok(())
    }

    /// The serial of the installed connection.
    pub fn serial(&self) -> Option<u64> {
        self.lock().conn.as_ref().map(VmmConn::serial)
    }

    /// The connection ended: back to plain mode.
    pub fn clear(&self) {
        let mut st = self.lock();
        st.conn = None;
        st.primary = false;
    }

    pub fn set_primary(&self, primary: bool) {
        self.lock().primary = primary;
    }

    /// In FT mode, sends `make()` and returns `true`. Returns `false` in plain mode or when
    /// the connection just broke: the caller then applies the completion itself.
    pub fn send_if_primary(&self, make: impl FnOnce() -> Message) -> bool {
        let mut st = self.lock();
        if !st.primary {
            return false;
        }
        Self::send_locked(&mut st, &make())
    }

    /// Sends `msg` if a VMM is connected; `false` if it could not be sent.
    pub fn send(&self, msg: &Message) -> bool {
        Self::send_locked(&mut self.lock(), msg)
    }

    fn send_locked(st: &mut State, msg: &Message) -> bool {
        let Some(conn) = st.conn.as_mut() else {
            return false;
        };
        if conn.send(msg).is_ok() {
            return true;
        }
        // Shut down by the failed send; dropping it ends FT mode at once.
        st.conn = None;
        st.primary = false;
        false
    }
}
