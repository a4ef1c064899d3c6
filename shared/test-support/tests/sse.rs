//! The SSE client against a server written by hand on a TCP socket, so the test decides where
//! the body is cut: in the middle of a line and of a UTF-8 character.

use std::time::Duration;

use reqwest::StatusCode;
use test_support::sse::{SseError, SseStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(10);

/// Reads a request's head and returns it in lower case.
async fn read_head(socket: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(socket.read(&mut byte).await.unwrap(), 1, "a whole request");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_lowercase()
}

/// Accepts one connection, sends it `first`, then `rest` once told to, then closes it. Returns
/// the URL, the request head, and the go-ahead for `rest`.
async fn serve_once(
    response_head: &'static str,
    first: &'static [u8],
    rest: &'static [u8],
) -> (String, oneshot::Receiver<String>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let (head_tx, head_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let _ = head_tx.send(read_head(&mut socket).await);
        socket.write_all(response_head.as_bytes()).await.unwrap();
        socket.write_all(first).await.unwrap();
        socket.flush().await.unwrap();
        if go_rx.await.is_ok() {
            socket.write_all(rest).await.unwrap();
        }
        socket.shutdown().await.unwrap();
    });
    (url, head_rx, go_tx)
}

const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn frames_cut_anywhere_arrive_whole_and_the_end_is_seen() {
    let (url, head, go) = serve_once(
        STREAM_HEAD,
        // The second frame stops inside its data line, inside the two bytes of "é".
        b"id: 1\nevent: snapshot\ndata: {\"n\":1}\n\nid: 2\nevent: delta\ndata: caf\xc3",
        b"\xa9\r\ndata: second line\r\n\r\n:\n\n: ka\n\nid: 3\ndata: never finished\n",
    )
    .await;
    let mut stream = SseStream::connect(&url, Some("the-token"), Some("0"))
        .await
        .unwrap();
    let head = head.await.unwrap();
    assert!(head.starts_with("get /stream http/1.1\r\n"), "{head}");
    assert!(
        head.contains("\r\nauthorization: bearer the-token\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nlast-event-id: 0\r\n"), "{head}");
    assert!(head.contains("\r\naccept: text/event-stream\r\n"), "{head}");
    assert_eq!(stream.last_event_id(), Some("0"));

    let first = stream.next_frame(WAIT).await.unwrap().unwrap();
    assert_eq!(first.id.as_deref(), Some("1"));
    assert_eq!(first.event.as_deref(), Some("snapshot"));
    assert_eq!(first.json().unwrap()["n"], 1);
    assert_eq!(stream.last_event_id(), Some("1"));
    // Half a frame is not a frame; the wait for the rest times out without losing it.
    assert!(matches!(
        stream.next_frame(Duration::from_millis(200)).await,
        Err(SseError::Timeout(_))
    ));

    go.send(()).unwrap();
    let second = stream.next_frame(WAIT).await.unwrap().unwrap();
    assert_eq!(second.id.as_deref(), Some("2"));
    assert_eq!(second.event.as_deref(), Some("delta"));
    assert_eq!(second.data, "café\nsecond line");
    assert!(second.comments.is_empty());
    let keep_alive = stream.next_frame(WAIT).await.unwrap().unwrap();
    assert!(keep_alive.is_comment_only());
    assert_eq!(keep_alive.comments, [""]);
    // next_event passes over comments; the unfinished frame 3 is dropped at the end.
    assert_eq!(stream.next_event(WAIT).await.unwrap(), None);
    assert_eq!(stream.last_event_id(), Some("2"));
}

#[tokio::test]
async fn an_answer_that_is_not_a_stream_is_an_error() {
    let (url, _head, _go) = serve_once(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 33\r\nconnection: close\r\n\r\n",
        b"{\"error\":{\"code\":\"unauthorized\"}}",
        b"",
    )
    .await;
    match SseStream::connect(&url, None, None).await {
        Err(SseError::NotAStream { status, body, .. }) => {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert!(body.contains("unauthorized"), "{body}");
        }
        Err(e) => panic!("expected NotAStream, got {e}"),
        Ok(_) => panic!("expected NotAStream, got a stream"),
    }
}
