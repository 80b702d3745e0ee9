//! Numeric JSON arrays checked as they are parsed, element by element, without building a
//! `serde_json::Value` tree (which costs about 16 times the text for short numbers) or keeping the
//! elements: a response is validated on the I/O thread, in memory independent of its size.
//!
//! The rules are those of `tensor::json_array_to_bytes` (the tests' reference): the nesting must be regular (the shape
//! is read along the first elements), every leaf at the same depth, each a valid value of the
//! datatype. When an array breaks two rules, which of them is reported may differ (this walk
//! finds a row's wrong length when the row ends, the tree walk when it starts).

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::protocol::tensor::{self, DataType};

/// Receives each element: its index, whether it is in the first row of the outermost array (every
/// element of a flat array is), and its little-endian bytes as `datatype`.
pub trait Sink {
    fn element(&mut self, index: usize, first_row: bool, bytes: &[u8]);
}

impl<F: FnMut(usize, bool, &[u8])> Sink for F {
    fn element(&mut self, index: usize, first_row: bool, bytes: &[u8]) {
        self(index, first_row, bytes);
    }
}

/// What a walk found: the shape of the nesting and the number of elements, or the first rule broken.
pub struct Walk<S> {
    datatype: DataType,
    /// The length of the first array closed at each depth (the one on the first-element path).
    shape: Vec<Option<usize>>,
    /// Where the leaves are, known from the first leaf (or first empty array) met.
    leaf_depth: Option<usize>,
    error: Option<Error>,
    count: usize,
    /// Index of the current element of the outermost array.
    outer: usize,
    buf: Vec<u8>,
    sink: S,
}

impl<S: Sink> Walk<S> {
    pub fn new(datatype: DataType, sink: S) -> Self {
        Walk {
            datatype,
            shape: Vec::new(),
            leaf_depth: None,
            error: None,
            count: 0,
            outer: 0,
            buf: Vec::with_capacity(8),
            sink,
        }
    }

    /// The shape and element count, or the first rule broken; and the sink back.
    pub fn finish(self) -> (Result<(Vec<usize>, usize)>, S) {
        let result = match self.error {
            Some(e) => Err(e),
            None => Ok((self.shape.into_iter().flatten().collect(), self.count)),
        };
        (result, self.sink)
    }

    /// A seed that walks one JSON value (an array, or a single leaf) into this walk.
    pub fn seed(&mut self) -> Node<'_, S> {
        Node {
            walk: self,
            depth: 0,
        }
    }

    fn fail(&mut self, e: Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn enter_array(&mut self, depth: usize) {
        if self.leaf_depth.is_some_and(|leaves| depth >= leaves) {
            self.fail(Error::protocol(
                "ragged JSON array: rows of different lengths",
            ));
        }
    }

    fn close_array(&mut self, depth: usize, len: usize) {
        if self.leaf_depth.is_none() {
            self.leaf_depth = Some(depth + 1); // an empty array before any leaf
        }
        if self.shape.len() <= depth {
            self.shape.resize(depth + 1, None);
        }
        match self.shape[depth] {
            None => self.shape[depth] = Some(len),
            Some(want) if want != len => self.fail(Error::protocol(
                "ragged JSON array: rows of different lengths",
            )),
            Some(_) => {}
        }
    }

    fn leaf(&mut self, depth: usize, value: impl FnOnce() -> Value) {
        if self.error.is_some() {
            return;
        }
        let leaves = *self.leaf_depth.get_or_insert(depth);
        if depth != leaves {
            self.fail(Error::protocol(
                "ragged JSON array: numbers and lists mixed",
            ));
            return;
        }
        self.buf.clear();
        if let Err(e) = tensor::json_value_to_bytes(self.datatype, &value(), &mut self.buf) {
            self.fail(e);
            return;
        }
        let first_row = leaves <= 1 || self.outer == 0;
        self.sink.element(self.count, first_row, &self.buf);
        self.count += 1;
    }
}

/// One value of the walk at `depth`.
pub struct Node<'w, S> {
    walk: &'w mut Walk<S>,
    depth: usize,
}

