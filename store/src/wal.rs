//! The write-ahead log: acknowledged batches live here until a Parquet
//! segment holds them.
//!
//! A table's WAL is a directory of numbered files, `{seq:020}.wal`. A file is a
//! sequence of records, each `[payload length: u32 LE][crc32 of payload: u32 LE][payload]`.
//! A payload is either the OTLP export request the rows were converted from
//! (the byte [`REQUEST`] and the request's protobuf), converted again when it
//! is read back, or one `RecordBatch` as an Arrow IPC stream (which starts
//! with the byte `0xff`). The request is already encoded and about two thirds
//! the size of the rows, so the ingest path logs that. Appends go to the
//! newest file only; a flush rotates to a new file so that the files before it
//! hold exactly the data the flush writes out, and deletes them once the
//! catalog names the new segment.
//!
//! Reading tolerates a torn tail (a crash in the middle of a write, which was
//! never acknowledged): the reader stops at the first record whose header or
//! checksum does not hold and reports where the good data ends.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{IoContext, Result, StoreError};
use crate::{convert, Signal};

const HEADER_LEN: usize = 8;
/// No single record may claim more than this; a larger length is a torn or
/// corrupt header, not a real record.
const MAX_RECORD_LEN: u32 = 1 << 30;
/// The first byte of a payload that holds an export request.
const REQUEST: u8 = 0x01;

/// Appends `batch` to `out` as one WAL record, encoded in place (no payload
/// copied into the record afterwards); on error `out` is left as it was.
pub fn append_record(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    out.reserve(HEADER_LEN + batch.get_array_memory_size() / 2);
    out.extend_from_slice(&[0; HEADER_LEN]);
    let encoded = (|| {
        let mut writer = StreamWriter::try_new(&mut *out, batch.schema_ref())?;
        writer.write(batch)?;
        writer.finish()
    })();
    if let Err(e) = encoded {
        out.truncate(start);
        return Err(e.into());
    }
    seal_record(out, start)
}

/// Appends the export request `request` to `out` as one WAL record; on
/// error `out` is left as it was. Reading it back converts it again (see
/// [`decode_batches`]), so it must be a request that converts.
pub fn append_request_record(request: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    out.reserve(HEADER_LEN + 1 + request.len());
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(REQUEST);
    out.extend_from_slice(request);
    seal_record(out, start)
}

/// Fills in the header of the record that starts at `start` and runs to the
/// end of `out`, or takes the record out again if it is too long.
fn seal_record(out: &mut Vec<u8>, start: usize) -> Result<()> {
    let payload = start + HEADER_LEN;
    let len = out.len() - payload;
    if len > MAX_RECORD_LEN as usize {
        out.truncate(start);
        return Err(arrow::error::ArrowError::InvalidArgumentError(format!(
            "a WAL record of {len} bytes is larger than one may be ({MAX_RECORD_LEN})"
        ))
        .into());
    }
    let len = len as u32;
    let crc = crc32fast::hash(&out[payload..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..payload].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decodes a WAL payload of `signal`'s table back into the batches it
/// holds; `path` is the file it was read from, for errors.
pub fn decode_batches(signal: Signal, payload: &[u8], path: &Path) -> Result<Vec<RecordBatch>> {
    if let Some(request) = payload.strip_prefix(&[REQUEST]) {
        // The checksum held, so a request that no longer converts was written
        // by a build that accepted something this one does not.
        let converted = convert::from_protobuf(signal, request).map_err(|e| StoreError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a logged export request does not convert: {e}"),
            ),
        })?;
        return Ok(vec![converted.batch]);
    }
    let reader = StreamReader::try_new(payload, None)?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// The file name of WAL file `seq`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

/// The WAL files in `dir`, oldest first.
pub fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            files.push((seq, path));
        }
    }
    files.sort();
    Ok(files)
}

