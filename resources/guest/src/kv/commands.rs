//! The commands of the kv server, with Redis 7's reply formats and error texts (Redis
//! documentation, "Commands"; server.c processCommand for the unknown-command and arity
//! errors, t_string.c for the string commands).
//!
//! Every write is first encoded into the log's pending batch (`Log::append`, which refuses it
//! if the disk is full) and then applied to the store; the caller commits the batch to disk
//! before it sends any reply of the same main-loop iteration (group commit). INCR and friends
//! are logged as a SET of the resulting value, so that replay needs no arithmetic.

use super::log::{AppendError, Log, Record};
use super::resp::{self, parse_i64};
use super::store::Store;
use alloc::vec::Vec;

/// What the connection does after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Send what is queued, then close (QUIT).
    Close,
}

/// Server facts for INFO that the engine does not know itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerInfo {
    pub uptime_secs: u64,
    pub connected_clients: usize,
    pub total_connections: u64,
}

/// The store, its log and command statistics.
pub struct Engine {
    pub store: Store,
    pub log: Log,
    pub commands_processed: u64,
    /// `guest.rdtsc=1`: enables the RDTSC command, which answers with the CPU's time-stamp
    /// counter. `rdtsc` cannot be trapped on these machines, so a primary and its backup get
    /// different values: this exists only to prove that the backup detects the divergence.
    pub allow_rdtsc: bool,
}

pub const NOT_INTEGER: &[u8] = b"ERR value is not an integer or out of range";
const OVERFLOW: &[u8] = b"ERR increment or decrement would overflow";

type Handler = fn(&mut Engine, &[Vec<u8>], &ServerInfo, &mut Vec<u8>) -> Flow;

/// name, arity (Redis convention: N = exactly N arguments including the name, -N = at least
/// N), handler.
const COMMANDS: &[(&str, i32, Handler)] = &[
    ("ping", -1, ping),
    ("echo", 2, echo),
    ("get", 2, get),
    ("set", -3, set),
    ("del", -2, del),
    ("exists", -2, exists),
    ("incr", 2, |e, a, _, o| incr_by(e, &a[1], 1, o)),
    ("decr", 2, |e, a, _, o| incr_by(e, &a[1], -1, o)),
    ("incrby", 3, |e, a, _, o| by_arg(e, a, false, o)),
    ("decrby", 3, |e, a, _, o| by_arg(e, a, true, o)),
    ("mget", -2, mget),
    ("mset", -3, mset),
    ("strlen", 2, strlen),
    ("dbsize", 1, |e, _, _, o| int(o, e.store.len() as i64)),
    ("flushdb", -1, flush),
    ("flushall", -1, flush),
    ("select", 2, select),
    ("info", -1, info),
    ("config", -2, config),
    ("command", -1, |_, _, _, o| empty_array(o)),
    ("rdtsc", 1, rdtsc),
    ("quit", -1, |_, _, _, o| {
        resp::simple(o, b"OK");
        Flow::Close
    }),
];

impl Engine {
    pub fn new(store: Store, log: Log) -> Self {
        Self {
            store,
            log,
            commands_processed: 0,
            allow_rdtsc: false,
        }
    }

    /// Executes one command (`args[0]` is its name) and appends the reply to `out`.
    pub fn execute(&mut self, args: &[Vec<u8>], info: &ServerInfo, out: &mut Vec<u8>) -> Flow {
        self.commands_processed += 1;
        let name = args[0].to_ascii_lowercase();
        let Some(&(cname, arity, handler)) = COMMANDS.iter().find(|c| c.0.as_bytes() == name)
        else {
            unknown_command(args, out);
            return Flow::Continue;
        };
        let argc = args.len() as i32;
        if (arity > 0 && argc != arity) || argc < -arity {
            return wrong_arity(out, cname);
        }
        handler(self, args, info, out)
    }

