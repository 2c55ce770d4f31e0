use super::*;
use alloc::vec;

fn cmd(buf: &[u8]) -> (Vec<Vec<u8>>, usize) {
    match parse(buf) {
        Ok(Parsed::Command(args, n)) => (args, n),
        other => panic!("expected a command, got {other:?}"),
    }
}

fn v(items: &[&[u8]]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.to_vec()).collect()
}

#[test]
fn multibulk() {
    let req = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n";
    assert_eq!(cmd(req), (v(&[b"SET", b"key", b"va\r\nl"]), req.len()));
    // Binary-safe, empty argument.
    let req = b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n";
    assert_eq!(cmd(req), (v(&[b"ECHO", b""]), req.len()));
    assert_eq!(parse(b"*0\r\n"), Ok(Parsed::Empty(4)));
    assert_eq!(parse(b"*-1\r\n"), Ok(Parsed::Empty(5)));
}

#[test]
fn every_prefix_is_incomplete() {
    let req = b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
    for n in 0..req.len() {
        assert_eq!(parse(&req[..n]), Ok(Parsed::Incomplete), "prefix {n}");
    }
    assert_eq!(cmd(req).1, req.len());
}

#[test]
fn pipelined_commands() {
    let buf = b"*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI";
    let (a, n1) = cmd(buf);
    assert_eq!(a, v(&[b"PING"]));
    let (b, n2) = cmd(&buf[n1..]);
    assert_eq!(b, v(&[b"PING"]));
    let (c, n3) = cmd(&buf[n1 + n2..]);
    assert_eq!(c, v(&[b"GET", b"k"]));
    assert_eq!(parse(&buf[n1 + n2 + n3..]), Ok(Parsed::Incomplete));
}

#[test]
fn protocol_errors() {
    assert_eq!(
        parse(b"*x\r\n"),
        Err(ProtocolError("invalid multibulk length"))
    );
    assert_eq!(
        parse(b"*99999999999\r\n"),
        Err(ProtocolError("invalid multibulk length"))
    );
    assert_eq!(
        parse(b"*1\r\n+PING\r\n"),
        Err(ProtocolError("expected '$', got '+'"))
    );
    assert_eq!(
        parse(b"*1\r\n$-3\r\n"),
        Err(ProtocolError("invalid bulk length"))
    );
    assert_eq!(
        parse(b"*1\r\n$9999999999\r\n"),
        Err(ProtocolError("invalid bulk length"))
    );
    assert_eq!(
        parse(b"*1\r\n$01\r\n"),
        Err(ProtocolError("invalid bulk length"))
    );
    let long = vec![b'a'; MAX_INLINE + 1];
    assert_eq!(parse(&long), Err(ProtocolError("too big inline request")));
    assert_eq!(
        parse(b"SET \"a b\r\n"),
        Err(ProtocolError("unbalanced quotes in request"))
    );
}

#[test]
fn inline_requests() {
    assert_eq!(cmd(b"PING\r\n"), (v(&[b"PING"]), 6));
    assert_eq!(cmd(b"ping\n"), (v(&[b"ping"]), 5));
    assert_eq!(cmd(b"  set  k \t v \r\n"), (v(&[b"set", b"k", b"v"]), 15));
    assert_eq!(parse(b"\r\n"), Ok(Parsed::Empty(2)));
    assert_eq!(parse(b"   \n"), Ok(Parsed::Empty(4)));
    assert_eq!(parse(b"GET k"), Ok(Parsed::Incomplete));
}

#[test]
fn inline_quoting_like_sdssplitargs() {
    assert_eq!(
        split_args(br#"set "a b" 'c d'"#),
        Some(v(&[b"set", b"a b", b"c d"]))
    );
    assert_eq!(
        split_args(br#""\x41\n\"\\" 'it\'s'"#),
        Some(v(&[b"A\n\"\\", b"it's"]))
    );
    assert_eq!(split_args(br#"""#), None);
    assert_eq!(split_args(br#""a"b"#), None);
    assert_eq!(split_args(br#"'a"#), None);
    assert_eq!(split_args(b""), Some(vec![]));
    assert_eq!(split_args(br#"a"b c""#), Some(v(&[b"ab c"])));
}

#[test]
fn strict_integers() {
    assert_eq!(parse_i64(b"0"), Some(0));
    assert_eq!(parse_i64(b"-17"), Some(-17));
    assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    assert_eq!(parse_i64(b"9223372036854775808"), None);
    for bad in [
        &b""[..],
        b"-",
        b"+1",
        b"01",
        b"-0",
        b" 1",
        b"1 ",
        b"1.5",
        b"abc",
    ] {
        assert_eq!(parse_i64(bad), None, "{:?}", core::str::from_utf8(bad));
    }
}

#[test]
fn replies() {
    let mut out = Vec::new();
    simple(&mut out, b"OK");
    error(&mut out, b"ERR bad\r\nthing");
    integer(&mut out, -42);
    integer(&mut out, i64::MIN);
    bulk(&mut out, b"hi");
    nil(&mut out);
    array_header(&mut out, 0);
    assert_eq!(
        out,
        b"+OK\r\n-ERR bad  thing\r\n:-42\r\n:-9223372036854775808\r\n$2\r\nhi\r\n$-1\r\n*0\r\n"
            .to_vec()
    );
}
