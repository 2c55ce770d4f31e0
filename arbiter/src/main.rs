//! CLI: `arbiter serve --listen HOST:PORT --state DIR [--init]`, `arbiter status --state DIR`
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
        } => serve(&listen, &state, init),
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

fn serve(listen: &str, state: &Path, init: bool) -> arbiter::Result<()> {
    let mode = if init { Open::Init } else { Open::Existing };
    let store = arbiter::Store::open_with(state, mode)?;
    let flags = store.flags();
    let server = arbiter::Server::bind(listen, store)?;
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
