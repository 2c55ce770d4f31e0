use super::*;
use crate::kv::log::MemDisk;
use crate::kv::resp::{parse, Parsed};
use alloc::string::String;
use alloc::vec;

struct T {
    e: Engine,
    disk: MemDisk,
}

impl T {
    fn new() -> Self {
        Self::with_disk(MemDisk::new(256))
    }

    fn with_disk(mut disk: MemDisk) -> Self {
        let mut store = Store::new();
        let (log, _) = Log::open(&mut disk, false, |r| store.apply(r)).unwrap();
        Self {
            e: Engine::new(store, log),
            disk,
        }
    }

    /// Runs every command of `input` (RESP), commits, returns the replies as text.
    fn run(&mut self, input: &[u8]) -> String {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            match parse(&input[pos..]).unwrap() {
                Parsed::Command(args, n) => {
                    self.e.execute(&args, &ServerInfo::default(), &mut out);
                    pos += n;
                }
                Parsed::Empty(n) => pos += n,
                Parsed::Incomplete => break,
            }
        }
        self.e.log.commit(&mut self.disk).unwrap();
        String::from_utf8(out).unwrap()
    }
}

#[test]
fn ping_echo() {
    let mut t = T::new();
    assert_eq!(t.run(b"PING\r\n"), "+PONG\r\n");
    assert_eq!(t.run(b"ping hello\r\n"), "$5\r\nhello\r\n");
    assert_eq!(
        t.run(b"PING a b\r\n"),
        "-ERR wrong number of arguments for 'ping' command\r\n"
    );
    assert_eq!(
        t.run(b"*2\r\n$4\r\necho\r\n$3\r\na\0b\r\n"),
        "$3\r\na\0b\r\n"
    );
    assert_eq!(
        t.run(b"ECHO\r\n"),
        "-ERR wrong number of arguments for 'echo' command\r\n"
    );
}

