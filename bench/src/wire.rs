//! Counting MongoDB round trips on the wire.
//!
//! A TCP proxy between the driver and the server reads the client's side of the MongoDB wire
//! protocol message by message and counts each request by command name. Every request the
//! driver sends is answered by one reply (no `moreToCome`, no exhaust cursors here), so a
//! request is a round trip. Connection handshakes and server monitoring (`hello`,
//! `isMaster`, SASL, `endSessions`, `ping`) are counted apart: they are not work a projector
//! does per event. The projector's own counter (`BatchOutcome::Applied { round_trips }`)
//! is not used: this one also sees `getMore`s and anything else the driver sends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Commands that set up or watch connections, not work a projector asks for.
pub const OVERHEAD: [&str; 7] = [
    "hello",
    "isMaster",
    "ismaster",
    "saslStart",
    "saslContinue",
    "endSessions",
    "ping",
];

/// Requests of one command name and how long their replies took (from sending the request
/// to the end of its reply; the harness sends one request at a time, so these add up to wall
/// time spent waiting on MongoDB).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub requests: u64,
    pub wait_seconds: f64,
}

pub type Counts = BTreeMap<String, Tally>;

type Pending = Arc<Mutex<HashMap<i32, (String, Instant)>>>;

/// Each reply's time (request sent to reply read), in the order the replies came, for
/// requests other than connection overhead: a mean hides the tail a p99 feels.
type ReplyLog = Arc<Mutex<Vec<f64>>>;

pub struct CountingProxy {
    pub port: u16,
    counts: Arc<Mutex<Counts>>,
    replies: ReplyLog,
    accept: JoinHandle<()>,
}

const OP_COMPRESSED: i32 = 2012;
const OP_QUERY: i32 = 2004;
const OP_MSG: i32 = 2013;
/// Larger than any message a server accepts (48 MB), so a corrupt length cannot make us
/// allocate without bound.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

