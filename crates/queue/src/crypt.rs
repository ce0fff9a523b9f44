//! Encryption at rest (`AFTERCALL_ENCRYPTION_KEYS`): job data (the call's event) and
//! agent configs (their webhook secrets and header values) are sealed with AES-256-GCM
//! (`ring`, already in the build through rustls) before they reach Redis; ids, states,
//! times and histories stay in the clear, so the scripts work unchanged.
//!
//! Keys are versioned (`v2:<base64 of 32 bytes>,v1:<...>`): the first is used for new
//! writes, the others are read. A sealed value names its key: job data is
//! `0x01, len, version, nonce, ciphertext and tag` (JSON never starts with 0x01), an
//! agent config the same in text, `enc:<version>:<base64>`. The job's id (or the agent's)
//! is the associated data, so a value moved to another id does not open. A plaintext
//! value (written before encryption was turned on) is read as it is, and rewritten
//! sealed by `aftercall keys rotate`.
//!
//! Job data of [`COMPRESS_FROM`] bytes or more (a call's event with its transcript) is
//! also compressed, before it is sealed: a zstd frame (magic `28 B5 2F FD`), kept only
//! when it saves a tenth. Smaller data, most events and every action job's, is stored
//! as JSON and pays nothing. What is read tells itself apart: `{` is JSON, `0x01` sealed,
//! the magic compressed, so data written before compression reads as it is. No script
//! reads job data (they move ids; the worker decodes), so none sees the difference.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Queue, QueueError};

const MARK: u8 = 0x01;
const TEXT_MARK: &str = "enc:";

/// Job data from this size on is compressed. Below it the saving is a few hundred bytes
/// (the 1 KB benchmark event: 916 to 575) for a compression at every enqueue and a
/// decompression at every read, on the path the throughput targets are measured on.
pub(crate) const COMPRESS_FROM: usize = 2048;
/// zstd's frame magic number, little-endian 0xFD2FB528.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Level 1: on a 6 KB transcript, level 3 saves 0.5 % more at a third of the speed.
const ZSTD_LEVEL: i32 = 1;
/// The largest data decompressed (events are capped far lower at intake): a frame
/// claiming more is refused, not allocated.
const MAX_PLAIN: u64 = 64 << 20;

