//! The control socket: status, pause at a landmark, digest, resume.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Vmm(Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Api(BufReader<UnixStream>);

impl Api {
    fn connect(path: &std::path::Path) -> Api {
        let start = Instant::now();
        loop {
            match UnixStream::connect(path) {
                Ok(s) => return Api(BufReader::new(s)),
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("cannot connect to the API socket: {e}"),
            }
        }
    }

    fn call(&mut self, request: Value) -> Value {
        let stream = self.0.get_mut();
        stream
            .write_all(format!("{request}\n").as_bytes())
            .expect("send");
        let mut line = String::new();
        self.0.read_line(&mut line).expect("reply");
        serde_json::from_str(&line).expect("reply is JSON")
    }
}

#[test]
fn pause_at_landmark_digest_and_resume() {
    common::require_kvm();
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("api.sock");
    let _vmm = Vmm(Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["--kernel", common::guest_elf().to_str().expect("path")])
        .args([
            "--cmdline",
            "guest.mode=ticks guest.hz=1000 guest.ticks=1000000",
        ])
        .args(["--api-sock", sock.to_str().expect("path")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn vmm"));
    let mut api = Api::connect(&sock);
    let status = api.call(json!({"cmd": "status"}));
    assert_eq!(status["ok"], json!(true), "{status}");
    assert_eq!(status["state"], json!("running"));

    let err = api.call(json!({"cmd": "digest"}));
    assert_eq!(err["ok"], json!(false), "digest needs a pause: {err}");

    let now = api.call(json!({"cmd": "status"}))["landmark"]
        .as_u64()
        .expect("landmark");
    let target = now + 200;
    let paused = api.call(json!({"cmd": "pause", "landmark": target}));
    assert_eq!(paused["state"], json!("paused"), "{paused}");
    assert_eq!(
        paused["landmark"],
        json!(target),
        "paused exactly at the landmark asked for"
    );

    // Paused means stopped: time passes (the PIT keeps firing on the host) but nothing changes.
    let d1 = api.call(json!({"cmd": "digest"}));
    std::thread::sleep(Duration::from_millis(100));
    let d2 = api.call(json!({"cmd": "digest"}));
    assert_eq!(d1["ok"], json!(true), "{d1}");
    assert_eq!(
        d1["memory"].as_str().map(str::len),
        Some(64),
        "sha256 hex: {d1}"
    );
    assert_eq!(d1, d2, "state changed while paused");

    let passed = api.call(json!({"cmd": "pause", "landmark": 1}));
    assert_eq!(passed["ok"], json!(false), "{passed}");

    assert_eq!(api.call(json!({"cmd": "resume"}))["ok"], json!(true));
    std::thread::sleep(Duration::from_millis(100));
    let later = api.call(json!({"cmd": "status"}));
    assert_eq!(later["state"], json!("running"));
    assert!(
        later["landmark"].as_u64().expect("landmark") > target,
        "guest did not run on: {later}"
    );
    let d3 = api.call(json!({"cmd": "pause"}));
    assert_eq!(d3["state"], json!("paused"));
    assert_ne!(
        api.call(json!({"cmd": "digest"}))["memory"],
        d1["memory"],
        "the tick counter moved"
    );

    let bad = api.call(json!({"cmd": "explode"}));
    assert_eq!(bad["ok"], json!(false), "{bad}");
}
