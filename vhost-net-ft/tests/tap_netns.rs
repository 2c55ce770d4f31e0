//! TAP tests in a private network namespace (needs root): frames written on the guest side
//! appear on the TAP interface and frames sent to the interface arrive on the guest side;
//! the TAP's lifetime follows the documented rule.

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;
use vhost_net_ft::net::hdr::VNET_HDR_LEN;
use vhost_net_ft::net::rx::{RxFrame, RX_SCRATCH_LEN};
use vhost_net_ft::tap::Tap;

/// Polls the non-blocking TAP until a packet matching `pred` is read.
fn read_tap_matching(
    tap: &Tap,
    timeout: Duration,
    pred: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; RX_SCRATCH_LEN];
    while Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        match tap.read_packet(&mut buf) {
            Ok(n) if pred(&buf[..n]) => return Some(buf[..n].to_vec()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("TAP read: {e}"),
        }
    }
    None
}

#[test]
fn frames_cross_the_tap_both_ways() {
    let ns = NetNs::new();
    ns.run_in(|| {
        let tap = Tap::open("vnft0").expect("open TAP");
        assert_eq!(tap.name(), "vnft0");
        assert!(tap.created());
        let sock = PacketSocket::open("vnft0").expect("packet socket");

        // Guest side -> TAP: a packet with the 12-byte header leaves as a bare frame.
        for (tag, len) in [(1u32, 46usize), (2, 1500 - 4)] {
            let frame = test_frame(BROADCAST, GUEST_MAC, tag, len);
            let mut packet = vec![0u8; VNET_HDR_LEN];
            packet.extend_from_slice(&frame);
            tap.write_packet(&packet).expect("write to TAP");
            let got = sock
                .recv_matching(Duration::from_secs(5), |f| is_test_frame(f, tag))
                .unwrap_or_else(|| panic!("frame {tag} not seen on vnft0"));
            assert_eq!(got, frame);
        }

        // Interface -> guest side: a frame sent to the interface is read with a 12-byte
        // header that the RX path accepts and turns into the guest's header.
        let frame = test_frame(GUEST_MAC, PEER_MAC, 3, 100);
        sock.send(&frame).expect("send on vnft0");
        let packet = read_tap_matching(&tap, Duration::from_secs(5), |p| {
            p.len() > VNET_HDR_LEN && is_test_frame(&p[VNET_HDR_LEN..], 3)
        })
        .expect("frame not read from the TAP");
        assert_eq!(&packet[VNET_HDR_LEN..], &frame[..]);
        let rx = RxFrame::from_tap(&packet).expect("accepted by the RX path");
        assert_eq!(rx.frame(), &frame[..]);
        assert_eq!(rx.packet()[10], 1, "num_buffers = 1");
    });
}

#[test]
fn backend_creates_its_tap_and_it_vanishes_on_exit() {
    let ns = NetNs::new();
    let dir = TempDir::new();
    let mut b = Backend::start(&ns, &dir.0, "vnft1", GUEST_MAC_STR);
    assert!(ns.has_link("vnft1"), "TAP created");
    let st = b.signal_and_wait(libc::SIGTERM);
    assert!(
        st.success(),
        "clean exit on SIGTERM: {st}\n{}",
        b.log_text()
    );
    assert!(!b.socket.exists(), "socket removed");
    assert!(!ns.has_link("vnft1"), "TAP created by the backend is gone");

    // Also gone after SIGKILL (the kernel removes a non-persistent TAP with its last fd).
    let mut b = Backend::start(&ns, &dir.0, "vnft1", GUEST_MAC_STR);
    assert!(ns.has_link("vnft1"));
    b.signal_and_wait(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ns.has_link("vnft1") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!ns.has_link("vnft1"), "TAP gone after SIGKILL");
}

#[test]
fn existing_tap_is_used_and_left_in_place() {
    let ns = NetNs::new();
    ns.ip(&["tuntap", "add", "dev", "vnft2", "mode", "tap"])
        .expect("ip tuntap add");
    let dir = TempDir::new();
    let mut b = Backend::start(&ns, &dir.0, "vnft2", GUEST_MAC_STR);
    let st = b.signal_and_wait(libc::SIGTERM);
    assert!(st.success(), "{st}");
    assert!(
        b.log_text().contains("attached to existing device"),
        "{}",
        b.log_text()
    );
    assert!(ns.has_link("vnft2"), "a pre-existing TAP stays");
}

#[test]
fn bad_arguments_fail_cleanly() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vhost-net-ft"))
        .args([
            "--socket",
            "/nonexistent-dir/x.sock",
            "--tap",
            "vnft3",
            "--mac",
            "01:00:5e:00:00:01",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid MAC"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vhost-net-ft"))
        .args(["--socket", "/tmp/x.sock", "--tap", "this-name-is-too-long"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid TAP interface name"));
}
