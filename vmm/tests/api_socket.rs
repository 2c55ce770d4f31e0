//! The control socket: status, pause at a landmark, digest, resume.

mod common;

use std::time::Duration;

use common::Api;
use serde_json::json;

#[test]
fn pause_at_landmark_digest_and_resume() {
    common::require_kvm();
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("api.sock");
    let _vmm = common::spawn_with_api("guest.mode=ticks guest.hz=1000 guest.ticks=1000000", &sock);
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
