//! A minimal RESP (Redis serialization protocol) client, for tests that must see every reply
//! exactly and notice a reset connection.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The longest bulk string read (the test guest's values are far smaller).
const MAX_BULK: usize = 64 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed reply: {0}")]
    Protocol(String),
}

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn new(stream: TcpStream, timeout: Duration) -> Result<Self, RespError> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one command (as a multibulk request) and reads its reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Result<Reply, RespError> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&req)?;
        self.read_reply()
    }

    fn line(&mut self) -> Result<String, RespError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(RespError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(line.trim_end_matches("\r\n").to_string())
    }

    fn read_reply(&mut self) -> Result<Reply, RespError> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1.min(line.len()));
        let int = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| RespError::Protocol(line.clone()))
        };
        match kind {
            "+" => Ok(Reply::Status(rest.to_string())),
            "-" => Ok(Reply::Error(rest.to_string())),
            ":" => Ok(Reply::Int(int(rest)?)),
            "$" => {
                let len = int(rest)?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                // The guest's length, bounded before anything is allocated.
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&l| l <= MAX_BULK)
                    .ok_or_else(|| RespError::Protocol(line.clone()))?;
                let mut buf = vec![0u8; len + 2];
                std::io::Read::read_exact(&mut self.reader, &mut buf)?;
                buf.truncate(len);
                Ok(Reply::Bulk(Some(buf)))
            }
            "*" => {
                let n = int(rest)?;
                (0..n.max(0))
                    .map(|_| self.read_reply())
                    .collect::<Result<_, _>>()
                    .map(Reply::Array)
            }
            _ => Err(RespError::Protocol(line.clone())),
        }
    }
}
