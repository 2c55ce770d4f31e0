//! Bad command-line input: a clear one-line error and a non-zero exit, never a panic.

mod common;

use std::io::Write;
use std::time::Duration;

use common::run_vmm;

const TIMEOUT: Duration = Duration::from_secs(20);

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn missing_kernel_is_one_clear_line() {
    let run = run_vmm(&["--kernel", "/nonexistent/kernel.elf"], TIMEOUT);
    assert_eq!(run.status, Some(1));
    let lines = error_lines(&run.stderr);
    assert_eq!(lines.len(), 1, "stderr:\n{}", run.stderr);
    assert!(
        lines[0].starts_with("vmm: error: cannot open kernel /nonexistent/kernel.elf"),
        "{}",
        lines[0]
    );
}

#[test]
fn garbage_kernel_is_one_clear_line() {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(&[0xa5u8; 8192]).expect("write");
    let path = f.path().to_str().expect("utf-8").to_string();
    let run = run_vmm(&["--kernel", &path], TIMEOUT);
    assert_eq!(run.status, Some(1));
    let lines = error_lines(&run.stderr);
    assert_eq!(lines.len(), 1, "stderr:\n{}", run.stderr);
    assert!(
        lines[0].contains("neither an x86_64 ELF executable nor a bzImage"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(&path), "{}", lines[0]);
}

#[test]
fn bad_memory_size_is_refused() {
    let run = run_vmm(&["--kernel", "/nonexistent", "--mem-mib", "3"], TIMEOUT);
    assert_eq!(run.status, Some(1));
    assert!(
        run.stderr.contains("multiple of 2 MiB"),
        "stderr:\n{}",
        run.stderr
    );
}

#[test]
fn bad_serial_option_is_a_usage_error() {
    let run = run_vmm(&["--kernel", "x", "--serial", "tty"], TIMEOUT);
    assert_eq!(run.status, Some(2));
    assert!(
        run.stderr.contains("expected `stdout` or `file:PATH`"),
        "stderr:\n{}",
        run.stderr
    );
}
