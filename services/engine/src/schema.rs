//! The Arrow schema the contract prescribes for a table, and the conversion of uploaded columns
//! into it.
//!
//! Uploads are accepted in any reasonable Arrow encoding of a contract type (`large_utf8` or
//! `utf8_view` for strings, any narrower integer for int64, hex strings or binary for sha256, …) and
//! stored in one canonical encoding, so computations see one schema per table.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sealroom_matching::hash::{DecodeError, decode_sha256_column};
use sealroom_proto::room::v1::{ColumnType, Table};

use crate::error::{Error, Result};

/// Column added to tables without a user id: the row's index in the upload, so that each row counts
/// as one individual.
pub const ROW_ID_COLUMN: &str = "_sealroom_row";

/// The stored Arrow type of a contract column type.
pub fn stored_type(column_type: ColumnType) -> DataType {
    match column_type {
        ColumnType::String | ColumnType::Unspecified => DataType::Utf8,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ColumnType::Sha256 => DataType::FixedSizeBinary(32),
        ColumnType::StringList => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        ColumnType::Bytes => DataType::Binary,
    }
}

/// The stored schema of a table: its contract columns in order, plus [`ROW_ID_COLUMN`] when the
/// table has no user id.
pub fn stored_schema(table: &Table) -> SchemaRef {
    let mut fields: Vec<Field> =
        table.columns.iter().map(|c| Field::new(&c.name, stored_type(c.r#type()), c.nullable)).collect();
    if table.user_id_column().is_none() {
        fields.push(Field::new(ROW_ID_COLUMN, DataType::UInt64, false));
    }
    Arc::new(Schema::new(fields))
}

/// A human description of what Arrow types a contract type accepts.
pub fn accepted_types(column_type: ColumnType) -> &'static str {
    match column_type {
        ColumnType::String | ColumnType::Unspecified => "string (utf8, large_utf8 or utf8_view)",
        ColumnType::Int64 => "int64 (or a narrower integer type)",
        ColumnType::Float64 => "float64 (or float32 or an integer type)",
        ColumnType::Bool => "bool",
        ColumnType::Date => "date32 or date64",
        ColumnType::Timestamp => "timestamp (any unit; without a time zone it is read as UTC)",
        ColumnType::Sha256 => "sha256: fixed_size_binary(32), binary of 32 bytes, or 64-character hex strings",
        ColumnType::StringList => "list<string> (list or large_list of utf8)",
        ColumnType::Bytes => "bytes (binary, large_binary, binary_view or fixed_size_binary)",
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        || matches!(t, DataType::Dictionary(_, v) if is_string(v))
}

fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

/// Whether an uploaded Arrow type can carry a contract type.
pub fn accepts(column_type: ColumnType, uploaded: &DataType) -> bool {
    match column_type {
        ColumnType::String | ColumnType::Unspecified => is_string(uploaded),
        ColumnType::Int64 => is_integer(uploaded),
        ColumnType::Float64 => {
            matches!(uploaded, DataType::Float16 | DataType::Float32 | DataType::Float64) || is_integer(uploaded)
        }
        ColumnType::Bool => matches!(uploaded, DataType::Boolean),
        ColumnType::Date => matches!(uploaded, DataType::Date32 | DataType::Date64),
        ColumnType::Timestamp => matches!(uploaded, DataType::Timestamp(_, _)),
        ColumnType::Sha256 => {
            is_string(uploaded)
                || matches!(
                    uploaded,
                    DataType::FixedSizeBinary(32) | DataType::Binary | DataType::LargeBinary | DataType::BinaryView
                )
        }
        ColumnType::StringList => match uploaded {
            DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
                is_string(f.data_type())
            }
            _ => false,
        },
        ColumnType::Bytes => matches!(
            uploaded,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_)
        ),
    }
}

/// Rows of one column that could not be converted: how many, and the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRows {
    pub count: u64,
    pub first_row: u64,
    pub problem: String,
}

