//! Serving a router so that every error a client can get carries the JSON error body.
//!
//! hyper answers a request it cannot parse (400), whose URI is longer than 64 KiB (414) or
//! whose head outgrows its buffer (431) by itself, before any handler or layer runs, with an
//! empty body. [`JsonErrors`] wraps each connection and gives those automatic responses the
//! same `{"error": {"code", "message"}}` body as every other error.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::serve::Listener;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections answer hyper's automatic errors with the JSON body.
pub struct JsonErrors(pub TcpListener);

impl Listener for JsonErrors {
    type Io = ErrorBodies<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept logs and retries errors (e.g. too many open files).
        let (io, addr) = Listener::accept(&mut self.0).await;
        (ErrorBodies::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// One connection: passes bytes through, but replaces a bodiless 400, 414 or 431 response
/// head (which only hyper's parse-error path writes: every handler's error has a body).
pub struct ErrorBodies<IO> {
    inner: IO,
    /// A replacement response not yet fully written, and how much of it is.
    pending: Option<(Vec<u8>, usize)>,
}

impl<IO> ErrorBodies<IO> {
    pub fn new(inner: IO) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The response to send instead of `head`, if `head` is one of hyper's automatic errors.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    let headers = text.strip_suffix("\r\n\r\n")?;
    let (code, message) = match rest.get(..4)? {
        "400 " => (
            "malformed_request",
            "the request is not well-formed HTTP/1.1",
        ),
        "414 " => (
            "uri_too_long",
            "the request URI is longer than this server accepts (64 KiB)",
        ),
        "431 " => (
            "headers_too_large",
            "the request's headers are larger than this server accepts",
        ),
        _ => return None,
    };
    let mut lines = headers.split("\r\n");
    let status_line = lines.next()?;
    let rest: Vec<&str> = lines.collect();
    if !rest
        .iter()
        .any(|l| l.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let body = json!({"error": {"code": code, "message": message}}).to_string();
    let mut out = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for line in rest {
        // Keep what hyper said (the date), except the length and connection we replace.
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if name != "content-length" && name != "connection" {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<IO: AsyncWrite + Unpin> ErrorBodies<IO> {
    /// Writes what is left of a replacement; ready once none is left.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
            if *written == bytes.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ErrorBodies<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ErrorBodies<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        // hyper writes a whole response head in one call (writes are not vectored, below);
        // the cheap check on the first bytes keeps every other write a pass-through.
        if buf.starts_with(b"HTTP/1.1 4")
            && let Some(bytes) = replacement(buf)
        {
            self.pending = Some((bytes, 0));
            // The replacement is buffered: hyper's bytes count as written.
            return match self.poll_pending(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    /// Not vectored, so hyper flattens each response head into one write.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_parse_error_heads_are_replaced() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 29 Nov 2026 12:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("date: Sun, 29 Nov 2026 12:00:00 GMT"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "headers_too_large");

        // A handler's error has a body: left alone.
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 52\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
