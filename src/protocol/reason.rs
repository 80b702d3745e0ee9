//! Failure reasons that group. Locust keeps one failure entry per distinct message; an error page
//! carrying a request id, a counter or a timestamp would make one entry per request (memory growing
//! with the run on every worker and the master, and an unreadable failures table). So the part of a
//! message that comes from the server is normalised: what varies between requests is replaced by
//! `#`, and the raw text is left to the DEBUG_REQUESTS log.

use std::collections::HashSet;

use crate::engine::runtime::PerProcess;

/// Longest normalised reason, in bytes, before the `…` that marks a cut.
pub const MAX_REASON_BYTES: usize = 200;
/// How much of a body is read to make its reason: more than [`MAX_REASON_BYTES`], so that where
/// the raw text happens to be cut (ids of different lengths move it) does not show in the reason.
pub const REASON_WINDOW: usize = 1024;
/// How much of a body the raw excerpt keeps (the DEBUG_REQUESTS log).
pub const EXCERPT_BYTES: usize = 200;

/// Words this long are tokens (base64, JWTs, hashes), never prose.
const LONG_WORD: usize = 32;
/// All-hex words this long are ids even without a digit (`deadbeef`).
const HEX_ID: usize = 8;

/// Distinct body reasons one process reports; later new ones share [`OTHER_REASON`]. Normalising
/// cannot recognise every id (a random one without digits reads as a word), and this keeps the
/// failures table bounded whatever the server sends.
pub const MAX_REASONS: usize = 64;
pub const OTHER_REASON: &str =
    "(one of more than 64 different error bodies; DEBUG_REQUESTS=true logs each)";

static SEEN: PerProcess<HashSet<String>> = PerProcess::new();

/// [`body_reason`], bounded to [`MAX_REASONS`] different ones in this process.
pub fn grouped_body_reason(body: &[u8]) -> String {
    let reason = body_reason(body);
    SEEN.with(|seen| admit(seen.get_or_insert_with(HashSet::new), reason))
}

/// `reason` if it was seen or there is room for one more in `seen`, else [`OTHER_REASON`].
fn admit(seen: &mut HashSet<String>, reason: String) -> String {
    if seen.contains(&reason) {
        reason
    } else if seen.len() < MAX_REASONS {
        seen.insert(reason.clone());
        reason
    } else {
        OTHER_REASON.to_owned()
    }
}

/// The reason a body gives, for grouping: the normalised start of its text, or `(empty body)`.
pub fn body_reason(body: &[u8]) -> String {
    let mut window = &body[..body.len().min(REASON_WINDOW)];
    if body.len() > REASON_WINDOW {
        // the window ends wherever the body's length puts it: drop what it cuts through (a UTF-8
        // sequence, a word), which would otherwise differ from one request to the next
        if let Err(e) = std::str::from_utf8(window) {
            if e.error_len().is_none() {
                window = &window[..e.valid_up_to()];
            }
        }
        let word = window
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        window = &window[..window.len() - word];
    }
    let reason = normalise(&String::from_utf8_lossy(window));
    if reason.is_empty() {
        "(empty body)".into()
    } else {
        reason
    }
}

/// The raw start of a body as one line of text, for the DEBUG_REQUESTS log.
pub fn body_excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(EXCERPT_BYTES)];
    let mut text = String::from_utf8_lossy(cut).replace(['\r', '\n'], " ");
    if body.len() > EXCERPT_BYTES {
        text.push('…');
    }
    if text.trim().is_empty() {
        text = "(empty body)".into();
    }
    text
}

/// `text` with what varies between requests replaced by `#`: every UUID; every word (a run of ASCII
/// letters and digits) holding a digit, except that a name followed by a number keeps its name
/// (`resnet50` → `resnet#`); all-hex words of 8 or more letters; words over 32 characters.
/// Whitespace and control characters fold to one space, and the result is cut at a word boundary
/// to at most [`MAX_REASON_BYTES`] (then ends with `…`). Idempotent: a reason normalises to itself.
pub fn normalise(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len().min(MAX_REASON_BYTES + 8));
    let mut i = 0;
    while i < bytes.len() && out.len() <= MAX_REASON_BYTES {
        let b = bytes[i];
        if b.is_ascii_alphanumeric() {
            if is_uuid_at(bytes, i) {
                out.push('#');
                i += 36;
                continue;
            }
            let end = i + bytes[i..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            push_word(&text[i..end], &mut out);
            i = end;
            continue;
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        if c.is_whitespace() || c.is_control() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
        i += c.len_utf8();
    }
    if i < bytes.len() || out.trim_end().len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        let o = out.as_bytes();
        while cut > 0
            && (!out.is_char_boundary(cut)
                || (o[cut - 1].is_ascii_alphanumeric() && o[cut].is_ascii_alphanumeric()))
        {
            cut -= 1;
        }
        out.truncate(cut);
        out.truncate(out.trim_end().len());
        out.push('…');
    } else {
        out.truncate(out.trim_end().len());
    }
    out
}

fn push_word(word: &str, out: &mut String) {
    let has_digit = word.bytes().any(|b| b.is_ascii_digit());
    let all_hex = word.bytes().all(|b| b.is_ascii_hexdigit());
    if word.len() > LONG_WORD || (all_hex && (has_digit || word.len() >= HEX_ID)) {
        out.push('#');
    } else if has_digit {
        let name = word.bytes().take_while(u8::is_ascii_alphabetic).count();
        if name > 0 && word.bytes().skip(name).all(|b| b.is_ascii_digit()) {
            out.push_str(&word[..name]);
        }
        out.push('#');
    } else {
        out.push_str(word);
    }
}

