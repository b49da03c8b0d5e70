//! The keys folder on disk: reading every `*.json` key file into a ring, and
//! writing key files atomically (temporary file, fsync, rename, mode 0600).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use jsonwebtoken::Algorithm;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::jwk::{KeyFile, is_valid_kid};
use super::{Key, KeyRing, hex};

/// Key files larger than this are rejected unread; a real one is under 1 KiB.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// A failure to read or write the keys folder. Every message names the path
/// at fault and never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read keys folder {}: {source}", path.display())]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("cannot read key file {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("invalid key file {}: {fault}", path.display())]
    Invalid { path: PathBuf, fault: String },
    #[error("keys folder {} has no key that can sign now; add one with `sessiond keys generate --dir {}`", path.display(), path.display())]
    NoSigningKey { path: PathBuf },
    #[error("keys folder {} has no key file", path.display())]
    NoKeys { path: PathBuf },
    #[error("key file {} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write key file {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot create keys folder {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(String),
}

/// The raw contents of every key file in a folder, in name order.
#[derive(Debug)]
pub struct DirSnapshot {
    pub dir: PathBuf,
    files: Vec<(PathBuf, Zeroizing<Vec<u8>>)>,
}

impl DirSnapshot {
    /// Returns a digest of the file names and contents. A reload compares this, not
    /// timestamps, so a mounted secret that swaps a symlink is seen.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for (path, bytes) in &self.files {
            hasher.update(path.as_os_str().as_encoded_bytes());
            hasher.update([0]);
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes.as_slice());
        }
        hex(&hasher.finalize())
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Parses every file; the first invalid file or duplicate `kid` fails all.
    /// A duplicate is reported before a file name that differs from its kid,
    /// because renaming a copied file after its kid would overwrite the key.
    pub fn parse(&self) -> Result<KeyRing, StoreError> {
        let mut keys = Vec::with_capacity(self.files.len());
        for (path, bytes) in &self.files {
            let key = KeyFile::parse(bytes).map_err(|fault| StoreError::Invalid {
                path: path.clone(),
                fault: fault.to_string(),
            })?;
            keys.push((path, key));
        }

        for (index, (path, key)) in keys.iter().enumerate() {
            let expected = format!("{}.json", key.kid);
            if path.file_name().and_then(|n| n.to_str()) == Some(expected.as_str()) {
                continue;
            }
            let duplicate = keys
                .iter()
                .enumerate()
                .find(|(other, (_, other_key))| *other != index && other_key.kid == key.kid);
            let fault = match duplicate {
                Some((_, (other_path, _))) => format!(
                    "duplicate kid {:?}: {} has it too; give this key a new kid",
                    &*key.kid,
                    other_path.display()
                ),
                None => format!("the file name must be {expected}, after its kid"),
            };
            return Err(StoreError::Invalid {
                path: (*path).clone(),
                fault,
            });
        }

        let keys = keys.into_iter().map(|(_, key)| key).collect();
        KeyRing::new(keys).map_err(|dup| StoreError::Invalid {
            path: self.dir.join(format!("{}.json", dup.0)),
            fault: dup.to_string(),
        })
    }
}

/// Checks whether a directory entry is a key file: a `*.json` name not starting with
/// a dot. Dot files cover temporary files and Kubernetes `..data` links.
pub fn is_key_file_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".json") && name.len() > ".json".len()
}

/// Reads every key file of `dir`. A missing folder is an error here.
pub fn read_dir(dir: &Path) -> Result<DirSnapshot, StoreError> {
    let read_dir_error = |source| StoreError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir_error)? {
        let entry = entry.map_err(read_dir_error)?;
        let name = entry.file_name();
        if name.to_str().is_some_and(is_key_file_name) {
            paths.push(entry.path());
        }
    }
    paths.sort();

    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = read_key_file(&path).map_err(|source| StoreError::ReadFile {
            path: path.clone(),
            source,
        })?;
        files.push((path, bytes));
    }
    Ok(DirSnapshot {
        dir: dir.to_path_buf(),
        files,
    })
}

