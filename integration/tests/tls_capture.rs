//! A capture on the logging link (issue 13, acceptance): while the guest stores a known value,
//! every frame on host-a's `ft0` is recorded with an AF_PACKET socket in that namespace. With
//! TLS the value is nowhere in them; with `--ft-insecure`, the control run, it is (the backup
//! gets the client's request as logged network input), so the capture does see the traffic.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration::cluster::{Cluster, HOSTS};
use integration::netns::in_ns;
use integration::topology::FT_LINK;

/// A raw socket on `dev` in namespace `ns`, receiving every frame (ETH_P_ALL).
fn packet_socket(ns: &str, dev: &'static str) -> OwnedFd {
    let ns_name = ns.to_string();
    in_ns(ns, move || {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh socket that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(dev).expect("name");
        // SAFETY: a valid NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(index > 0, "no {dev} in {ns_name:?}");
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: sll is a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        fd
    })
    .expect("namespace")
}

/// Records frames until `stop`; returns all their bytes.
fn capture(fd: OwnedFd, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: setting SO_RCVTIMEO with a valid timeval.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast::<libc::c_void>(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        let mut all = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::SeqCst) {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                all.extend_from_slice(&buf[..n as usize]);
            }
        }
        all
    })
}

/// Starts a protected pair, captures host-a's logging link while a client stores `value`,
/// and returns the capture.
fn captured_while_storing(c: &mut Cluster, value: &str) -> Vec<u8> {
    let ns = c.lab.topo.ns(HOSTS[0]);
    let stop = Arc::new(AtomicBool::new(false));
    let rec = capture(packet_socket(&ns, FT_LINK), stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        c.lab
            .redis_cli(&["set", "capture:key", value])
            .expect("set"),
        "OK"
    );
    assert_eq!(
        c.lab.redis_cli(&["get", "capture:key"]).expect("get"),
        value
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    rec.join().expect("capture thread")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_logging_link_carries_no_plaintext_of_a_stored_value() {
    let value = "known-value-7f3a9c1e5b2d4086a1c3e5f7";
    let mut c = Cluster::start_insecure(None, "", true).expect("insecure cluster");
    let clear = captured_while_storing(&mut c, value);
    assert!(
        contains(&clear, value.as_bytes()),
        "control run: {} bytes captured without TLS, and the value is not in them: the capture sees nothing",
        clear.len()
    );
    drop(c);
    let mut c = Cluster::start(None, "", true).expect("TLS cluster");
    let tls = captured_while_storing(&mut c, value);
    assert!(
        tls.len() > 1000,
        "only {} bytes captured with TLS",
        tls.len()
    );
    assert!(
        !contains(&tls, value.as_bytes()),
        "the value crossed the logging link in clear"
    );
    assert!(
        !contains(&tls, b"capture:key"),
        "the key crossed the logging link in clear"
    );
}
