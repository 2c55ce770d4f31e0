//! A test client for the backend's FT socket (plays the VMM's side of ft-control) and a
//! helper that applies a `Completion` to the harness's guest memory like the VMM would.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ft_control::{MemWrite, Message, Role, VERSION};
use vhost_harness::Harness;
use vm_memory::GuestAddress;

/// Connects to a Unix socket, retrying while it does not exist / accept yet.
pub fn connect_retry(path: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                log::debug!("connect {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot connect to {}: {e}", path.display()),
        }
    }
}

/// The VMM end of an FT connection. Messages from the backend are read by a thread.
pub struct FtClient {
    stream: UnixStream,
    rx: mpsc::Receiver<Message>,
    reader: Option<JoinHandle<()>>,
}

impl FtClient {
    /// Connects and completes the handshake with `role`.
    pub fn connect(path: &Path, role: Role) -> FtClient {
        let mut s = connect_retry(path);
        Message::Hello {
            version: VERSION,
            role,
        }
        .write_to(&mut s)
        .expect("send Hello");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let ack = Message::read_from(&mut s).expect("read HelloAck");
        assert_eq!(ack, Some(Message::HelloAck { version: VERSION }));
        s.set_read_timeout(None).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut r = s.try_clone().expect("clone");
        let reader = std::thread::spawn(move || {
            while let Ok(Some(m)) = Message::read_from(&mut r) {
                if tx.send(m).is_err() {
                    break;
                }
            }
        });
        FtClient {
            stream: s,
            rx,
            reader: Some(reader),
        }
    }

    pub fn send(&self, m: &Message) {
        m.write_to(&mut &self.stream).expect("send to the backend");
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        use std::io::Write;
        (&self.stream).write_all(bytes).expect("send raw bytes");
    }

    /// A second handle for sending from another thread.
    pub fn sender(&self) -> UnixStream {
        self.stream.try_clone().expect("clone")
    }

    /// The next message, or `None` after `t`.
    pub fn recv(&self, t: Duration) -> Option<Message> {
        self.rx.recv_timeout(t).ok()
    }

    /// Asserts that nothing arrives for `t`.
    #[track_caller]
    pub fn expect_nothing(&self, t: Duration) {
        if let Some(m) = self.recv(t) {
            panic!("unexpected message from the backend: {}", brief(&m));
        }
    }

    /// Waits up to `t` for the backend to close the connection.
    pub fn closed_within(&self, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(_) => continue,
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// The next message, which must be a `Completion`: (head, len, writes).
    #[track_caller]
    pub fn completion(&self, t: Duration) -> (u16, u32, Vec<MemWrite>, Message) {
        match self.recv(t) {
            Some(
                m @ Message::Completion {
                    queue: 0,
                    head,
                    len,
                    ..
                },
            ) => {
                let Message::Completion { writes, .. } = &m else {
                    unreachable!()
                };
                (head, len, writes.clone(), m)
            }
            Some(m) => panic!("expected a Completion, got {}", brief(&m)),
            None => panic!("no Completion within {t:?}"),
        }
    }

    /// The next message, which must be an `OutputReady` of queue 0: (id, head, digest).
    #[track_caller]
    pub fn output(&self, t: Duration) -> (u64, u16, [u8; 32]) {
        match self.recv(t) {
            Some(Message::OutputReady {
                id,
                queue: 0,
                head,
                digest,
            }) => (id, head, digest),
            Some(m) => panic!("expected an OutputReady, got {}", brief(&m)),
            None => panic!("no OutputReady within {t:?}"),
        }
    }
}

impl Drop for FtClient {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A message without its payload bytes, for assertion messages.
pub fn brief(m: &Message) -> String {
    match m {
        Message::Completion {
            queue,
            head,
            len,
            writes,
        } => format!(
            "Completion {{ queue: {queue}, head: {head}, len: {len}, {} write(s) }}",
            writes.len()
        ),
        other => format!("{other:?}"),
    }
}

/// Applies a `Completion` like the VMM does at a landmark: the memory writes, then the used
/// element at the used index, then the used index.
pub fn vmm_apply(h: &mut Harness, m: &Message) {
    let Message::Completion {
        head, len, writes, ..
    } = m
    else {
        panic!("not a completion: {}", brief(m));
    };
    for w in writes {
        h.write(GuestAddress(w.gpa), &w.data).expect("apply write");
    }
    let q = h.queue(0).expect("queue 0");
    let (used, size) = (q.used, q.size);
    let idx = h.used_idx(0).expect("used idx");
    let mut elem = u32::from(*head).to_le_bytes().to_vec();
    elem.extend_from_slice(&len.to_le_bytes());
    h.write(GuestAddress(used.0 + 4 + 8 * u64::from(idx % size)), &elem)
        .expect("used element");
    h.write(GuestAddress(used.0 + 2), &idx.wrapping_add(1).to_le_bytes())
        .expect("used idx");
}

/// qemu-nbd serving a fresh image + the backend with an FT socket. Fields drop in order:
/// processes before the directory.
pub struct FtRig {
    pub backend: super::Proc,
    pub qemu: Option<super::Proc>,
    pub img: PathBuf,
    pub nsock: PathBuf,
    pub vsock: PathBuf,
    pub fsock: PathBuf,
    pub t: super::TempDir,
}

impl FtRig {
    /// A `size`-byte image; `extra` are more backend arguments.
    pub fn start(tag: &str, size: usize, extra: &[&str]) -> FtRig {
        let t = super::TempDir::new(tag);
        let img = t.path("disk.img");
        super::make_image(&img, size);
        let nsock = t.path("nbd.sock");
        let vsock = t.path("vhost.sock");
        let fsock = t.path("ft.sock");
        let qemu = super::qemu_nbd(
            &img,
            "disk",
            super::Listen::Unix(&nsock),
            false,
            &t.path("qemu.log"),
        );
        let fs = fsock.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["--ft-socket", fs.as_str()];
        args.extend_from_slice(extra);
        let backend = super::backend(
            &vsock,
            &super::unix_uri("disk", &nsock),
            &args,
            &t.path("backend.log"),
        );
        FtRig {
            backend,
            qemu: Some(qemu),
            img,
            nsock,
            vsock,
            fsock,
            t,
        }
    }
}
