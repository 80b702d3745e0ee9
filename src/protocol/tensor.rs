//! Tensors as the wire sees them: a KServe v2 datatype, a shape and little-endian bytes.

use std::fmt;

use crate::error::{Error, Result};

/// The KServe v2 datatypes this crate can carry (all fixed-size ones; `BYTES` is not supported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
}

impl DataType {
    pub const ALL: [DataType; 12] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        DataType::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| Error::protocol(format!("unknown or unsupported datatype {name:?}")))
    }

    pub fn size(self) -> usize {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DataType::Fp16 | DataType::Fp32 | DataType::Fp64)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor in wire form.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<usize>,
    /// Little-endian element bytes, `element_count(shape) * datatype.size()` long.
    pub data: Vec<u8>,
}

/// Number of elements of a shape, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Byte size of a tensor of this shape and type, or a protocol error on overflow.
pub fn byte_size(datatype: DataType, shape: &[usize]) -> Result<usize> {
    element_count(shape)
        .and_then(|n| n.checked_mul(datatype.size()))
        .ok_or_else(|| Error::protocol(format!("shape {shape:?} is too large")))
}

/// Reads element `i` of little-endian data as f64 (for JSON encoding, checks and argmax).
pub fn element_f64(datatype: DataType, data: &[u8], i: usize) -> f64 {
    let s = datatype.size();
    let b = &data[i * s..(i + 1) * s];
    match datatype {
        DataType::Bool | DataType::Uint8 => f64::from(b[0]),
        DataType::Int8 => f64::from(b[0] as i8),
        DataType::Uint16 => f64::from(u16::from_le_bytes([b[0], b[1]])),
        DataType::Int16 => f64::from(i16::from_le_bytes([b[0], b[1]])),
        DataType::Fp16 => f64::from(half::f16::from_le_bytes([b[0], b[1]])),
        DataType::Uint32 => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Int32 => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Fp32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Uint64 => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64,
        DataType::Int64 => i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64,
        DataType::Fp64 => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
    }
}

