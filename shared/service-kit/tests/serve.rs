//! hyper's own answers to requests it cannot take (400, 414, 431) carry the JSON error body.

use axum::Router;
use axum::routing::get;
use serde_json::Value;
use service_kit::serve::JsonErrors;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve() -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route("/ok", get(|| async { "fine" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(JsonErrors(listener), app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (port, stop)
}

/// Sends raw bytes, reads until the server closes; returns status, headers and body.
async fn exchange(port: u16, request: &[u8]) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The server may answer and close before it has read everything: that is its right.
    let _ = tcp.write_all(request).await;
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply).await;
    let reply = String::from_utf8(reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn requests_hyper_refuses_get_the_json_error_body() {
    let (port, stop) = serve().await;

    let long_uri = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let (status, head, body) = exchange(port, long_uri.as_bytes()).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (414, "uri_too_long"),
        "{head}"
    );
    assert!(head.contains("content-type: application/json"), "{head}");

    let big_headers = format!(
        "GET /ok HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(600_000)
    );
    let (status, head, body) = exchange(port, big_headers.as_bytes()).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (431, "headers_too_large"),
        "{head}"
    );

    let many_headers = format!(
        "GET /ok HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    let (status, _, body) = exchange(port, many_headers.as_bytes()).await;
    assert_eq!((status, code(&body).as_str()), (431, "headers_too_large"));

    let (status, _, body) = exchange(port, b"GET /ok HTTP/1.1\r\nbad header\r\n\r\n").await;
    assert_eq!((status, code(&body).as_str()), (400, "malformed_request"));

    // Everything else passes through untouched.
    let (status, _, body) = exchange(
        port,
        b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "fine"));
    let _ = stop.send(());
}
