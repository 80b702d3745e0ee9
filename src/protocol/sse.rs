//! Server-Sent Events, parsed incrementally as the body's frames arrive (the WHATWG HTML
//! standard's "event stream interpretation"), each event stamped with the arrival time of the
//! frame that completed it.
//!
//! The rules kept: a line ends with CRLF, LF or CR (a CR at the end of one frame and an LF at the
//! start of the next are one line end); one leading byte-order mark is dropped; a line starting
//! with `:` is a comment; `field: value` drops one space after the colon, and a line without a
//! colon is a field with an empty value; `data` lines join with `\n`; `event` sets the type; a
//! blank line ends the event, which is dispatched only when it has data; what follows the last
//! blank line at the end of the stream is discarded. `id` and `retry` are read and ignored (a load
//! test never reconnects). The standard decodes UTF-8 first; here bytes stay bytes (a JSON reader
//! refuses invalid UTF-8 later), which is the same for every field this crate reads.
//!
//! Bounded: the bytes held for one event (its unfinished line, data and type) never exceed the
//! limit given; past it the stream is refused (a hostile server's endless line costs the limit,
//! not memory without end).

use std::time::Duration;

use crate::error::{Error, Result};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event` field, empty when none was given (the standard's "message").
    pub kind: &'a [u8],
    /// The `data` lines joined by `\n`.
    pub data: &'a [u8],
    /// When the frame that completed the event arrived (from the request's send).
    pub at: Duration,
}

/// An incremental parser of one response's event stream.
#[derive(Debug)]
pub struct Parser {
    /// The most bytes one event may hold (unfinished line + data + type).
    limit: usize,
    /// The start of a line that the last frame left unfinished.
    line: Vec<u8>,
    /// The event's data so far, each line followed by `\n`.
    data: Vec<u8>,
    kind: Vec<u8>,
    /// Whether the last byte seen was a CR: an LF right after it ends no second line.
    after_cr: bool,
    /// Whether no line has been completed yet (where a byte-order mark may be).
    first_line: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Parser {
    pub fn new(limit: usize) -> Self {
        Parser {
            limit,
            line: Vec::new(),
            data: Vec::new(),
            kind: Vec::new(),
            after_cr: false,
            first_line: true,
        }
    }

    /// Parses one frame that arrived at `at`, calling `dispatch` with each event it completes;
    /// stops at the first error (`dispatch`'s, or an event over the limit).
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        at: Duration,
        dispatch: &mut dyn FnMut(Event<'_>) -> Result<()>,
    ) -> Result<()> {
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while !bytes.is_empty() {
            let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) else {
                self.held(bytes.len())?;
                self.line.extend_from_slice(bytes);
                return Ok(());
            };
            let mut next = end + 1;
            if bytes[end] == b'\r' {
                match bytes.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() {
                self.line_done(&bytes[..end], at, dispatch)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&bytes[..end]);
                let result = self.line_done(&line, at, dispatch);
                line.clear();
                self.line = line; // its capacity is reused
                result?;
            }
            bytes = &bytes[next..];
        }
        Ok(())
    }

    /// Fails when `more` bytes of a line on top of what the event holds go past the limit. Every
    /// line is checked whole (or its start, while unfinished) against the data and type before it,
    /// so the verdict does not depend on how the stream was cut into frames.
    fn held(&self, more: usize) -> Result<()> {
        let held = self.line.len() + self.data.len() + self.kind.len();
        if held.saturating_add(more) > self.limit {
            return Err(Error::protocol(format!(
                "a server-sent event larger than {} bytes (or a line that never ends)",
                self.limit
            )));
        }
        Ok(())
    }

    fn line_done(
        &mut self,
        mut line: &[u8],
        at: Duration,
        dispatch: &mut dyn FnMut(Event<'_>) -> Result<()>,
    ) -> Result<()> {
        // `line` is either not held yet, or was taken out of `self.line`: count it whole (with the
        // byte-order mark, as while it was unfinished).
        self.held(line.len())?;
        if std::mem::take(&mut self.first_line) {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch(at, dispatch);
        }
        if line[0] == b':' {
            return Ok(()); // a comment (a keep-alive, usually)
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                // `value` and its `\n` take no more than the line checked above
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.kind.clear();
                self.kind.extend_from_slice(value);
            }
            _ => {} // id, retry and unknown fields
        }
        Ok(())
    }

    fn dispatch(
        &mut self,
        at: Duration,
        dispatch: &mut dyn FnMut(Event<'_>) -> Result<()>,
    ) -> Result<()> {
        if self.data.is_empty() {
            self.kind.clear();
            return Ok(());
        }
        let data = &self.data[..self.data.len() - 1]; // the last line's `\n`
        let result = dispatch(Event {
            kind: &self.kind,
            data,
            at,
        });
        self.data.clear();
        self.kind.clear();
        result
    }

    /// Whether the stream so far ends between events (nothing of an event held back), as a stream
    /// that ends cleanly does.
    pub fn between_events(&self) -> bool {
        self.line.is_empty() && self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Owned {
        kind: String,
        data: String,
        at: Duration,
    }

    /// The events of `frames`, each (bytes, arrival ms).
    fn parse(limit: usize, frames: &[(&[u8], u64)]) -> Result<Vec<Owned>> {
        let mut parser = Parser::new(limit);
        let mut events = Vec::new();
        for (bytes, ms) in frames {
            parser.feed(bytes, Duration::from_millis(*ms), &mut |e| {
                events.push(Owned {
                    kind: String::from_utf8_lossy(e.kind).into_owned(),
                    data: String::from_utf8_lossy(e.data).into_owned(),
                    at: e.at,
                });
                Ok(())
            })?;
        }
        Ok(events)
    }

    fn data(events: &[Owned]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn the_standard_s_examples() {
        // html.spec.whatwg.org, "Event stream interpretation"
        let e = parse(1024, &[(b"data: YHOO\ndata: +2\ndata: 10\n\n", 0)]).unwrap();
        assert_eq!(data(&e), ["YHOO\n+2\n10"]);
        let e = parse(
            1024,
            &[(
                b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
                0,
            )],
        )
        .unwrap();
        assert_eq!(data(&e), ["first event", "second event", " third event"]);
        // an empty data line, and a field without colon: two events, "" and "\n"; the last
        // (no blank line after it) is discarded
        let e = parse(1024, &[(b"data\n\ndata\ndata\n\ndata:", 0)]).unwrap();
        assert_eq!(data(&e), ["", "\n"]);
        let e = parse(1024, &[(b"data:test\n\ndata: test\n\n", 0)]).unwrap();
        assert_eq!(data(&e), ["test", "test"]);
    }

    #[test]
    fn line_ends_types_comments_and_the_bom() {
        let e = parse(
            1024,
            &[(
                b"\xEF\xBB\xBFevent: error\r\ndata: a\rdata: b\r\n\r:x\n\nevent: gone\n\n",
                0,
            )],
        )
        .unwrap();
        assert_eq!(
            e,
            [Owned {
                kind: "error".into(),
                data: "a\nb".into(),
                at: Duration::ZERO
            }]
        );
        // the type of an event without data is forgotten
        let e = parse(1024, &[(b"event: x\n\ndata: y\n\n", 0)]).unwrap();
        assert_eq!(e[0].kind, "");
        // a BOM only at the very start
        let e = parse(1024, &[(b"data: 1\n\n\xEF\xBB\xBFdata: 2\n\n", 0)]).unwrap();
        assert_eq!(data(&e), ["1"]);
    }

    #[test]
    fn a_crlf_split_between_frames_is_one_line_end() {
        let e = parse(
            1024,
            &[
                (b"data: a\r", 1),
                (b"\n", 2),
                (b"data: b\r", 3),
                (b"\ndata: c\r\n\r\n", 4),
            ],
        )
        .unwrap();
        assert_eq!(data(&e), ["a\nb\nc"]);
        // a CR then a frame of CR: two line ends, so the event ends there
        let e = parse(1024, &[(b"data: a\r", 1), (b"\r", 2)]).unwrap();
        assert_eq!((data(&e), e[0].at), (vec!["a"], Duration::from_millis(2)));
    }

    #[test]
    fn each_event_has_the_time_of_the_frame_that_ended_it() {
        let e = parse(
            1024,
            &[
                (b"data: 1\n\nda", 10),
                (b"ta: 2\n\n", 20),
                (b"data: 3\n\ndata: 4\n", 30),
                (b"\n", 45),
            ],
        )
        .unwrap();
        let at: Vec<u64> = e.iter().map(|e| e.at.as_millis() as u64).collect();
        assert_eq!(
            (data(&e), at),
            (vec!["1", "2", "3", "4"], vec![10, 20, 30, 45])
        );
    }

    #[test]
    fn an_event_over_the_limit_is_refused_whatever_the_frames() {
        // a line that never ends, in 1 KiB frames: refused once past the limit
        let mut parser = Parser::new(10 * 1024);
        let frame = [b'x'; 1024];
        let mut fed = 0;
        let err = loop {
            match parser.feed(&frame, Duration::ZERO, &mut |_| Ok(())) {
                Ok(()) => fed += 1,
                Err(e) => break e,
            }
            assert!(fed <= 10, "never refused");
        };
        assert!(err.to_string().contains("larger than 10240 bytes"), "{err}");
        assert!(parser.line.capacity() <= 2 * 10 * 1024);
        // many short data lines
        let mut lines = Vec::new();
        for _ in 0..2000 {
            lines.extend_from_slice(b"data: 123456\n");
        }
        assert!(parse(10 * 1024, &[(&lines, 0)]).is_err());
        // each line counts whole, on top of the event's data so far ("12345\n": 6 bytes)
        let two = b"data: 12345\ndata: 12345\n\n";
        assert_eq!(data(&parse(17, &[(two, 0)]).unwrap()), ["12345\n12345"]);
        assert!(parse(16, &[(two, 0)]).is_err());
        let split: Vec<(&[u8], u64)> = two.chunks(1).map(|b| (b, 0)).collect();
        assert!(parse(16, &split).is_err());
        assert!(parse(17, &split).is_ok());
    }

    #[test]
    fn a_dispatch_error_stops_the_feed() {
        let mut parser = Parser::new(1024);
        let mut seen = 0;
        let result = parser.feed(b"data: 1\n\ndata: 2\n\n", Duration::ZERO, &mut |_| {
            seen += 1;
            Err(Error::protocol("no"))
        });
        assert!(result.is_err());
        assert_eq!(seen, 1);
    }

    #[test]
    fn between_events() {
        let mut parser = Parser::new(1024);
        let mut ignore = |_: Event<'_>| Ok(());
        parser
            .feed(b"data: 1\n\n", Duration::ZERO, &mut ignore)
            .unwrap();
        assert!(parser.between_events());
        parser
            .feed(b"data: 2\n", Duration::ZERO, &mut ignore)
            .unwrap();
        assert!(!parser.between_events());
        parser.feed(b"\nda", Duration::ZERO, &mut ignore).unwrap();
        assert!(!parser.between_events());
    }

    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            "data:[ a-z{}\"\\[\\]]{0,12}".prop_map(String::into_bytes),
            "data: [a-z]{0,5}".prop_map(String::into_bytes),
            "event: ?[a-z]{0,5}".prop_map(String::into_bytes),
            ":[ a-z]{0,5}".prop_map(String::into_bytes),
            "(id|retry|data|event|x)".prop_map(String::into_bytes),
            Just(Vec::new()),
            prop::collection::vec(any::<u8>(), 0..6),
        ];
        let end = prop::sample::select(vec![&b"\n"[..], b"\r", b"\r\n"]);
        (any::<bool>(), prop::collection::vec((line, end), 0..30)).prop_map(|(bom, lines)| {
            let mut out = if bom { BOM.to_vec() } else { Vec::new() };
            for (line, end) in lines {
                out.extend_from_slice(&line);
                out.extend_from_slice(end);
            }
            out
        })
    }

    proptest! {
        /// However the bytes are cut into frames, the same events come out (or the same refusal of
        /// an event over the limit).
        #[test]
        fn frames_cut_anywhere_give_the_same_events(
            bytes in stream(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            limit in prop_oneof![Just(1usize << 20), 0usize..40],
        ) {
            let whole = parse(limit, &[(&bytes, 0)]).ok();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            at.push(0);
            at.push(bytes.len());
            at.sort_unstable();
            let frames: Vec<(&[u8], u64)> =
                at.windows(2).map(|w| (&bytes[w[0]..w[1]], 0)).collect();
            let cut = parse(limit, &frames).ok();
            prop_assert_eq!(cut, whole);
        }

        /// An event's time is the time of the frame in which its blank line ended.
        #[test]
        fn times_are_those_of_the_completing_frame(
            events in prop::collection::vec("[a-z]{1,6}", 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut bytes = Vec::new();
            let mut ends = Vec::new();
            for e in &events {
                bytes.extend_from_slice(format!("data: {e}\n\n").as_bytes());
                ends.push(bytes.len());
            }
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            at.push(0);
            at.push(bytes.len());
            at.sort_unstable();
            at.dedup();
            let frames: Vec<(&[u8], u64)> = at
                .windows(2)
                .enumerate()
                .map(|(i, w)| (&bytes[w[0]..w[1]], i as u64))
                .collect();
            let parsed = parse(1024, &frames).unwrap();
            prop_assert_eq!(parsed.len(), events.len());
            for (event, end) in parsed.iter().zip(ends) {
                let frame = at.windows(2).position(|w| w[0] < end && end <= w[1]).unwrap();
                prop_assert_eq!(event.at, Duration::from_millis(frame as u64));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16),
            limit in 0usize..100,
        ) {
            let mut parser = Parser::new(limit);
            for frame in frames {
                let result = parser.feed(&frame, Duration::ZERO, &mut |e| {
                    assert!(e.data.len() <= limit);
                    Ok(())
                });
                prop_assert!(parser.line.len() + parser.data.len() + parser.kind.len() <= limit);
                if result.is_err() {
                    break;
                }
            }
        }
    }
}
