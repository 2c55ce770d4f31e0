//! `ftctl`: the operator's CLI for a vmm's control socket (docs/PROTOCOL.md, "Control
//! socket"). Every failure is one line on stderr and a non-zero exit: 1 for a vmm that
//! refuses or cannot be reached, 2 for a command line that cannot be parsed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use vmm_api::{Client, ClientError, Request, Role, Status};

#[derive(Parser)]
#[command(
    name = "ftctl",
    about = "Control and watch a vmm (an FT primary or backup) through its --api-sock"
)]
struct Cli {
    /// The vmm's control socket (its --api-sock).
    #[arg(long, value_name = "PATH")]
    api_sock: PathBuf,
    /// How long to wait for each reply.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    timeout_ms: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The run state, the landmark and the FT figures, as a table.
    Status {
        /// The reply as the vmm sent it, one JSON object (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// A line a second: state, landmark, lag, log Mbit/s, hold p50/p99 (Ctrl-C ends it).
    Watch {
        /// Seconds between lines.
        #[arg(long, value_name = "S", default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many lines (default: never).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Pause the vCPU at LANDMARK (default: the next one); returns once paused.
    Pause {
        #[arg(long)]
        landmark: Option<u64>,
    },
    Resume,
    /// Paused only: SHA-256 of guest RAM and of the vCPU (compare primary and backup).
    Digest,
    /// FT primary without a backup: look for one at HOST:PORT from now on.
    Protect {
        peer: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad command line");
            eprintln!(
                "ftctl: {} (ftctl --help lists the commands)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ftctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<(), ClientError> {
    let mut client = Client::connect(&cli.api_sock, Duration::from_millis(cli.timeout_ms))?;
    match &cli.cmd {
        Cmd::Status { json: true } => println!("{}", client.call(&Request::Status)?),
        Cmd::Status { json: false } => print!("{}", table(&client.status()?)),
        Cmd::Watch { interval, count } => watch(&mut client, *interval, *count)?,
        Cmd::Pause { landmark } => {
            let paused = client.pause(*landmark)?;
            println!("paused at landmark {}", paused.landmark);
        }
        Cmd::Resume => {
            let resumed = client.resume()?;
            println!("running from landmark {}", resumed.landmark);
        }
        Cmd::Digest => {
            let d = client.digest()?;
            println!(
                "landmark {}\nrip      {:#x}\nmemory   {}\nvcpu     {}",
                d.landmark, d.rip, d.memory, d.vcpu
            );
        }
        Cmd::Protect { peer } => {
            let p = client.protect(*peer)?;
            println!("looking for a backup at {}", p.peer);
        }
    }
    Ok(())
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// `status` for a person: one `name  value` line per item that applies to this role.
pub fn table(s: &Status) -> String {
    let ft = &s.ft;
    let mut rows: Vec<(&str, String)> = vec![
        ("state", format!("{:?}", s.state).to_lowercase()),
        ("landmark", s.landmark.to_string()),
        ("role", format!("{:?}", ft.ft_role).to_lowercase()),
    ];
    if ft.ft_role != Role::Off || ft.ft_epoch.is_some() {
        rows.push(("epoch", opt(ft.ft_epoch)));
        rows.push(("link", opt(ft.ft_link.as_deref())));
    }
    match ft.ft_role {
        Role::Primary => {
            let protected = ft.ft_protected.unwrap_or(false);
            rows.push((
                "protected",
                if protected { "yes" } else { "no (no backup)" }.into(),
            ));
            if let Some(b) = ft.ft_backup_landmark {
                rows.push((
                    "backup at",
                    format!("landmark {b} ({} behind)", s.landmark.saturating_sub(b)),
                ));
            }
            if let Some(r) = ft.ft_records {
                rows.push((
                    "log sent",
                    format!("{r} records, {} bytes", opt(ft.ft_bytes)),
                ));
            }
            if ft.ft_lag_us_p50.is_some() {
                rows.push((
                    "ack lag",
                    format!(
                        "p50 {} us, p99 {} us",
                        opt(ft.ft_lag_us_p50),
                        opt(ft.ft_lag_us_p99)
                    ),
                ));
                rows.push((
                    "output hold",
                    format!(
                        "p50 {} us, p99 {} us",
                        opt(ft.ft_hold_us_p50),
                        opt(ft.ft_hold_us_p99)
                    ),
                ));
            }
            if let Some(j) = &ft.ft_join {
                rows.push((
                    "joining",
                    format!(
                        "round {}, {} bytes left, throttle {}%, {} ms so far",
                        j.round, j.remaining_bytes, j.throttle_pct, j.elapsed_ms
                    ),
                ));
            }
            if let Some(p) = ft.ft_join_pause_ms {
                rows.push((
                    "last join",
                    format!(
                        "paused {p:.1} ms of {} ms, {} rounds, {} bytes",
                        opt(ft.ft_join_total_ms.map(|t| format!("{t:.0}"))),
                        opt(ft.ft_join_rounds),
                        opt(ft.ft_join_bytes)
                    ),
                ));
            }
        }
        Role::Backup => {
            if let Some(p) = ft.ft_primary_landmark {
                rows.push((
                    "primary at",
                    format!("landmark {p} ({} ahead)", p.saturating_sub(s.landmark)),
                ));
            }
            rows.push((
                "log received",
                format!(
                    "{} records, {} waiting",
                    opt(ft.ft_records),
                    opt(ft.ft_queued)
                ),
            ));
        }
        Role::Off => {}
    }
    rows.push((
        "exits",
        format!(
            "pio {}/{} in/out, mmio {}/{} r/w, hlt {}, interrupts {}",
            s.pio_in, s.pio_out, s.mmio_read, s.mmio_write, s.hlt, s.interrupts_injected
        ),
    ));
    rows.iter().map(|(k, v)| format!("{k:<13}{v}\n")).collect()
}

fn watch(client: &mut Client, interval: f64, count: Option<u64>) -> Result<(), ClientError> {
    let period = Duration::from_secs_f64(interval.clamp(0.05, 3600.0));
    println!(
        "{:>8}  {:<8} {:<7} {:>12} {:>9} {:>10} {:>16} {:>16}",
        "time_s",
        "state",
        "role",
        "landmark",
        "behind",
        "log_mbit",
        "lag_us_p50/p99",
        "hold_us_p50/p99"
    );
    let start = Instant::now();
    let mut last: Option<(Instant, u64)> = None;
    let mut n = 0;
    loop {
        let s = client.status()?;
        let now = Instant::now();
        let ft = &s.ft;
        let bytes = ft.ft_bytes.unwrap_or(0);
        // Log bandwidth since the last line (a new link starts its count again at 0).
        let mbit = match last {
            Some((t, b)) if bytes >= b => {
                let dt = now.duration_since(t).as_secs_f64().max(1e-3);
                format!("{:.2}", (bytes - b) as f64 * 8.0 / dt / 1e6)
            }
            _ => "-".into(),
        };
        last = Some((now, bytes));
        let behind = match ft.ft_role {
            Role::Primary => ft.ft_backup_landmark.map(|b| s.landmark.saturating_sub(b)),
            Role::Backup => ft.ft_primary_landmark.map(|p| p.saturating_sub(s.landmark)),
            Role::Off => None,
        };
        println!(
            "{:>8.1}  {:<8} {:<7} {:>12} {:>9} {:>10} {:>16} {:>16}",
            start.elapsed().as_secs_f64(),
            format!("{:?}", s.state).to_lowercase(),
            format!("{:?}", ft.ft_role).to_lowercase(),
            s.landmark,
            opt(behind),
            mbit,
            format!("{}/{}", opt(ft.ft_lag_us_p50), opt(ft.ft_lag_us_p99)),
            format!("{}/{}", opt(ft.ft_hold_us_p50), opt(ft.ft_hold_us_p99)),
        );
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(period);
    }
}
