//! herd's tensors: float32 or int64 values with a shape, row-major.
//!
//! ONNX has many element types; a graph herd runs computes in float32 and
//! int64 (int32 and the narrower integer types widen to int64 losslessly and
//! narrow back where a graph output declares them). Double, float16 and
//! string tensors are refused by name: computing them in float32 would not
//! give onnxruntime's results.

use std::collections::BTreeMap;

use super::error::{Error, Result};
use super::proto::{DATA_LOCATION_EXTERNAL, TensorProto, data_type};

/// Values a constant (initializer, folded result) may hold, in elements: a
/// model that asks for more (a tiny file can ask ConstantOfShape for
/// anything) is refused rather than allocated.
pub const MAX_CONST_ELEMENTS: usize = 1 << 28;
/// Dimensions of any tensor.
pub const MAX_RANK: usize = 8;

/// The files a model's external-data tensors name, by the location written
/// in the model (a path relative to the model file), with their bytes.
pub type ExternalFiles = BTreeMap<String, Vec<u8>>;

/// The element type of a value as herd computes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    F32,
    I64,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float",
            DType::I64 => "int64",
        }
    }

    /// The type herd computes ONNX element type `t` in, if any.
    pub fn from_onnx(t: i32) -> Option<DType> {
        match t {
            data_type::FLOAT => Some(DType::F32),
            data_type::INT64
            | data_type::INT32
            | data_type::INT16
            | data_type::INT8
            | data_type::UINT8
            | data_type::UINT16
            | data_type::UINT32 => Some(DType::I64),
            _ => None,
        }
    }
}

/// Tensor values.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::I64(_) => DType::I64,
        }
    }
}

/// A tensor: a shape and its values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Tensor {
            shape,
            data: Data::F32(values),
        }
    }

    pub fn i64(shape: Vec<usize>, values: Vec<i64>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Tensor {
            shape,
            data: Data::I64(values),
        }
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The float values; `None` for an int64 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            Data::I64(_) => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            Data::I64(v) => Some(v),
            Data::F32(_) => None,
        }
    }

    /// Every value as f32 (int64 values converted).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Every value as i64 (floats truncated toward zero).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I64(v) => v.clone(),
        }
    }

    /// The same values under another shape of the same size.
    pub fn reshaped(mut self, shape: Vec<usize>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), self.len());
        self.shape = shape;
        self
    }
}

/// The number of elements of `shape`, or `None` past `limit`.
pub fn checked_elements(shape: &[usize], limit: usize) -> Option<usize> {
    let mut n: usize = 1;
    for &d in shape {
        n = n.checked_mul(d)?;
    }
    (n <= limit).then_some(n)
}

/// Where an external-data tensor's bytes lie.
struct Extent<'a> {
    location: &'a str,
    offset: usize,
    length: Option<usize>,
}

/// Checks an external-data location: a relative path below the model's
/// folder (no `..`, not absolute), so a model cannot make herd read or ship
/// files elsewhere.
pub fn check_location(location: &str) -> std::result::Result<(), String> {
    if location.is_empty() {
        return Err("the location is empty".into());
    }
    if location.contains('\0') {
        return Err("the location holds a NUL byte".into());
    }
    let bytes = location.as_bytes();
    if location.starts_with('/')
        || location.starts_with('\\')
        || (bytes.len() >= 2 && bytes[1] == b':')
    {
        return Err("the location is an absolute path; herd reads external data only from files beside the model".into());
    }
    if location.split(['/', '\\']).any(|c| c == "..") {
        return Err("the location climbs out of the model's folder ('..'); herd reads external data only from files beside the model".into());
    }
    Ok(())
}

fn extent(t: &TensorProto) -> Result<Extent<'_>> {
    let bad = |detail: String| Error::Tensor {
        tensor: t.name.clone(),
        detail,
    };
    let mut location = None;
    let mut offset = 0usize;
    let mut length = None;
    for entry in &t.external_data {
        match entry.key.as_str() {
            "location" => location = Some(entry.value.as_str()),
            "offset" => {
                offset = entry.value.parse().map_err(|_| {
                    bad(format!(
                        "external data offset '{}' is not a byte count",
                        entry.value
                    ))
                })?
            }
            "length" => {
                length = Some(entry.value.parse().map_err(|_| {
                    bad(format!(
                        "external data length '{}' is not a byte count",
                        entry.value
                    ))
                })?)
            }
            _ => {}
        }
    }
    let location =
        location.ok_or_else(|| bad("external data without a 'location' entry".into()))?;
    check_location(location).map_err(bad)?;
    Ok(Extent {
        location,
        offset,
        length,
    })
}

/// The external-data location a tensor reads from, if it has one.
pub fn external_location(t: &TensorProto) -> Result<Option<String>> {
    if t.data_location != DATA_LOCATION_EXTERNAL {
        return Ok(None);
    }
    Ok(Some(extent(t)?.location.to_string()))
}

