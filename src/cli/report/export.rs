//! `fedsync report export`: the node's signed aggregate as tidy rows in a
//! file an analytics engine loads as it is (DuckDB, pandas, Spark, Polars):
//! Parquet (zstd), CSV with a header, or JSON lines. The signature is
//! checked before a row is written; the rows are `core::report::tidy`'s.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use fedsync::core::report::tidy::{Row, COLUMNS};

use super::render::field;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Parquet,
    Csv,
    /// One JSON object per line (JSON Lines).
    Json,
}

/// Writes `rows` to `path` in `format`, whole or not at all: into a file
/// beside it, renamed over it once complete.
pub fn write(rows: &[Row], format: Format, path: &Path) -> anyhow::Result<()> {
    let bytes = match format {
        Format::Parquet => parquet(rows)?,
        Format::Csv => csv(rows).into_bytes(),
        Format::Json => json_lines(rows).into_bytes(),
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))
        .with_context(|| format!("{}", path.display()))?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("{}", path.display()))?;
    Ok(())
}

fn strings<'a>(rows: &'a [Row], f: impl Fn(&'a Row) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

fn ints(rows: &[Row], f: impl Fn(&Row) -> i64) -> ArrayRef {
    Arc::new(rows.iter().map(|r| Some(f(r))).collect::<Int64Array>())
}

/// The rows as one Parquet row group, zstd-compressed.
pub fn parquet(rows: &[Row]) -> anyhow::Result<Vec<u8>> {
    let string = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let int = |name: &str| Field::new(name, DataType::Int64, false);
    let schema = Arc::new(Schema::new(vec![
        string(COLUMNS[0], false),
        string(COLUMNS[1], false),
        string(COLUMNS[2], true),
        string(COLUMNS[3], false),
        string(COLUMNS[4], true),
        int(COLUMNS[5]),
        int(COLUMNS[6]),
        int(COLUMNS[7]),
        int(COLUMNS[8]),
        Field::new(COLUMNS[9], DataType::Boolean, false),
        string(COLUMNS[10], false),
        int(COLUMNS[11]),
        string(COLUMNS[12], false),
    ]));
    // Times and seqs stay far inside i64 (ms until the year 292 million).
    let columns: Vec<ArrayRef> = vec![
        strings(rows, |r| Some(&r.period)),
        strings(rows, |r| Some(&r.region)),
        strings(rows, |r| r.unit.as_deref()),
        strings(rows, |r| Some(&r.metric)),
        strings(rows, |r| r.category.as_deref()),
        ints(rows, |r| r.value),
        ints(rows, |r| i64::from(r.revision)),
        ints(rows, |r| r.submitted_ms as i64),
        ints(rows, |r| i64::from(r.schema_version)),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.approved))
                .collect::<BooleanArray>(),
        ),
        strings(rows, |r| Some(&r.author)),
        ints(rows, |r| r.seq as i64),
        strings(rows, |r| Some(&r.hash)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(out)
}

/// CSV with a header; an absent unit or category is an empty field.
pub fn csv(rows: &[Row]) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for r in rows {
        let cells = [
            field(&r.period),
            field(&r.region),
            field(r.unit.as_deref().unwrap_or("")),
            field(&r.metric),
            field(r.category.as_deref().unwrap_or("")),
            r.value.to_string(),
            r.revision.to_string(),
            r.submitted_ms.to_string(),
            r.schema_version.to_string(),
            r.approved.to_string(),
            r.author.clone(),
            r.seq.to_string(),
            r.hash.clone(),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// JSON Lines: each row an object with the columns as keys.
pub fn json_lines(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        out.push_str(&serde_json::to_string(r).expect("a row serialises"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn row(unit: Option<&str>, category: Option<&str>, value: i64) -> Row {
        Row {
            period: "2026-Q3".into(),
            region: "fr".into(),
            unit: unit.map(Into::into),
            metric: "volunteers".into(),
            category: category.map(Into::into),
            value,
            revision: 2,
            submitted_ms: 1_790_000_000_000,
            schema_version: 3,
            approved: true,
            author: "ab".repeat(32),
            seq: 7,
            hash: "cd".repeat(32),
        }
    }

    #[test]
    fn parquet_reads_back_row_for_row_and_csv_quotes_what_it_must() {
        let rows = vec![
            row(None, None, 20),
            row(Some("a"), Some("age=adult,sex=female"), 12),
        ];
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&parquet(&rows).unwrap()).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let read: Vec<String> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap().to_string())
            .collect();
        assert!(
            read[0].contains("unit: null") && read[0].contains("value: 20"),
            "{read:?}"
        );
        assert!(
            read[1].contains(r#"category: "age=adult,sex=female""#),
            "{read:?}"
        );
        let csv = csv(&rows);
        assert!(
            csv.starts_with("period,region,unit,metric,category,value,"),
            "{csv}"
        );
        assert!(
            csv.contains(r#",a,volunteers,"age=adult,sex=female",12,2,"#),
            "{csv}"
        );
        let line: serde_json::Value =
            serde_json::from_str(json_lines(&rows).lines().next().unwrap()).unwrap();
        assert_eq!(
            (line["unit"].is_null(), &line["value"]),
            (true, &serde_json::json!(20))
        );
    }
}
