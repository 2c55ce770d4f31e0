//! The sending half of the FT connection.
//!
//! Messages to the VMM (`Completion`, `OutputReady`) come from several threads (the vring
//! worker, the NBD reader); the mutex keeps each frame whole. A failed write means the
//! connection is broken: it is shut down (the connection's reader thread then sees the end
//! and puts the backend back into plain mode) and the caller falls back to plain behaviour
//! for the message it could not send.
//!
//! Writes block while the VMM does not read (no timeout on purpose: giving up would end the
//! FT connection, i.e. discard the held outputs and stall the vhost-user connection behind
//! them, on the say-so of a timer rather than the VMM).

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};

use ft_control::Message;

#[derive(Default)]
struct State {
    stream: Option<UnixStream>,
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

    /// A VMM connected: sends `greeting` (the handshake's answer) and installs the stream,
    /// under one lock so that no other message can precede the greeting.
    pub fn install(&self, stream: UnixStream, primary: bool, greeting: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        (&stream).write_all(greeting)?;
        st.stream = Some(stream);
        st.primary = primary;
        Ok(())
    }

    /// The connection ended: back to plain mode.
    pub fn clear(&self) {
        let mut st = self.lock();
        st.stream = None;
        st.primary = false;
    }

    pub fn set_primary(&self, primary: bool) {
        self.lock().primary = primary;
    }

    /// Whether completions currently go to the VMM.
    pub fn is_primary(&self) -> bool {
        let st = self.lock();
        st.primary && st.stream.is_some()
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
        let Some(stream) = st.stream.as_ref() else {
            return false;
        };
        let mut w: &UnixStream = stream;
        match msg.write_to(&mut w) {
            Ok(()) => true,
            Err(e) => {
                log::error!("FT connection: sending failed ({e}); dropping the connection");
                // A partly written frame leaves the stream unusable: end it for both sides.
                if let Err(e) = stream.shutdown(Shutdown::Both) {
                    log::debug!("FT connection: shutdown: {e}");
                }
                st.stream = None;
                st.primary = false;
                false
            }
        }
    }
}
