//! Generated text, streamed or not: what the answers of two APIs hold, read as the body arrives.
//!
//! - `openai`: `POST /v1/chat/completions` and `/v1/completions`. Streamed (Server-Sent Events) as
//!   chunks whose `choices[i].delta.content` (chat; also `reasoning_content`) or `choices[i].text`
//!   (completions) carry the text, `usage` (`prompt_tokens`, `completion_tokens`) in any chunk
//!   (usually a last one with empty `choices`), and `data: [DONE]` at the end. Not streamed: one
//!   JSON body with `choices[i].message.content` or `choices[i].text`, and `usage`.
//! - `triton-generate`: Triton's generate extension. `generate_stream` sends one event
//!   `{"model_name": ..., "text_output": ...}` per response of the decoupled model and no end marker
//!   (the body just ends); `generate` sends one such JSON body.
//!
//! An event or body carrying `error` fails the request with the server's message; data that is not
//! JSON, or not an object, is a protocol error. What the server wrote goes into a failure's reason
//! normalised and bounded in variety (`reason::grouped_body_reason`), so Locust's failures group.
//!
//! # Tokens
//!
//! A *content chunk* is an event whose text is not empty; its time is the arrival (on the I/O
//! thread, from the request's send) of the frame that completed the event. The output token count
//! is the server's `usage.completion_tokens` when some event carries it (source `usage`), else the
//! number of content chunks (source `chunks`, approximate: a chunk may hold several tokens).
//!
//! - time to first token (TTFT): send → first content chunk; none without one.
//! - inter-token latency (ITL): every gap between two consecutive content chunks. How many tokens
//!   a chunk holds is unknown without a tokenizer, so a chunk counts as one token here even when
//!   `usage` says there were more tokens than chunks: with `n` chunks there are `n - 1` gaps.
//!   Two events in one frame are 0 apart.
//!
//! With a tokenizer (`--tokenizer`, a [`Counter`]) the content chunks' text is kept and encoded
//! once, whole, when the answer ends (a byte-level BPE joins a word's leading space to the word:
//! chunks encoded apart would count more). That count is the output count without `usage` (source
//! `tokenizer`), and is compared with `usage` when both exist. Each token is then timed at the
//! chunk where its last byte arrived: a chunk holding k tokens counts as k tokens at that instant,
//! its first token's gap since the previous token, k - 1 gaps of 0.
//! - time per output token (TPOT): (last content chunk − first) / (output tokens − 1), with the
//!   output token count above (so from `usage` when present); none below 2 tokens.
//!
//! An answer that is not streamed has no TTFT, ITL or TPOT; its tokens come from `usage` only.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::protocol::reason;
use crate::protocol::sse::{self, Event};
use crate::transport::BodySink;

/// The largest event of a stream: a token chunk takes a few hundred bytes; one past this is a
/// broken or hostile stream (a line that never ends), refused before it costs more memory.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    TritonGenerate,
    /// Triton's `ModelStreamInfer` for a decoupled text model: each response's `text_output` is a
    /// chunk of text.
    GrpcGenerate,
    /// Triton's `ModelStreamInfer` for a decoupled tensor model: each response with outputs is a
    /// chunk (a "token" of the accounting).
    GrpcStream,
}

impl Api {
    pub fn parse(name: &str) -> Option<Api> {
        match name {
            "openai" => Some(Api::OpenAi),
            "triton-generate" => Some(Api::TritonGenerate),
            "grpc-generate" => Some(Api::GrpcGenerate),
            "grpc-stream" => Some(Api::GrpcStream),
            _ => None,
        }
    }

    /// Whether the answers are gRPC `ModelStreamInfer` messages, not HTTP bodies.
    pub fn grpc(self) -> bool {
        matches!(self, Api::GrpcGenerate | Api::GrpcStream)
    }
}

/// The largest tokenizer file read: real ones take a few MB; past this the file is refused
/// before it is read.
pub const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

/// A Hugging Face `tokenizer.json`, counting the tokens of generated text (`--tokenizer`).
pub struct Counter {
    tokenizer: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counter")
    }
}

impl Counter {
    /// Loads `path`; one line saying why when it is missing, too large or not a tokenizer.
    pub fn load(path: &Path) -> Result<Counter> {
        let bad =
            |why: String| Error::InvalidArgument(format!("--tokenizer {}: {why}", path.display()));
        let size = std::fs::metadata(path)
            .map_err(|e| bad(e.to_string()))?
            .len();
        if size > MAX_TOKENIZER_BYTES {
            return Err(bad(format!(
                "{size} bytes, more than the {MAX_TOKENIZER_BYTES} a tokenizer file may have"
            )));
        }
        // read no more than the limit whatever the size said: a device or a growing file lies
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TOKENIZER_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| bad(e.to_string()))?;
        if bytes.len() as u64 > MAX_TOKENIZER_BYTES {
            return Err(bad(format!(
                "more than the {MAX_TOKENIZER_BYTES} bytes a tokenizer file may have"
            )));
        }
        let tokenizer = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
            let why = e.to_string();
            let why: String = why.lines().next().unwrap_or("").chars().take(200).collect();
            bad(format!("not a tokenizer.json ({why})"))
        })?;
        Ok(Counter { tokenizer })
    }

    /// From a tokenizer's JSON text (tests).
    #[cfg(test)]
    fn from_json(json: &str) -> Counter {
        Counter {
            tokenizer: tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap(),
        }
    }

    /// The byte offset in `text` where each token of `text` ends (no special tokens added); none
    /// when the tokenizer fails on it.
    fn ends(&self, text: &str) -> Option<Vec<usize>> {
        let encoding = self.tokenizer.encode(text, false).ok()?;
        Some(encoding.get_offsets().iter().map(|&(_, end)| end).collect())
    }

    /// How many tokens `text` is (no special tokens added).
    pub fn count(&self, text: &str) -> Option<u64> {
        self.ends(text).map(|e| e.len() as u64)
    }
}

