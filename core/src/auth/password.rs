//! Passwords: the rule people see, argon2id hashing off the async runtime, and verification
//! that takes about as long for an unknown account as for a known one.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use secrecy::{ExposeSecret, SecretString};

use crate::{Error, Result};

pub const MIN_LEN: usize = 10;
pub const MAX_LEN: usize = 128;
/// The rule, as shown next to every password field.
pub const RULE: &str = "Use at least 10 characters (at most 128).";

/// A password that meets [`RULE`]. Its `Debug` prints nothing.
#[derive(Clone)]
pub struct Password(SecretString);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// A new password, checked against the rule.
    pub fn new(raw: &str) -> Result<Self> {
        let len = raw.chars().count();
        if len < MIN_LEN {
            return Err(Error::invalid(format!(
                "That password is too short. {RULE}"
            )));
        }
        if len > MAX_LEN {
            return Err(Error::invalid(format!("That password is too long. {RULE}")));
        }
        if raw.trim().is_empty() {
            return Err(Error::invalid(format!(
                "A password cannot be only spaces. {RULE}"
            )));
        }
        Ok(Self(SecretString::from(raw)))
    }

    /// A password typed at sign-in: not checked against the rule (it may predate it), only
    /// bounded so a huge input cannot make hashing expensive.
    pub fn attempt(raw: &str) -> Self {
        let bounded: String = raw.chars().take(MAX_LEN * 2).collect();
        Self(SecretString::from(bounded))
    }

    fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// Hashes with argon2id (the crate's defaults: 19 MiB, 2 passes) on a blocking thread.
pub async fn hash(password: &Password) -> Result<String> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(format!("password hashing task failed: {e}")))?
}

/// Verifies on a blocking thread. With no stored hash (unknown account) it verifies against a
/// dummy hash and returns false, so both cases take about the same time.
pub async fn verify(password: &Password, stored: Option<String>) -> Result<bool> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| dummy_hash().to_string());
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| Error::Internal(format!("stored password hash is malformed: {e}")))?;
        let ok = Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok();
        Ok(known && ok)
    })
    .await
    .map_err(|e| Error::Internal(format!("password verification task failed: {e}")))?
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"no account has this password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_verifies_only_the_same_password() {
        let pw = Password::new("correct horse battery").unwrap();
        let h = hash(&pw).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify(&pw, Some(h.clone())).await.unwrap());
        assert!(
            !verify(&Password::attempt("correct horse battery!"), Some(h))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn unknown_account_never_verifies() {
        let pw = Password::attempt("no account has this password");
        assert!(!verify(&pw, None).await.unwrap());
    }

    #[test]
    fn weak_passwords_are_refused_with_the_rule() {
        let err = Password::new("short").unwrap_err();
        assert!(err.to_string().contains(RULE));
        assert!(Password::new(&"x".repeat(MAX_LEN + 1)).is_err());
        assert!(Password::new(&" ".repeat(12)).is_err());
        assert!(Password::new("long enough pw").is_ok());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let pw = Password::new("super secret words").unwrap();
        assert!(!format!("{pw:?}").contains("secret"));
    }

    #[test]
    fn salts_differ() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pw = Password::new("same password twice").unwrap();
        let (a, b) = rt.block_on(async { (hash(&pw).await.unwrap(), hash(&pw).await.unwrap()) });
        assert_ne!(a, b);
    }
}
