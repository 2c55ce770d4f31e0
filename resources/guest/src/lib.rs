//! The test guest's pure logic: everything that needs neither the hardware nor the ring-0
//! shim, so that it can be unit-tested on the host (`cargo test --lib`, see README.md).
//!
//! - `kv`: the key-value server of the `kv` mode: the RESP protocol (`kv::resp`), the command
//!   set (`kv::commands`), the in-memory store (`kv::store`) and the append-only log on the
//!   disk (`kv::log`, `kv::crc32`).
//! - `devcfg`: parsing of the kv mode's command-line words (`virtio_mmio.device=`,
//!   `guest.ip=`, `guest.gw=`).
//!
//! It is `no_std` + `alloc` in the guest and links `std` only for its own unit tests.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod devcfg;
pub mod kv;