impl<'de, S: Sink> DeserializeSeed<'de> for Node<'_, S> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, S: Sink> Visitor<'de> for Node<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth;
        self.walk.enter_array(depth);
        let mut len = 0usize;
        while seq
            .next_element_seed(Node {
                walk: &mut *self.walk,
                depth: depth + 1,
            })?
            .is_some()
        {
            len += 1;
            if depth == 0 {
                self.walk.outer += 1;
            }
        }
        self.walk.close_array(depth, len);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        if self.walk.error.is_some() {
            return Skip.visit_map(map);
        }
        // only to name it in the error, as the tree walk does
        let value = Value::deserialize_from_map(map)?;
        self.walk.leaf(self.depth, || value);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.walk.leaf(self.depth, || Value::from(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.walk.leaf(self.depth, || Value::from(v));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.walk.leaf(self.depth, || Value::from(v));
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.walk.leaf(self.depth, || Value::Bool(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.walk.leaf(self.depth, || Value::String(v.to_owned()));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.walk.leaf(self.depth, || Value::Null);
        Ok(())
    }
}

/// `Value` from a map already opened by a visitor.
trait FromMap: Sized {
    fn deserialize_from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

impl FromMap for Value {
    fn deserialize_from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        serde::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

/// Walks the JSON text `text` (one value) into `walk`; a syntax error is a protocol error.
pub fn walk_text<S: Sink>(text: &str, walk: &mut Walk<S>) -> Result<()> {
    let mut de = serde_json::Deserializer::from_str(text);
    walk.seed()
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| Error::protocol(format!("not valid JSON: {e}")))
}

/// Skips one JSON value, checking it as parsing it into a tree would (numbers in range, strings
/// valid UTF-8, nesting within serde_json's recursion limit), which `IgnoredAny` does not, and
/// without keeping anything.
pub struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Skip).map(|()| Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod reference;

/// The walk against the tree it replaces: the same responses are accepted (with the same top-1 and
/// tensors) and rejected, and memory no longer grows with the response.
#[cfg(test)]
mod equivalence {

    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::reference;
    use crate::protocol::tensor::DataType;
    use crate::protocol::triton::ExpectedOutput;
    use crate::protocol::{litserve, triton};

    use crate::alloc_meter::peak_of;

    /// `{"output": [[n values]]}` with one-digit values, the case a tree costs most for.
    fn litserve_body(n: usize) -> Vec<u8> {
        let mut body = b"{\"output\":[[".to_vec();
        for i in 0..n {
            body.extend_from_slice(if i % 7 == 3 { b"1," } else { b"0," });
        }
        body.pop();
        body.extend_from_slice(b"]]}");
        body
    }

    fn triton_json_body(n: usize) -> Vec<u8> {
        let mut body = format!(
            "{{\"model_name\":\"m\",\"outputs\":[{{\"name\":\"o\",\"datatype\":\"FP32\",\"shape\":[1,{n}],\"data\":["
        )
        .into_bytes();
        for i in 0..n {
            body.extend_from_slice(if i % 7 == 3 { b"1," } else { b"0," });
        }
        body.pop();
        body.extend_from_slice(b"]}]}");
        body
    }

    fn triton_binary_body(n: usize) -> (Vec<u8>, usize) {
        let header = json!({"outputs": [{"name": "o", "datatype": "FP32", "shape": [1, n],
            "parameters": {"binary_data_size": n * 4}}]});
        let mut body = serde_json::to_vec(&header).unwrap();
        let len = body.len();
        for i in 0..n {
            body.extend_from_slice(&(if i % 7 == 3 { 1.0f32 } else { 0.0 }).to_le_bytes());
        }
        (body, len)
    }

    fn expected_fp32() -> Vec<ExpectedOutput> {
        vec![ExpectedOutput {
            name: "o".into(),
            datatype: DataType::Fp32,
            shape: vec![Some(1), None],
        }]
    }

    #[test]
    fn validating_a_large_response_takes_memory_independent_of_its_size() {
        let n = 500_000;
        let body = litserve_body(n);
        let (peak, top1) =
            peak_of(|| litserve::check_response(&body, "output", Some(&[Some(1), None])));
        assert_eq!(top1.unwrap(), Some(3));
        assert!(
            peak <= body.len() / 4,
            "LitServe: peak {peak} bytes for a {}-byte body",
            body.len()
        );

        let body = triton_json_body(n);
        let (peak, top1) = peak_of(|| triton::check_response(&body, None, &expected_fp32()));
        assert_eq!(top1.unwrap(), Some(3));
        assert!(
            peak <= body.len() / 4,
            "Triton JSON: peak {peak} bytes for a {}-byte body",
            body.len()
        );

        let (body, len) = triton_binary_body(n);
        let (peak, top1) = peak_of(|| triton::check_response(&body, Some(len), &expected_fp32()));
        assert_eq!(top1.unwrap(), Some(3));
        assert!(
            peak <= body.len() / 4,
            "Triton binary: peak {peak} bytes for a {}-byte body",
            body.len()
        );
    }

    /// Not a test of speed (no threshold): `cargo test --lib measure_validation -- --ignored
    /// --nocapture` prints what the old and the new checks cost.
    #[test]
    #[ignore = "prints measurements"]
    fn measure_validation() {
        let n = 2_000_000;
        let time = |f: &dyn Fn()| {
            let start = std::time::Instant::now();
            for _ in 0..3 {
                f();
            }
            start.elapsed().as_secs_f64() / 3.0 * 1000.0
        };
        let shape: &[Option<usize>] = &[Some(1), None];
        let lit = litserve_body(n);
        let tri = triton_json_body(n);
        let (bin, len) = triton_binary_body(n);
        let want = expected_fp32();
        for (what, size, old, new) in [
            (
                "LitServe JSON",
                lit.len(),
                &(|| drop(reference::litserve_check(&lit, "output", Some(shape)))) as &dyn Fn(),
                &(|| drop(litserve::check_response(&lit, "output", Some(shape)))) as &dyn Fn(),
            ),
            (
                "Triton JSON",
                tri.len(),
                &(|| drop(reference::triton_check(&tri, None, &want))) as &dyn Fn(),
                &(|| drop(triton::check_response(&tri, None, &want))) as &dyn Fn(),
            ),
            (
                "Triton binary",
                bin.len(),
                &(|| drop(reference::triton_check(&bin, Some(len), &want))) as &dyn Fn(),
                &(|| drop(triton::check_response(&bin, Some(len), &want))) as &dyn Fn(),
            ),
        ] {
            let (old_peak, ()) = peak_of(old);
            let (new_peak, ()) = peak_of(new);
            println!(
                "{what}, {size} bytes: old {:.1} ms, peak {old_peak} B ({:.1}x); new {:.1} ms, peak {new_peak} B ({:.3}x)",
                time(old),
                old_peak as f64 / size as f64,
                time(new),
                new_peak as f64 / size as f64,
            );
        }
    }

    /// The finiteness scan alone: element by element as before, and in bit-tested blocks.
    #[test]
    #[ignore = "prints measurements"]
    fn measure_finite_scan() {
        use crate::protocol::tensor::{all_finite, element_f64};
        let data: Vec<u8> = (0..16_000_000u32)
            .flat_map(|i| (i as f32).to_le_bytes())
            .collect();
        let time = |f: &dyn Fn() -> bool| {
            let start = std::time::Instant::now();
            for _ in 0..5 {
                assert!(f());
            }
            start.elapsed().as_secs_f64() / 5.0 * 1000.0
        };
        let old = time(&|| {
            (0..data.len() / 4).all(|i| element_f64(DataType::Fp32, &data, i).is_finite())
        });
        let new = time(&|| all_finite(DataType::Fp32, &data));
        #[allow(clippy::print_stdout)]
        {
            println!(
                "finite scan of {} bytes of FP32: old {old:.1} ms, new {new:.1} ms",
                data.len()
            );
        }
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            8 => (0u32..300).prop_map(Value::from),
            4 => (-3.0e5f64..3.0e5).prop_map(Value::from),
            2 => (-70_000i64..70_000).prop_map(Value::from),
            1 => Just(json!(1e39)),
            1 => Just(json!(u64::MAX)),
            1 => Just(json!("a")),
            1 => Just(json!("")),
            1 => Just(json!(true)),
            1 => Just(Value::Null),
            1 => Just(json!({"k": [1, 2]})),
        ]
    }

    /// Arrays that are mostly regular (a shape filled with values), sometimes broken: a row cut
    /// short, an element replaced by an array or a leaf of another kind.
    fn array() -> impl Strategy<Value = Value> {
        (
            proptest::collection::vec(0usize..4, 0..4),
            proptest::collection::vec(leaf(), 64),
            0u8..6,
            any::<prop::sample::Index>(),
        )
            .prop_map(|(shape, leaves, damage, at)| {
                let mut next = leaves.into_iter().cycle();
                let mut value = build(&shape, &mut next);
                if damage == 0 {
                    break_one(&mut value, at.index(1 << 16));
                }
                value
            })
    }

    fn build(shape: &[usize], leaves: &mut impl Iterator<Item = Value>) -> Value {
        match shape.split_first() {
            None => leaves.next().unwrap_or(Value::Null),
            Some((&n, rest)) => Value::Array((0..n).map(|_| build(rest, leaves)).collect()),
        }
    }

    fn break_one(value: &mut Value, at: usize) {
        if let Value::Array(items) = value {
            if items.is_empty() {
                items.push(json!([1]));
                return;
            }
            let i = at % items.len();
            match at % 3 {
                0 => {
                    items.pop();
                }
                1 => items[i] = json!([0.5]),
                _ => break_one(&mut items[i], at / 3),
            }
        }
    }

    fn datatype() -> impl Strategy<Value = DataType> {
        proptest::sample::select(vec![
            DataType::Fp32,
            DataType::Fp16,
            DataType::Fp64,
            DataType::Int8,
            DataType::Uint8,
            DataType::Int64,
            DataType::Bool,
        ])
    }

    /// A body made from `value` as JSON, sometimes cut or with a byte changed.
    fn body_of(
        value: &Value,
        cut: Option<prop::sample::Index>,
        flip: Option<(prop::sample::Index, u8)>,
    ) -> Vec<u8> {
        let mut body = serde_json::to_vec(value).unwrap();
        if let Some((at, byte)) = flip {
            let i = at.index(body.len());
            body[i] = byte;
        }
        if let Some(cut) = cut {
            body.truncate(cut.index(body.len() + 1));
        }
        body
    }

    fn same<T: PartialEq + std::fmt::Debug>(
        new: &crate::error::Result<T>,
        old: &crate::error::Result<T>,
    ) -> std::result::Result<(), TestCaseError> {
        match (new, old) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.kind(), b.kind(), "{} / {}", a, b),
            _ => prop_assert!(false, "new {:?}, old {:?}", new, old),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(crate::protocol::tensor::fuzz_config())]

        #[test]
        fn litserve_check_agrees_with_the_tree(
            output in prop_oneof![3 => array(), 1 => leaf()],
            other in leaf(),
            shape in proptest::option::of(proptest::collection::vec(proptest::option::of(0usize..4), 0..4)),
            key in proptest::sample::select(vec!["output", "other", "zz"]),
            cut in proptest::option::weighted(0.1, any::<prop::sample::Index>()),
            flip in proptest::option::weighted(0.1, (any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let body = body_of(&json!({"output": output, "other": other, "b": [1, {"c": null}]}), cut, flip);
            let new = litserve::check_response(&body, key, shape.as_deref());
            let old = reference::litserve_check(&body, key, shape.as_deref());
            same(&new, &old)?;
            if let (Err(a), Err(b)) = (&new, &old) {
                // the same words, but which rule a doubly broken array is reported for
                let ragged = |e: &crate::error::Error| e.to_string().contains("ragged") || e.to_string().contains("is not a valid");
                prop_assert!(a.to_string() == b.to_string() || (ragged(a) && ragged(b)), "{} / {}", a, b);
            }
        }

        #[test]
        fn litserve_check_agrees_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let new = litserve::check_response(&body, "output", None);
            same(&new, &reference::litserve_check(&body, "output", None))?;
        }

        #[test]
        fn triton_check_and_decode_agree_with_the_tree(
            data in array(),
            dt in datatype(),
            declared in proptest::collection::vec(0i64..4, 0..4),
            want in proptest::collection::vec(proptest::option::of(0usize..4), 0..4),
            want_dt in datatype(),
            binary in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            cut in proptest::option::weighted(0.1, any::<prop::sample::Index>()),
            flip in proptest::option::weighted(0.1, (any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let mut outputs = vec![json!({"name": "o", "datatype": dt.name(), "shape": declared, "data": data})];
            let mut tail = Vec::new();
            if let Some(bytes) = binary {
                outputs.push(json!({"name": "b", "datatype": "UINT8", "shape": [bytes.len()],
                    "parameters": {"binary_data_size": bytes.len()}}));
                tail = bytes;
            }
            let header = json!({"model_name": "m", "outputs": outputs});
            let mut body = body_of(&header, cut, flip);
            let len = body.len();
            body.extend_from_slice(&tail);
            let expected = vec![ExpectedOutput { name: "o".into(), datatype: want_dt, shape: want }];
            same(&triton::check_response(&body, Some(len), &expected), &reference::triton_check(&body, Some(len), &expected))?;
            same(&triton::decode_response(&body, Some(len)), &reference::triton_decode(&body, Some(len)))?;
        }

        #[test]
        fn triton_check_agrees_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..300), len in proptest::option::of(0usize..300)) {
            let expected = vec![ExpectedOutput { name: "o".into(), datatype: DataType::Fp32, shape: vec![None] }];
            same(&triton::check_response(&body, len, &expected), &reference::triton_check(&body, len, &expected))?;
        }
    }
}