/// Converts one uploaded column to its stored type. `row_offset` is the number of rows uploaded
/// before this batch, so reported row numbers count from the start of the upload.
pub fn convert_column(
    column_type: ColumnType,
    array: &ArrayRef,
    row_offset: u64,
) -> Result<std::result::Result<ArrayRef, BadRows>> {
    if column_type == ColumnType::Sha256 {
        let source = if let DataType::Dictionary(_, _) = array.data_type() {
            cast_with_options(array, &DataType::Utf8, &CastOptions::default())
                .map_err(|e| Error::InvalidData(e.to_string()))?
        } else {
            array.clone()
        };
        return Ok(match decode_sha256_column(source.as_ref(), row_offset) {
            Ok(decoded) => Ok(decoded),
            Err(DecodeError::Bad(bad)) => {
                Err(BadRows { count: bad.count, first_row: bad.first_row, problem: bad.first_problem.to_string() })
            }
            Err(DecodeError::UnsupportedType(t)) => {
                return Err(Error::InvalidData(format!("type {t} cannot carry SHA-256 digests")));
            }
        });
    }
    let target = stored_type(column_type);
    if array.data_type() == &target {
        return Ok(Ok(array.clone()));
    }
    // Safe cast: values that do not fit become null; compare null counts to find them.
    let converted = cast_with_options(array, &target, &CastOptions { safe: true, ..Default::default() })
        .map_err(|e| Error::InvalidData(format!("cannot convert {} to {target}: {e}", array.data_type())))?;
    if converted.null_count() == array.null_count() {
        return Ok(Ok(converted));
    }
    let mut count = 0u64;
    let mut first = None;
    for row in 0..array.len() {
        if array.is_valid(row) && converted.is_null(row) {
            count += 1;
            first.get_or_insert(row);
        }
    }
    Ok(Err(BadRows {
        count,
        first_row: row_offset + first.unwrap_or(0) as u64,
        problem: format!("the value does not fit in {}", column_type.file_name()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray, UInt64Array};

    #[test]
    fn accepted_encodings() {
        assert!(accepts(ColumnType::String, &DataType::LargeUtf8));
        assert!(accepts(ColumnType::Sha256, &DataType::Utf8));
        assert!(accepts(ColumnType::Sha256, &DataType::FixedSizeBinary(32)));
        assert!(!accepts(ColumnType::Sha256, &DataType::FixedSizeBinary(16)));
        assert!(!accepts(ColumnType::Int64, &DataType::Utf8));
        assert!(accepts(
            ColumnType::StringList,
            &DataType::LargeList(Arc::new(Field::new("x", DataType::LargeUtf8, true)))
        ));
        assert!(!accepts(ColumnType::StringList, &DataType::List(Arc::new(Field::new("x", DataType::Int32, true)))));
    }

    #[test]
    fn narrower_integers_widen() {
        let a: ArrayRef = Arc::new(Int32Array::from(vec![1, 2]));
        let out = convert_column(ColumnType::Int64, &a, 0).unwrap().unwrap();
        assert_eq!(out.data_type(), &DataType::Int64);
    }

    #[test]
    fn values_that_do_not_fit_are_reported_with_their_row() {
        let a: ArrayRef = Arc::new(UInt64Array::from(vec![1, u64::MAX, 3, u64::MAX]));
        let bad = convert_column(ColumnType::Int64, &a, 10).unwrap().unwrap_err();
        assert_eq!(bad, BadRows { count: 2, first_row: 11, problem: "the value does not fit in int64".into() });
    }

    #[test]
    fn bad_hashes_are_reported_with_their_row() {
        let a: ArrayRef = Arc::new(StringArray::from(vec!["abc"]));
        let bad = convert_column(ColumnType::Sha256, &a, 5).unwrap().unwrap_err();
        assert_eq!(bad.count, 1);
        assert_eq!(bad.first_row, 5);
    }
}
