//! Envelope encryption for the secrets tenants bring (BYOK), with AES-256-GCM.
//!
//! Master keys come from the environment, versioned (`TESSERA_MASTER_KEYS=v2:<base64>,v1:..`,
//! the first being current). Each tenant has one data key, stored wrapped (encrypted) by a master
//! key; each secret is encrypted with its tenant's data key under a fresh random 96-bit nonce.
//! The associated data binds a wrapped data key to its tenant, and a secret to its tenant,
//! provider, key id and version, so a ciphertext copied to another tenant or row does not
//! decrypt. Rotating the master key re-wraps data keys and leaves secrets untouched.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::tenancy::TenantId;
use crate::{Error, Result};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// The master keys, by version. Never printed.
#[derive(Clone)]
pub struct MasterKeys {
    current: String,
    keys: Vec<(String, Zeroizing<[u8; KEY_LEN]>)>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions: Vec<&str> = self.keys.iter().map(|(v, _)| v.as_str()).collect();
        f.debug_struct("MasterKeys")
            .field("current", &self.current)
            .field("versions", &versions)
            .finish()
    }
}

impl MasterKeys {
    /// Parses `v2:<base64 of 32 bytes>,v1:<...>`; the first entry is the current key. The
    /// error message never contains key material.
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        let mut keys: Vec<(String, Zeroizing<[u8; KEY_LEN]>)> = Vec::new();
        for (i, entry) in raw
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (version, b64) = entry
                .split_once(':')
                .ok_or_else(|| format!("entry {} is not VERSION:BASE64", i + 1))?;
            let version = version.trim();
            if version.is_empty()
                || !version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!("entry {} has an invalid version name", i + 1));
            }
            if keys.iter().any(|(v, _)| v == version) {
                return Err(format!("version {version} appears twice"));
            }
            let bytes = Zeroizing::new(
                STANDARD
                    .decode(b64.trim())
                    .map_err(|_| format!("key {version} is not valid base64"))?,
            );
            if bytes.len() != KEY_LEN {
                return Err(format!(
                    "key {version} must be 32 bytes (base64 of 32 random bytes), got {}",
                    bytes.len()
                ));
            }
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            key.copy_from_slice(&bytes);
            keys.push((version.to_string(), key));
        }
        let current = keys
            .first()
            .map(|(v, _)| v.clone())
            .ok_or("no keys given")?;
        Ok(Self { current, keys })
    }

    /// A fixed, publicly known key for local development only.
    pub fn development() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(b"tessera-development-only-key-000");
        Self {
            current: "dev".into(),
            keys: vec![("dev".into(), key)],
        }
    }

    /// A random key (tests).
    pub fn random(version: &str) -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self {
            current: version.into(),
            keys: vec![(version.into(), key)],
        }
    }

    /// These keys with `newer` as the current one (tests of rotation).
    pub fn rotated_to(&self, newer: &MasterKeys) -> Self {
        let mut keys = newer.keys.clone();
        keys.extend(
            self.keys
                .iter()
                .filter(|(v, _)| !newer.keys.iter().any(|(n, _)| n == v))
                .cloned(),
        );
        Self {
            current: newer.current.clone(),
            keys,
        }
    }

    pub fn current_version(&self) -> &str {
        &self.current
    }

    fn get(&self, version: &str) -> Option<&[u8; KEY_LEN]> {
        self.keys
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, k)| &**k)
    }
}

/// A tenant's plaintext data key; zeroed when dropped.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self(key)
    }
}

/// A data key encrypted by a master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    pub master_version: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// An encrypted secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// What a secret is bound to; part of its associated data.
#[derive(Clone, Copy, Debug)]
pub struct SecretContext<'a> {
    pub tenant: TenantId,
    pub provider: &'a str,
    pub key_id: uuid::Uuid,
    pub version: i32,
}

