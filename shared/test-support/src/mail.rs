//! A real SMTP server for tests that send email, keeping every message it receives as a file.
//!
//! [`MailCatcher::start`] runs aiosmtpd (the server `scripts/mail.sh` runs for `make run`, from
//! the project's virtualenv `.local/venv`) on a free port of 127.0.0.1, with its Mailbox handler
//! writing a Maildir in a fresh temporary directory. If the virtualenv lacks aiosmtpd, the first
//! start in a process runs `scripts/mail.sh install` (which may create the virtualenv and, on a
//! bare machine, install python3-venv with apt-get). The server is killed and the directory
//! removed when the catcher is dropped. [`MailCatcher::messages`] reads what arrived.
//!
//! ```no_run
//! # async fn demo() {
//! let mail = test_support::mail::MailCatcher::start().await;
//! // ... point the code under test at mail.smtp_url() (e.g. lettre's `from_url`), then:
//! let received = mail.messages();
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::OnceCell;

/// Runs aiosmtpd's command line (`python -c WATCHED ARGS...`), and exits when its standard
/// input ends: the catcher holds the other end, so the server goes with the test process even
/// when that is killed and no destructor runs (kill_on_drop alone would leave it running).
const WATCHED: &str = "\
import os, sys, threading
from aiosmtpd.main import main
def watch():
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
main(sys.argv[1:])
";

/// How long a start may take: the server imports and binds in well under a second, but a
/// first `scripts/mail.sh install` downloads from PyPI.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One received message, decoded: addresses without display names, encoded words decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The `Message-ID` without its angle brackets (`<a@b>` is `a@b`); `None` without one.
    pub message_id: Option<String>,
    /// The addresses of the `To` header.
    pub to: Vec<String>,
    /// The address of the (first) `From` header; empty without one.
    pub from: String,
    /// The `Subject`, decoded; empty without one.
    pub subject: String,
    /// The first text body (text/plain, or the text of an HTML-only message), decoded, with
    /// line ends as `\n`. As received: lettre ends the SMTP data with CRLF.CRLF whatever the
    /// body ends with, so its body ending in a line break arrives with one more.
    pub body: String,
    /// Every header in order, as sent (`name`, value unfolded and trimmed, not decoded), and
    /// the ones the server added: `X-Peer`, `X-MailFrom`, `X-RcptTo` (the envelope).
    pub headers: Vec<(String, String)>,
    /// The file the message is stored in.
    pub path: PathBuf,
}

impl Mail {
    /// The first header called `name` (case-insensitive), as in [`Mail::headers`].
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An aiosmtpd server of its own, for one test; see the module docs.
pub struct MailCatcher {
    child: Child,
    /// Held open for the server's life; see [`WATCHED`].
    _stdin: Option<ChildStdin>,
    port: u16,
    dir: PathBuf,
}

impl MailCatcher {
    /// Starts a server on a free port and returns once it accepts connections.
    ///
    /// Async because it runs processes and waits for the port without blocking the runtime.
    /// Panics (it is for tests) when the server cannot be installed or started.
    pub async fn start() -> MailCatcher {
        ensure_installed().await;
        let dir = temp_dir();
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))
                .unwrap_or_else(|e| panic!("create Maildir {}: {e}", dir.display()));
        }
        // The free port is found by binding and releasing it; another process may take it in
        // between, so a server that exits at once is tried again on another port.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let log = dir.join("aiosmtpd.log");
            let log_file = std::fs::File::create(&log)
                .unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
            let log_err = log_file
                .try_clone()
                .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
            let mut child = Command::new(python())
                // -n: never switch to user nobody (aiosmtpd's default as root), which could
                // not write the Maildir. -u: SMTPUTF8, for addresses that are not ASCII (the
                // checkout accepts them).
                .args(["-c", WATCHED, "-n", "-u", "-l"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&dir)
                .stdin(Stdio::piped())
                .stdout(log_file)
                .stderr(log_err)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", python().display()));
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!(
                        "aiosmtpd exited ({status}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    let stdin = child.stdin.take();
                    return MailCatcher {
                        child,
                        _stdin: stdin,
                        port,
                        dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.start_kill();
                    panic!("aiosmtpd is not listening on port {port} after {START_TIMEOUT:?}");
                }
                // Polling for the port: aiosmtpd has no readiness signal to wait on.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("could not start aiosmtpd: {last_error}");
    }

    /// `smtp://127.0.0.1:PORT`, plain SMTP, for lettre's `AsyncSmtpTransport::from_url`.
    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Maildir the messages are stored in (one file each under `new/`).
    pub fn maildir(&self) -> &Path {
        &self.dir
    }

    /// Every message received so far, in the order the server received them. A message is
    /// on disk before the server acknowledges it, so whatever a client was told is sent is
    /// here.
    pub fn messages(&self) -> Vec<Mail> {
        let mut files: Vec<(u64, String, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                files.push((delivery_number(&name), name, entry.path()));
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|(_, _, path)| {
                let bytes =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                parse(&bytes, path)
            })
            .collect()
    }
}

