//! The NBD client against nbdkit (a second, independent server implementation).

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_sign_loss)]
mod common;

use common::*;
use vhost_blk_remote::nbd::{Client, ClientOptions, NbdUri};

#[test]
fn nbdkit_memory_round_trip() {
    let t = TempDir::new("kitmem");
    let sock = t.path("kit.sock");
    let _srv = nbdkit(&sock, &["memory", "size=8M"], &t.path("kit.log"));
    let uri = NbdUri::parse(&unix_uri("", &sock)).unwrap();
    let c = Client::connect(&uri, ClientOptions::default()).expect("connect to nbdkit");
    let info = c.info();
    assert_eq!(info.size, 8 << 20);
    assert!(!info.read_only());
    assert_bytes(&c.read_at(0, 4096).unwrap(), &vec![0u8; 4096], "data");
    let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 253) as u8).collect();
    c.write_at(1 << 20, &data).unwrap();
    if info.can_flush() {
        c.flush().unwrap();
    }
    assert_bytes(&c.read_at(1 << 20, data.len()).unwrap(), &data, "data");
    if info.can_trim() {
        c.trim(1 << 20, 4096).unwrap();
        assert_bytes(&c.read_at(1 << 20, 4096).unwrap(), &vec![0u8; 4096], "data");
    }
}

#[test]
fn nbdkit_file_round_trip() {
    let t = TempDir::new("kitfile");
    let img = t.path("disk.img");
    make_image(&img, 2 << 20);
    let sock = t.path("kit.sock");
    let _srv = nbdkit(&sock, &["file", img.to_str().unwrap()], &t.path("kit.log"));
    let uri = NbdUri::parse(&unix_uri("", &sock)).unwrap();
    let c = Client::connect(&uri, ClientOptions::default()).expect("connect to nbdkit");
    assert_eq!(c.info().size, 2 << 20);
    assert_bytes(
        &c.read_at(4096, 512).unwrap(),
        &read_file_at(&img, 4096, 512),
        "data",
    );
    c.write_at(512 * 7, &[0xab; 1024]).unwrap();
    c.flush().unwrap();
    assert_bytes(
        &read_file_at(&img, 512 * 7, 1024),
        &vec![0xab; 1024],
        "data",
    );
}

/// nbdkit advertising a 512-byte minimum and a 64 KiB maximum block size: large requests
/// are split, unaligned ones are refused before reaching the server.
#[test]
fn nbdkit_block_size_constraints_are_honoured() {
    let t = TempDir::new("kitbs");
    let sock = t.path("kit.sock");
    let _srv = nbdkit(
        &sock,
        &[
            "--filter=blocksize-policy",
            "memory",
            "size=8M",
            "blocksize-minimum=512",
            "blocksize-preferred=4096",
            "blocksize-maximum=65536",
            "blocksize-error-policy=error",
        ],
        &t.path("kit.log"),
    );
    let uri = NbdUri::parse(&unix_uri("", &sock)).unwrap();
    let c = Client::connect(&uri, ClientOptions::default()).expect("connect to nbdkit");
    let info = c.info();
    assert_eq!(
        (info.min_block, info.preferred_block, info.max_payload),
        (512, 4096, 65536)
    );
    let data: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 249) as u8).collect();
    c.write_at(512, &data).unwrap();
    assert_bytes(
        &c.read_at(512, data.len()).unwrap(),
        &data,
        "split round trip",
    );
    assert!(matches!(
        c.write_at(100, &[1; 512]),
        Err(vhost_blk_remote::nbd::NbdError::Unaligned { .. })
    ));
}
