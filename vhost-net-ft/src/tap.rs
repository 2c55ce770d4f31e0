//! The TAP device.
//!
//! [`Tap::open`] opens `/dev/net/tun` non-blocking and attaches it with `TUNSETIFF`
//! (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`) to the named interface, creating it if it does not
//! exist. It then sets the vnet header size to 12 (`TUNSETVNETHDRSZ`, the `VIRTIO_F_VERSION_1`
//! header), turns all offloads off (`TUNSETOFFLOAD 0`, so the kernel never hands us GSO or
//! partially checksummed packets) and sets the interface administratively up.
//!
//! Lifetime: the device is never made persistent (`TUNSETPERSIST` is not used). If this
//! process created it, the kernel removes it when the last file descriptor closes, i.e. when
//! the process exits for whatever reason (even `SIGKILL`). A device that already existed
//! (a persistent one made with `ip tuntap add`) is only detached and stays.
//!
//! Every `read` returns one packet and every `write` sends one packet, each starting with the
//! 12-byte virtio-net header (see [`crate::net::hdr`]).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use log::{debug, info};

use crate::error::TapError;
use crate::net::hdr::VNET_HDR_LEN;

/// An open, configured TAP device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    created: bool,
}

/// Checks an interface name as the kernel would (`dev_valid_name`), allowing a `%d` template.
pub fn validate_name(name: &str) -> Result<(), TapError> {
    let bad = name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace());
    if bad {
        Err(TapError::InvalidName(name.to_string()))
    } else {
        Ok(())
    }
}

/// Returns whether an interface of that name exists in this thread's network namespace.
pub fn interface_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; the function only
    // reads it.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

// The interface flags as the c_short of `ifr_flags` (netdevice(7)); they fit 16 bits.
#[allow(clippy::cast_possible_truncation)]
const IFF_UP: libc::c_short = libc::IFF_UP as libc::c_short;
#[allow(clippy::cast_possible_truncation)]
const TAP_FLAGS: libc::c_short =
    (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is a plain C struct (name array plus a union of integers, addresses and
    // a pointer) for which all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src.cast_signed();
    }
    ifr
}

fn name_of(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c.cast_unsigned())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sets `IFF_UP` on the interface (through an `AF_INET` datagram socket of this namespace).
fn set_up(name: &str) -> io::Result<()> {
    // SAFETY: plain socket(2) call with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ifr = ifreq_for(name);
    // SAFETY: SIOCGIFFLAGS reads the name and writes `ifru_flags` of the valid `ifr` we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled `ifru_flags` (a c_short) on success; reading that union
    // member is reading an initialized integer.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & IFF_UP != 0 {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = flags | IFF_UP;
    // SAFETY: SIOCSIFFLAGS only reads the valid `ifr` we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Tap {
    /// Opens (creating if needed) and configures the TAP device `name`; see the module docs.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        validate_name(name)?;
        let existed = !name.contains('%') && interface_exists(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let fd = file.as_raw_fd();

        let mut ifr = ifreq_for(name);
        ifr.ifr_ifru.ifru_flags = TAP_FLAGS;
        // SAFETY: TUNSETIFF reads and updates the valid `ifreq` we pass; `fd` is open.
        if unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut ifr) } < 0 {
            return Err(TapError::SetIff {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        let name = name_of(&ifr);

        let hdr_len = libc::c_int::try_from(VNET_HDR_LEN).unwrap_or(12);
        // SAFETY: TUNSETVNETHDRSZ reads one c_int through the pointer, which is valid.
        if unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ, &hdr_len) } < 0 {
            return Err(TapError::SetVnetHdrSz(io::Error::last_os_error()));
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an offload bit mask), no memory
        // is accessed.
        if unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, 0 as libc::c_ulong) } < 0 {
            return Err(TapError::SetOffload(io::Error::last_os_error()));
        }
        // O_NONBLOCK was given to open(2); make sure it is set.
        // SAFETY: F_GETFL on an open descriptor has no memory effects.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if fl < 0 {
            return Err(TapError::NonBlocking(io::Error::last_os_error()));
        }
        if fl & libc::O_NONBLOCK == 0 {
            // SAFETY: F_SETFL with an integer flag set on an open descriptor; no memory access.
            if unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
                return Err(TapError::NonBlocking(io::Error::last_os_error()));
            }
        }
        set_up(&name).map_err(|source| TapError::LinkUp {
            name: name.clone(),
            source,
        })?;
        info!(
            "TAP {name}: {} (removed on exit: {})",
            if existed {
                "attached to existing device"
            } else {
                "created"
            },
            !existed
        );
        Ok(Tap {
            file,
            name,
            created: !existed,
        })
    }

    /// The interface name (as the kernel reports it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this process created the interface (it then disappears when the process exits).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Reads one packet (virtio-net header + frame). `WouldBlock` when none is queued.
    pub fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one packet (virtio-net header + frame) as a single `write`.
    pub fn write_packet(&self, packet: &[u8]) -> io::Result<()> {
        let n = (&self.file).write(packet)?;
        if n != packet.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write to TAP: {n} of {} bytes", packet.len()),
            ));
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        debug!("closing TAP {}", self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_validated() {
        assert!(validate_name("tap0").is_ok());
        assert!(validate_name("vnft%d").is_ok());
        assert!(validate_name("123456789012345").is_ok());
        for bad in [
            "",
            "1234567890123456",
            "a/b",
            "a b",
            "a:b",
            ".",
            "..",
            "a\0b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn loopback_exists_and_nonsense_does_not() {
        assert!(interface_exists("lo"));
        assert!(!interface_exists("vnft-nonexist"));
    }
}