impl Drop for MailCatcher {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Python's Maildir names files `TIME.M<usec>P<pid>Q<n>.HOST`, `n` counting deliveries of
/// the one server process: the order received, where the time may tie.
fn delivery_number(name: &str) -> u64 {
    name.split_once('Q')
        .map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Parses one stored message.
pub fn parse(bytes: &[u8], path: PathBuf) -> Mail {
    let Some(message) = mail_parser::MessageParser::default().parse(bytes) else {
        return Mail {
            message_id: None,
            to: Vec::new(),
            from: String::new(),
            subject: String::new(),
            body: String::new(),
            headers: Vec::new(),
            path,
        };
    };
    let addresses = |address: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        address
            .map(|a| {
                a.iter()
                    .filter_map(|addr| addr.address())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let headers = message
        .headers_raw()
        .map(|(name, value)| (name.to_owned(), unfold(value)))
        .collect();
    Mail {
        message_id: message.message_id().map(str::to_owned),
        to: addresses(message.to()),
        from: addresses(message.from())
            .into_iter()
            .next()
            .unwrap_or_default(),
        subject: message.subject().unwrap_or_default().to_owned(),
        body: message
            .body_text(0)
            .map(|b| b.replace("\r\n", "\n"))
            .unwrap_or_default(),
        headers,
        path,
    }
}

/// A header value on one line: a line break followed by white space is that white space
/// (RFC 5322 section 2.2.3).
fn unfold(value: &str) -> String {
    value
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_owned()
}

fn repo_root() -> PathBuf {
    // shared/test-support -> the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn python() -> PathBuf {
    repo_root().join(".local/venv/bin/python")
}

/// Runs `scripts/mail.sh install` once per process if the virtualenv lacks aiosmtpd (the
/// script checks the pinned version itself and holds a lock, so tests in several processes
/// cannot install twice at once).
async fn ensure_installed() {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let present = Command::new(python())
                .args(["-c", "import aiosmtpd.handlers"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if present {
                return;
            }
            let script = repo_root().join("scripts/mail.sh");
            let status = Command::new("bash")
                .arg(&script)
                .arg("install")
                .stdin(Stdio::null())
                .status()
                .await
                .unwrap_or_else(|e| panic!("run {} install: {e}", script.display()));
            assert!(
                status.success(),
                "{} install failed ({status}); see its output above",
                script.display()
            );
        })
        .await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("find a free port: {e}"))
}

fn temp_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    std::env::temp_dir().join(format!("mail-catcher-{}-{n}-{nanos}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_folded_and_encoded_headers() {
        let raw = b"From: \"Shop\" <orders@example.com>\r\n\
To: =?utf-8?q?J=C3=BCrgen?= <j@example.com>, k@example.com\r\n\
Subject: =?utf-8?b?R3LDvMOfZQ==?= and a long\r\n line folded\r\n\
Message-ID: <abc.123@example.com>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Hello J=C3=BCrgen,\r\nline two\r\n";
        let mail = parse(raw, PathBuf::from("x"));
        assert_eq!(mail.message_id.as_deref(), Some("abc.123@example.com"));
        assert_eq!(mail.from, "orders@example.com");
        assert_eq!(mail.to, ["j@example.com", "k@example.com"]);
        assert_eq!(mail.subject, "Grüße and a long line folded");
        assert_eq!(mail.body, "Hello Jürgen,\nline two\n");
        assert_eq!(
            mail.header("subject"),
            Some("=?utf-8?b?R3LDvMOfZQ==?= and a long line folded")
        );
    }

    #[test]
    fn delivery_numbers_order_the_files() {
        assert_eq!(delivery_number("1795969613.M780047P20815Q12.vm"), 12);
        assert_eq!(delivery_number("garbage"), u64::MAX);
    }
}