/// Whether a UUID (8-4-4-4-12 hex digits) starts at `i` and is a word of its own.
fn is_uuid_at(bytes: &[u8], i: usize) -> bool {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let Some(candidate) = bytes.get(i..i + 36) else {
        return false;
    };
    let mut at = 0;
    for (g, len) in GROUPS.iter().enumerate() {
        if g > 0 {
            if candidate[at] != b'-' {
                return false;
            }
            at += 1;
        }
        if !candidate[at..at + len].iter().all(u8::is_ascii_hexdigit) {
            return false;
        }
        at += len;
    }
    !bytes.get(i + 36).is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_varies_becomes_a_placeholder() {
        for (raw, want) in [
            (
                r#"{"error":"internal error","request_id":"3f2a9c1e-dead-4abc-b123-0123456789ab"}"#,
                r##"{"error":"internal error","request_id":"#"}"##,
            ),
            (
                "<html><title>500 Internal Server Error</title> req 17 at 2026-12-04T22:40:24.123Z",
                "<html><title># Internal Server Error</title> req # at #-#-#:#:#.#",
            ),
            ("trace deadbeefcafe and DEADBEEF", "trace # and #"),
            (
                "model resnet50 v2 not ready, x86_64",
                "model resnet# v# not ready, x#_#",
            ),
            ("token Xk3bQ9z, a1b2", "token #, #"),
            ("  many\r\n\tspaces\0here  ", "many spaces here"),
            ("defaced decade facade", "defaced decade facade"),
            (
                "InvalidArgumentError: bad input",
                "InvalidArgumentError: bad input",
            ),
            ("café 12 €", "café # €"),
            ("", ""),
        ] {
            assert_eq!(normalise(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn requests_differing_only_in_ids_share_a_reason() {
        let a = body_reason(b"{\"detail\":\"failed\",\"id\":\"a81bc81b-dead-4e5d-abff-90865d1e13b1\",\"n\":9,\"t\":1733352024123}");
        let b = body_reason(b"{\"detail\":\"failed\",\"id\":\"0c2f3e4d-1a2b-4c3d-8e9f-000000000000\",\"n\":10,\"t\":1733352025007}");
        assert_eq!(a, b);
        assert_eq!(a, "{\"detail\":\"failed\",\"id\":\"#\",\"n\":#,\"t\":#}");
    }

    #[test]
    fn a_long_body_is_cut_at_the_same_word_whatever_its_length() {
        let page = |id: &str| {
            format!(
                "<p>request {id} failed</p>{}",
                "the server said no ".repeat(80)
            )
        };
        let a = body_reason(page("7").as_bytes());
        let b = body_reason(page("1234567890").as_bytes());
        assert_eq!(a, b);
        assert!(
            a.ends_with(" the…") && a.len() <= MAX_REASON_BYTES + '…'.len_utf8(),
            "{a}"
        );
    }

    #[test]
    fn distinct_reasons_are_bounded() {
        let mut seen = HashSet::new();
        for i in 0..MAX_REASONS {
            assert_eq!(admit(&mut seen, format!("r{i:?}x")), format!("r{i:?}x"));
        }
        assert_eq!(admit(&mut seen, "new".into()), OTHER_REASON);
        assert_eq!(
            admit(&mut seen, "r0x".into()),
            "r0x",
            "one seen before keeps its own"
        );
        assert_eq!(seen.len(), MAX_REASONS);
    }

    #[test]
    fn empty_and_excerpt() {
        assert_eq!(body_reason(b""), "(empty body)");
        assert_eq!(body_reason(b" \r\n "), "(empty body)");
        assert_eq!(body_excerpt(b"id 42\r\nbad"), "id 42  bad");
        assert_eq!(body_excerpt(&[b'x'; 201]), format!("{}…", "x".repeat(200)));
        assert_eq!(body_excerpt(b"\n"), "(empty body)");
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// Text made of the pieces reasons are made of, so that cuts, words and placeholders meet.
    fn reasonish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-zA-Z]{1,12}",
            "[0-9]{1,12}",
            "[0-9a-f]{1,40}",
            "[a-z]{1,6}[0-9]{1,4}",
            "[ \t\r\n]{1,3}",
            "[-:.,#/_\"{}<>…é€\u{fffd}\u{0}]",
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ];
        proptest::collection::vec(piece, 0..120).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(crate::protocol::tensor::fuzz_config())]

        #[test]
        fn normalising_is_idempotent_and_bounded(text in reasonish()) {
            let once = normalise(&text);
            prop_assert!(once.len() <= MAX_REASON_BYTES + '…'.len_utf8(), "{}", once.len());
            prop_assert_eq!(normalise(&once), once.clone());
            prop_assert!(!once.starts_with(' ') && !once.ends_with(' '));
        }

        #[test]
        fn any_bytes_give_a_bounded_stable_reason(body in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let reason = body_reason(&body);
            prop_assert!(!reason.is_empty() && reason.len() <= MAX_REASON_BYTES + '…'.len_utf8());
            prop_assert_eq!(normalise(&reason), reason.clone());
            prop_assert!(body_excerpt(&body).len() <= EXCERPT_BYTES * 3 + 3);
        }

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let once = normalise(&text);
            prop_assert_eq!(normalise(&once), once);
        }
    }
}
