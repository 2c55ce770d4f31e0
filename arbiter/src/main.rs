//! CLI: `arbiter serve --listen HOST:PORT --state DIR` and `arbiter status --state DIR`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
        /// Existing directory holding the durable flags.
        #[arg(long)]
        state: PathBuf,
    },
    /// Print the decided flags in DIR: vm, epoch, owner, time granted.
    Status {
        #[arg(long)]
        state: PathBuf,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve { listen, state } => serve(&listen, &state),
        Cmd::Status { state } => status(&state),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arbiter: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(listen: &str, state: &std::path::Path) -> arbiter::Result<()> {
    let store = arbiter::Store::open(state)?;
    let n = store.flags().len();
    let server = arbiter::Server::bind(listen, store)?;
    let addr = server.local_addr()?;
    log::info!("{n} flag(s) loaded from {}", state.display());
    // On stdout so a supervisor or test can learn the port when listening on port 0.
    let mut out = std::io::stdout();
    writeln!(out, "listening on {addr}")
        .and_then(|_| out.flush())
        .map_err(|e| arbiter::Error::io("stdout", e))?;
    server.run()
}

fn status(state: &std::path::Path) -> arbiter::Result<()> {
    let flags = arbiter::store::load(state)?;
    print!("{}", arbiter::status::format_table(&flags));
    Ok(())
}