thread_local! {
    // A context per thread: making one costs more than compressing a few KB.
    static ZSTD: std::cell::RefCell<Option<(zstd::bulk::Compressor<'static>, zstd::bulk::Decompressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

fn with_zstd<T>(
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>, &mut zstd::bulk::Decompressor<'static>) -> T,
) -> T {
    ZSTD.with(|z| {
        let mut z = z.borrow_mut();
        let (c, d) = z.get_or_insert_with(|| {
            (
                zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd level 1 exists"),
                zstd::bulk::Decompressor::new().expect("a zstd context"),
            )
        });
        f(c, d)
    })
}

/// Job data as stored before sealing: compressed from [`COMPRESS_FROM`] bytes when that
/// saves a tenth, else as it is.
pub(crate) fn compress(json: Vec<u8>) -> Vec<u8> {
    if json.len() < COMPRESS_FROM || json.starts_with(&ZSTD_MAGIC) {
        return json;
    }
    match with_zstd(|c, _| c.compress(&json)) {
        Ok(z) if z.len() * 10 <= json.len() * 9 => z,
        _ => json,
    }
}

/// Job data as read after opening: a zstd frame decompressed, anything else as it is.
pub(crate) fn decompress(data: Cow<'_, [u8]>) -> Result<Cow<'_, [u8]>, CryptError> {
    if !data.starts_with(&ZSTD_MAGIC) {
        return Ok(data);
    }
    let size = match zstd::zstd_safe::get_frame_content_size(&data) {
        Ok(Some(n)) if n <= MAX_PLAIN => n as usize,
        Ok(Some(n)) => return Err(CryptError::Compressed(format!("claims {n} bytes"))),
        _ => return Err(CryptError::Compressed("no content size".into())),
    };
    let plain = with_zstd(|_, d| d.decompress(&data, size))
        .map_err(|e| CryptError::Compressed(e.to_string()))?;
    if plain.len() != size {
        return Err(CryptError::Compressed(format!(
            "{} bytes, not the {size} its frame says",
            plain.len()
        )));
    }
    Ok(Cow::Owned(plain))
}

/// The configured keys, the first one current.
#[derive(Clone)]
pub struct Keyring(Arc<Inner>);

struct Inner {
    keys: Vec<(String, LessSafeKey)>,
    rng: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions: Vec<&str> = self.0.keys.iter().map(|(v, _)| v.as_str()).collect();
        f.debug_struct("Keyring")
            .field("versions", &versions)
            .finish()
    }
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CryptError {
    #[error("sealed with key {0}, which AFTERCALL_ENCRYPTION_KEYS does not have")]
    UnknownKey(String),
    #[error("sealed with key {0}, but AFTERCALL_ENCRYPTION_KEYS is not set")]
    NoKeys(String),
    #[error("does not open with key {0} (a wrong key, or the value was altered)")]
    Tampered(String),
    #[error("a sealed value is cut short")]
    Truncated,
    #[error("a compressed value does not decompress ({0})")]
    Compressed(String),
}

impl Keyring {
    /// `v2:<base64>,v1:<base64>`: each key 32 bytes; versions unique, short, no `:`.
    pub fn parse(s: &str) -> Result<Keyring, String> {
        let mut keys: Vec<(String, LessSafeKey)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (version, b64) = part
                .split_once(':')
                .ok_or("each key is <version>:<base64 of 32 bytes>")?;
            let version = version.trim();
            if version.is_empty()
                || version.len() > 32
                || !version
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "`{version}` is not a key version (letters, digits, - and _)"
                ));
            }
            if keys.iter().any(|(v, _)| v == version) {
                return Err(format!("key {version} is listed twice"));
            }
            let bytes = B64
                .decode(b64.trim())
                .map_err(|_| format!("key {version} is not base64"))?;
            if bytes.len() != 32 {
                return Err(format!(
                    "key {version} is {} bytes; AES-256 needs 32 (openssl rand -base64 32)",
                    bytes.len()
                ));
            }
            let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "bad key")?;
            keys.push((version.to_string(), LessSafeKey::new(key)));
        }
        if keys.is_empty() {
            return Err("no key: set v1:<base64 of 32 bytes>".into());
        }
        Ok(Keyring(Arc::new(Inner {
            keys,
            rng: SystemRandom::new(),
        })))
    }

    /// The version new writes use.
    pub fn current(&self) -> &str {
        &self.0.keys[0].0
    }

    pub fn versions(&self) -> impl Iterator<Item = &str> {
        self.0.keys.iter().map(|(v, _)| v.as_str())
    }

    fn key(&self, version: &str) -> Option<&LessSafeKey> {
        self.0
            .keys
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, k)| k)
    }

    /// Seals `plain` with the current key, bound to `aad` (the id it is stored under).
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        self.seal_with(self.current(), aad, plain)
    }

    fn seal_with(&self, version: &str, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let key = self.key(version).expect("a configured version");
        let mut nonce = [0u8; NONCE_LEN];
        self.0
            .rng
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut out = Vec::with_capacity(2 + version.len() + NONCE_LEN + plain.len() + 16);
        out.push(MARK);
        out.push(version.len() as u8);
        out.extend_from_slice(version.as_bytes());
        out.extend_from_slice(&nonce);
        let at = out.len();
        out.extend_from_slice(plain);
        let mut body = out.split_off(at);
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .expect("sealing fits in memory");
        out.append(&mut body);
        out
    }

    /// Seals as text (agent configs are read as strings).
    pub fn seal_text(&self, aad: &[u8], plain: &str) -> String {
        let sealed = self.seal(aad, plain.as_bytes());
        format!("{TEXT_MARK}{}:{}", self.current(), B64.encode(sealed))
    }
}

/// The key version a stored value was sealed with (`None`: plaintext).
pub fn version_of(data: &[u8]) -> Option<&str> {
    if let Some(rest) = data.strip_prefix(TEXT_MARK.as_bytes()) {
        let end = rest.iter().position(|b| *b == b':')?;
        return std::str::from_utf8(&rest[..end]).ok();
    }
    match data {
        [MARK, n, rest @ ..] if rest.len() >= *n as usize => {
            std::str::from_utf8(&rest[..*n as usize]).ok()
        }
        _ => None,
    }
}

