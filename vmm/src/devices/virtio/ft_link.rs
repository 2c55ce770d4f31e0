//! The VMM's end of a backend's FT control channel (crate ft_control; docs/PROTOCOL.md).
//! A reader thread turns the backend's messages into `DeviceEvent`s, so that completions are
//! applied, and outputs logged, at a landmark on the vCPU thread.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ft_control::{ControlError, Message, Role, VERSION};

use crate::inbox::{DeviceEvent, Inbox};
use crate::sync::lock;

#[derive(Debug, thiserror::Error)]
pub enum FtLinkError {
    #[error("cannot connect to the FT control socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("FT control handshake with {path} failed: {source}")]
    Handshake { path: String, source: ControlError },
}

/// A backend completion or output announcement, as the vCPU thread receives it.
#[derive(Debug)]
pub enum FtNotice {
    Completion {
        queue: u16,
        head: u16,
        len: u32,
        writes: Vec<ft_control::MemWrite>,
    },
    Output {
        id: u64,
        queue: u16,
        head: u16,
        digest: [u8; 32],
    },
}

/// Turns the backend's messages into `DeviceEvent`s for device `device` until the channel
/// ends. Messages are read through a buffer and posted in batches: everything that arrived
/// together wakes the vCPU once.
fn read_loop(name: &str, device: usize, stream: UnixStream, inbox: &Inbox) {
    let mut reader = BufReader::with_capacity(256 << 10, stream);
    let mut batch = Vec::new();
    loop {
        let notice = match Message::read_from(&mut reader) {
            Ok(Some(Message::Completion {
                queue,
                head,
                len,
                writes,
            })) => FtNotice::Completion {
                queue,
                head,
                len,
                writes,
            },
            Ok(Some(Message::OutputReady {
                id,
                queue,
                head,
                digest,
            })) => FtNotice::Output {
                id,
                queue,
                head,
                digest,
            },
            Ok(Some(other)) => {
                log::error!("FT control {name}: unexpected {other:?}; closing");
                break;
            }
            Ok(None) => {
                log::warn!("FT control {name}: backend closed the channel");
                break;
            }
            Err(e) => {
                log::error!("FT control {name}: {e}");
                break;
            }
        };
        batch.push(DeviceEvent::Ft(device, notice));
        // The next read would wait for the backend: hand over what we have.
        if reader.buffer().is_empty() {
            inbox.post_all(batch.drain(..));
        }
    }
    inbox.post_all(batch.drain(..));
}

/// The write side, shared by the vCPU thread and the logging channel's ack reader.
#[derive(Debug)]
pub struct FtLink {
    writer: Mutex<UnixStream>,
    path: String,
}

impl FtLink {
    /// Connects to `path` as `role` and starts the reader thread for device `device`.
    pub fn connect(
        path: &Path,
        role: Role,
        device: usize,
        inbox: Arc<Inbox>,
    ) -> Result<Arc<Self>, FtLinkError> {
        let p = path.display().to_string();
        let mut stream = UnixStream::connect(path).map_err(|source| FtLinkError::Connect {
            path: p.clone(),
            source,
        })?;
        Message::Hello {
            version: VERSION,
            role,
        }
        .write_to(&mut stream)
        .map_err(|source| FtLinkError::Handshake {
            path: p.clone(),
            source,
        })?;
        match Message::read_from(&mut stream) {
            Ok(Some(Message::HelloAck { version })) if version == VERSION => {}
            Ok(other) => {
                let source = ControlError::Malformed("expected HelloAck");
                log::error!("FT control {p}: got {other:?}");
                return Err(FtLinkError::Handshake { path: p, source });
            }
            Err(source) => return Err(FtLinkError::Handshake { path: p, source }),
        }
        let reader = stream.try_clone().map_err(|source| FtLinkError::Connect {
            path: p.clone(),
            source,
        })?;
        let name = p.clone();
        std::thread::Builder::new()
            .name("ft-control".into())
            .spawn(move || {
                crate::seccomp::enter(crate::seccomp::ThreadKind::Ft);
                read_loop(&name, device, reader, &inbox)
            })
            .map_err(|source| FtLinkError::Connect {
                path: p.clone(),
                source,
            })?;
        Ok(Arc::new(FtLink {
            writer: Mutex::new(stream),
            path: p,
        }))
    }

    /// Connects to each backend's FT control socket as the primary (index = virtio slot);
    /// `None` where a device has no FT control socket.
    pub fn connect_all(
        sockets: &[Option<std::path::PathBuf>],
        inbox: &Arc<Inbox>,
    ) -> Result<Vec<Option<Arc<Self>>>, FtLinkError> {
        sockets
            .iter()
            .enumerate()
            .map(|(index, socket)| {
                socket
                    .as_ref()
                    .map(|path| Self::connect(path, Role::Primary, index, inbox.clone()))
                    .transpose()
            })
            .collect()
    }

    fn send(&self, m: Message) {
        let mut w = lock(&self.writer);
        if let Err(e) = m.write_to(&mut *w) {
            log::error!("FT control {}: {e}", self.path);
        }
    }

    /// Lets outputs up to `id` leave.
    pub fn release(&self, id: u64) {
        self.send(Message::Release { id });
    }

    pub fn set_role(&self, role: Role) {
        self.send(Message::SetRole { role });
    }
}