/// Where an output token count comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The server's `usage.completion_tokens`.
    Usage,
    /// The `--tokenizer` over the generated text: exact.
    Tokenizer,
    /// The number of content chunks: approximate.
    Chunks,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Usage => "usage",
            Source::Tokenizer => "tokenizer",
            Source::Chunks => "chunks",
        }
    }
}

/// What one answer held of generated text, so far (a failed request keeps what arrived).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokens {
    /// Whether the answer was an event stream.
    pub streamed: bool,
    /// Content chunks (events, or a whole body's choices, with text).
    pub chunks: u64,
    /// When each content chunk of a stream arrived, from the send, in order.
    pub times: Vec<Duration>,
    /// `usage.completion_tokens`, the last one given.
    pub usage_output: Option<u64>,
    /// `usage.prompt_tokens`, the last one given.
    pub usage_input: Option<u64>,
    /// The `--tokenizer`'s count of the generated text (all of it, once the answer is read).
    pub counted: Option<u64>,
    /// The `--tokenizer`'s count of the prompt's text (see [`prompt_text`]).
    pub prompt_counted: Option<u64>,
}

impl Tokens {
    /// From the send to the first content chunk of a stream.
    pub fn ttft(&self) -> Option<Duration> {
        self.times.first().copied()
    }

    /// The output token count: from `usage`, else the tokenizer's, else the content chunks
    /// (approximate: a whole answer without `usage` is one chunk), so that every answer read is
    /// counted one way or the other.
    #[allow(clippy::unnecessary_wraps)] // the callers' shape: a count may be missing elsewhere
    pub fn output_tokens(&self) -> Option<u64> {
        Some(self.usage_output.or(self.counted).unwrap_or(self.chunks))
    }

    #[allow(clippy::unnecessary_wraps)]
    pub fn source(&self) -> Option<Source> {
        Some(match (self.usage_output, self.counted) {
            (Some(_), _) => Source::Usage,
            (None, Some(_)) => Source::Tokenizer,
            (None, None) => Source::Chunks,
        })
    }

    /// The input token count: `usage.prompt_tokens`, else the tokenizer's count of the prompt.
    pub fn input_tokens(&self) -> Option<u64> {
        self.usage_input.or(self.prompt_counted)
    }

    /// Both `usage` and the tokenizer counted the output, and they differ.
    pub fn usage_disagrees(&self) -> bool {
        matches!((self.usage_output, self.counted), (Some(u), Some(c)) if u != c)
    }

    /// (last content chunk − first) / (output tokens − 1); none below 2 tokens or without chunks.
    pub fn tpot(&self) -> Option<Duration> {
        let n = self.output_tokens()?;
        let (first, last) = (self.times.first()?, self.times.last()?);
        let steps = u32::try_from(n.checked_sub(1).filter(|&s| s > 0)?).unwrap_or(u32::MAX);
        Some(last.saturating_sub(*first) / steps)
    }

    /// The gaps between consecutive content chunks (inter-token latencies).
    pub fn gaps(&self) -> impl Iterator<Item = Duration> + '_ {
        self.times.windows(2).map(|w| w[1].saturating_sub(w[0]))
    }

    /// The tokens to count for a failed request: what `usage` said, else the tokenizer's count,
    /// else the chunks received.
    pub fn received(&self) -> u64 {
        self.usage_output.or(self.counted).unwrap_or(self.chunks)
    }
}

/// The generated text of a stream as it arrives, for the `--tokenizer` to count at the end.
#[derive(Debug)]
struct Generated {
    counter: Arc<Counter>,
    text: String,
    /// Where each content chunk's text ends in `text`, in order.
    chunk_ends: Vec<usize>,
}

impl Generated {
    /// Counts the whole text; a stream's times become one per token: each token at the arrival of
    /// the chunk where its last byte arrived (a chunk of k tokens: k times at that instant).
    fn count(&self, tokens: &mut Tokens) {
        let Some(ends) = self.counter.ends(&self.text) else {
            return;
        };
        tokens.counted = Some(ends.len() as u64);
        if !tokens.streamed || tokens.times.len() != self.chunk_ends.len() {
            return;
        }
        tokens.times = token_times(&ends, &self.chunk_ends, &tokens.times);
    }
}

