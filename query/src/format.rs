//! Query results as the formats users ask for: JSON, CSV, Arrow IPC and a
//! text table. The HTTP API and `weft sql` share these, so a query prints
//! the same whichever way it was run.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::json::writer::{JsonArray, WriterBuilder};
use serde::Serialize;
use serde_json::{Map, Value};

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// How timestamps are written in JSON and CSV: RFC 3339, nanoseconds.
const TIMESTAMP_TZ_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.9f%:z";
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.9f";

/// One column of a JSON result.
#[derive(Debug, Serialize)]
pub struct JsonColumn {
    pub name: String,
    /// The Arrow type, as DataFusion names it (`Utf8`, `Int64`, `Timestamp(ns, "UTC")`).
    #[serde(rename = "type")]
    pub data_type: String,
}

/// The columns of `schema`, for a JSON result.
pub fn json_columns(schema: &Schema) -> Vec<JsonColumn> {
    schema
        .fields()
        .iter()
        .map(|f| JsonColumn {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
        })
        .collect()
}

/// Every row as a JSON array of its values, in column order. Maps become
/// objects, lists arrays, timestamps RFC 3339 text.
pub fn json_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<Vec<Value>>, ArrowError> {
    // Column names may repeat (`SELECT a.x, b.x`); positional names keep
    // every value when the rows pass through JSON objects.
    let positional: SchemaRef = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let objects = json_objects_with(batches, |batch| {
        RecordBatch::try_new(positional.clone(), batch.columns().to_vec())
    })?;
    Ok(objects
        .into_iter()
        .map(|mut object| {
            (0..schema.fields().len())
                .map(|i| object.remove(&format!("c{i}")).unwrap_or(Value::Null))
                .collect()
        })
        .collect())
}

/// Every row as a JSON object keyed by column name.
pub fn json_objects(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, ArrowError> {
    json_objects_with(batches, |batch| Ok(batch.clone()))
}

fn json_objects_with(
    batches: &[RecordBatch],
    prepare: impl Fn(&RecordBatch) -> Result<RecordBatch, ArrowError>,
) -> Result<Vec<Map<String, Value>>, ArrowError> {
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_timestamp_tz_format(TIMESTAMP_TZ_FORMAT.to_string())
        .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
        .build::<_, JsonArray>(Vec::new());
    for batch in batches {
        writer.write(&prepare(batch)?)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| ArrowError::JsonError(e.to_string()))
}

/// The rows as CSV with a header line.
pub fn csv(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .with_timestamp_tz_format(TIMESTAMP_TZ_FORMAT.to_string())
            .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
            .build(&mut out);
        if batches.is_empty() {
            writer.write(&RecordBatch::new_empty(schema.clone()))?;
        }
        for batch in batches {
            writer.write(&stringify_nested(batch)?)?;
        }
    }
    Ok(out)
}

/// CSV has no nested values: maps, lists and structs become their JSON text.
fn stringify_nested(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    use arrow::array::{ArrayRef, StringArray};
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !field.data_type().is_nested() {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
            continue;
        }
        let single = Arc::new(Schema::new(vec![Field::new(
            "v",
            field.data_type().clone(),
            true,
        )]));
        let one = RecordBatch::try_new(single.clone(), vec![column.clone()])?;
        let values = json_objects(&[one])?
            .into_iter()
            .map(|mut o| match o.remove("v") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.to_string()),
            });
        fields.push(Field::new(
            field.name(),
            arrow::datatypes::DataType::Utf8,
            true,
        ));
        columns.push(Arc::new(StringArray::from_iter(values)));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// The rows as an Arrow IPC stream.
pub fn arrow_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(out)
}

/// Reads an Arrow IPC stream back into its schema and batches.
pub fn read_arrow_ipc(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let reader = arrow::ipc::reader::StreamReader::try_new(bytes, None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// The rows as a text table, for a terminal.
pub fn table(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String, ArrowError> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        let header =
            arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(schema.clone())])?;
        return Ok(header.to_string());
    }
    Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}
