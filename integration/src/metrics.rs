//! The processes' Prometheus endpoints (`--metrics-listen`) as the tests see them: where
//! each listens inside its host's namespace, a scrape with curl, `promtool check metrics`,
//! and reading a value out of the text exposition format.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::netns::exec_prefix;
use crate::stack::StackError;

/// Which process of a host to scrape; each listens on its own port of the host's loopback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Vmm,
    Net,
    Blk,
}

impl Component {
    pub fn port(self) -> u16 {
        match self {
            Component::Vmm => 9100,
            Component::Net => 9101,
            Component::Blk => 9102,
        }
    }

    /// The `--metrics-listen` value.
    pub fn listen(self) -> String {
        format!("127.0.0.1:{}", self.port())
    }
}

/// `curl http://127.0.0.1:PORT/metrics` inside namespace `ns`: the body, or why not.
pub fn scrape(ns: &str, c: Component) -> Result<String, StackError> {
    let url = format!("http://127.0.0.1:{}/metrics", c.port());
    let mut argv = exec_prefix(ns);
    argv.extend(["curl", "-sS", "-f", "--max-time", "10", &url].map(String::from));
    let out = Command::new(&argv[0]).args(&argv[1..]).output()?;
    if !out.status.success() {
        return Err(StackError::Other(format!(
            "curl {url} in {ns} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `promtool check metrics` on `text`: Ok, or promtool's complaints.
pub fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool (Debian package prometheus): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("promtool stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "promtool check metrics ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// The value of the series `series` (name and labels exactly as exposed, e.g.
/// `vmm_ft_role{role="primary"}`), if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum of every series of metric `name` (all label sets; not `name_bucket` and such).
pub fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = match rest.strip_prefix('{') {
                Some(labels) => labels.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            rest.trim().parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"x\"} 2\na_total{k=\"y\"} 3\na_total_extra 100\nb 1.5\n";

    #[test]
    fn values_and_sums_are_read_by_exact_series() {
        assert_eq!(value(TEXT, "a_total{k=\"y\"}"), Some(3.0));
        assert_eq!(value(TEXT, "b"), Some(1.5));
        assert_eq!(value(TEXT, "a_total"), None);
        assert_eq!(sum(TEXT, "a_total"), 5.0);
        assert_eq!(sum(TEXT, "c"), 0.0);
    }
}