/// Opens a stored value: a sealed one with `ring`'s key of its version, a plaintext one
/// as it is.
pub fn open<'a>(
    ring: Option<&Keyring>,
    aad: &[u8],
    data: &'a [u8],
) -> Result<Cow<'a, [u8]>, CryptError> {
    if let Some(rest) = data.strip_prefix(TEXT_MARK.as_bytes()) {
        let s = std::str::from_utf8(rest).map_err(|_| CryptError::Truncated)?;
        let (_, b64) = s.split_once(':').ok_or(CryptError::Truncated)?;
        let sealed = B64.decode(b64).map_err(|_| CryptError::Truncated)?;
        return open(ring, aad, &sealed).map(|c| Cow::Owned(c.into_owned()));
    }
    let [MARK, n, rest @ ..] = data else {
        return Ok(Cow::Borrowed(data));
    };
    let n = *n as usize;
    if rest.len() < n + NONCE_LEN + 16 {
        return Err(CryptError::Truncated);
    }
    let version = String::from_utf8_lossy(&rest[..n]).into_owned();
    let ring = ring.ok_or_else(|| CryptError::NoKeys(version.clone()))?;
    let key = ring
        .key(&version)
        .ok_or_else(|| CryptError::UnknownKey(version.clone()))?;
    let nonce = Nonce::try_assume_unique_for_key(&rest[n..n + NONCE_LEN])
        .map_err(|_| CryptError::Truncated)?;
    let mut body = rest[n + NONCE_LEN..].to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| CryptError::Tampered(version.clone()))?;
    Ok(Cow::Owned(plain.to_vec()))
}

impl From<CryptError> for QueueError {
    fn from(e: CryptError) -> QueueError {
        QueueError::Corrupt(e.to_string())
    }
}

impl Queue {
    fn keyring(&self) -> Option<&Keyring> {
        self.inner.cfg.encryption.as_ref()
    }

    /// Whether storing job data of `len` bytes does work (compressing or sealing it)
    /// beyond handing the bytes on.
    pub(crate) fn seal_costs(&self, len: usize) -> bool {
        self.keyring().is_some() || len >= COMPRESS_FROM
    }

    /// A job's data as stored: compressed when large, then sealed when keys are
    /// configured.
    pub(crate) fn seal_data(&self, id: &str, json: Vec<u8>) -> Vec<u8> {
        let packed = compress(json);
        match self.keyring() {
            Some(k) => k.seal(id.as_bytes(), &packed),
            None => packed,
        }
    }

    /// A job's data as read: opened, then decompressed.
    pub(crate) fn open_data<'a>(
        &self,
        id: &str,
        data: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, CryptError> {
        decompress(open(self.keyring(), id.as_bytes(), data)?)
    }

    /// A value read as text (agent configs, analysis records) as stored: sealed as text.
    pub(crate) fn seal_text(&self, agent_id: &str, json: String) -> String {
        match self.keyring() {
            Some(k) => k.seal_text(agent_id.as_bytes(), &json),
            None => json,
        }
    }

    /// A value read as text, as read.
    pub(crate) fn open_text(&self, agent_id: &str, stored: String) -> Result<String, QueueError> {
        if !stored.starts_with(TEXT_MARK) {
            return Ok(stored);
        }
        let plain = open(self.keyring(), agent_id.as_bytes(), stored.as_bytes())?;
        String::from_utf8(plain.into_owned())
            .map_err(|_| QueueError::Corrupt(format!("agent {agent_id}: not UTF-8")))
    }