/// Decodes a constant tensor, reading external data from `files`.
pub fn from_proto(t: &TensorProto, files: &ExternalFiles) -> Result<Tensor> {
    let bad = |detail: String| Error::Tensor {
        tensor: t.name.clone(),
        detail,
    };
    if t.dims.len() > MAX_RANK {
        return Err(bad(format!(
            "has {} dimensions; herd handles at most {MAX_RANK}",
            t.dims.len()
        )));
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        shape.push(usize::try_from(d).map_err(|_| bad(format!("has a negative dimension {d}")))?);
    }
    let n = checked_elements(&shape, MAX_CONST_ELEMENTS).ok_or_else(|| {
        bad(format!(
            "has shape {shape:?}, more than herd's limit of {MAX_CONST_ELEMENTS} values in a constant"
        ))
    })?;
    let dtype = DType::from_onnx(t.data_type).ok_or_else(|| {
        bad(format!(
            "has element type {}; herd computes in float32 and int64 (export the model in float32)",
            data_type::name(t.data_type)
        ))
    })?;
    let width = match t.data_type {
        data_type::FLOAT | data_type::INT32 | data_type::UINT32 => 4,
        data_type::INT64 | data_type::UINT64 => 8,
        data_type::INT16 | data_type::UINT16 => 2,
        _ => 1,
    };
    let raw: Option<&[u8]> = if t.data_location == DATA_LOCATION_EXTERNAL {
        Some(external_bytes(t, files, n * width)?)
    } else if !t.raw_data.is_empty() || n == 0 {
        Some(&t.raw_data)
    } else {
        None
    };

    if let Some(raw) = raw {
        if raw.len() != n * width {
            return Err(bad(format!(
                "holds {} bytes of data; its shape {shape:?} of {} needs {}",
                raw.len(),
                data_type::name(t.data_type),
                n * width
            )));
        }
        let data = decode_raw(t.data_type, raw);
        return Ok(Tensor { shape, data });
    }

    let count_error = |found: usize| {
        bad(format!(
            "holds {found} values; its shape {shape:?} needs {n}"
        ))
    };
    let data = match dtype {
        DType::F32 => {
            if t.float_data.len() != n {
                return Err(count_error(t.float_data.len()));
            }
            Data::F32(t.float_data.clone())
        }
        DType::I64 => {
            let values: Vec<i64> = match t.data_type {
                data_type::INT64 => t.int64_data.clone(),
                data_type::UINT32 => t.uint64_data.iter().map(|&v| v as i64).collect(),
                _ => t.int32_data.iter().map(|&v| v as i64).collect(),
            };
            if values.len() != n {
                return Err(count_error(values.len()));
            }
            Data::I64(values)
        }
    };
    Ok(Tensor { shape, data })
}

/// The bytes of an external-data tensor of `expected` bytes: its extent
/// of its file, checked to lie inside it.
fn external_bytes<'a>(
    t: &TensorProto,
    files: &'a ExternalFiles,
    expected: usize,
) -> Result<&'a [u8]> {
    let e = extent(t)?;
    let file = files.get(e.location).ok_or_else(|| Error::ExternalData {
        tensor: t.name.clone(),
        location: e.location.to_string(),
        detail: "the file was not found beside the model".into(),
    })?;
    let length = e.length.unwrap_or(expected);
    let end = e
        .offset
        .checked_add(length)
        .filter(|&end| end <= file.len());
    let Some(end) = end else {
        return Err(Error::ExternalData {
            tensor: t.name.clone(),
            location: e.location.to_string(),
            detail: format!(
                "bytes {}..{} are past the end of the file ({} bytes)",
                e.offset,
                e.offset as u128 + length as u128,
                file.len()
            ),
        });
    };
    Ok(&file[e.offset..end])
}

/// Little-endian values of element type `elem_type` (checked to be one
/// herd reads), widened to f32 or i64.
fn decode_raw(elem_type: i32, raw: &[u8]) -> Data {
    match elem_type {
        data_type::FLOAT => Data::F32(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        data_type::INT64 => Data::I64(
            raw.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        data_type::INT32 => Data::I64(
            raw.chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
        ),
        data_type::UINT32 => Data::I64(
            raw.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
        ),
        data_type::INT16 => Data::I64(
            raw.chunks_exact(2)
                .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
        ),
        data_type::UINT16 => Data::I64(
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
        ),
        data_type::INT8 => Data::I64(raw.iter().map(|&b| b as i8 as i64).collect()),
        _ => Data::I64(raw.iter().map(|&b| b as i64).collect()),
    }
}

/// Encodes a tensor (its values as `raw_data`).
pub fn to_proto(name: &str, t: &Tensor) -> TensorProto {
    let (data_type, raw_data) = match &t.data {
        Data::F32(v) => (
            data_type::FLOAT,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::I64(v) => (
            data_type::INT64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    };
    TensorProto {
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        data_type,
        name: name.to_string(),
        raw_data,
        ..Default::default()
    }
}