impl SecretContext<'_> {
    fn aad(&self) -> Vec<u8> {
        format!(
            "tessera/secret/v1|{}|{}|{}|{}",
            self.tenant, self.provider, self.key_id, self.version
        )
        .into_bytes()
    }
}

fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

fn cipher(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

fn data_key_aad(tenant: TenantId) -> Vec<u8> {
    format!("tessera/data-key/v1|{tenant}").into_bytes()
}

/// Wraps a tenant's data key with the current master key.
pub fn wrap(master: &MasterKeys, tenant: TenantId, key: &DataKey) -> Result<WrappedKey> {
    let mk = master
        .get(&master.current)
        .ok_or_else(|| Error::Internal("current master key missing".into()))?;
    let n = nonce();
    let ciphertext = cipher(mk)
        .encrypt(
            Nonce::from_slice(&n),
            Payload {
                msg: key.0.as_ref(),
                aad: &data_key_aad(tenant),
            },
        )
        .map_err(|_| Error::Internal("data key encryption failed".into()))?;
    Ok(WrappedKey {
        master_version: master.current.clone(),
        nonce: n.to_vec(),
        ciphertext,
    })
}

/// Unwraps a tenant's data key. Fails if the master key version is unknown, or if the wrapped
/// key was altered or belongs to another tenant.
pub fn unwrap(master: &MasterKeys, tenant: TenantId, wrapped: &WrappedKey) -> Result<DataKey> {
    let mk = master.get(&wrapped.master_version).ok_or_else(|| {
        Error::Internal(format!(
            "master key version {} is not in TESSERA_MASTER_KEYS",
            wrapped.master_version
        ))
    })?;
    if wrapped.nonce.len() != NONCE_LEN {
        return Err(Error::Internal(
            "wrapped data key has a malformed nonce".into(),
        ));
    }
    let plain = Zeroizing::new(
        cipher(mk)
            .decrypt(
                Nonce::from_slice(&wrapped.nonce),
                Payload {
                    msg: &wrapped.ciphertext,
                    aad: &data_key_aad(tenant),
                },
            )
            .map_err(|_| {
                Error::Internal("data key does not decrypt (tampered, or another tenant's)".into())
            })?,
    );
    if plain.len() != KEY_LEN {
        return Err(Error::Internal("data key has the wrong length".into()));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&plain);
    Ok(DataKey(key))
}

/// Encrypts a secret under a data key, bound to `ctx`.
pub fn seal(key: &DataKey, ctx: SecretContext<'_>, plaintext: &[u8]) -> Result<Sealed> {
    let n = nonce();
    let ciphertext = cipher(&key.0)
        .encrypt(
            Nonce::from_slice(&n),
            Payload {
                msg: plaintext,
                aad: &ctx.aad(),
            },
        )
        .map_err(|_| Error::Internal("secret encryption failed".into()))?;
    Ok(Sealed {
        nonce: n.to_vec(),
        ciphertext,
    })
}

/// Decrypts a secret; fails when it was altered or `ctx` is not the one it was sealed with.
pub fn open(key: &DataKey, ctx: SecretContext<'_>, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.nonce.len() != NONCE_LEN {
        return Err(Error::Internal("secret has a malformed nonce".into()));
    }
    cipher(&key.0)
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &ctx.aad(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| {
            Error::Internal("secret does not decrypt (tampered, or bound to another tenant)".into())
        })
}

