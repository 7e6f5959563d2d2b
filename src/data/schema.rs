//! Opening an input: every part's footer read, `key=value` folders typed,
//! and the schema checked against the job once, before any work is planned.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arrow_schema::{DataType, Field};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::file::metadata::PageIndexPolicy;

use super::{
    Column, Dataset, Error, FEATURE_TYPES, FolderColumn, FolderValue, HISTORY_TYPES, HIVE_NULL,
    ID_TYPES, Part, Result, Source, parts, remote,
};

impl Dataset {
    /// Finds the input's part files, opens each and checks the schema
    /// against `input`: every part has the first part's columns and types
    /// and the same `key=value` folders; the id column must be an integer
    /// (any int width; negative values are an error naming the row) or a
    /// string; the history column (required when `needs_history`) a list of
    /// integers (u32 range); features float32 / float64 / int / bool
    /// (converted to f32; true is 1.0). `feature_columns` `None` = every
    /// column of the files but the id and history columns, in file order
    /// (folder columns only when named). Unknown column names: an error
    /// listing the columns the input has. A history column that is named but
    /// not needed is checked, then left unread.
    pub fn open(input: &crate::config::Input, needs_history: bool) -> Result<Dataset> {
        let location = PathBuf::from(input.path.to_string());
        let found = parts::find(&input.path, &input.storage)?;
        let parts = open_parts(found)?;
        let (folders, parts) = type_folders(parts)?;
        let first = &parts[0];
        let schema = first.metadata.schema().clone();
        for part in &parts[1..] {
            same_schema(first, part)?;
        }
        for folder in &folders {
            if schema.field_with_name(&folder.name).is_ok() {
                return Err(Error::FolderClash {
                    path: first.name.clone(),
                    column: folder.name.clone(),
                });
            }
        }

        let mut available: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        available.extend(folders.iter().map(|f| f.name.clone()));
        let data_type = |column: &Column| match column.folder {
            Some(k) => folders[k].data_type.clone(),
            None => schema
                .field_with_name(&column.name)
                .map(|f| f.data_type().clone())
                .unwrap_or(DataType::Null),
        };
        let find = |name: &str, role: &'static str| -> Result<Column> {
            if schema.field_with_name(name).is_ok() {
                return Ok(Column {
                    name: name.to_string(),
                    folder: None,
                });
            }
            match folders.iter().position(|f| f.name == name) {
                Some(k) => Ok(Column {
                    name: name.to_string(),
                    folder: Some(k),
                }),
                None => Err(Error::UnknownColumn {
                    path: location.clone(),
                    role,
                    column: name.to_string(),
                    available: available.clone(),
                }),
            }
        };
        let type_error =
            |column: &Column, role: &'static str, expected: &'static str| Error::ColumnType {
                path: location.clone(),
                column: column.name.clone(),
                role,
                found: data_type(column).to_string(),
                expected,
            };

        let id = find(&input.id_column, "id column")?;
        if !is_id_type(&data_type(&id)) {
            return Err(type_error(&id, "id column", ID_TYPES));
        }

        let history = match (&input.history_column, needs_history) {
            (None, true) => return Err(Error::NoHistoryColumn { path: location }),
            (None, false) => None,
            (Some(name), _) => {
                let column = find(name, "history column")?;
                if !is_history_type(&data_type(&column)) {
                    return Err(type_error(&column, "history column", HISTORY_TYPES));
                }
                needs_history.then_some(column)
            }
        };

        let features: Vec<Column> = match &input.feature_columns {
            Some(names) => names
                .iter()
                .map(|n| find(n, "feature column"))
                .collect::<Result<_>>()?,
            None => schema
                .fields()
                .iter()
                .map(|f| f.name())
                .filter(|n| **n != input.id_column && Some(*n) != input.history_column.as_ref())
                .map(|name| Column {
                    name: name.clone(),
                    folder: None,
                })
                .collect(),
        };
        for column in &features {
            if !is_feature_type(&data_type(column)) {
                return Err(type_error(column, "feature column", FEATURE_TYPES));
            }
        }
        let feature_names = features.iter().map(|c| c.name.clone()).collect();

        let mut part_starts = vec![0u64];
        let mut row_group_starts = vec![0u64];
        for part in &parts {
            let first = *part_starts.last().unwrap_or(&0);
            row_group_starts.extend(part.row_group_starts[1..].iter().map(|r| first + r));
            part_starts.push(first + part.num_rows());
        }

        Ok(Dataset {
            location,
            parts,
            folders,
            id,
            history,
            features,
            feature_names,
            part_starts,
            row_group_starts,
            row_groups_decoded: AtomicU64::new(0),
            nulls_as_nan: input.on_invalid != crate::config::OnInvalid::Error,
            spare: Mutex::new(Vec::new()),
        })
    }
}

/// A part and its raw `key=value` folders, before the folder values are typed.
type Untyped = (Part, Vec<(String, String)>);

