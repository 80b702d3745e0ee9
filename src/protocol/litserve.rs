//! LitServe's JSON protocol: the reference deployment's `{"input": <nested list>}` in and
//! `{"output": <nested list>}` out, and the bodies of APIs as users deploy them: the encoded image
//! base64'd under a key, or the user's own JSON template with placeholders filled in.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, Result};
use crate::protocol::json_array::{Skip, Walk};
use crate::protocol::tensor::{self, DataType, Tensor};

/// Replaced, inside any JSON string value of a template, by the image file's bytes in base64.
pub const IMAGE_BASE64: &str = "{{image_base64}}";
/// Replaced, as a whole JSON string value of a template, by the tensor as a nested list.
pub const TENSOR: &str = "{{tensor}}";

/// Encodes `{"input": <nested list>}` with every float in its shortest round-tripping form.
pub fn encode_request(input: &Tensor) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(input.data.len() * 3 + 16);
    body.extend_from_slice(b"{\"input\":");
    tensor::write_json_array(input.datatype, &input.data, &input.shape, true, &mut body)?;
    body.push(b'}');
    Ok(body)
}

/// Encodes `{"<key>": "<base64 of image>"}`: the encoded file as on disk, standard alphabet with
/// padding (what Python's `base64.b64decode` reads).
pub fn encode_image_request(key: &str, image: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(image.len() * 4 / 3 + key.len() + 16);
    body.push(b'{');
    write_json_string(key, &mut body);
    body.extend_from_slice(b":\"");
    body.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(image)
            .as_bytes(),
    );
    body.extend_from_slice(b"\"}");
    body
}

fn write_json_string(text: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(out, text).expect("writing a string to a Vec cannot fail");
}

/// What fills a template's placeholders.
pub struct TemplateInputs<'a> {
    pub image: &'a [u8],
    pub tensor: Option<&'a Tensor>,
}

/// The placeholders a template uses (`{{image_base64}}`, `{{tensor}}`), so that a caller
/// preprocesses the image only when the template asks for the tensor.
pub fn template_placeholders(template: &[u8]) -> Result<Vec<&'static str>> {
    let mut used = Vec::new();
    for token in scan_template(template)? {
        if let Token::Value { start, end } = token {
            for name in placeholders_in(&template[start..end])? {
                if !used.contains(&name) {
                    used.push(name);
                }
            }
        }
    }
    Ok(used)
}

/// Fills a JSON template: every string value holding `{{image_base64}}` gets the image's base64
/// there (base64 needs no escaping inside a JSON string), and a string value that is exactly
/// `"{{tensor}}"` becomes the tensor's nested list. Everything else is copied byte for byte, so
/// key order, spacing and numbers reach the server as the user wrote them.
pub fn fill_template(template: &[u8], inputs: &TemplateInputs<'_>) -> Result<Vec<u8>> {
    let tokens = scan_template(template)?;
    let mut out = Vec::with_capacity(template.len() + inputs.image.len() * 4 / 3);
    let mut encoded: Option<String> = None;
    let mut filled = 0usize;
    let mut copied = 0usize;
    for token in tokens {
        let Token::Value { start, end } = token else {
            continue;
        };
        let content = &template[start..end];
        let names = placeholders_in(content)?;
        if names.is_empty() {
            continue;
        }
        // `start - 1` and `end` are the string's quotes: a tensor replaces them too.
        out.extend_from_slice(&template[copied..start - 1]);
        copied = end + 1;
        filled += 1;
        if names.contains(&TENSOR) {
            if content != TENSOR.as_bytes() {
                return Err(Error::InvalidArgument(format!(
                    "{TENSOR} must be a whole string value (\"{TENSOR}\"): it becomes an array, found \"{}\"",
                    String::from_utf8_lossy(content)
                )));
            }
            let tensor = inputs.tensor.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the template uses {TENSOR} but no tensor was given"
                ))
            })?;
            tensor::write_json_array(tensor.datatype, &tensor.data, &tensor.shape, true, &mut out)?;
            continue;
        }
        let b64 = encoded
            .get_or_insert_with(|| base64::engine::general_purpose::STANDARD.encode(inputs.image));
        out.push(b'"');
        let mut rest = content;
        while let Some(at) = memchr::memmem::find(rest, IMAGE_BASE64.as_bytes()) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(b64.as_bytes());
            rest = &rest[at + IMAGE_BASE64.len()..];
        }
        out.extend_from_slice(rest);
        out.push(b'"');
    }
    if filled == 0 {
        return Err(Error::InvalidArgument(format!(
            "has no placeholder: put \"{IMAGE_BASE64}\" or \"{TENSOR}\" in a string value"
        )));
    }
    out.extend_from_slice(&template[copied..]);
    Ok(out)
}