/// The prompt's text in a request body we prepared: an OpenAI body's `prompt`, or its `messages`'
/// contents joined one a line; a Triton generate body's `text_input`. None for anything else.
pub fn prompt_text(api: Api, body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Message {
        content: String,
    }
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        prompt: Option<String>,
        #[serde(default)]
        messages: Option<Vec<Message>>,
        #[serde(default)]
        text_input: Option<String>,
    }
    if api.grpc() {
        return crate::protocol::grpc::generate_prompt(body);
    }
    let p: Body = serde_json::from_slice(body).ok()?;
    match api {
        Api::OpenAi => p.prompt.or_else(|| {
            let contents: Vec<String> = p.messages?.into_iter().map(|m| m.content).collect();
            Some(contents.join("\n"))
        }),
        Api::TritonGenerate => p.text_input,
        Api::GrpcGenerate | Api::GrpcStream => None,
    }
}

/// The time of each token ending at byte `ends[i]`, the chunks ending at `chunk_ends` having
/// arrived at `chunk_times`: that of the first chunk reaching the token's end.
fn token_times(ends: &[usize], chunk_ends: &[usize], chunk_times: &[Duration]) -> Vec<Duration> {
    let last = chunk_times.len().saturating_sub(1);
    ends.iter()
        .filter_map(|&end| {
            let i = chunk_ends.partition_point(|&e| e < end).min(last);
            chunk_times.get(i).copied()
        })
        .collect()
}

/// Reads one answer of a generative endpoint as it arrives (a [`BodySink`]), then judges it.
pub struct Reader {
    api: Api,
    /// Whether the request asked for a stream.
    stream: bool,
    url: String,
    limit: usize,
    /// Set when the head announced an event stream in a 2xx answer.
    parser: Option<sse::Parser>,
    /// Whether the endpoint keeps answers' bodies (else a stream's is read here only).
    keep_body: bool,
    /// The head's `Content-Type`.
    content_type: Option<String>,
    /// `data: [DONE]` arrived (openai), or Triton's final response (gRPC).
    done: bool,
    tokens: Tokens,
    /// The generated text, with `--tokenizer`.
    text: Option<Generated>,
    /// The most generated text kept (`--max-response-bytes`).
    text_limit: usize,
}

impl Reader {
    /// A reader of one answer from `url`; `stream` when the request asked for one; events are
    /// limited to `max_response_bytes` and [`MAX_EVENT_BYTES`]; `keep_body` when the endpoint
    /// keeps bodies (a stream's is otherwise not gathered).
    pub fn new(
        api: Api,
        stream: bool,
        url: String,
        max_response_bytes: usize,
        keep_body: bool,
    ) -> Self {
        Reader {
            api,
            stream,
            url,
            limit: max_response_bytes.min(MAX_EVENT_BYTES),
            parser: None,
            keep_body,
            content_type: None,
            done: false,
            tokens: Tokens::default(),
            text: None,
            text_limit: max_response_bytes,
        }
    }

    /// Counts the output with `counter` (`--tokenizer`).
    #[must_use]
    pub fn with_counter(mut self, counter: Option<Arc<Counter>>) -> Self {
        self.text = counter.map(|counter| Generated {
            counter,
            text: String::new(),
            chunk_ends: Vec::new(),
        });
        self
    }

    /// The tokenizer's count of the request's prompt, when known.
    #[must_use]
    pub fn with_prompt_tokens(mut self, n: Option<u64>) -> Self {
        self.tokens.prompt_counted = n;
        self
    }

    /// What arrived, for a request that failed on the way.
    pub fn into_tokens(mut self) -> Tokens {
        if let Some(text) = &self.text {
            text.count(&mut self.tokens);
        }
        self.tokens
    }

    /// Judges a complete 2xx answer whose body is `body`: its tokens, and its failure if any.
    pub fn finish(mut self, body: &[u8]) -> (Tokens, Result<()>) {
        let verdict = if self.api.grpc() {
            if self.done {
                Ok(())
            } else {
                Err(self.stream_failed("the stream ended before Triton's final response"))
            }
        } else {
            self.http_verdict(body)
        };
        if let Some(text) = &self.text {
            text.count(&mut self.tokens);
        }
        (self.tokens, verdict)
    }

    fn http_verdict(&mut self, body: &[u8]) -> Result<()> {
        match &self.parser {
            Some(parser) => {
                if self.api == Api::OpenAi && !self.done {
                    Err(self.stream_failed("the stream ended before data: [DONE]"))
                } else if !self.done && !parser.between_events() {
                    Err(self.protocol("the event stream ended in the middle of an event"))
                } else {
                    Ok(())
                }
            }
            None => self.whole_body(body),
        }
    }

    /// A body that is not an event stream: one JSON answer.
    fn whole_body(&mut self, body: &[u8]) -> Result<()> {
        let parsed = self.message(body);
        if self.stream {
            let sent = match (&parsed, self.content_type.as_deref()) {
                (Ok(()), _) => "one JSON body".to_owned(),
                (Err(_), Some(kind)) => format!(
                    "no event stream (Content-Type: {})",
                    reason::grouped_body_reason(kind.as_bytes())
                ),
                (Err(_), None) => "no event stream (no Content-Type)".to_owned(),
            };
            return Err(self.stream_failed(&format!("asked for a stream, the server sent {sent}")));
        }
        parsed
    }

    fn stream_failed(&self, reason: &str) -> Error {
        Error::Stream {
            url: self.url.clone(),
            reason: reason.to_owned(),
        }
    }

    fn protocol(&self, what: &str) -> Error {
        Error::protocol(format!("malformed answer from {}: {what}", self.url))
    }

