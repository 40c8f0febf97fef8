//! Zone snapshots: every record in uncompressed wire form, written atomically
//! (temp file, fsync, rename, fsync of the directory).

use std::io::Write;
use std::path::{Path, PathBuf};

use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

/// First bytes of a snapshot file (format version 1).
const MAGIC: &[u8] = b"MESHEDGE-DNS-SNAPSHOT-1\n";

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading, writing, syncing or renaming failed.
    #[error("snapshot {path}: io error")]
    Io {
        /// The snapshot path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a snapshot or is damaged.
    #[error("snapshot {path}: corrupt at byte {offset}")]
    Corrupt {
        /// The snapshot path.
        path: PathBuf,
        /// Where decoding failed.
        offset: usize,
    },
}

/// Encodes records into snapshot bytes.
pub(crate) fn encode<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for record in records {
        let mut buf = Vec::new();
        let mut enc = BinEncoder::new(&mut buf);
        enc.set_canonical_names(true);
        // Records in a zone were decoded from the wire, so they always encode; skip any that
        // would not rather than lose the whole snapshot.
        if record.emit(&mut enc).is_err() {
            tracing::warn!(name = %record.name(), "record not encodable; left out of snapshot");
            continue;
        }
        let Ok(len) = u16::try_from(buf.len()) else {
            continue;
        };
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&buf);
    }
    out
}

/// Decodes snapshot bytes.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Vec<Record>, SnapshotError> {
    let corrupt = |offset| SnapshotError::Corrupt {
        path: path.to_owned(),
        offset,
    };
    let mut rest = bytes.strip_prefix(MAGIC).ok_or_else(|| corrupt(0))?;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        let (len, tail) = rest.split_at_checked(2).ok_or_else(|| corrupt(offset))?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (record, tail) = tail.split_at_checked(len).ok_or_else(|| corrupt(offset))?;
        let mut dec = BinDecoder::new(record);
        let parsed = Record::read(&mut dec).map_err(|_| corrupt(offset))?;
        if !dec.is_empty() {
            return Err(corrupt(offset));
        }
        records.push(parsed);
        rest = tail;
    }
    Ok(records)
}

/// Reads a snapshot; a missing file is an empty snapshot.
pub(crate) async fn load(path: &Path) -> Result<Vec<Record>, SnapshotError> {
    match tokio::fs::read(path).await {
        Ok(bytes) => decode(path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(SnapshotError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces the snapshot atomically: readers see the old or the new file, never a mix.
pub(crate) async fn store(path: &Path, bytes: Vec<u8>) -> Result<(), SnapshotError> {
    let path = path.to_owned();
    let io_path = path.clone();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(|e| SnapshotError::Io {
            path: io_path.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| SnapshotError::Io {
            path: io_path,
            source,
        })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("snapshot path has no file name"))?;
    let mut tmp_name = file_name.to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SRV, TXT};
    use hickory_proto::rr::{Name, RData};

    fn records() -> Vec<Record> {
        let n = |s: &str| Name::from_ascii(s).expect("name");
        vec![
            Record::from_rdata(n("h.z."), 30, RData::A(A::new(10, 0, 0, 1))),
            Record::from_rdata(n("i.z."), 30, RData::SRV(SRV::new(1, 2, 3, n("h.z.")))),
            Record::from_rdata(n("i.z."), 30, RData::TXT(TXT::new(vec!["a=b".into()]))),
        ]
    }

    #[test]
    fn round_trip_and_corruption() {
        let p = Path::new("snap");
        let bytes = encode(records().iter());
        assert_eq!(decode(p, &bytes).expect("decodes"), records());
        assert!(decode(p, b"garbage").is_err());
        for cut in [MAGIC.len() + 1, bytes.len() - 1] {
            assert!(decode(p, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(p, MAGIC).expect("empty"), vec![]);
    }

    #[tokio::test]
    async fn store_then_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("zone.snap");
        assert!(load(&path).await.expect("missing is empty").is_empty());
        store(&path, encode(records().iter())).await.expect("store");
        store(&path, encode(records().iter().take(1)))
            .await
            .expect("store");
        assert_eq!(load(&path).await.expect("load").len(), 1);
        let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "no temp files left");
    }
}
