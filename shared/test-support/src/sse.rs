//! A Server-Sent Events client for tests: connects with a bearer token (and `Last-Event-ID` to
//! resume) and hands out frames one at a time, keep-alive comments included so a test can see
//! them. The body is read with `Response::chunk` (reqwest's `bytes_stream` needs a feature the
//! workspace leaves off) and split on bytes, since a chunk may end anywhere, even inside a UTF-8
//! character.

use std::time::Duration;

use reqwest::StatusCode;

/// One block of lines ended by an empty line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// The `id:` field of this frame (not the last id seen before it).
    pub id: Option<String>,
    /// The `event:` field; `None` means the default `message`.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// The `:` comment lines, each without its colon and one leading space.
    pub comments: Vec<String>,
}

impl Frame {
    /// A frame of nothing but comments, such as axum's keep-alive `:\n\n`.
    pub fn is_comment_only(&self) -> bool {
        self.id.is_none() && self.event.is_none() && self.data.is_empty()
    }

    /// The data parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.data)
    }
}

/// Turns bytes, however they are cut, into frames. Lines end in `\n` or `\r\n`.
#[derive(Debug, Default)]
pub struct FrameParser {
    /// Bytes of the line not yet ended.
    pending: Vec<u8>,
    frame: Frame,
    /// Whether the frame under construction has any line (an empty line alone is no frame).
    started: bool,
    /// Data lines so far: an empty `data:` line still counts.
    data_lines: usize,
    /// Whether the first line was read (a UTF-8 byte order mark may precede it).
    past_start: bool,
}

impl FrameParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` and returns the frames they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let mut line = std::mem::take(&mut self.pending);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(frame) = self.line(&line) {
                frames.push(frame);
            }
        }
        self.pending.extend_from_slice(rest);
        frames
    }

    fn line(&mut self, line: &[u8]) -> Option<Frame> {
        let line = if self.past_start {
            line
        } else {
            self.past_start = true;
            line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line)
        };
        if line.is_empty() {
            if !self.started {
                return None;
            }
            self.started = false;
            self.data_lines = 0;
            return Some(std::mem::take(&mut self.frame));
        }
        self.started = true;
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "" => self.frame.comments.push(value.to_owned()),
            "data" => {
                if self.data_lines > 0 {
                    self.frame.data.push('\n');
                }
                self.frame.data.push_str(value);
                self.data_lines += 1;
            }
            "event" => self.frame.event = Some(value.to_owned()),
            // The standard ignores an id with a NUL in it.
            "id" if !value.contains('\0') => self.frame.id = Some(value.to_owned()),
            // retry and unknown fields mean nothing to a test.
            _ => {}
        }
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// The server did not answer 200 with `text/event-stream`.
    #[error("not an event stream: {status}, content-type {content_type:?}: {body}")]
    NotAStream {
        status: StatusCode,
        content_type: Option<String>,
        body: String,
    },
    #[error("no frame within {0:?}")]
    Timeout(Duration),
}

/// An open event stream.
pub struct SseStream {
    response: reqwest::Response,
    parser: FrameParser,
    /// Frames read but not yet handed out (one chunk may hold several).
    ready: std::collections::VecDeque<Frame>,
    last_event_id: Option<String>,
}

impl SseStream {
    /// `GET url` with `Accept: text/event-stream`, `Authorization: Bearer <token>` when given and
    /// `Last-Event-ID` when given.
    pub async fn connect(
        url: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<SseStream, SseError> {
        Self::connect_with(&reqwest::Client::new(), url, token, last_event_id).await
    }

    /// [`SseStream::connect`] with the caller's client (many streams can share its pool).
    pub async fn connect_with(
        client: &reqwest::Client,
        url: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<SseStream, SseError> {
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(token) = token {
            request = request.header("authorization", crate::auth::bearer(token));
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let is_stream = content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if response.status() != StatusCode::OK || !is_stream {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(SseError::NotAStream {
                status,
                content_type,
                body,
            });
        }
        Ok(SseStream {
            response,
            parser: FrameParser::new(),
            ready: Default::default(),
            last_event_id: last_event_id.map(str::to_owned),
        })
    }

    /// The response's headers.
    pub fn headers(&self) -> &reqwest::header::HeaderMap {
        self.response.headers()
    }

    /// The next frame, keep-alive comments included; `None` once the server ended the stream
    /// (a last frame without its empty line is dropped, as browsers do).
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, SseError> {
        let frame = tokio::time::timeout(timeout, async {
            loop {
                if let Some(frame) = self.ready.pop_front() {
                    return Ok::<_, SseError>(Some(frame));
                }
                match self.response.chunk().await? {
                    Some(bytes) => self.ready.extend(self.parser.push(&bytes)),
                    None => return Ok(None),
                }
            }
        })
        .await
        .map_err(|_| SseError::Timeout(timeout))??;
        if let Some(id) = frame.as_ref().and_then(|f| f.id.as_ref()) {
            self.last_event_id = Some(id.clone());
        }
        Ok(frame)
    }

    /// The next frame that is not only comments.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Option<Frame>, SseError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await? {
                Some(frame) if frame.is_comment_only() => continue,
                other => return Ok(other),
            }
        }
    }

    /// The id to resume from: the last `id:` received, else the one connected with.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "\u{feff}: hello\n\
        id: 7\nevent: snapshot\ndata: {\"a\":1}\n\n\
        :\n\n\
        id:8\r\nevent:delta\r\ndata:line one\r\ndata: line two\r\ndata:\r\n\r\n\
        \n\n\
        data\nretry: 5000\nunknown: x\nid: ünï\u{00e7}ødé\n\n";

    fn expected() -> Vec<Frame> {
        vec![
            Frame {
                id: Some("7".into()),
                event: Some("snapshot".into()),
                data: r#"{"a":1}"#.into(),
                comments: vec!["hello".into()],
            },
            Frame {
                comments: vec!["".into()],
                ..Frame::default()
            },
            Frame {
                id: Some("8".into()),
                event: Some("delta".into()),
                data: "line one\nline two\n".into(),
                comments: vec![],
            },
            Frame {
                id: Some("ünïçødé".into()),
                ..Frame::default()
            },
        ]
    }

    #[test]
    fn parses_fields_comments_and_both_line_endings() {
        let frames = FrameParser::new().push(STREAM.as_bytes());
        assert_eq!(frames, expected());
        assert!(frames[1].is_comment_only());
        assert!(!frames[0].is_comment_only());
        assert_eq!(frames[0].json().unwrap()["a"], 1);
    }

    #[test]
    fn a_split_at_any_byte_gives_the_same_frames() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let mut parser = FrameParser::new();
            let mut frames = parser.push(&bytes[..cut]);
            frames.extend(parser.push(&bytes[cut..]));
            assert_eq!(frames, expected(), "cut at byte {cut}");
        }
        // And one byte at a time.
        let mut parser = FrameParser::new();
        let frames: Vec<Frame> = bytes.iter().flat_map(|b| parser.push(&[*b])).collect();
        assert_eq!(frames, expected());
    }

    #[test]
    fn an_unfinished_frame_is_not_handed_out() {
        let mut parser = FrameParser::new();
        assert_eq!(parser.push(b"id: 1\ndata: x\n"), vec![]);
        assert_eq!(parser.push(b"\n")[0].data, "x");
    }
}
