//! The admin key at rest. A key is 256 random bits (64 hex digits). The store keeps only
//! its SHA-256, which is what the server checks presented keys against (in constant time);
//! `admin.key` (mode 0600) in the data directory is the one place the key itself is
//! readable, for the local CLI. A key set by `api.auth_key` or `LOGPLEX_AUTH_KEY` is used
//! as it is and never stored.
//!
//! At start: a store that still holds a plain key (older versions did) keeps only its hash
//! from then on; with no hash stored, the key in `admin.key` is adopted or a new one is
//! made; with `admin.key` missing, a new key is made and written (the old one cannot be
//! recovered from its hash), so deleting `admin.key` and restarting rotates the key.

use crate::store;
use ring::rand::SecureRandom;
use std::path::Path;
use subtle::ConstantTimeEq;

/// The meta row of the key's SHA-256 (hex).
const HASH_META: &str = "admin_key_sha256";
/// The meta row where older versions kept the key itself.
const PLAIN_META: &str = "admin_key";

/// What the server checks the admin key against: its SHA-256.
#[derive(Clone)]
pub struct AdminKey {
    hash: [u8; 32],
}

impl AdminKey {
    /// The checker of `key`.
    pub fn of(key: &str) -> AdminKey {
        AdminKey {
            hash: sha256(key.as_bytes()),
        }
    }

    /// The key's SHA-256 in hex, as stored.
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }

    /// The checker of a key known only by its SHA-256 in hex (cluster mode: the cluster's
    /// key, from Redis); `None` when it is not 64 hex digits.
    pub fn from_hash_hex(h: &str) -> Option<AdminKey> {
        unhex(h).map(|hash| AdminKey { hash })
    }

    /// Is `presented` the key? Compares hashes in constant time; an empty key never matches.
    pub fn matches(&self, presented: &[u8]) -> bool {
        !presented.is_empty() && bool::from(sha256(presented).ct_eq(&self.hash))
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// A new random key: 256 bits from the operating system, as 64 hex digits.
pub fn generate() -> anyhow::Result<String> {
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
    Ok(hex(&raw))
}

/// Settles the admin key at start (blocking; the data directory is locked by then).
/// `configured` is `api.auth_key` (or `LOGPLEX_AUTH_KEY`), empty when unset.
pub fn settle(
    conn: &mut store::Conn,
    configured: &str,
    key_file: &Path,
) -> anyhow::Result<AdminKey> {
    forget_plain_key(conn, key_file)?;
    if !configured.is_empty() {
        return Ok(AdminKey::of(configured));
    }
    let in_file = match std::fs::read_to_string(key_file) {
        Ok(k) if !k.trim().is_empty() => Some(k.trim().to_string()),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => anyhow::bail!("cannot read {}: {e}", key_file.display()),
    };
    let stored = match store::get_meta(conn, HASH_META)? {
        None => None,
        Some(h) => Some(unhex(&h).ok_or_else(|| {
            anyhow::anyhow!("the stored hash of the admin key is damaged ({HASH_META})")
        })?),
    };
    match (stored, in_file) {
        (Some(hash), Some(key)) => {
            let k = AdminKey { hash };
            if !k.matches(key.as_bytes()) {
                tracing::warn!(
                    "{} does not hold the admin key (its SHA-256 differs from the stored one): \
                     the CLI's requests will be refused; delete it and restart to make a new key",
                    key_file.display()
                );
            }
            Ok(k)
        }
        (None, Some(key)) => {
            store::set_meta(conn, HASH_META, &hex(&sha256(key.as_bytes())))?;
            tracing::info!("admin key: adopted the key in {}", key_file.display());
            Ok(AdminKey::of(&key))
        }
        (stored, None) => {
            let key = generate()?;
            crate::datadir::write_private(key_file, format!("{key}\n").as_bytes())
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", key_file.display()))?;
            store::set_meta(conn, HASH_META, &hex(&sha256(key.as_bytes())))?;
            if stored.is_some() {
                tracing::warn!(
                    "{} was missing: made a new admin key (the store keeps only the old one's \
                     hash, so it cannot be written back); the old key no longer works",
                    key_file.display()
                );
            }
            Ok(AdminKey::of(&key))
        }
    }
}

/// Keeps `key` as this node's admin key from now on (its hash in the store): cluster mode,
/// where every node takes the cluster's key.
pub fn keep(conn: &mut store::Conn, key: &AdminKey) -> Result<(), store::StoreError> {
    store::set_meta(conn, HASH_META, &key.hash_hex())
}

/// Replaces a plain key left by an older version with its hash, overwriting the old row on
/// disk and emptying the write-ahead log, so the key is readable nowhere but `admin.key`
/// (written from it when missing).
fn forget_plain_key(conn: &mut store::Conn, key_file: &Path) -> Result<(), anyhow::Error> {
    let Some(plain) = store::get_meta(conn, PLAIN_META)? else {
        return Ok(());
    };
    if !key_file.exists() {
        crate::datadir::write_private(key_file, format!("{plain}\n").as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", key_file.display()))?;
    }
    store::replace_meta_securely(conn, PLAIN_META, HASH_META, &hex(&sha256(plain.as_bytes())))?;
    tracing::info!("admin key: the store now keeps only its SHA-256");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_256_bits_and_hashes_round_trip() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        let k = AdminKey::of(&a);
        assert!(k.matches(a.as_bytes()));
        assert!(!k.matches(b.as_bytes()));
        assert!(!k.matches(b""));
        assert_eq!(unhex(&hex(&k.hash)), Some(k.hash));
        assert_eq!(unhex("zz"), None);
    }
}