    /// Reads one event's data, or one whole body: tokens into `self.tokens`.
    fn message(&mut self, data: &[u8]) -> Result<()> {
        let text = match self.api {
            Api::OpenAi => {
                let m: OpenAiMessage<'_> = self.json(data)?;
                if let Some(message) = m.error.as_ref().and_then(error_message).or_else(|| {
                    (m.object.as_deref() == Some("error"))
                        .then(|| m.message.as_deref().unwrap_or("(no message)").to_owned())
                }) {
                    return Err(self.server_error(&message));
                }
                if let Some(usage) = m.usage {
                    self.tokens.usage_output = usage.completion_tokens.or(self.tokens.usage_output);
                    self.tokens.usage_input = usage.prompt_tokens.or(self.tokens.usage_input);
                }
                let mut text = String::new();
                for choice in m.choices.unwrap_or_default() {
                    choice.append(&mut text);
                }
                text
            }
            Api::GrpcGenerate | Api::GrpcStream => {
                return Err(self.protocol("a gRPC message read as JSON"));
            }
            Api::TritonGenerate => {
                let m: TritonMessage<'_> = self.json(data)?;
                if let Some(message) = m.error.as_ref().and_then(error_message) {
                    return Err(self.server_error(&message));
                }
                let mut text = String::new();
                if let Some(t) = m.text_output {
                    t.append(&mut text);
                }
                text
            }
        };
        if text.is_empty() {
            return Ok(());
        }
        self.chunk(&text)
    }

    /// A content chunk holding `text` (empty for a tensor model's response).
    fn chunk(&mut self, text: &str) -> Result<()> {
        self.tokens.chunks += 1;
        if let Some(kept) = &mut self.text {
            if kept.text.len() + text.len() > self.text_limit {
                let limit = self.text_limit;
                return Err(self.protocol(&format!(
                    "more than {limit} bytes of generated text (--max-response-bytes)"
                )));
            }
            kept.text.push_str(text);
            kept.chunk_ends.push(kept.text.len());
        }
        Ok(())
    }

    /// One `ModelStreamInferResponse`, `at` after the send: an error in it fails the request
    /// (what came before stays counted); a response with text (a text model) or with outputs (a
    /// tensor model) is a chunk; the final-response flag ends the request.
    fn grpc_message(&mut self, data: &[u8], at: Duration) -> Result<()> {
        let message = crate::protocol::grpc::decode_stream_message(data)
            .map_err(|e| self.protocol(&e.to_string()))?;
        if let Some(error) = message.error {
            return Err(self.server_error(&error));
        }
        if self.done {
            return Err(self.protocol("a response after Triton's final response"));
        }
        let counts = match self.api {
            Api::GrpcGenerate => !message.text.is_empty(),
            _ => message.outputs > 0,
        };
        if counts {
            self.chunk(&message.text)?;
            self.tokens.times.push(at);
        }
        self.done = message.last;
        Ok(())
    }

    fn json<'a, T: Deserialize<'a>>(&self, data: &'a [u8]) -> Result<T> {
        serde_json::from_slice(data).map_err(|e| {
            let what = if e.is_data() {
                "JSON of the wrong shape"
            } else {
                "not JSON"
            };
            self.protocol(&format!("{what} ({})", reason::grouped_body_reason(data)))
        })
    }

    fn server_error(&self, message: &str) -> Error {
        self.stream_failed(&format!(
            "the server sent an error: {}",
            reason::grouped_body_reason(message.as_bytes())
        ))
    }

    /// One event of the stream, `at` after the send.
    fn event(&mut self, event: &Event<'_>) -> Result<()> {
        if self.done {
            return Ok(()); // nothing counts after the end marker
        }
        if event.kind == b"error" {
            let text = String::from_utf8_lossy(event.data);
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| {
                    v.get("error")
                        .and_then(error_message)
                        .or_else(|| error_message(&v))
                })
                .unwrap_or_else(|| text.into_owned());
            return Err(self.server_error(&message));
        }
        if self.api == Api::OpenAi && event.data.trim_ascii() == b"[DONE]" {
            self.done = true;
            return Ok(());
        }
        let before = self.tokens.chunks;
        self.message(event.data)?;
        if self.tokens.chunks > before {
            self.tokens.times.push(event.at);
        }
        Ok(())
    }
}

impl BodySink for Reader {
    fn head(&mut self, status: u16, headers: &HeaderMap) -> bool {
        if self.api.grpc() {
            // the transport hands each message over whole; a status other than OK fails the call
            self.tokens.streamed = status == 200;
            return self.keep_body;
        }
        self.content_type = headers
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let event_stream = self.content_type.as_deref().is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        });
        if (200..300).contains(&status) && event_stream {
            self.parser = Some(sse::Parser::new(self.limit));
            self.tokens.streamed = true;
        }
        self.parser.is_none() || self.keep_body
    }

    fn frame(&mut self, data: &[u8], at: Duration) -> Result<()> {
        if self.api.grpc() {
            return self.grpc_message(data, at);
        }
        let Some(mut parser) = self.parser.take() else {
            return Ok(());
        };
        let result = parser.feed(data, at, &mut |event| self.event(&event));
        self.parser = Some(parser);
        result.map_err(|e| match e {
            Error::Protocol(what) if !what.starts_with("malformed") => self.protocol(&what),
            other => other,
        })
    }

    fn finished(&self) -> bool {
        self.api.grpc() && self.done
    }
}

