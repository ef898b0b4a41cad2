//! An incremental Server-Sent Events parser (WHATWG HTML, "event stream interpretation").
//!
//! Bytes arrive in arbitrary chunks; [`SseParser::push`] returns every event completed by the
//! chunk. Lines may end in `\n`, `\r\n` or `\r` (also split across chunks); `:` lines are
//! comments (keep-alives); `data` lines accumulate; the last `id` persists across events.
//!
//! ```
//! use palisade_top::sse::SseParser;
//! let mut p = SseParser::new();
//! assert!(p.push(b"id: 7\ndata: {\"a\"").unwrap().is_empty());
//! let events = p.push(b":1}\n\n").unwrap();
//! assert_eq!(events[0].data, "{\"a\":1}");
//! assert_eq!(events[0].id.as_deref(), Some("7"));
//! ```

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` type, `None` for the default (`message`).
    pub event: Option<String>,
    /// The data lines joined with `\n`.
    pub data: String,
    /// The last event id seen on the stream (persists across events).
    pub id: Option<String>,
    /// A `retry:` reconnection time sent with this event, milliseconds.
    pub retry_ms: Option<u64>,
}

/// A line longer than the parser accepts (a misbehaving or hostile server).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event stream line longer than {max} bytes")]
pub struct LineTooLong {
    /// The limit.
    pub max: usize,
}

/// Incremental event-stream parser.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    max_line: usize,
    after_cr: bool,
    started: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    retry_ms: Option<u64>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// Default longest line: 16 MiB, far above any snapshot.
    pub const DEFAULT_MAX_LINE: usize = 16 * 1024 * 1024;

    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::with_max_line(Self::DEFAULT_MAX_LINE)
    }

    /// A parser refusing lines longer than `max_line` bytes.
    pub fn with_max_line(max_line: usize) -> Self {
        Self {
            line: Vec::new(),
            max_line,
            after_cr: false,
            started: false,
            data: String::new(),
            has_data: false,
            event: None,
            last_id: None,
            retry_ms: None,
        }
    }

    /// The last event id seen so far.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Feeds a chunk; returns the events it completed, in order.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut out = Vec::new();
        if !self.started && !chunk.is_empty() {
            // A UTF-8 byte order mark at the very start is ignored. (It can only be split
            // across chunks by a pathological server; we accept that limitation.)
            if let Some(rest) = chunk.strip_prefix(b"\xEF\xBB\xBF") {
                chunk = rest;
            }
            self.started = true;
        }
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.process_line(&line) {
                        out.push(ev);
                    }
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= self.max_line {
                        return Err(LineTooLong { max: self.max_line });
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn process_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take().filter(|e| !e.is_empty());
        let retry_ms = self.retry_ms.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
            retry_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: &mut SseParser, chunks: &[&[u8]]) -> Vec<SseEvent> {
        chunks.iter().flat_map(|c| p.push(c).unwrap()).collect()
    }

    #[test]
    fn parses_event_id_and_multiline_data() {
        let mut p = SseParser::new();
        let ev = all(&mut p, &[b"event: snapshot\nid: 3\ndata: a\ndata: b\n\n"]);
        assert_eq!(
            ev,
            vec![SseEvent {
                event: Some("snapshot".into()),
                data: "a\nb".into(),
                id: Some("3".into()),
                retry_ms: None
            }]
        );
    }

    #[test]
    fn handles_every_line_ending_even_split_across_chunks() {
        let mut p = SseParser::new();
        let ev = all(
            &mut p,
            &[b"data: one\r", b"\n\r", b"\ndata: two\r\rdata:three\n\n"],
        );
        let data: Vec<_> = ev.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["one", "two", "three"]);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_events() {
        let stream =
            b"id: 1\ndata: {\"x\": 1}\n\n: keep-alive\n\nid: 2\nevent: snapshot\ndata: y\n\n";
        let mut whole = SseParser::new();
        let expected = whole.push(stream).unwrap();
        let mut bytes = SseParser::new();
        let got: Vec<_> = stream
            .iter()
            .flat_map(|b| bytes.push(&[*b]).unwrap())
            .collect();
        assert_eq!(got, expected);
        assert_eq!(got.len(), 2);
        assert_eq!(bytes.last_event_id(), Some("2"));
    }

    #[test]
    fn comments_and_empty_events_dispatch_nothing() {
        let mut p = SseParser::new();
        assert!(all(&mut p, &[b": ping\n\n\n", b"event: x\n\n"]).is_empty());
        // The event type was reset by the blank line, so the next event is a plain message.
        let ev = all(&mut p, &[b"data: z\n\n"]);
        assert_eq!(ev[0].event, None);
    }

    #[test]
    fn id_persists_and_retry_is_reported_once() {
        let mut p = SseParser::new();
        let ev = all(&mut p, &[b"id: 9\nretry: 1500\ndata: a\n\ndata: b\n\n"]);
        assert_eq!(ev[0].retry_ms, Some(1500));
        assert_eq!(ev[1].retry_ms, None);
        assert_eq!(ev[1].id.as_deref(), Some("9"));
    }

    #[test]
    fn field_without_colon_and_value_without_space() {
        let mut p = SseParser::new();
        let ev = all(&mut p, &[b"data\ndata:x\n\n"]);
        assert_eq!(ev[0].data, "\nx");
    }

    #[test]
    fn leading_bom_is_ignored() {
        let mut p = SseParser::new();
        let ev = all(&mut p, &[b"\xEF\xBB\xBFdata: a\n\n"]);
        assert_eq!(ev[0].data, "a");
    }

    #[test]
    fn refuses_overlong_lines() {
        let mut p = SseParser::with_max_line(8);
        assert!(p.push(b"data: 1234").is_err());
    }
}