/// A string of a JSON document: `start..end` is its content between the quotes, still escaped.
enum Token {
    Key,
    Value { start: usize, end: usize },
}

/// Validates the template as JSON and lists its strings, keys apart from values.
fn scan_template(template: &[u8]) -> Result<Vec<Token>> {
    serde_json::from_slice::<serde::de::IgnoredAny>(template)
        .map_err(|e| Error::InvalidArgument(format!("is not valid JSON: {e}")))?;
    let mut tokens = Vec::new();
    let mut i = 0;
    // In valid JSON every quote outside a string opens one, and a backslash inside one escapes
    // exactly the next byte (\uXXXX continues with hex digits, never a quote).
    while let Some(offset) = memchr::memchr(b'"', &template[i..]) {
        let start = i + offset + 1;
        let mut end = start;
        while template[end] != b'"' {
            end += if template[end] == b'\\' { 2 } else { 1 };
        }
        let after = template[end + 1..]
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .copied();
        if after == Some(b':') {
            if !placeholders_in(&template[start..end])?.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "has a placeholder in the key \"{}\": placeholders go in values",
                    String::from_utf8_lossy(&template[start..end])
                )));
            }
            tokens.push(Token::Key);
        } else {
            tokens.push(Token::Value { start, end });
        }
        i = end + 1;
    }
    Ok(tokens)
}

/// The placeholders in a string's content; an unknown `{{name}}` is an error (a typo would
/// otherwise be sent as literal text).
fn placeholders_in(content: &[u8]) -> Result<Vec<&'static str>> {
    let mut found = Vec::new();
    let mut rest = content;
    while let Some(at) = memchr::memmem::find(rest, b"{{") {
        let after = &rest[at + 2..];
        let name_len = after
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        if name_len > 0 && after[name_len..].starts_with(b"}}") {
            let placeholder = &rest[at..at + 2 + name_len + 2];
            let known = [IMAGE_BASE64, TENSOR]
                .into_iter()
                .find(|p| p.as_bytes() == placeholder)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "has an unknown placeholder {}: use {IMAGE_BASE64} or {TENSOR}",
                        String::from_utf8_lossy(placeholder)
                    ))
                })?;
            if !found.contains(&known) {
                found.push(known);
            }
            rest = &rest[at + 4 + name_len..];
        } else {
            rest = &rest[at + 2..];
        }
    }
    Ok(found)
}

/// Checks a response: a JSON object with `key`. Its value may be a numeric array (regular,
/// finite, of the expected shape when one is given; the argmax of its first row is the top-1
/// class), a class index (a non-negative integer, the top-1), another number, or a non-empty
/// label. Returns the top-1 class when the value names one.
///
/// The body is checked as it is parsed, never built into a tree: memory does not grow with it.
pub fn check_response(
    body: &[u8],
    key: &str,
    expected_shape: Option<&[Option<usize>]>,
) -> Result<Option<usize>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = Response {
        key,
        expected_shape,
    }
    .deserialize(&mut de)
    .and_then(|found| de.end().map(|()| found))
    .map_err(|e| Error::protocol(format!("response is not valid JSON: {e}")))?;
    match found {
        Found::Value(verdict) => verdict,
        Found::Missing(keys) => {
            let keys = match keys {
                Some(names) => {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    format!("it has {names:?}")
                }
                None => "it is not a JSON object".into(),
            };
            Err(Error::protocol(format!(
                "response has no \"{key}\" field ({keys}; --litserve-output names the key checked)"
            )))
        }
    }
}