/// The message of an `error` value: a string, or an object's `message` (or the object itself).
fn error_message(error: &serde_json::Value) -> Option<String> {
    match error {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => Some(match o.get("message") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => error.to_string(),
        }),
        other => Some(other.to_string()),
    }
}

#[derive(Deserialize)]
struct OpenAiMessage<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    /// `"error"` in some servers' error objects (vLLM), whose `message` says why.
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Content<'a>>,
    #[serde(default, borrow)]
    message: Option<Content<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

impl Choice<'_> {
    fn append(&self, out: &mut String) {
        out.push_str(self.text.as_deref().unwrap_or(""));
        for content in [&self.delta, &self.message].into_iter().flatten() {
            content.append(out);
        }
    }
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
}

impl Content<'_> {
    fn append(&self, out: &mut String) {
        for t in [&self.reasoning_content, &self.content]
            .into_iter()
            .flatten()
        {
            out.push_str(t);
        }
    }
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct TritonMessage<'a> {
    #[serde(default, borrow)]
    text_output: Option<TextOutput<'a>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// A BYTES output as Triton's generate extension gives it: one string, or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum TextOutput<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

impl TextOutput<'_> {
    fn append(&self, out: &mut String) {
        match self {
            TextOutput::One(t) => out.push_str(t),
            TextOutput::Many(ts) => ts.iter().for_each(|t| out.push_str(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use reqwest::header::HeaderValue;

    const URL: &str = "http://127.0.0.1:1/v1/chat/completions";

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        h
    }

    /// Reads `frames` (bytes, ms) of a 200 answer of type `content_type`; the frames' error, or
    /// the verdict on the whole body.
    fn read(
        api: Api,
        stream: bool,
        content_type: &str,
        frames: &[(&[u8], u64)],
    ) -> (Tokens, Result<()>) {
        let mut reader = Reader::new(api, stream, URL.into(), 1 << 16, false);
        reader.head(200, &headers(content_type));
        let mut body = Vec::new();
        for (bytes, ms) in frames {
            body.extend_from_slice(bytes);
            if let Err(e) = reader.frame(bytes, Duration::from_millis(*ms)) {
                return (reader.into_tokens(), Err(e));
            }
        }
        reader.finish(&body)
    }

    fn sse(api: Api, frames: &[(&[u8], u64)]) -> (Tokens, Result<()>) {
        read(api, true, "text/event-stream; charset=utf-8", frames)
    }

    fn ms(ms: &[u64]) -> Vec<Duration> {
        ms.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    const CHAT: &[(&[u8], u64)] = &[
        (
            b"data: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            5,
        ),
        (
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            50,
        ),
        (
            b": keep-alive\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}],\"usage\":null}\n\n",
            60,
        ),
        (
            b"data: {\"choices\":[{\"delta\":{\"content\":\" \\u00e9!\"},\"finish_reason\":\"stop\"}]}\n\n",
            75,
        ),
        (
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":4,\"total_tokens\":16}}\n\ndata: [DONE]\n\n",
            76,
        ),
    ];

    #[test]
    fn an_openai_chat_stream_with_usage() {
        let (tokens, verdict) = sse(Api::OpenAi, CHAT);
        verdict.unwrap();
        assert_eq!(tokens.times, ms(&[50, 60, 75]));
        assert_eq!(tokens.chunks, 3);
        assert_eq!(tokens.ttft(), Some(Duration::from_millis(50)));
        assert_eq!(tokens.gaps().collect::<Vec<_>>(), ms(&[10, 15]));
        assert_eq!(
            (tokens.output_tokens(), tokens.usage_input, tokens.source()),
            (Some(4), Some(12), Some(Source::Usage))
        );
        // 25 ms over 4 tokens: 3 steps
        assert_eq!(tokens.tpot(), Some(Duration::from_millis(25) / 3));
    }

    #[test]
    fn without_usage_chunks_count_approximately() {
        let (tokens, verdict) = sse(Api::OpenAi, &CHAT[..4]);
        assert!(verdict.is_err(), "no [DONE]");
        let mut frames = CHAT[..4].to_vec();
        frames.push((b"data: [DONE]\n\n", 80));
        let (tokens_done, verdict) = sse(Api::OpenAi, &frames);
        verdict.unwrap();
        assert_eq!(tokens, tokens_done);
        assert_eq!(
            (tokens.output_tokens(), tokens.source(), tokens.usage_input),
            (Some(3), Some(Source::Chunks), None)
        );
        assert_eq!(tokens.tpot(), Some(Duration::from_micros(12_500)));
    }

    #[test]
    fn completions_and_reasoning_count_as_content() {
        let (tokens, verdict) = sse(
            Api::OpenAi,
            &[
                (b"data: {\"choices\":[{\"text\":\"a\"}]}\n\n", 1),
                (b"data: {\"choices\":[{\"text\":\"\"}]}\n\n", 2),
                (b"data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hm\",\"content\":null}}]}\n\n", 3),
                (b"data: [DONE]\n\ndata: {\"choices\":[{\"text\":\"late\"}]}\n\n", 4),
            ],
        );
        verdict.unwrap();
        assert_eq!(tokens.times, ms(&[1, 3]));
    }

    #[test]
    fn a_stream_that_ends_before_done_fails_with_its_tokens() {
        let (tokens, verdict) = sse(Api::OpenAi, &CHAT[..3]);
        let err = verdict.unwrap_err();
        assert_eq!(err.kind(), "stream");
        assert!(
            err.to_string().contains("ended before data: [DONE]"),
            "{err}"
        );
        assert_eq!((tokens.chunks, tokens.received()), (2, 2));
    }

    #[test]
    fn error_events_fail_naming_the_server_s_message() {
        for (frame, message) in [
            (
                &b"data: {\"error\":{\"message\":\"out of memory 123\",\"type\":\"x\"}}\n\n"[..],
                "out of memory #",
            ),
            (
                b"data: {\"object\":\"error\",\"message\":\"bad\"}\n\n",
                "bad",
            ),
            (b"event: error\ndata: {\"message\":\"boom\"}\n\n", "boom"),
            (b"event: error\ndata: plain words\n\n", "plain words"),
        ] {
            let (tokens, verdict) = sse(Api::OpenAi, &[CHAT[1], (frame, 9)]);
            let err = verdict.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("stream from {URL} failed: the server sent an error: {message}")
            );
            assert_eq!(tokens.chunks, 1, "the tokens before the error count");
        }
        let (_, verdict) = sse(
            Api::TritonGenerate,
            &[(b"data: {\"error\":\"model crashed\"}\n\n", 1)],
        );
        assert!(verdict.unwrap_err().to_string().ends_with("model crashed"));
    }

    #[test]
    fn data_that_is_not_a_json_object_is_a_protocol_error() {
        for frame in [
            &b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}\n\n"[..],
            b"data: hello\n\n",
            b"data: 12\n\n",
            b"data: {\"choices\":[{\"delta\":{\"content\":7}}]}\n\n",
        ] {
            let (_, verdict) = sse(Api::OpenAi, &[(frame, 1)]);
            let err = verdict.unwrap_err();
            assert_eq!(err.kind(), "protocol", "{err}");
            assert!(
                err.to_string().starts_with("malformed answer from"),
                "{err}"
            );
        }
        // what varies between requests does not split the failures into one group each
        let reason = |data: &str| {
            let frame = format!("data: {data}\n\n");
            sse(Api::OpenAi, &[(frame.as_bytes(), 1)])
                .1
                .unwrap_err()
                .to_string()
        };
        assert_eq!(reason("busy, request 123"), reason("busy, request 4567"));
        assert!(reason("busy, request 123").ends_with("not JSON (busy, request #)"));
    }

    #[test]
    fn an_event_over_the_limit_fails_as_malformed() {
        let line = vec![b'x'; 2 << 20];
        let mut reader = Reader::new(Api::OpenAi, true, URL.into(), 64 << 20, false);
        reader.head(200, &headers("text/event-stream"));
        let err = line
            .chunks(64 << 10)
            .find_map(|frame| reader.frame(frame, Duration::ZERO).err())
            .expect("refused");
        assert!(
            err.to_string()
                .contains("a server-sent event larger than 1048576 bytes"),
            "{err}"
        );
        assert_eq!(err.kind(), "protocol");
    }

    #[test]
    fn a_triton_generate_stream_ends_with_its_body() {
        let (tokens, verdict) = sse(
            Api::TritonGenerate,
            &[
                (b"data: {\"model_name\":\"gen\",\"model_version\":\"1\",\"text_output\":\"a\"}\n\n", 20),
                (b"data: {\"model_name\":\"gen\",\"text_output\":\"\"}\n\ndata: {\"text_output\":[\"b\"]}\n\n", 30),
            ],
        );
        verdict.unwrap();
        assert_eq!(
            (
                tokens.times.clone(),
                tokens.output_tokens(),
                tokens.source()
            ),
            (ms(&[20, 30]), Some(2), Some(Source::Chunks))
        );
        // cut inside an event, with the body framed as complete
        let (_, verdict) = sse(
            Api::TritonGenerate,
            &[(b"data: {\"text_output\":\"a\"}\n\ndata: {\"text", 1)],
        );
        assert_eq!(verdict.unwrap_err().kind(), "protocol");
    }

    #[test]
    fn a_stream_without_text_succeeds_with_zero_tokens_and_no_ttft() {
        let (tokens, verdict) = sse(Api::OpenAi, &[(b"data: [DONE]\n\n", 1)]);
        verdict.unwrap();
        assert_eq!(
            (tokens.ttft(), tokens.tpot(), tokens.output_tokens()),
            (None, None, Some(0))
        );
    }

    #[test]
    fn one_json_body_where_a_stream_was_asked_for_fails_cleanly() {
        let body: &[u8] = b"{\"choices\":[{\"message\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}";
        let (tokens, verdict) = read(Api::OpenAi, true, "application/json", &[(body, 1)]);
        assert_eq!(
            verdict.unwrap_err().to_string(),
            format!("stream from {URL} failed: asked for a stream, the server sent one JSON body")
        );
        assert_eq!(tokens.received(), 1, "its usage still counts");
        let (_, verdict) = read(Api::OpenAi, true, "text/plain", &[(b"hi", 1)]);
        assert!(verdict
            .unwrap_err()
            .to_string()
            .ends_with("the server sent no event stream (Content-Type: text/plain)"));
        // not asked for: one JSON answer, tokens from usage only
        let (tokens, verdict) = read(Api::OpenAi, false, "application/json", &[(body, 1)]);
        verdict.unwrap();
        assert_eq!(
            (
                tokens.output_tokens(),
                tokens.usage_input,
                tokens.chunks,
                tokens.ttft()
            ),
            (Some(1), Some(3), 1, None)
        );
        let (tokens, verdict) = read(
            Api::TritonGenerate,
            false,
            "application/json",
            &[(b"{\"model_name\":\"m\",\"text_output\":\"abc\"}", 1)],
        );
        verdict.unwrap();
        assert_eq!(
            (tokens.output_tokens(), tokens.source(), tokens.chunks),
            (Some(1), Some(Source::Chunks), 1),
            "a whole answer without usage: one chunk, approximate"
        );
    }

    /// The transport gathers the body for everything but a stream read here (unless the
    /// endpoint keeps bodies).
    #[test]
    fn only_a_stream_s_body_is_left_ungathered() {
        for (status, kind, keep_body, gather) in [
            (200, "text/event-stream", false, false),
            (200, "text/event-stream", true, true),
            (200, "application/json", false, true),
            (503, "text/event-stream", false, true),
        ] {
            let mut reader = Reader::new(Api::OpenAi, true, URL.into(), 1024, keep_body);
            assert_eq!(
                reader.head(status, &headers(kind)),
                gather,
                "{status} {kind}"
            );
        }
    }

    #[test]
    fn an_error_status_is_not_read_as_a_stream() {
        let mut reader = Reader::new(Api::OpenAi, true, URL.into(), 1024, false);
        assert!(reader.head(500, &headers("text/event-stream")));
        reader
            .frame(
                b"data: {\"choices\":[{\"text\":\"a\"}]}\n\n",
                Duration::ZERO,
            )
            .unwrap();
        assert_eq!(reader.into_tokens(), Tokens::default());
    }

    /// One token per word (`\w+`) or run of punctuation, unknown words included: a WordLevel
    /// tokenizer whose offsets are easy to read.
    const WORDS: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
        "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1,"b":2},"unk_token":"[UNK]"}}"#;

    fn counted(api: Api, frames: &[(&[u8], u64)]) -> (Tokens, Result<()>) {
        let counter = Arc::new(Counter::from_json(WORDS));
        let mut reader =
            Reader::new(api, true, URL.into(), 1 << 16, false).with_counter(Some(counter));
        reader.head(200, &headers("text/event-stream"));
        for (bytes, ms) in frames {
            if let Err(e) = reader.frame(bytes, Duration::from_millis(*ms)) {
                return (reader.into_tokens(), Err(e));
            }
        }
        reader.finish(&[])
    }

    #[test]
    fn each_token_is_timed_when_its_last_byte_arrived() {
        // ends at bytes 1, 3, 5 in chunks ending at 1 and 5: the first chunk's time, then twice the second's
        assert_eq!(
            token_times(&[1, 3, 5], &[1, 5], &ms(&[10, 20])),
            ms(&[10, 20, 20])
        );
        // a token across two chunks is the second's; an empty offset is the first chunk's
        assert_eq!(token_times(&[0, 4], &[2, 4], &ms(&[1, 2])), ms(&[1, 2]));
        // offsets past the text (not from this text) fall to the last chunk, no panic
        assert_eq!(token_times(&[9], &[2], &ms(&[1])), ms(&[1]));
        assert_eq!(token_times(&[1], &[], &[]), Vec::<Duration>::new());
    }

    #[test]
    fn a_chunk_of_k_tokens_is_k_tokens_at_its_arrival() {
        let (tokens, verdict) = counted(
            Api::TritonGenerate,
            &[
                (b"data: {\"text_output\":\"a\"}\n\n", 10),
                (b"data: {\"text_output\":\" b a, \"}\n\n", 30),
                (b"data: {\"text_output\":\"b\"}\n\n", 35),
            ],
        );
        verdict.unwrap();
        // a | b a , | b: 5 tokens, the second chunk's 3 at 30 ms
        assert_eq!((tokens.chunks, tokens.counted), (3, Some(5)));
        assert_eq!(tokens.times, ms(&[10, 30, 30, 30, 35]));
        assert_eq!(tokens.gaps().collect::<Vec<_>>(), ms(&[20, 0, 0, 5]));
        assert_eq!(
            (tokens.output_tokens(), tokens.source(), tokens.ttft()),
            (
                Some(5),
                Some(Source::Tokenizer),
                Some(Duration::from_millis(10))
            )
        );
        assert_eq!(tokens.tpot(), Some(Duration::from_millis(25) / 4));
    }

    #[test]
    fn the_whole_text_is_counted_not_each_chunk_apart() {
        // "a" then "b": one word "ab" (unknown), not two tokens
        let (tokens, verdict) = counted(
            Api::TritonGenerate,
            &[
                (b"data: {\"text_output\":\"a\"}\n\n", 10),
                (b"data: {\"text_output\":\"b\"}\n\n", 20),
            ],
        );
        verdict.unwrap();
        assert_eq!((tokens.counted, tokens.times.clone()), (Some(1), ms(&[20])));
    }

    #[test]
    fn usage_counts_and_a_different_tokenizer_count_is_a_disagreement() {
        // "Hello é!": 3 tokens (Hello, é, !); usage says 4
        let (tokens, verdict) = counted(Api::OpenAi, CHAT);
        verdict.unwrap();
        assert_eq!(
            (tokens.output_tokens(), tokens.counted, tokens.source()),
            (Some(4), Some(3), Some(Source::Usage))
        );
        assert!(tokens.usage_disagrees());
        // each token when its last byte came: Hello at 60, é and ! at 75
        assert_eq!(tokens.times, ms(&[60, 75, 75]));
        let mut agreeing = CHAT.to_vec();
        agreeing[4] = (
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
            76,
        );
        let (tokens, verdict) = counted(Api::OpenAi, &agreeing);
        verdict.unwrap();
        assert!(!tokens.usage_disagrees());
        // without a tokenizer there is nothing to disagree with
        assert!(!sse(Api::OpenAi, CHAT).0.usage_disagrees());
    }

    #[test]
    fn a_failed_stream_counts_what_arrived_with_the_tokenizer() {
        let (tokens, verdict) = counted(
            Api::OpenAi,
            &[CHAT[1], CHAT[2], (b"data: {\"error\":\"x\"}\n\n", 70)],
        );
        assert!(verdict.is_err());
        assert_eq!((tokens.counted, tokens.received()), (Some(1), 1));
    }

    #[test]
    fn generated_text_past_the_response_limit_is_refused() {
        let counter = Arc::new(Counter::from_json(WORDS));
        let mut reader = Reader::new(Api::TritonGenerate, true, URL.into(), 50, false)
            .with_counter(Some(counter));
        reader.head(200, &headers("text/event-stream"));
        let frame = b"data: {\"text_output\":\"aaaaaaaaaaaaaaaaaaaa\"}\n\n";
        reader.frame(frame, Duration::ZERO).unwrap();
        reader.frame(frame, Duration::ZERO).unwrap();
        let err = reader.frame(frame, Duration::ZERO).unwrap_err();
        assert!(
            err.to_string()
                .contains("more than 50 bytes of generated text"),
            "{err}"
        );
    }

    #[test]
    fn the_prompt_s_text_is_found_in_our_bodies() {
        let chat = br#"{"model":"m","messages":[{"role":"system","content":"a"},{"role":"user","content":"b a"}]}"#;
        assert_eq!(prompt_text(Api::OpenAi, chat).as_deref(), Some("a\nb a"));
        let completion = br#"{"prompt":"b","stream":true}"#;
        assert_eq!(prompt_text(Api::OpenAi, completion).as_deref(), Some("b"));
        let generate = br#"{"text_input":"a b","max_tokens":3}"#;
        assert_eq!(
            prompt_text(Api::TritonGenerate, generate).as_deref(),
            Some("a b")
        );
        for (api, body) in [
            (Api::TritonGenerate, &chat[..]),
            (Api::OpenAi, b"{not json"),
            (Api::OpenAi, br#"{"messages":[{"content":7}]}"#),
        ] {
            assert_eq!(prompt_text(api, body), None);
        }
        // usage's prompt count first, else the tokenizer's
        let mut tokens = Tokens {
            prompt_counted: Some(3),
            ..Tokens::default()
        };
        assert_eq!(tokens.input_tokens(), Some(3));
        tokens.usage_input = Some(12);
        assert_eq!(tokens.input_tokens(), Some(12));
    }

    #[test]
    fn a_bad_tokenizer_file_is_one_clear_error() {
        let dir = std::env::temp_dir().join(format!("tok-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.json");
        let err = Counter::load(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("--tokenizer {}: ", missing.display())),
            "{err}"
        );
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"model\": 1}\n").unwrap();
        let err = Counter::load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("not a tokenizer.json") && !err.contains('\n'),
            "{err}"
        );
        // a device says 0 bytes and never ends: read up to the limit, then refused
        let err = Counter::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the 268435456 bytes"), "{err}");
        let good = dir.join("good.json");
        std::fs::write(&good, WORDS).unwrap();
        assert_eq!(Counter::load(&good).unwrap().count("a b, c"), Some(4));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..12),
            api in prop::sample::select(vec![Api::OpenAi, Api::TritonGenerate]),
        ) {
            let frames: Vec<(&[u8], u64)> = frames.iter().map(|f| (f.as_slice(), 0)).collect();
            let (tokens, _) = sse(api, &frames);
            prop_assert_eq!(tokens.times.len() as u64, tokens.chunks);
        }

        /// Cut anywhere, a stream gives the same tokens (times aside) and verdict.
        #[test]
        fn frames_cut_anywhere_give_the_same_tokens(cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
            let whole: Vec<u8> = CHAT.iter().flat_map(|(b, _)| b.iter().copied()).collect();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(whole.len() + 1)).collect();
            at.extend([0, whole.len()]);
            at.sort_unstable();
            let frames: Vec<(&[u8], u64)> = at.windows(2).map(|w| (&whole[w[0]..w[1]], 0)).collect();
            let (tokens, verdict) = sse(Api::OpenAi, &frames);
            prop_assert!(verdict.is_ok());
            prop_assert_eq!((tokens.chunks, tokens.output_tokens(), tokens.usage_input), (3, Some(4), Some(12)));
        }
    }
}