    /// At connect: every configured key must open what it sealed before (a canary per
    /// version in `{p}:keycheck`, written the first time a key is seen), and a queue
    /// whose data was sealed needs keys. A wrong key stops the process here, with the
    /// setting's name, rather than dead-lettering jobs one by one.
    pub(crate) async fn check_keys(&self, writes: bool) -> Result<(), QueueError> {
        let k = self.home();
        let stored: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&k.keycheck)
            .query_async(&mut self.conn())
            .await?;
        let Some(ring) = self.keyring() else {
            if let Some((v, _)) = stored.first() {
                return Err(QueueError::Invalid(format!(
                    "this queue's data is encrypted (key {v}); set AFTERCALL_ENCRYPTION_KEYS"
                )));
            }
            return Ok(());
        };
        for version in ring.versions() {
            let aad = format!("keycheck:{version}");
            match stored.iter().find(|(v, _)| v == version) {
                Some((_, canary)) if open(Some(ring), aad.as_bytes(), canary).is_err() => {
                    return Err(QueueError::Invalid(format!(
                        "AFTERCALL_ENCRYPTION_KEYS: key {version} is not the key {version} this queue's data was sealed with"
                    )));
                }
                Some(_) => {}
                None if writes => {
                    let canary = ring.seal_with(version, aad.as_bytes(), b"aftercall");
                    let _: i64 = redis::cmd("HSETNX")
                        .arg(&k.keycheck)
                        .arg(version)
                        .arg(canary)
                        .query_async(&mut self.conn())
                        .await?;
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// How far a key rotation got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Values looked at, of about `total` (the hashes' sizes when it started).
    pub scanned: u64,
    pub total: u64,
    /// Values sealed again with the current key (or sealed for the first time).
    pub rewritten: u64,
}

impl Queue {
    /// Seals every job's data and agent config with the current key: values sealed
    /// with an older key, or stored in the clear, are rewritten (each only if unchanged
    /// since read, so live traffic is safe). `progress` is called after each batch.
    /// Once done, older keys can be removed from AFTERCALL_ENCRYPTION_KEYS.
    pub async fn rotate_keys(
        &self,
        mut progress: impl FnMut(&Rotation),
    ) -> Result<Rotation, QueueError> {
        let ring = self
            .keyring()
            .ok_or_else(|| QueueError::Invalid("AFTERCALL_ENCRYPTION_KEYS is not set".into()))?
            .clone();
        // (hash, sealed as text, what its values are bound to besides their field)
        let mut hashes = vec![(&self.home().agents, true, "")];
        for k in &self.inner.layout.parts {
            hashes.push((&k.data, false, ""));
            hashes.push((&k.analysis, true, "analysis:"));
        }
        let mut r = Rotation::default();
        for (key, _, _) in &hashes {
            let n: u64 = redis::cmd("HLEN")
                .arg(key)
                .query_async(&mut self.conn())
                .await?;
            r.total += n;
        }
        for (key, text, bound) in hashes {
            let mut cursor = 0u64;
            loop {
                let (next, pairs): (u64, Vec<(String, Vec<u8>)>) = redis::cmd("HSCAN")
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(200)
                    .query_async(&mut self.conn())
                    .await?;
                let mut inv = self.inner.scripts.rewrap.invocation_with(&[key.as_str()]);
                let mut any = false;
                for (id, value) in &pairs {
                    r.scanned += 1;
                    if version_of(value) == Some(ring.current()) {
                        continue;
                    }
                    let aad = format!("{bound}{id}");
                    let plain = open(Some(&ring), aad.as_bytes(), value)?;
                    let sealed = if text {
                        let plain = std::str::from_utf8(&plain)
                            .map_err(|_| QueueError::Corrupt(format!("{aad}: not UTF-8")))?;
                        ring.seal_text(aad.as_bytes(), plain).into_bytes()
                    } else {
                        // Data stored before compression is compressed on the way.
                        ring.seal(aad.as_bytes(), &compress(plain.into_owned()))
                    };
                    inv.arg(id).arg(value.as_slice()).arg(sealed);
                    any = true;
                }
                if any {
                    let n: u64 = inv.invoke_async(&mut self.conn()).await?;
                    r.rewritten += n;
                }
                progress(&r);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(s: &str) -> Keyring {
        Keyring::parse(s).unwrap()
    }

    const K1: &str = "v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "v2:HxwdHhscGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

    #[test]
    fn sealed_values_open_with_their_key_and_id_only() {
        let r = ring(&format!("{K2},{K1}"));
        let sealed = r.seal(b"job_1", b"{\"call_id\":\"c\"}");
        assert_eq!(version_of(&sealed), Some("v2"));
        assert!(
            !sealed.windows(8).any(|w| w == b"call_id\""),
            "no plaintext"
        );
        assert_eq!(
            &*open(Some(&r), b"job_1", &sealed).unwrap(),
            b"{\"call_id\":\"c\"}"
        );
        assert_eq!(
            open(Some(&r), b"job_2", &sealed),
            Err(CryptError::Tampered("v2".into()))
        );
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(open(Some(&r), b"job_1", &altered).is_err());
        // An older key still opens what it sealed; a ring without it says which.
        let old = ring(K1).seal(b"job_1", b"x");
        assert_eq!(&*open(Some(&r), b"job_1", &old).unwrap(), b"x");
        assert_eq!(
            open(Some(&ring(K2)), b"job_1", &old),
            Err(CryptError::UnknownKey("v1".into()))
        );
        assert_eq!(
            open(None, b"job_1", &old),
            Err(CryptError::NoKeys("v1".into()))
        );
        // Plaintext reads as it is.
        assert_eq!(&*open(Some(&r), b"job_1", b"{}").unwrap(), b"{}");
        let text = r.seal_text(b"agent", "{\"name\":\"x\"}");
        assert!(text.starts_with("enc:v2:"));
        assert_eq!(
            &*open(Some(&r), b"agent", text.as_bytes()).unwrap(),
            b"{\"name\":\"x\"}"
        );
    }

    /// A call-ended job's data with a transcript of `turns` varied lines.
    fn job_json(turns: usize) -> Vec<u8> {
        let t: Vec<String> = (0..turns)
            .map(|i| {
                format!(
                    "Agent: order A{}-{:05} ships on day {} of {i}.",
                    i % 7,
                    i * 7919 % 100_000,
                    i * 31 % 28
                )
            })
            .collect();
        format!(
            r#"{{"id":"job_1","kind":"call_ended","event":{{"transcript":"{}"}}}}"#,
            t.join("\\n")
        )
        .into_bytes()
    }

    #[test]
    fn large_data_is_compressed_and_reads_back() {
        let small = job_json(10);
        assert!(small.len() < COMPRESS_FROM);
        assert_eq!(
            compress(small.clone()),
            small,
            "small data is stored as it is"
        );

        let big = job_json(200);
        assert!(big.len() > 8_000);
        let z = compress(big.clone());
        assert!(z.starts_with(&ZSTD_MAGIC), "a zstd frame");
        assert!(z.len() * 2 < big.len(), "{} of {}", z.len(), big.len());
        assert_eq!(&*decompress(Cow::Borrowed(&z)).unwrap(), &big[..]);
        assert_eq!(compress(z.clone()), z, "not compressed twice");

        // Compressed, then sealed: no plaintext, and it opens back to the JSON.
        let r = ring(K1);
        let sealed = r.seal(b"job_1", &z);
        assert!(!sealed.windows(6).any(|w| w == b"Agent:"));
        let opened = open(Some(&r), b"job_1", &sealed).unwrap();
        assert_eq!(&*decompress(opened).unwrap(), &big[..]);

        // Written before compression (plain or sealed JSON): read as it is.
        assert!(matches!(decompress(Cow::Borrowed(&big)), Ok(Cow::Borrowed(b)) if b == &big[..]));
        let old = r.seal(b"job_1", &big);
        assert_eq!(
            &*decompress(open(Some(&r), b"job_1", &old).unwrap()).unwrap(),
            &big[..]
        );
    }

    #[test]
    fn incompressible_data_is_stored_as_it_is() {
        let mut noise = vec![0u8; 4096];
        SystemRandom::new().fill(&mut noise).unwrap();
        noise[0] = b'{';
        assert_eq!(compress(noise.clone()), noise);
    }

    #[test]
    fn a_damaged_frame_is_an_error_not_a_panic() {
        let z = compress(job_json(200));
        let mut cut = z.clone();
        cut.truncate(z.len() / 2);
        let mut flipped = z.clone();
        let mid = z.len() / 2;
        flipped[mid] ^= 0xff;
        for bad in [cut, flipped, ZSTD_MAGIC.to_vec()] {
            match decompress(Cow::Owned(bad)) {
                Err(CryptError::Compressed(_)) => {}
                // A flipped literal can still decode, to other bytes of the same length.
                Ok(plain) => assert_ne!(&*plain, &job_json(200)[..]),
                Err(e) => panic!("{e}"),
            }
        }
        // A frame header claiming a huge size is refused before allocating.
        let mut bomb = ZSTD_MAGIC.to_vec();
        bomb.extend_from_slice(&[0xe0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(
            decompress(Cow::Owned(bomb)),
            Err(CryptError::Compressed(_))
        ));
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        for (bad, want) in [
            ("", "no key"),
            ("v1", "<version>:<base64"),
            ("v1:!!", "not base64"),
            ("v1:AAAA", "is 3 bytes"),
            (&format!("{K1},{K1}"), "twice"),
            ("v 1:AAAA", "not a key version"),
        ] {
            let err = Keyring::parse(bad).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