/// Opens every part's footer: local files one by one, remote objects with
/// their footers fetched concurrently.
fn open_parts(found: Vec<parts::PartRef>) -> Result<Vec<Untyped>> {
    let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
    let remote: Vec<Arc<remote::RemoteObject>> = found
        .iter()
        .filter_map(|r| match &r.source {
            parts::PartSource::Remote(o) => Some(o.clone()),
            parts::PartSource::Local(_) => None,
        })
        .collect();
    let mut footers = remote::footers(remote).into_iter();
    let mut out = Vec::with_capacity(found.len());
    for r in found {
        let parquet_error = |source| Error::Parquet {
            path: r.name.clone(),
            source,
        };
        let (source, metadata) = match r.source {
            parts::PartSource::Local(path) => {
                let file = File::open(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                let metadata =
                    ArrowReaderMetadata::load(&file, options.clone()).map_err(parquet_error)?;
                (Source::Local(path), metadata)
            }
            parts::PartSource::Remote(object) => {
                let footer = footers.next().expect("one footer per remote part")?;
                let metadata =
                    ArrowReaderMetadata::load(&footer, options.clone()).map_err(parquet_error)?;
                (Source::Remote(object), metadata)
            }
        };
        let mut row_group_starts = vec![0u64];
        for group in metadata.metadata().row_groups() {
            let last = *row_group_starts.last().unwrap_or(&0);
            row_group_starts.push(last + group.num_rows().max(0) as u64);
        }
        out.push((
            Part {
                name: r.name,
                source,
                metadata,
                row_group_starts,
                folder_values: Vec::new(),
                identity: r.identity,
            },
            r.folders,
        ));
    }
    Ok(out)
}

/// Checks that every part has the same `key=value` folders (names, in
/// order) and types each folder column: integers when every value is one,
/// else floats when every value is one, else strings.
fn type_folders(parts: Vec<Untyped>) -> Result<(Vec<FolderColumn>, Vec<Part>)> {
    let names = |f: &[(String, String)]| f.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    let expected = names(&parts[0].1);
    for (part, folders) in &parts[1..] {
        let found = names(folders);
        if found != expected {
            return Err(Error::FolderColumns {
                first: parts[0].0.name.clone(),
                other: part.name.clone(),
                found,
                expected,
            });
        }
    }
    let folders: Vec<FolderColumn> = expected
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let values = || {
                parts
                    .iter()
                    .map(move |(_, f)| f[k].1.as_str())
                    .filter(|v| *v != HIVE_NULL)
            };
            let data_type = if values().all(|v| v.parse::<i64>().is_ok()) {
                DataType::Int64
            } else if values().all(|v| v.parse::<f64>().is_ok()) {
                DataType::Float64
            } else {
                DataType::Utf8
            };
            FolderColumn {
                name: name.clone(),
                data_type,
            }
        })
        .collect();
    let parts = parts
        .into_iter()
        .map(|(mut part, raw)| {
            part.folder_values = raw
                .into_iter()
                .zip(&folders)
                .map(|((_, v), column)| match (&column.data_type, v.as_str()) {
                    (_, HIVE_NULL) => FolderValue::Null,
                    (DataType::Int64, v) => v.parse().map_or(FolderValue::Null, FolderValue::Int),
                    (DataType::Float64, v) => {
                        v.parse().map_or(FolderValue::Null, FolderValue::Float)
                    }
                    _ => FolderValue::Str(v),
                })
                .collect();
            part
        })
        .collect();
    Ok((folders, parts))
}

/// A column's type as its Parquet file stores it: Arrow's layouts of the
/// same stored column are one type. A dictionary of strings or bytes
/// (pandas' Categorical) is its values' type (dictionary pages are an
/// encoding, not a type), large and view strings, bytes and lists are the
/// plain ones, a list's items are compared the same way. Other
/// dictionaries stay as they are: no reader here takes them.
fn stored_type(t: &DataType) -> DataType {
    match t {
        DataType::Dictionary(_, v)
            if matches!(stored_type(v), DataType::Utf8 | DataType::Binary) =>
        {
            stored_type(v)
        }
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::LargeListView(item) => DataType::List(Arc::new(Field::new(
            "item",
            stored_type(item.data_type()),
            true,
        ))),
        other => other.clone(),
    }
}

/// Every part must have the first part's columns with the same types (in
/// any order; nullability, nested field names and Arrow's layouts of one
/// stored type aside: [`stored_type`]).
fn same_schema(first: &Part, other: &Part) -> Result<()> {
    let (a, b) = (first.metadata.schema(), other.metadata.schema());
    let mismatch = |column: &str, difference: String| {
        Err(Error::SchemaMismatch {
            first: first.name.clone(),
            other: other.name.clone(),
            column: column.to_string(),
            difference,
        })
    };
    for f in a.fields() {
        match b.field_with_name(f.name()) {
            Err(_) => return mismatch(f.name(), "is missing here but is in".into()),
            Ok(g) if !stored_type(g.data_type()).equals_datatype(&stored_type(f.data_type())) => {
                return mismatch(
                    f.name(),
                    format!("is {} here but {} in", g.data_type(), f.data_type()),
                );
            }
            Ok(_) => {}
        }
    }
    for g in b.fields() {
        if a.field_with_name(g.name()).is_err() {
            return mismatch(g.name(), "is here but not in".into());
        }
    }
    Ok(())
}

fn is_id_type(t: &DataType) -> bool {
    let string =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    // A dictionary of strings: pandas' Categorical, Spark's dictionary pages
    // read as such.
    t.is_integer() || string(t) || matches!(t, DataType::Dictionary(_, v) if string(v))
}

fn is_history_type(t: &DataType) -> bool {
    match t {
        DataType::List(item) | DataType::LargeList(item) => item.data_type().is_integer(),
        _ => false,
    }
}

fn is_feature_type(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Float32 | DataType::Float64 | DataType::Boolean)
}