impl CountingProxy {
    /// Listens on a free loopback port and forwards every connection to `target` (`host:port`).
    pub async fn start(target: String) -> std::io::Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(Mutex::new(Counts::new()));
        let replies = ReplyLog::default();
        let (counts2, replies2) = (counts.clone(), replies.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = target.clone();
                let (counts, replies) = (counts2.clone(), replies2.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        relay(client, server, counts, replies).await;
                    }
                });
            }
        });
        Ok(CountingProxy {
            port,
            counts,
            replies,
            accept,
        })
    }

    /// Requests seen so far, by command name.
    pub fn counts(&self) -> Counts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Replies seen so far: a mark for [`CountingProxy::reply_seconds_since`].
    pub fn replies_seen(&self) -> usize {
        self.replies.lock().map_or(0, |r| r.len())
    }

    /// The reply times, in seconds, of the replies after `mark` (overhead left out).
    pub fn reply_seconds_since(&self, mark: usize) -> Vec<f64> {
        self.replies
            .lock()
            .map(|r| r.get(mark..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Requests in `after` not in `before`, without connection overhead.
pub fn work_between(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .filter(|(name, _)| !OVERHEAD.contains(&name.as_str()))
        .map(|(name, t)| {
            let b = before.get(name).copied().unwrap_or_default();
            (
                name.clone(),
                Tally {
                    requests: t.requests - b.requests,
                    wait_seconds: t.wait_seconds - b.wait_seconds,
                },
            )
        })
        .filter(|(_, t)| t.requests > 0)
        .collect()
}

pub fn total(counts: &Counts) -> u64 {
    counts.values().map(|t| t.requests).sum()
}

pub fn wait_seconds(counts: &Counts) -> f64 {
    counts.values().map(|t| t.wait_seconds).sum()
}

pub fn requests(counts: &Counts, name: &str) -> u64 {
    counts.get(name).map_or(0, |t| t.requests)
}

/// `find 5, update 10`.
pub fn text(counts: &Counts) -> String {
    counts
        .iter()
        .map(|(k, t)| format!("{k} {}", t.requests))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One wire protocol message: the 16-byte header and the rest; None at the end of the stream.
async fn read_message(from: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> Option<(i32, i32, i32)> {
    let mut header = [0u8; 16];
    from.read_exact(&mut header).await.ok()?;
    let field =
        |i: usize| i32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (length, request_id, response_to, op_code) = (field(0), field(4), field(8), field(12));
    let length = usize::try_from(length).ok()?;
    if !(16..=MAX_MESSAGE).contains(&length) {
        return None;
    }
    buf.clear();
    buf.extend_from_slice(&header);
    buf.resize(length, 0);
    from.read_exact(&mut buf[16..]).await.ok()?;
    Some((request_id, response_to, op_code))
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    counts: Arc<Mutex<Counts>>,
    reply_log: ReplyLog,
) {
    let (mut client_read, client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let replies = tokio::spawn(replies(
        server_read,
        client_write,
        pending.clone(),
        counts.clone(),
        reply_log,
    ));
    let mut message = Vec::new();
    while let Some((request_id, _, op_code)) = read_message(&mut client_read, &mut message).await {
        let name = command_name(op_code, &message[16..]);
        if let Ok(mut c) = counts.lock() {
            c.entry(name.clone()).or_default().requests += 1;
        }
        if let Ok(mut p) = pending.lock() {
            p.insert(request_id, (name, Instant::now()));
        }
        if server_write.write_all(&message).await.is_err() {
            break;
        }
    }
    let _ = server_write.shutdown().await;
    let _ = replies.await;
}

async fn replies(
    mut server_read: OwnedReadHalf,
    mut client_write: OwnedWriteHalf,
    pending: Pending,
    counts: Arc<Mutex<Counts>>,
    reply_log: ReplyLog,
) {
    let mut message = Vec::new();
    while let Some((_, response_to, _)) = read_message(&mut server_read, &mut message).await {
        let sent = pending.lock().ok().and_then(|mut p| p.remove(&response_to));
        if let Some((name, at)) = sent {
            let seconds = at.elapsed().as_secs_f64();
            if !OVERHEAD.contains(&name.as_str())
                && let Ok(mut log) = reply_log.lock()
            {
                log.push(seconds);
            }
            if let Ok(mut c) = counts.lock() {
                c.entry(name).or_default().wait_seconds += seconds;
            }
        }
        if client_write.write_all(&message).await.is_err() {
            break;
        }
    }
    let _ = client_write.shutdown().await;
}

/// The first key of a BSON document: the command name of a request.
fn first_key(doc: &[u8]) -> Option<String> {
    // int32 length, then elements: type byte, NUL-terminated name, value.
    let name = doc.get(5..)?;
    let end = name.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

fn command_name(op_code: i32, body: &[u8]) -> String {
    let name = match op_code {
        OP_MSG => {
            // flagBits, then sections: kind 0 is the command document, kind 1 a sequence.
            let mut at = 4;
            let mut found = None;
            while let Some(&kind) = body.get(at) {
                at += 1;
                let size = body
                    .get(at..at + 4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .and_then(|s| usize::try_from(s).ok());
                let Some(size) = size else { break };
                if kind == 0 {
                    found = body.get(at..at + size).and_then(first_key);
                    break;
                }
                at += size;
            }
            found
        }
        OP_QUERY => {
            // flags, collection name (C string), skip, limit, then the query document.
            let after_flags = body.get(4..).unwrap_or_default();
            after_flags
                .iter()
                .position(|&b| b == 0)
                .and_then(|end| after_flags.get(end + 1 + 8..))
                .and_then(first_key)
        }
        OP_COMPRESSED => Some("compressed".to_owned()),
        _ => None,
    };
    name.unwrap_or_else(|| format!("op{op_code}"))
}

/// `uri` rewritten to reach its first host through `127.0.0.1:port`, as a direct
/// connection (so the driver does not discover and use other hosts behind the proxy's back).
/// Returns the rewritten URI and the original `host:port`.
pub fn proxied_uri(uri: &str, port: u16) -> anyhow::Result<(String, String)> {
    let rest = uri.strip_prefix("mongodb://").ok_or_else(|| {
        anyhow::anyhow!("counting round trips needs a mongodb:// URI (not mongodb+srv://)")
    })?;
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (&authority[..=i], &authority[i + 1..]),
        None => ("", authority),
    };
    let first = hosts.split(',').next().unwrap_or(hosts);
    let target = if first.starts_with('[') || first.contains(':') {
        first.to_owned()
    } else {
        format!("{first}:27017")
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, q),
        None => (tail, ""),
    };
    let path = if path.is_empty() { "/" } else { path };
    let query: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.to_ascii_lowercase().starts_with("directconnection="))
        .collect();
    let mut options = query.join("&");
    if !options.is_empty() {
        options.push('&');
    }
    options.push_str("directConnection=true");
    Ok((
        format!("mongodb://{userinfo}127.0.0.1:{port}{path}?{options}"),
        target,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_rewritten_to_the_proxy() {
        assert_eq!(
            proxied_uri("mongodb://127.0.0.1:27117", 5000).unwrap(),
            (
                "mongodb://127.0.0.1:5000/?directConnection=true".to_owned(),
                "127.0.0.1:27117".to_owned()
            )
        );
        assert_eq!(
            proxied_uri(
                "mongodb://u:p@db1,db2:27018/admin?replicaSet=rs&directConnection=false",
                1
            )
            .unwrap(),
            (
                "mongodb://u:p@127.0.0.1:1/admin?replicaSet=rs&directConnection=true".to_owned(),
                "db1:27017".to_owned()
            )
        );
        assert!(proxied_uri("mongodb+srv://cluster.example", 1).is_err());
    }

    #[test]
    fn command_names_come_from_the_first_key() {
        // OP_MSG: flags, kind 0, document {find: "c"}.
        let mut doc = vec![];
        doc.extend_from_slice(&0i32.to_le_bytes());
        doc.push(2);
        doc.extend_from_slice(b"find\0");
        doc.extend_from_slice(&2i32.to_le_bytes());
        doc.extend_from_slice(b"c\0");
        doc.push(0);
        let len = doc.len() as i32;
        doc[..4].copy_from_slice(&len.to_le_bytes());
        let mut body = vec![0, 0, 0, 0, 0];
        body.extend_from_slice(&doc);
        assert_eq!(command_name(OP_MSG, &body), "find");
        assert_eq!(command_name(1, &body), "op1");
    }
}