/// What the top level held: the checked value under the key (the last one, as a JSON object
/// keeps it), or, without one, the first key names in order (`None`: not an object).
enum Found {
    Value(Result<Option<usize>>),
    Missing(Option<BTreeSet<String>>),
}

/// Keys named when the one checked is missing.
const KEYS_NAMED: usize = 8;

struct Response<'k> {
    key: &'k str,
    expected_shape: Option<&'k [Option<usize>]>,
}

impl<'de> DeserializeSeed<'de> for Response<'_> {
    type Value = Found;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Found, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Response<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut verdict = None;
        let mut names = BTreeSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if name == self.key {
                verdict = Some(map.next_value_seed(OutputValue {
                    key: self.key,
                    expected_shape: self.expected_shape,
                })?);
            } else {
                map.next_value_seed(Skip)?;
            }
            if verdict.is_none() {
                names.insert(name);
                if names.len() > KEYS_NAMED {
                    names.pop_last();
                }
            }
        }
        Ok(verdict.map_or(Found::Missing(Some(names)), Found::Value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Found, A::Error> {
        Skip.visit_seq(seq)?;
        Ok(Found::Missing(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Found, E> {
        Ok(Found::Missing(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Found, E> {
        Ok(Found::Missing(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Found, E> {
        Ok(Found::Missing(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Found, E> {
        Ok(Found::Missing(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Found, E> {
        Ok(Found::Missing(None))
    }

    fn visit_unit<E>(self) -> Result<Found, E> {
        Ok(Found::Missing(None))
    }
}

/// The value under the key, checked as it is parsed.
struct OutputValue<'k> {
    key: &'k str,
    expected_shape: Option<&'k [Option<usize>]>,
}

impl OutputValue<'_> {
    fn not_array(&self) -> Option<Error> {
        self.expected_shape
            .map(|_| Error::protocol(format!("\"{}\" is not a numeric array", self.key)))
    }

    fn other(&self, what: &str) -> Result<Option<usize>> {
        if let Some(e) = self.not_array() {
            return Err(e);
        }
        Err(Error::protocol(format!(
            "\"{}\" is {what}: expected a numeric array, a class index or a label",
            self.key
        )))
    }

    fn number(&self, finite: bool, class: Option<usize>) -> Result<Option<usize>> {
        if let Some(e) = self.not_array() {
            return Err(e);
        }
        if finite {
            Ok(class)
        } else {
            Err(Error::protocol(format!(
                "\"{}\" is not a finite number",
                self.key
            )))
        }
    }
}

impl<'de> DeserializeSeed<'de> for OutputValue<'_> {
    type Value = Result<Option<usize>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OutputValue<'_> {
    type Value = Result<Option<usize>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let mut argmax: Option<(usize, f64)> = None;
        let mut nan = false;
        let mut all_finite = true;
        let sink = |i: usize, first_row: bool, bytes: &[u8]| {
            let v = tensor::element_f64(DataType::Fp64, bytes, 0);
            all_finite &= v.is_finite();
            if first_row {
                if v.is_nan() {
                    nan = true;
                } else if argmax.is_none_or(|(_, b)| v > b) {
                    argmax = Some((i, v));
                }
            }
        };
        let mut walk = Walk::new(DataType::Fp64, sink);
        walk.seed().visit_seq(seq)?;
        let (walked, _) = walk.finish();
        let key = self.key;
        Ok(walked
            .map_err(|e| Error::protocol(format!("\"{key}\" is not a numeric array: {e}")))
            .and_then(|(shape, _)| {
                check_shape(key, &shape, self.expected_shape)?;
                if !all_finite {
                    return Err(Error::protocol(format!(
                        "\"{key}\" contains non-finite values"
                    )));
                }
                Ok(argmax.filter(|_| !nan).map(|(i, _)| i))
            }))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Skip.visit_map(map)?;
        Ok(self.other("an object"))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.number(true, usize::try_from(v).ok()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.number(
            true,
            u64::try_from(v).ok().and_then(|v| usize::try_from(v).ok()),
        ))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(self.number(v.is_finite(), None))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        if let Some(e) = self.not_array() {
            return Ok(Err(e));
        }
        if v.is_empty() {
            Ok(self.other("an empty string"))
        } else {
            Ok(Ok(None))
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.other("a boolean"))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.other("null"))
    }
}

fn check_shape(key: &str, shape: &[usize], expected: Option<&[Option<usize>]>) -> Result<()> {
    if let Some(want) = expected {
        let ok = shape.len() == want.len()
            && shape
                .iter()
                .zip(want)
                .all(|(g, w)| w.is_none_or(|w| w == *g));
        if !ok {
            return Err(Error::protocol(format!(
                "\"{key}\" has shape {shape:?}, expected {}",
                crate::protocol::triton::format_shape(want)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_nested_input() {
        let t = Tensor {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 2, 2],
            data: [0.1f32, 0.2, 0.3, 1e-8]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        let body = encode_request(&t).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "{\"input\":[[[0.1,0.2],[0.3,1e-8]]]}"
        );
    }

    #[test]
    fn response_checks() {
        let shape: &[Option<usize>] = &[Some(1), None];
        assert_eq!(
            check_response(br#"{"output":[[0.1,0.9,0.3]]}"#, "output", Some(shape)).unwrap(),
            Some(1)
        );
        assert_eq!(
            check_response(br#"{"output":[3, 1, 7]}"#, "output", None).unwrap(),
            Some(2)
        );
        for (body, needle) in [
            (
                &br#"{"result":[1]}"#[..],
                "no \"output\" field (it has [\"result\"]",
            ),
            (b"[1]", "no \"output\" field (it is not a JSON object"),
            (b"{\"output\":[[1,2],[3]]}", "numeric array"),
            (b"{\"output\": \"x\"}", "not a numeric array"),
            (b"nope", "not valid JSON"),
            (b"{\"output\":[[1,2]]}", "shape"),
        ] {
            let err = check_response(body, "output", Some(&[Some(1), Some(3)])).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn response_key_values() {
        let top1 = |body: &[u8], key| check_response(body, key, None);
        assert_eq!(top1(br#"{"class": 281}"#, "class").unwrap(), Some(281));
        assert_eq!(top1(br#"{"score": 0.25}"#, "score").unwrap(), None);
        assert_eq!(top1(br#"{"label": "tabby"}"#, "label").unwrap(), None);
        assert_eq!(
            top1(br#"{"probs": [0.1, 0.7, 0.2], "label": "x"}"#, "probs").unwrap(),
            Some(1)
        );
        for (body, key, needle) in [
            (
                &br#"{"label": ""}"#[..],
                "label",
                "\"label\" is an empty string",
            ),
            (br#"{"label": null}"#, "label", "\"label\" is null"),
            (br#"{"ok": true}"#, "ok", "\"ok\" is a boolean"),
            (br#"{"o": {"a": 1}}"#, "o", "\"o\" is an object"),
            (
                br#"{"probs": [1, "a"]}"#,
                "probs",
                "\"probs\" is not a numeric array",
            ),
            (
                br#"{"output": [1]}"#,
                "class",
                "no \"class\" field (it has [\"output\"]",
            ),
        ] {
            let err = top1(body, key).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
            assert_eq!(err.kind(), "protocol");
        }
    }

    #[test]
    fn image_request_is_base64_under_the_key() {
        let body = encode_image_request("im\"g", b"\xff\xd8\xff\x00ab");
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "{\"im\\\"g\":\"/9j/AGFi\"}"
        );
        let empty = encode_image_request("image", b"x");
        assert_eq!(std::str::from_utf8(&empty).unwrap(), "{\"image\":\"eA==\"}");
    }

    fn fill(template: &str, tensor: Option<&Tensor>) -> Result<String> {
        let inputs = TemplateInputs {
            image: b"\xff\xd8\xff\x00ab",
            tensor,
        };
        fill_template(template.as_bytes(), &inputs).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn template_is_copied_with_placeholders_filled() {
        let t = Tensor {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 2],
            data: [0.5f32, -1e-8]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        assert_eq!(
            fill(
                "{ \"b\" : 2,\n \"img\": \"data:image/jpeg;base64,{{image_base64}}\", \"x\": [\"{{tensor}}\", \"\\\"{{image_base64}}\\\"\"], \"a\": 1.50 }",
                Some(&t)
            )
            .unwrap(),
            "{ \"b\" : 2,\n \"img\": \"data:image/jpeg;base64,/9j/AGFi\", \"x\": [[[0.5,-1e-8]], \"\\\"/9j/AGFi\\\"\"], \"a\": 1.50 }"
        );
        assert_eq!(fill("\"{{image_base64}}\"", None).unwrap(), "\"/9j/AGFi\"");
        assert_eq!(
            fill(
                "{\"i\":\"{{image_base64}}{{image_base64}}\",\"s\":\"{{ x }}\"}",
                None
            )
            .unwrap(),
            "{\"i\":\"/9j/AGFi/9j/AGFi\",\"s\":\"{{ x }}\"}"
        );
        assert_eq!(
            template_placeholders(
                b"{\"a\":\"{{tensor}}\",\"b\":\"{{image_base64}}\",\"c\":\"{{tensor}}\"}"
            )
            .unwrap(),
            vec![TENSOR, IMAGE_BASE64]
        );
    }

    #[test]
    fn bad_templates_say_why() {
        for (template, needle) in [
            (
                "{\"image\": \"{{image_base64}}\"",
                "is not valid JSON: EOF while parsing an object at line 1 column 28",
            ),
            (
                "{\"image\": \"x\"}",
                "has no placeholder: put \"{{image_base64}}\" or \"{{tensor}}\"",
            ),
            (
                "{\"image\": \"{{image_b64}}\"}",
                "unknown placeholder {{image_b64}}",
            ),
            (
                "{\"{{image_base64}}\": 1}",
                "placeholder in the key \"{{image_base64}}\"",
            ),
            (
                "{\"t\": \"[{{tensor}}]\"}",
                "{{tensor}} must be a whole string value",
            ),
            ("{\"t\": \"{{tensor}}\"}", "no tensor was given"),
        ] {
            let err = fill(template, None).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::protocol::tensor::fuzz_config())]

        #[test]
        fn response_check_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = super::check_response(&body, "output", Some(&[Some(1), None]));
        }

        #[test]
        fn template_fill_never_panics(template in proptest::collection::vec(any::<u8>(), 0..200)) {
            let inputs = super::TemplateInputs { image: b"img", tensor: None };
            let _ = super::fill_template(&template, &inputs);
        }

        #[test]
        fn float32_json_round_trips(values in proptest::collection::vec(any::<f32>().prop_filter("finite", |v| v.is_finite()), 1..50)) {
            let t = crate::protocol::tensor::Tensor {
                name: "input".into(),
                datatype: crate::protocol::tensor::DataType::Fp32,
                shape: vec![1, values.len()],
                data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            let body = super::encode_request(&t).unwrap();
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let back: Vec<f32> = parsed["input"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            prop_assert_eq!(back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
    }
}