/// What reading one WAL file found.
#[derive(Debug)]
pub struct FileContents {
    /// The payloads of every intact record, in order.
    pub payloads: Vec<Vec<u8>>,
    /// Where the intact records end when the file has a torn or corrupt tail.
    pub torn_at: Option<u64>,
    /// The file's length.
    pub len: u64,
}

/// Reads every intact record of one WAL file.
pub fn read_file(path: &Path) -> Result<FileContents> {
    read_file_from(path, 0)
}

/// Reads the intact records of one WAL file that start at or after byte
/// `offset`, which must be a record boundary (0, or where an earlier read
/// ended). A reader following a WAL that is still being written calls this
/// again from the end of what it read: a record cut short by a concurrent
/// write looks like a torn tail now and is read in full next time.
pub fn read_file_from(path: &Path, offset: u64) -> Result<FileContents> {
    use std::io::{Seek, SeekFrom};
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.read_to_end(&mut bytes)
        })
        .at(path)?;
    let mut payloads = Vec::new();
    let mut pos = 0usize;
    let torn_at = loop {
        if pos == bytes.len() {
            break None;
        }
        let Some(header) = bytes.get(pos..pos + HEADER_LEN) else {
            break Some(offset + pos as u64);
        };
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let start = pos + HEADER_LEN;
        // A zero length is never written (a payload always holds a schema);
        // it is what a zero-filled tail left by a crash looks like.
        let payload = (len > 0 && len <= MAX_RECORD_LEN)
            .then(|| bytes.get(start..start + len as usize))
            .flatten();
        match payload {
            Some(payload) if crc32fast::hash(payload) == crc => {
                payloads.push(payload.to_vec());
                pos = start + len as usize;
            }
            _ => break Some(offset + pos as u64),
        }
    };
    Ok(FileContents {
        payloads,
        torn_at,
        len: offset + bytes.len() as u64,
    })
}

/// The open, newest WAL file that appends go to.
pub struct WalWriter {
    dir: PathBuf,
    seq: u64,
    file: File,
}

impl WalWriter {
    /// Creates WAL file `seq` in `dir` and makes its existence durable.
    pub fn create(dir: &Path, seq: u64) -> Result<Self> {
        let path = dir.join(file_name(seq));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            seq,
            file,
        })
    }

    /// The sequence number of the file being written.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Writes records (see [`append_record`]) and makes them durable
    /// with one `fdatasync`, however many records `framed` holds: this is
    /// the group commit.
    pub fn write_durable(&mut self, framed: &[u8]) -> io::Result<()> {
        self.file.write_all(framed)?;
        self.file.sync_data()
    }

    /// Starts a new file; everything written so far stays in the old one.
    pub fn rotate(&mut self) -> Result<()> {
        *self = Self::create(&self.dir, self.seq + 1)?;
        Ok(())
    }
}