/// Index of the largest element (first one on ties), `None` for empty data or when a float is NaN.
pub fn argmax(datatype: DataType, data: &[u8]) -> Option<usize> {
    let n = data.len() / datatype.size();
    let mut best: Option<(usize, f64)> = None;
    for i in 0..n {
        let v = element_f64(datatype, data, i);
        if v.is_nan() {
            return None;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Whether all float elements are finite (always true for integer types).
pub fn all_finite(datatype: DataType, data: &[u8]) -> bool {
    match datatype {
        DataType::Fp16 => no_exponent_all_ones::<2>(data, 0x7c00),
        DataType::Fp32 => no_exponent_all_ones::<4>(data, 0x7f80_0000),
        DataType::Fp64 => no_exponent_all_ones::<8>(data, 0x7ff0_0000_0000_0000),
        _ => true,
    }
}

/// Whether no `N`-byte element has all the bits of `exponent` set (infinite or NaN). It runs on
/// the I/O thread over whole outputs: bit tests over blocks without an early exit inside each
/// block, which the compiler vectorises, are several times faster than converting each element.
fn no_exponent_all_ones<const N: usize>(data: &[u8], exponent: u64) -> bool {
    data.chunks(4096 * N).all(|block| {
        !block.chunks_exact(N).fold(false, |special, element| {
            let mut bits = [0u8; 8];
            bits[..N].copy_from_slice(element);
            special | (u64::from_le_bytes(bits) & exponent == exponent)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.name()).unwrap(), d);
        }
        assert!(DataType::parse("BYTES").is_err());
        assert!(DataType::parse("fp32").is_err());
    }

    #[test]
    fn argmax_and_finite() {
        let data: Vec<u8> = [1.0f32, 5.0, 5.0, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(argmax(DataType::Fp32, &data), Some(1));
        assert!(all_finite(DataType::Fp32, &data));
        let nan: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(!all_finite(DataType::Fp32, &nan));
        assert_eq!(argmax(DataType::Fp32, &nan), None);
        assert_eq!(argmax(DataType::Int64, &(-3i64).to_le_bytes()), Some(0));
    }

    #[test]
    fn all_finite_agrees_with_converting_each_element() {
        let slow = |dt: DataType, data: &[u8]| {
            (0..data.len() / dt.size()).all(|i| element_f64(dt, data, i).is_finite())
        };
        let mut cases: Vec<Vec<u8>> = vec![vec![], vec![0; 3]];
        for bits in [0x7c00u16, 0xfc00, 0x7e01, 0x7bff, 0x8000] {
            cases.push(bits.to_le_bytes().to_vec());
        }
        for v in [
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            f32::MAX,
            -0.0,
            1e-45,
        ] {
            cases.push([[0u8; 4].as_slice(), &v.to_le_bytes(), &[0; 8]].concat());
        }
        for v in [f64::NAN, f64::NEG_INFINITY, f64::MAX, f64::MIN_POSITIVE] {
            cases.push([&v.to_le_bytes()[..], &[1, 2, 3]].concat());
        }
        let mut long = vec![0u8; 40_000];
        long[39_996..].copy_from_slice(&f32::NAN.to_le_bytes());
        cases.push(long);
        for data in &cases {
            for dt in DataType::ALL {
                assert_eq!(all_finite(dt, data), slow(dt, data), "{dt} {data:?}");
            }
        }
    }

    #[test]
    fn byte_size_overflow_is_an_error() {
        assert_eq!(
            byte_size(DataType::Fp32, &[1, 3, 224, 224]).unwrap(),
            602_112
        );
        assert!(byte_size(DataType::Fp64, &[usize::MAX, 2]).is_err());
    }
}

/// Writes element `i` as a JSON number: floats in the shortest form that parses back to the same
/// value of their own width, integers exactly, BOOL as `true`/`false`. Non-finite floats have no
/// JSON form and are an error.
pub fn write_json_element(
    datatype: DataType,
    data: &[u8],
    i: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    let s = datatype.size();
    let b = &data[i * s..(i + 1) * s];
    let mut ryu_buf = ryu::Buffer::new();
    let mut int_buf = itoa::Buffer::new();
    let text: &str = match datatype {
        DataType::Bool => {
            if b[0] == 0 {
                "false"
            } else {
                "true"
            }
        }
        DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => {
            let finite = element_f64(datatype, data, i).is_finite();
            if !finite {
                return Err(Error::InvalidArgument(format!(
                    "element {i} is not finite and cannot be written as JSON"
                )));
            }
            match datatype {
                DataType::Fp32 => {
                    ryu_buf.format_finite(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                }
                // FP16 has no shortest writer of its own: its f32 widening is exact and round-trips.
                DataType::Fp16 => {
                    ryu_buf.format_finite(half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                }
                _ => ryu_buf.format_finite(element_f64(datatype, data, i)),
            }
        }
        DataType::Uint64 => int_buf.format(u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
        DataType::Int64 => int_buf.format(i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
        _ => int_buf.format(element_f64(datatype, data, i) as i64),
    };
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Writes the tensor's elements as a JSON array: flat, or nested following `shape`.
pub fn write_json_array(
    datatype: DataType,
    data: &[u8],
    shape: &[usize],
    nested: bool,
    out: &mut Vec<u8>,
) -> Result<()> {
    let count = element_count(shape).unwrap_or(0);
    if data.len() != count * datatype.size() {
        return Err(Error::InvalidArgument(format!(
            "{} bytes of data do not fit shape {shape:?} of {datatype}",
            data.len()
        )));
    }
    if !nested || shape.is_empty() {
        out.push(b'[');
        for i in 0..count {
            if i > 0 {
                out.push(b',');
            }
            write_json_element(datatype, data, i, out)?;
        }
        out.push(b']');
        return Ok(());
    }
    let mut next = 0usize;
    write_nested(datatype, data, shape, &mut next, out)
}

fn write_nested(
    datatype: DataType,
    data: &[u8],
    shape: &[usize],
    next: &mut usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.push(b'[');
    for i in 0..shape[0] {
        if i > 0 {
            out.push(b',');
        }
        if shape.len() == 1 {
            write_json_element(datatype, data, *next, out)?;
            *next += 1;
        } else {
            write_nested(datatype, data, &shape[1..], next, out)?;
        }
    }
    out.push(b']');
    Ok(())
}

/// Converts a JSON number (or bool) to the little-endian bytes of `datatype`, checking its range.
pub fn json_value_to_bytes(
    datatype: DataType,
    value: &serde_json::Value,
    out: &mut Vec<u8>,
) -> Result<()> {
    let bad = || Error::protocol(format!("value {value} is not a valid {datatype}"));
    macro_rules! int {
        ($t:ty) => {{
            let v = if let Some(v) = value.as_i64() {
                <$t>::try_from(v).map_err(|_| bad())?
            } else if let Some(v) = value.as_u64() {
                <$t>::try_from(v).map_err(|_| bad())?
            } else {
                return Err(bad());
            };
            out.extend_from_slice(&v.to_le_bytes());
        }};
    }
    match datatype {
        DataType::Bool => out.push(u8::from(value.as_bool().ok_or_else(bad)?)),
        DataType::Uint8 => int!(u8),
        DataType::Uint16 => int!(u16),
        DataType::Uint32 => int!(u32),
        DataType::Uint64 => int!(u64),
        DataType::Int8 => int!(i8),
        DataType::Int16 => int!(i16),
        DataType::Int32 => int!(i32),
        DataType::Int64 => int!(i64),
        DataType::Fp16 => out
            .extend_from_slice(&half::f16::from_f64(value.as_f64().ok_or_else(bad)?).to_le_bytes()),
        DataType::Fp32 => {
            out.extend_from_slice(&(value.as_f64().ok_or_else(bad)? as f32).to_le_bytes());
        }
        DataType::Fp64 => out.extend_from_slice(&value.as_f64().ok_or_else(bad)?.to_le_bytes()),
    }
    Ok(())
}

/// Flattens a (possibly nested) JSON array of numbers into little-endian bytes; returns the shape
/// found when the nesting is regular. The reference the streaming walk ([`crate::protocol::json_array`])
/// is tested against.
#[cfg(test)]
pub fn json_array_to_bytes(
    datatype: DataType,
    value: &serde_json::Value,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let mut out = Vec::new();
    let mut shape = Vec::new();
    let mut probe = value;
    while let serde_json::Value::Array(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    flatten_into(datatype, value, 0, &shape, &mut out)?;
    Ok((out, shape))
}

#[cfg(test)]
fn flatten_into(
    datatype: DataType,
    value: &serde_json::Value,
    depth: usize,
    shape: &[usize],
    out: &mut Vec<u8>,
) -> Result<()> {
    match value {
        serde_json::Value::Array(items) => {
            if depth >= shape.len() || items.len() != shape[depth] {
                return Err(Error::protocol(
                    "ragged JSON array: rows of different lengths",
                ));
            }
            for item in items {
                flatten_into(datatype, item, depth + 1, shape, out)?;
            }
            Ok(())
        }
        other => {
            if depth != shape.len() {
                return Err(Error::protocol(
                    "ragged JSON array: numbers and lists mixed",
                ));
            }
            json_value_to_bytes(datatype, other, out)
        }
    }
}

#[cfg(test)]
mod json_tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn floats_are_written_shortest_and_round_trip() {
        let values = [
            0.1f32,
            -2.117_904,
            1e-7,
            3.402_823_5e38,
            0.0,
            -0.0,
            1.0,
            f32::MIN_POSITIVE,
        ];
        let data = f32_bytes(&values);
        let mut out = Vec::new();
        write_json_array(DataType::Fp32, &data, &[values.len()], false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("[0.1,-2.117904,1e-7,"), "{text}");
        let parsed: Vec<f64> = serde_json::from_str(&text).unwrap();
        let back: Vec<f32> = parsed.iter().map(|&v| v as f32).collect();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn nested_follows_shape() {
        let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let mut out = Vec::new();
        write_json_array(DataType::Fp32, &data, &[1, 2, 3], true, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[[[1.0,2.0,3.0],[4.0,5.0,6.0]]]"
        );
        let (bytes, shape) = json_array_to_bytes(
            DataType::Fp32,
            &serde_json::from_str("[[[1,2,3],[4,5,6]]]").unwrap(),
        )
        .unwrap();
        assert_eq!(shape, vec![1, 2, 3]);
        assert_eq!(bytes, data);
    }

    #[test]
    fn non_finite_and_ragged_are_errors() {
        let mut out = Vec::new();
        assert!(write_json_array(
            DataType::Fp32,
            &f32_bytes(&[f32::NAN]),
            &[1],
            false,
            &mut out
        )
        .is_err());
        let ragged = serde_json::from_str("[[1,2],[3]]").unwrap();
        assert!(json_array_to_bytes(DataType::Fp32, &ragged).is_err());
        let mixed = serde_json::from_str("[[1,2],3]").unwrap();
        assert!(json_array_to_bytes(DataType::Fp32, &mixed).is_err());
        let range = serde_json::from_str("[300]").unwrap();
        assert!(json_array_to_bytes(DataType::Uint8, &range).is_err());
    }

    #[test]
    fn integers_and_bools() {
        let data: Vec<u8> = [-5i64, 1 << 60]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut out = Vec::new();
        write_json_array(DataType::Int64, &data, &[2], false, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "[-5,1152921504606846976]");
        let mut out = Vec::new();
        write_json_array(DataType::Bool, &[1, 0], &[2], false, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "[true,false]");
    }
}

/// An FP32 tensor of `values` (tests).
#[cfg(test)]
pub fn fp32(name: &str, shape: &[usize], values: &[f32]) -> Tensor {
    Tensor {
        name: name.into(),
        datatype: DataType::Fp32,
        shape: shape.to_vec(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Property-test settings: 2000 cases per property, or `PROPTEST_CASES` for a longer campaign.
#[cfg(test)]
pub fn fuzz_config() -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    proptest::test_runner::Config {
        cases,
        ..proptest::test_runner::Config::default()
    }
}