#[test]
fn get_set_del_exists() {
    let mut t = T::new();
    assert_eq!(t.run(b"GET k\r\n"), "$-1\r\n");
    assert_eq!(t.run(b"SET k v1\r\nget k\r\n"), "+OK\r\n$2\r\nv1\r\n");
    assert_eq!(t.run(b"SeT k v2\r\nGET k\r\n"), "+OK\r\n$2\r\nv2\r\n");
    assert_eq!(t.run(b"SET k v EX 10\r\n"), "-ERR syntax error\r\n");
    assert_eq!(
        t.run(b"SET k\r\n"),
        "-ERR wrong number of arguments for 'set' command\r\n"
    );
    assert_eq!(
        t.run(b"GET a b\r\n"),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(t.run(b"SET j 1\r\nEXISTS k j nope k\r\n"), "+OK\r\n:3\r\n");
    assert_eq!(t.run(b"DBSIZE\r\n"), ":2\r\n");
    assert_eq!(t.run(b"DEL k k nope\r\n"), ":1\r\n");
    assert_eq!(
        t.run(b"DEL k\r\nEXISTS k\r\nDBSIZE\r\n"),
        ":0\r\n:0\r\n:1\r\n"
    );
    assert_eq!(
        t.run(b"MSET a 1 b 2\r\nMGET a x b\r\n"),
        "+OK\r\n*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"
    );
    assert_eq!(
        t.run(b"MSET a 1 b\r\n"),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    assert_eq!(t.run(b"STRLEN a\r\nSTRLEN zz\r\n"), ":1\r\n:0\r\n");
    assert_eq!(t.run(b"FLUSHALL\r\nDBSIZE\r\n"), "+OK\r\n:0\r\n");
}

#[test]
fn counters() {
    let mut t = T::new();
    assert_eq!(
        t.run(b"INCR n\r\nINCR n\r\nDECR n\r\nINCRBY n 10\r\nDECRBY n 3\r\n"),
        ":1\r\n:2\r\n:1\r\n:11\r\n:8\r\n"
    );
    assert_eq!(t.run(b"GET n\r\n"), "$1\r\n8\r\n");
    assert_eq!(t.run(b"INCRBY n -20\r\n"), ":-12\r\n");
    let nan = "-ERR value is not an integer or out of range\r\n";
    assert_eq!(t.run(b"INCRBY n x\r\n"), nan);
    assert_eq!(t.run(b"INCRBY n 1.5\r\n"), nan);
    assert_eq!(
        t.run(b"SET s abc\r\nINCR s\r\n"),
        alloc::format!("+OK\r\n{nan}")
    );
    assert_eq!(
        t.run(b"SET s \" 1\"\r\nINCR s\r\n"),
        alloc::format!("+OK\r\n{nan}")
    );
    assert_eq!(
        t.run(b"SET m 9223372036854775807\r\nINCR m\r\n"),
        "+OK\r\n-ERR increment or decrement would overflow\r\n"
    );
    assert_eq!(
        t.run(b"DECRBY m -9223372036854775808\r\n"),
        "-ERR decrement would overflow\r\n"
    );
    assert_eq!(
        t.run(b"INCR\r\n"),
        "-ERR wrong number of arguments for 'incr' command\r\n"
    );
    // A failed INCR changes nothing.
    assert_eq!(t.run(b"GET m\r\n"), "$19\r\n9223372036854775807\r\n");
}

#[test]
fn unknown_and_misc_commands() {
    let mut t = T::new();
    assert_eq!(
        t.run(b"FOO\r\n"),
        "-ERR unknown command 'FOO', with args beginning with: \r\n"
    );
    assert_eq!(
        t.run(b"foo a \"b c\"\r\n"),
        "-ERR unknown command 'foo', with args beginning with: 'a' 'b c' \r\n"
    );
    let long = alloc::format!("x {}\r\n", "a".repeat(200));
    let reply = t.run(long.as_bytes());
    assert_eq!(
        reply,
        alloc::format!(
            "-ERR unknown command 'x', with args beginning with: '{}' \r\n",
            "a".repeat(128)
        )
    );
    assert_eq!(t.run(b"CONFIG GET save\r\n"), "*0\r\n");
    assert_eq!(
        t.run(b"config get\r\n"),
        "-ERR wrong number of arguments for 'config|get' command\r\n"
    );
    assert_eq!(
        t.run(b"CONFIG SET a b\r\n"),
        "-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n"
    );
    assert_eq!(
        t.run(b"CONFIG\r\n"),
        "-ERR wrong number of arguments for 'config' command\r\n"
    );
    assert_eq!(t.run(b"COMMAND\r\nCOMMAND DOCS\r\n"), "*0\r\n*0\r\n");
    assert_eq!(
        t.run(b"SELECT 0\r\nSELECT 1\r\n"),
        "+OK\r\n-ERR DB index is out of range\r\n"
    );
    let mut out = Vec::new();
    let flow =
        t.e.execute(&[b"QUIT".to_vec()], &ServerInfo::default(), &mut out);
    assert_eq!((flow, out), (Flow::Close, b"+OK\r\n".to_vec()));
}

#[test]
fn info_reports_log_and_keyspace() {
    let mut t = T::new();
    let empty = t.run(b"INFO\r\n");
    assert!(empty.contains("# Server\r\nredis_version:"), "{empty}");
    assert!(empty.contains("# Keyspace\r\n"));
    assert!(!empty.contains("db0:"));
    assert!(empty.contains("kv_log_records:0\r\n"));
    t.run(b"SET a 1\r\nSET b 2\r\nDEL a\r\n");
    let info = t.run(b"INFO\r\n");
    assert!(info.contains("kv_log_records:3\r\n"), "{info}");
    assert!(info.contains("db0:keys=1,expires=0,avg_ttl=0\r\n"));
    // The bulk length is right.
    let body = info.split_once("\r\n").unwrap();
    assert_eq!(body.0[1..].parse::<usize>().unwrap(), body.1.len() - 2);
}

#[test]
fn writes_survive_a_restart_and_disk_full_is_reported() {
    let mut t = T::new();
    t.run(b"SET a 1\r\nINCR n\r\nINCRBY n 41\r\nMSET x 1 y 2\r\nDEL x\r\n");
    let mut t2 = T::with_disk(MemDisk {
        data: t.disk.data.clone(),
        writes: 0,
        flushes: 0,
    });
    assert_eq!(
        t2.run(b"GET n\r\nGET a\r\nEXISTS x y\r\nDBSIZE\r\n"),
        "$2\r\n42\r\n$1\r\n1\r\n:1\r\n:3\r\n"
    );

    let mut small = T::with_disk(MemDisk::new(crate::kv::log::MIN_SECTORS));
    let big = vec![b'v'; 3000];
    let mut req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3000\r\n".to_vec();
    req.extend_from_slice(&big);
    req.extend_from_slice(b"\r\n");
    assert_eq!(small.run(&req), "+OK\r\n");
    assert_eq!(small.run(&req), "-ERR disk full\r\n");
    assert_eq!(
        small.run(b"STRLEN k\r\nGET nothing\r\n"),
        ":3000\r\n$-1\r\n"
    );
}