/// Whether two secrets are equal, in time that depends on neither (both are hashed first, so
/// not even their lengths show).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(tenant: TenantId, key_id: uuid::Uuid) -> SecretContext<'static> {
        SecretContext {
            tenant,
            provider: "openai",
            key_id,
            version: 1,
        }
    }

    #[test]
    fn a_secret_round_trips() {
        let tenant = TenantId::new();
        let id = uuid::Uuid::new_v4();
        let dk = DataKey::generate();
        let sealed = seal(&dk, ctx(tenant, id), b"sk-test-1234").unwrap();
        assert_ne!(sealed.ciphertext, b"sk-test-1234");
        assert_eq!(
            &**open(&dk, ctx(tenant, id), &sealed).unwrap(),
            b"sk-test-1234"
        );
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let tenant = TenantId::new();
        let id = uuid::Uuid::new_v4();
        let dk = DataKey::generate();
        let mut sealed = seal(&dk, ctx(tenant, id), b"sk-test-1234").unwrap();
        sealed.ciphertext[0] ^= 1;
        assert!(open(&dk, ctx(tenant, id), &sealed).is_err());
    }

    #[test]
    fn a_ciphertext_moved_to_another_tenant_or_provider_fails() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let id = uuid::Uuid::new_v4();
        let dk = DataKey::generate();
        let sealed = seal(&dk, ctx(a, id), b"sk-test-1234").unwrap();
        // Even with the same data key, the binding to tenant and provider is checked.
        assert!(open(&dk, ctx(b, id), &sealed).is_err());
        assert!(open(
            &dk,
            SecretContext {
                provider: "anthropic",
                ..ctx(a, id)
            },
            &sealed
        )
        .is_err());
        // And a data key wrapped for A does not unwrap as B's.
        let master = MasterKeys::random("v1");
        let wrapped = wrap(&master, a, &dk).unwrap();
        assert!(unwrap(&master, b, &wrapped).is_err());
        assert!(unwrap(&master, a, &wrapped).is_ok());
    }

    #[test]
    fn rotation_rewraps_and_old_secrets_still_open() {
        let tenant = TenantId::new();
        let id = uuid::Uuid::new_v4();
        let v1 = MasterKeys::random("v1");
        let dk = DataKey::generate();
        let sealed = seal(&dk, ctx(tenant, id), b"sk-rotate").unwrap();
        let wrapped_v1 = wrap(&v1, tenant, &dk).unwrap();

        let both = v1.rotated_to(&MasterKeys::random("v2"));
        assert_eq!(both.current_version(), "v2");
        let rewrapped = wrap(&both, tenant, &unwrap(&both, tenant, &wrapped_v1).unwrap()).unwrap();
        assert_eq!(rewrapped.master_version, "v2");

        // The secret was never touched, and opens with the re-wrapped key.
        let dk2 = unwrap(&both, tenant, &rewrapped).unwrap();
        assert_eq!(
            &**open(&dk2, ctx(tenant, id), &sealed).unwrap(),
            b"sk-rotate"
        );
        // Without v1 the old wrapping is unreadable; with only v2 the new one is fine.
        let only_v2 = MasterKeys {
            current: "v2".into(),
            keys: both
                .keys
                .iter()
                .filter(|(v, _)| v == "v2")
                .cloned()
                .collect(),
        };
        assert!(unwrap(&only_v2, tenant, &wrapped_v1).is_err());
        assert!(unwrap(&only_v2, tenant, &rewrapped).is_ok());
    }

    #[test]
    fn master_keys_parse_and_never_print_material() {
        let k1 = STANDARD.encode([7u8; 32]);
        let k2 = STANDARD.encode([9u8; 32]);
        let keys = MasterKeys::parse(&format!("v2:{k2}, v1:{k1}")).unwrap();
        assert_eq!(keys.current_version(), "v2");
        assert!(!format!("{keys:?}").contains(&k1));
        assert!(MasterKeys::parse("v1:short").is_err());
        let err = MasterKeys::parse(&format!("v1:{}", STANDARD.encode([1u8; 16]))).unwrap_err();
        assert!(err.contains("32 bytes") && !err.contains(&STANDARD.encode([1u8; 16])));
        assert!(MasterKeys::parse("").is_err());
        assert!(MasterKeys::parse(&format!("v1:{k1},v1:{k2}")).is_err());
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(constant_time_eq(b"token-abc", b"token-abc"));
        assert!(!constant_time_eq(b"token-abc", b"token-abd"));
        assert!(!constant_time_eq(b"token-abc", b"token-ab"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