/// Makes renames and creations in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frames `payload` as one record, appended to `out`.
    fn frame_record(payload: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
    }

    #[test]
    fn appended_records_read_back_as_their_batches() {
        use arrow::array::{Int64Array, StringArray};
        let batch = |n: i64| {
            RecordBatch::try_from_iter([
                (
                    "n",
                    std::sync::Arc::new(Int64Array::from(vec![n, n + 1])) as _,
                ),
                (
                    "s",
                    std::sync::Arc::new(StringArray::from(vec!["a", "b"])) as _,
                ),
            ])
            .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut wal = WalWriter::create(dir.path(), 1).unwrap();
        let mut records = Vec::new();
        append_record(&batch(1), &mut records).unwrap();
        append_record(&batch(7), &mut records).unwrap();
        wal.write_durable(&records).unwrap();
        let read = read_file(&dir.path().join(file_name(1))).unwrap();
        assert_eq!(read.torn_at, None);
        let batches: Vec<RecordBatch> = read
            .payloads
            .iter()
            .flat_map(|p| decode_batches(Signal::Spans, p, dir.path()).unwrap())
            .collect();
        assert_eq!(batches, vec![batch(1), batch(7)]);
    }

    #[test]
    fn logged_requests_read_back_converted_between_batches() {
        use crate::convert::{test_spans, test_spans_request};
        let dir = tempfile::tempdir().unwrap();
        let mut wal = WalWriter::create(dir.path(), 1).unwrap();
        let mut records = Vec::new();
        append_request_record(&test_spans_request(1, 3), &mut records).unwrap();
        append_record(&test_spans(10, 2), &mut records).unwrap();
        append_request_record(&test_spans_request(20, 1), &mut records).unwrap();
        wal.write_durable(&records).unwrap();
        let read = read_file(&dir.path().join(file_name(1))).unwrap();
        let batches: Vec<RecordBatch> = read
            .payloads
            .iter()
            .flat_map(|p| decode_batches(Signal::Spans, p, dir.path()).unwrap())
            .collect();
        assert_eq!(
            batches,
            vec![test_spans(1, 3), test_spans(10, 2), test_spans(20, 1)]
        );
    }

    #[test]
    fn a_logged_request_that_does_not_convert_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut payload = vec![REQUEST];
        // Field 1 (resource_spans), length-delimited, claiming more bytes than follow.
        payload.extend_from_slice(&[0x0a, 0x7f, 0x00]);
        let error = decode_batches(Signal::Spans, &payload, dir.path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("does not convert"), "{error}");
        assert!(error.contains(&dir.path().display().to_string()), "{error}");
    }

    fn write_records(dir: &Path, payloads: &[&[u8]]) -> PathBuf {
        let mut wal = WalWriter::create(dir, 1).unwrap();
        let mut framed = Vec::new();
        for p in payloads {
            frame_record(p, &mut framed);
        }
        wal.write_durable(&framed).unwrap();
        dir.join(file_name(1))
    }

    #[test]
    fn reads_back_every_record_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_records(dir.path(), &[b"one", b"two", b"three"]);
        let contents = read_file(&path).unwrap();
        assert_eq!(
            contents.payloads,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(contents.torn_at, None);
    }

    #[test]
    fn a_torn_tail_is_detected_and_the_good_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_records(dir.path(), &[b"first", b"second record"]);
        let full = fs::metadata(&path).unwrap().len();
        // Cut the last record in half, as a crash in the middle of a write would.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 5)
            .unwrap();
        let contents = read_file(&path).unwrap();
        assert_eq!(contents.payloads, vec![b"first".to_vec()]);
        assert_eq!(contents.torn_at, Some((HEADER_LEN + 5) as u64));
    }

    #[test]
    fn a_zero_filled_tail_is_not_read_as_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_records(dir.path(), &[b"first"]);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0u8; 64]).unwrap();
        let contents = read_file(&path).unwrap();
        assert_eq!(contents.payloads, vec![b"first".to_vec()]);
        assert_eq!(contents.torn_at, Some((HEADER_LEN + 5) as u64));
    }

    #[test]
    fn a_corrupt_record_ends_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_records(dir.path(), &[b"first", b"second", b"third"]);
        let mut bytes = fs::read(&path).unwrap();
        let second_payload = 2 * HEADER_LEN + 5;
        bytes[second_payload] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let contents = read_file(&path).unwrap();
        assert_eq!(contents.payloads, vec![b"first".to_vec()]);
        assert_eq!(contents.torn_at, Some((HEADER_LEN + 5) as u64));
    }

    proptest! {
        #[test]
        fn any_truncation_keeps_exactly_the_complete_records(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            let path = write_records(dir.path(), &refs);
            let full = fs::metadata(&path).unwrap().len() as usize;
            let keep = cut.index(full + 1);
            OpenOptions::new().write(true).open(&path).unwrap().set_len(keep as u64).unwrap();
            let contents = read_file(&path).unwrap();
            let mut end = 0;
            let complete: Vec<Vec<u8>> = payloads
                .iter()
                .take_while(|p| {
                    end += HEADER_LEN + p.len();
                    end <= keep
                })
                .cloned()
                .collect();
            prop_assert_eq!(contents.payloads, complete);
        }
    }
}