    /// Appends `records` to the log and applies them, or replies the refusal.
    fn write(&mut self, records: &[Record<'_>], out: &mut Vec<u8>) -> bool {
        match self.log.append(records) {
            Ok(()) => {
                records.iter().for_each(|r| self.store.apply(r));
                true
            }
            Err(AppendError::DiskFull) => {
                resp::error(out, b"ERR disk full");
                false
            }
            Err(AppendError::ReadOnly) => {
                resp::error(out, b"READONLY the disk is read-only");
                false
            }
        }
    }
}

/// `-ERR unknown command 'NAME', with args beginning with: 'a' 'b' ` (Redis 7: the name as
/// sent, at most 128 bytes; arguments quoted, each followed by a space, until 128 bytes).
fn unknown_command(args: &[Vec<u8>], out: &mut Vec<u8>) {
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(&args[0][..args[0].len().min(128)]);
    msg.extend_from_slice(b"', with args beginning with: ");
    let mut list: Vec<u8> = Vec::new();
    for arg in &args[1..] {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        list.push(b'\'');
        list.extend_from_slice(&arg[..arg.len().min(room)]);
        list.extend_from_slice(b"' ");
    }
    msg.extend_from_slice(&list);
    resp::error(out, &msg);
}

/// The deliberately non-deterministic command (see `Engine::allow_rdtsc`).
fn rdtsc(e: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    if !e.allow_rdtsc {
        unknown_command(args, out);
        return Flow::Continue;
    }
    // SAFETY: rdtsc has no memory effects; it is available on every x86_64 CPU.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    int(out, tsc as i64 & i64::MAX)
}

fn wrong_arity(out: &mut Vec<u8>, name: &str) -> Flow {
    let mut msg = b"ERR wrong number of arguments for '".to_vec();
    msg.extend_from_slice(name.as_bytes());
    msg.extend_from_slice(b"' command");
    resp::error(out, &msg);
    Flow::Continue
}

fn int(out: &mut Vec<u8>, n: i64) -> Flow {
    resp::integer(out, n);
    Flow::Continue
}

fn ok(out: &mut Vec<u8>) -> Flow {
    resp::simple(out, b"OK");
    Flow::Continue
}

fn err(out: &mut Vec<u8>, msg: &[u8]) -> Flow {
    resp::error(out, msg);
    Flow::Continue
}

fn empty_array(out: &mut Vec<u8>) -> Flow {
    resp::array_header(out, 0);
    Flow::Continue
}

fn ping(_: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    match args.len() {
        1 => resp::simple(out, b"PONG"),
        2 => resp::bulk(out, &args[1]),
        _ => return wrong_arity(out, "ping"),
    }
    Flow::Continue
}

fn echo(_: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    resp::bulk(out, &args[1]);
    Flow::Continue
}

fn get(e: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    match e.store.get(&args[1]) {
        Some(v) => resp::bulk(out, v),
        None => resp::nil(out),
    }
    Flow::Continue
}

fn set(e: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    if args.len() > 3 {
        // NX/XX/GET/EX/PX/KEEPTTL... are not supported (there are no expiries).
        return err(out, b"ERR syntax error");
    }
    if e.write(&[Record::Set(&args[1], &args[2])], out) {
        ok(out);
    }
    Flow::Continue
}

fn del(e: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    let mut records: Vec<Record<'_>> = Vec::new();
    for key in &args[1..] {
        if e.store.contains(key) && !records.contains(&Record::Del(key)) {
            records.push(Record::Del(key));
        }
    }
    if e.write(&records, out) {
        int(out, records.len() as i64);
    }
    Flow::Continue
}

fn exists(e: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    int(
        out,
        args[1..].iter().filter(|k| e.store.contains(k)).count() as i64,
    )
}

fn by_arg(e: &mut Engine, args: &[Vec<u8>], negate: bool, out: &mut Vec<u8>) -> Flow {
    match parse_i64(&args[2]) {
        Some(i64::MIN) if negate => err(out, b"ERR decrement would overflow"),
        Some(n) => incr_by(e, &args[1], if negate { -n } else { n }, out),
        None => err(out, NOT_INTEGER),
    }
}

fn incr_by(e: &mut Engine, key: &[u8], delta: i64, out: &mut Vec<u8>) -> Flow {
    let old = match e.store.get(key) {
        None => 0,
        Some(v) => match parse_i64(v) {
            Some(n) => n,
            None => return err(out, NOT_INTEGER),
        },
    };
    let Some(new) = old.checked_add(delta) else {
        return err(out, OVERFLOW);
    };
    let mut text = Vec::new();
    resp::push_decimal(&mut text, new);
    if e.write(&[Record::Set(key, &text)], out) {
        int(out, new);
    }
    Flow::Continue
}

fn mget(e: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    resp::array_header(out, args.len() - 1);
    for key in &args[1..] {
        match e.store.get(key) {
            Some(v) => resp::bulk(out, v),
            None => resp::nil(out),
        }
    }
    Flow::Continue
}

fn mset(e: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    if args.len().is_multiple_of(2) {
        return wrong_arity(out, "mset");
    }
    let records: Vec<Record<'_>> = args[1..]
        .chunks(2)
        .map(|kv| Record::Set(&kv[0], &kv[1]))
        .collect();
    if e.write(&records, out) {
        ok(out);
    }
    Flow::Continue
}

fn strlen(e: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    int(out, e.store.get(&args[1]).map_or(0, <[u8]>::len) as i64)
}

fn flush(e: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    let mode_ok = match &args[1..] {
        [] => true,
        [m] => m.eq_ignore_ascii_case(b"sync") || m.eq_ignore_ascii_case(b"async"),
        _ => false,
    };
    if !mode_ok {
        return err(out, b"ERR syntax error");
    }
    if e.write(&[Record::Clear], out) {
        ok(out);
    }
    Flow::Continue
}

fn select(_: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    match parse_i64(&args[1]) {
        Some(0) => ok(out),
        Some(_) => err(out, b"ERR DB index is out of range"),
        None => err(out, NOT_INTEGER),
    }
}

/// CONFIG GET answers an empty array (no parameter is exposed), enough for redis-cli and
/// redis-benchmark; other subcommands are refused as Redis refuses unknown ones.
fn config(_: &mut Engine, args: &[Vec<u8>], _: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    if args[1].eq_ignore_ascii_case(b"get") {
        if args.len() < 3 {
            return wrong_arity(out, "config|get");
        }
        return empty_array(out);
    }
    let mut msg = b"ERR unknown subcommand '".to_vec();
    msg.extend_from_slice(&args[1][..args[1].len().min(128)]);
    msg.extend_from_slice(b"'. Try CONFIG HELP.");
    err(out, &msg)
}

fn info(e: &mut Engine, _: &[Vec<u8>], s: &ServerInfo, out: &mut Vec<u8>) -> Flow {
    use core::fmt::Write;
    let mut t = alloc::string::String::new();
    let log = &e.log;
    // Writing to a String cannot fail.
    let _ = write!(
        t,
        "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nos:ft-test-guest\r\n\
         arch_bits:64\r\nmultiplexing_api:smoltcp\r\ntcp_port:6379\r\n\
         uptime_in_seconds:{up}\r\nuptime_in_days:{days}\r\n\r\n\
         # Clients\r\nconnected_clients:{clients}\r\n\r\n\
         # Persistence\r\nkv_log_records:{rec}\r\nkv_log_bytes:{bytes}\r\n\
         kv_log_capacity_bytes:{cap}\r\nkv_log_epoch:{epoch}\r\nkv_disk_read_only:{ro}\r\n\r\n\
         # Stats\r\ntotal_connections_received:{conns}\r\ntotal_commands_processed:{cmds}\r\n\r\n\
         # Keyspace\r\n",
        up = s.uptime_secs,
        days = s.uptime_secs / 86400,
        clients = s.connected_clients,
        rec = log.records(),
        bytes = log.used_bytes(),
        cap = log.capacity_bytes(),
        epoch = log.epoch(),
        ro = u8::from(log.read_only()),
        conns = s.total_connections,
        cmds = e.commands_processed,
    );
    if !e.store.is_empty() {
        let _ = write!(t, "db0:keys={},expires=0,avg_ttl=0\r\n", e.store.len());
    }
    resp::bulk(out, t.as_bytes());
    Flow::Continue
}

#[cfg(test)]
mod tests;