fn read_key_file(path: &Path) -> io::Result<Zeroizing<Vec<u8>>> {
    // Opening a FIFO or a device would block or read forever, so the type is
    // checked first, and the open itself does not block.
    if !fs::metadata(path)?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(io::Error::other(format!(
            "larger than {MAX_KEY_FILE_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// Loads the ring of `dir` and checks that some key can sign at `now`.
pub fn load_ring(dir: &Path, now: DateTime<Utc>) -> Result<(KeyRing, String), StoreError> {
    let snapshot = read_dir(dir)?;
    let ring = snapshot.parse()?;
    if ring.signing_key(now).is_none() {
        return Err(StoreError::NoSigningKey {
            path: dir.to_path_buf(),
        });
    }
    Ok((ring, snapshot.digest()))
}

/// Creates `dir` (mode 0700) when missing and, when it contains no key file,
/// writes a new key that signs from `now`. Returns the key it wrote.
pub fn ensure_development_key(dir: &Path, now: DateTime<Utc>) -> Result<Option<Key>, StoreError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    if !read_dir(dir)?.is_empty() {
        return Ok(None);
    }
    let key = generate_key(None, Algorithm::HS256, now, Some(now), None)?;
    write_new_key(dir, &key)?;
    Ok(Some(key))
}

/// Makes a key with a secret from the OS CSPRNG as long as the hash output
/// (32, 48 or 64 bytes). Without `kid`, one is made from the date and
/// 32 random bits.
pub fn generate_key(
    kid: Option<String>,
    alg: Algorithm,
    now: DateTime<Utc>,
    sign_from: Option<DateTime<Utc>>,
    verify_until: Option<DateTime<Utc>>,
) -> Result<Key, StoreError> {
    let mut secret = Zeroizing::new(vec![0u8; super::jwk::min_secret_bytes(alg)]);
    getrandom::fill(&mut secret).map_err(|e| StoreError::Random(e.to_string()))?;
    let kid = match kid {
        Some(kid) => kid,
        None => {
            let mut suffix = [0u8; 4];
            getrandom::fill(&mut suffix).map_err(|e| StoreError::Random(e.to_string()))?;
            format!("{}-{}", now.format("%Y%m%d"), hex(&suffix))
        }
    };
    if !is_valid_kid(&kid) {
        return Err(StoreError::Invalid {
            path: PathBuf::from(format!("{kid}.json")),
            fault: super::KeyFileFault::KeyId(kid).to_string(),
        });
    }
    Ok(Key::new(kid, alg, secret, now, sign_from, verify_until))
}

/// Returns the path of the key file for `kid` in `dir`.
pub fn key_path(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("{kid}.json"))
}

/// Writes a key that must not exist yet. The file appears whole or not at
/// all, and an existing file of the same `kid` is never replaced, even by a
/// concurrent writer.
pub fn write_new_key(dir: &Path, key: &Key) -> Result<PathBuf, StoreError> {
    let path = key_path(dir, &key.kid);
    let tmp = write_temporary(dir, key, &path)?;
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(StoreError::Exists { path });
        }
        Err(source) => return Err(StoreError::Write { path, source }),
    }
    sync_dir(dir).map_err(|source| StoreError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Replaces the file of an existing key in one rename.
pub fn replace_key(dir: &Path, key: &Key) -> Result<PathBuf, StoreError> {
    let path = key_path(dir, &key.kid);
    let tmp = write_temporary(dir, key, &path)?;
    if let Err(source) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::Write { path, source });
    }
    sync_dir(dir).map_err(|source| StoreError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Deletes the file of `kid`.
pub fn delete_key(dir: &Path, kid: &str) -> Result<(), StoreError> {
    let path = key_path(dir, kid);
    fs::remove_file(&path).map_err(|source| StoreError::Write {
        path: path.clone(),
        source,
    })?;
    sync_dir(dir).map_err(|source| StoreError::Write { path, source })
}

/// Writes `key` to a new hidden file beside `path`, mode 0600, fsynced.
fn write_temporary(dir: &Path, key: &Key, path: &Path) -> Result<PathBuf, StoreError> {
    let write_error = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    // Never write a file that a load would reject: one bad file stops every
    // reload of the folder and the next start.
    let file = KeyFile::from_key(key);
    if let Err(fault) = file.clone().into_key() {
        return Err(StoreError::Invalid {
            path: path.to_path_buf(),
            fault: fault.to_string(),
        });
    }
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| StoreError::Random(e.to_string()))?;
    let tmp = dir.join(format!(".{}.json.tmp-{}", key.kid, hex(&suffix)));

    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut out| {
            out.write_all(&file.to_json())?;
            out.sync_all()
        });
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(write_error(source));
    }
    Ok(tmp)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid timestamp")
    }

    #[test]
    fn development_key_written_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = dir.path().join("keys");

        let first = ensure_development_key(&keys, now()).expect("writes a key");
        let second = ensure_development_key(&keys, now()).expect("reads the folder");

        let key = first.expect("a key was generated");
        assert!(second.is_none(), "second start generated another key");
        let (ring, _) = load_ring(&keys, now()).expect("loads");
        assert_eq!(ring.signing_key(now()).expect("signs").kid, key.kid);
    }

    #[test]
    fn key_file_mode_is_0600() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = generate_key(Some("k1".into()), Algorithm::HS256, now(), None, None)
            .expect("generates");

        let path = write_new_key(dir.path(), &key).expect("writes");

        let mode = fs::metadata(path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn write_new_key_never_replaces() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = generate_key(Some("k1".into()), Algorithm::HS256, now(), None, None)
            .expect("generates");
        let other = generate_key(Some("k1".into()), Algorithm::HS256, now(), None, None)
            .expect("generates");
        write_new_key(dir.path(), &key).expect("writes");

        let result = write_new_key(dir.path(), &other);

        assert!(matches!(result, Err(StoreError::Exists { .. })));
        let (ring, _) = (
            read_dir(dir.path())
                .expect("reads")
                .parse()
                .expect("parses"),
            (),
        );
        assert_eq!(ring.get("k1").expect("present").secret(), key.secret());
        assert_eq!(
            fs::read_dir(dir.path()).expect("lists").count(),
            1,
            "temporary file left"
        );
    }

    #[test]
    fn generated_secret_length_follows_alg() {
        for (alg, len) in [
            (Algorithm::HS256, 32),
            (Algorithm::HS384, 48),
            (Algorithm::HS512, 64),
        ] {
            let key = generate_key(None, alg, now(), None, None).expect("generates");

            assert_eq!(key.secret().len(), len, "{alg:?}");
        }
    }

    #[test]
    fn other_files_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("README.md"), "docs").expect("writes");
        fs::write(dir.path().join(".gitignore"), "*").expect("writes");
        fs::write(dir.path().join(".k1.json.tmp-00"), "{").expect("writes");

        let snapshot = read_dir(dir.path()).expect("reads");

        assert!(snapshot.is_empty());
    }

    #[test]
    fn file_name_must_match_kid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = generate_key(
            Some("k1".into()),
            Algorithm::HS256,
            now(),
            Some(now()),
            None,
        )
        .expect("generates");
        write_new_key(dir.path(), &key).expect("writes");
        fs::rename(dir.path().join("k1.json"), dir.path().join("k2.json")).expect("renames");

        let error = load_ring(dir.path(), now()).unwrap_err().to_string();

        assert!(error.contains("k2.json"), "{error}");
        assert!(error.contains("k1.json"), "{error}");
    }

    #[test]
    fn duplicate_kid_reported_as_such() {
        let key = generate_key(
            Some("k1".into()),
            Algorithm::HS256,
            now(),
            Some(now()),
            None,
        )
        .expect("generates");
        for copy in ["k2.json", "a.json"] {
            let dir = tempfile::tempdir().expect("temp dir");
            let original = write_new_key(dir.path(), &key).expect("writes");
            fs::copy(&original, dir.path().join(copy)).expect("copies");

            let error = load_ring(dir.path(), now()).unwrap_err().to_string();

            assert!(error.contains(copy), "copy {copy}: {error}");
            assert!(
                error.contains("duplicate kid \"k1\""),
                "copy {copy}: {error}"
            );
            assert!(error.contains("k1.json"), "copy {copy}: {error}");
        }
    }

    #[test]
    fn no_signing_key_rejected() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = generate_key(Some("k1".into()), Algorithm::HS256, now(), None, None)
            .expect("generates");
        write_new_key(dir.path(), &key).expect("writes");

        let result = load_ring(dir.path(), now());

        assert!(matches!(result, Err(StoreError::NoSigningKey { .. })));
    }

    #[test]
    fn fifo_rejected_without_blocking() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("f.json");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());

        let error = read_dir(dir.path()).unwrap_err().to_string();

        assert!(
            error.contains("f.json") && error.contains("not a regular file"),
            "{error}"
        );
    }

    #[test]
    fn invalid_lifecycle_never_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = generate_key(
            Some("k1".into()),
            Algorithm::HS256,
            now(),
            Some(now()),
            None,
        )
        .expect("generates");
        write_new_key(dir.path(), &key).expect("writes");
        let before = fs::read(dir.path().join("k1.json")).expect("reads");
        let backwards = key.with_lifecycle(Some(now()), Some(now() - chrono::Duration::seconds(1)));

        let result = replace_key(dir.path(), &backwards);

        assert!(
            matches!(result, Err(StoreError::Invalid { .. })),
            "{result:?}"
        );
        assert_eq!(fs::read(dir.path().join("k1.json")).expect("reads"), before);
    }

    #[test]
    fn digest_follows_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = generate_key(
            Some("k1".into()),
            Algorithm::HS256,
            now(),
            Some(now()),
            None,
        )
        .expect("generates");
        write_new_key(dir.path(), &key).expect("writes");
        let before = read_dir(dir.path()).expect("reads").digest();

        replace_key(dir.path(), &key.with_lifecycle(key.sign_from, Some(now()))).expect("writes");

        assert_ne!(read_dir(dir.path()).expect("reads").digest(), before);
    }
}
