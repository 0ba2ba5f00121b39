//! Reading the Parquet tree back: the data files of a day range (by their
//! `day=` directories, so other days are never opened) and their record batches
//! with only the columns a caller asks for. The `org` column is dictionary-encoded
//! on disk and comes back as plain strings.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use chrono::NaiveDate;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::paths;
use crate::error::{Error, Result};

/// The data files under `root` whose day lies in `[from, to]` (either end open).
pub fn files(root: &Path, from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<Vec<PathBuf>> {
    let all = paths::data_files(root).map_err(|e| Error::io("listing", root, e))?;
    Ok(all
        .into_iter()
        .filter(|(day, _)| from.is_none_or(|f| *day >= f) && to.is_none_or(|t| *day <= t))
        .map(|(_, path)| path)
        .collect())
}

/// Calls `each` with every record batch of `path`, holding only `columns`.
pub fn for_each_batch(
    path: &Path,
    columns: &[&str],
    mut each: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| Error::parquet(path, e))?;
    for batch in reader {
        let batch = batch.map_err(|e| Error::parquet(path, e))?;
        each(&plain_strings(batch).map_err(|e| Error::parquet(path, e))?)?;
    }
    Ok(())
}

/// Dictionary-encoded string columns as plain strings.
fn plain_strings(batch: RecordBatch) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Dictionary(..)))
    {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if matches!(field.data_type(), DataType::Dictionary(..)) {
            columns.push(arrow::compute::cast(column, &DataType::Utf8)?);
            fields.push(Field::new(
                field.name(),
                DataType::Utf8,
                field.is_nullable(),
            ));
        } else {
            columns.push(column.clone());
            fields.push(field.as_ref().clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
