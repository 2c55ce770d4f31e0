//! CLI: `arbiter serve --listen HOST:PORT --state DIR (--tls-dir DIR | --insecure) [--init]`, `arbiter status --state DIR`
//! and `arbiter reset --state DIR VM`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use arbiter::limits::{check_epoch, now_ms, EPOCH_SLACK_MS, IDLE_TIMEOUT, MAX_PER_IP};
use arbiter::Open;

#[derive(Parser)]
#[command(
    name = "arbiter",
    about = "Test-and-set arbiter for FT failover (split-brain guard)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve test-and-set requests (prints "listening on ADDR" once ready).
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:7700 (port 0 = any free port).
        #[arg(long)]
        listen: String,
        /// Existing directory holding the durable flags (DIR/arbiter-state.json).
        #[arg(long)]
        state: PathBuf,
        /// Create an empty state file first (refused if one exists). Only for the first
        /// start: without it a missing state file is an error, never a fresh start.
        #[arg(long)]
        init: bool,
        /// Mutual TLS 1.3 with the certificates in DIR (ca-cert.pem, server-cert.pem,
        /// server-key.pem: QEMU's tls-creds-x509 names). A client must present a
        /// certificate from that CA, and may test-and-set only under a name it carries.
        #[arg(long, value_name = "DIR", conflicts_with = "insecure")]
        tls_dir: Option<PathBuf>,
        /// Serve clear TCP: anyone who reaches the port may claim any name (for tests).
        #[arg(long)]
        insecure: bool,
    },
    /// Print the decided flags in DIR: vm, epoch, owner, time granted.
    Status {
        #[arg(long)]
        state: PathBuf,
    },
    /// Forget the flag of VM (the only way to clear one). Operator only, with no arbiter
    /// serving DIR: it takes the same lock as `serve`, so it refuses while one does.
    Reset {
        #[arg(long)]
        state: PathBuf,
        /// The vm id whose flag is cleared.
        vm: String,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve {
            listen,
            state,
            init,
            tls_dir,
            insecure,
        } => serve(&listen, &state, init, tls_dir.as_deref(), insecure),
        Cmd::Status { state } => status(&state),
        Cmd::Reset { state, vm } => reset(&state, &vm),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arbiter: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    listen: &str,
    state: &Path,
    init: bool,
    tls_dir: Option<&Path>,
    insecure: bool,
) -> arbiter::Result<()> {
    // Before the store: a refused start must not create the state file (`--init`).
    let tls = match (tls_dir, insecure) {
        (Some(dir), _) => Some(ft_tls::TlsDir::load_server(dir)?),
        (None, true) => None,
        (None, false) => return Err(arbiter::Error::NoSecurity),
    };
    let mode = if init { Open::Init } else { Open::Existing };
    let store = arbiter::Store::open_with(state, mode)?;
    let flags = store.flags();
    match &tls {
        Some(dir) => log::info!(
            "mutual TLS with the certificates in {}: a client may claim only a name its certificate carries",
            dir.path.display()
        ),
        None => log::warn!(
            "--insecure: clear TCP; anyone who reaches this port may win or take a flag in any name"
        ),
    }
    let server = arbiter::Server::bind(listen, store, tls)?;
    let addr = server.local_addr()?;
    if init {
        log::info!("created an empty state file in {}", state.display());
    }
    log::info!("{} flag(s) loaded from {}", flags.len(), state.display());
    let now = now_ms();
    for f in flags.iter().filter(|f| check_epoch(f.epoch, now).is_err()) {
        // Granted before epochs were bounded, or while the clock was far ahead: every
        // genuine epoch of this vm is stale until an operator clears the flag.
        log::warn!(
            "flag vm={} epoch={} (owner {}) is more than {EPOCH_SLACK_MS} ms ahead of the clock: \
             every failover of this vm will be refused as stale until `arbiter reset --state {} {}`",
            f.vm,
            f.epoch,
            f.owner,
            state.display(),
            f.vm
        );
    }
    log::info!(
        "at most {} connections ({MAX_PER_IP} per client address), closed after {} s without a \
         request; epochs more than {EPOCH_SLACK_MS} ms ahead of the clock are refused",
        server.max_connections(),
        IDLE_TIMEOUT.as_secs()
    );
    // On stdout so a supervisor or test can learn the port when listening on port 0.
    let mut out = std::io::stdout();
    writeln!(out, "listening on {addr}")
        .and_then(|_| out.flush())
        .map_err(|e| arbiter::Error::io("stdout", e))?;
    server.run()
}

fn status(state: &Path) -> arbiter::Result<()> {
    let flags = arbiter::store::load(state)?;
    print!("{}", arbiter::status::format_table(&flags));
    Ok(())
}

fn reset(state: &Path, vm: &str) -> arbiter::Result<()> {
    let mut store = arbiter::Store::open(state).inspect_err(|e| {
        if matches!(e, arbiter::Error::Locked(_)) {
            // A serving arbiter holds its flags in memory and would write this one back.
            eprintln!(
                "arbiter: stop the arbiter serving {} before a reset",
                state.display()
            );
        }
    })?;
    let old = store.reset(vm)?;
    println!(
        "reset vm {}: forgot epoch {} of owner {} (granted {})",
        old.vm,
        old.epoch,
        old.owner,
        arbiter::status::format_utc(old.granted_at_unix_ms)
    );
    Ok(())
}
