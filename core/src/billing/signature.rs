//! Billing with Stripe. So far: verifying a webhook's `Stripe-Signature` exactly as Stripe
//! specifies it.
//!
//! The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...]` (other schemes, such as `v0`, are
//! ignored). The signed payload is `"{t}.{raw body}"`, signed with HMAC-SHA256 under the
//! endpoint's secret. An event is accepted when any `v1` matches under any of the configured
//! secrets (more than one while a secret is being rolled) and `t` is within the tolerance of
//! now (300 s by default), so a captured delivery cannot be replayed later. Signatures are
//! compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Stripe's default tolerance for the signature's timestamp.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// Why a webhook delivery was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing or malformed")]
    Malformed,
    #[error("the Stripe-Signature timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches the payload")]
    Mismatch,
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The signature Stripe would send for `payload` at `timestamp` under `secret`, as hex.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Verifies a delivery's `Stripe-Signature` header against its raw body, at `now` (Unix
/// seconds), under any of `secrets`.
pub fn verify_signature(
    header: &str,
    payload: &[u8],
    secrets: &[&str],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" => {
                if let Some(bytes) = hex_decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    // The timestamp is the sender's: `now - t` must not overflow for any value it holds.
    if now
        .checked_sub(timestamp)
        .is_none_or(|age| age.unsigned_abs() > tolerance_secs.unsigned_abs())
    {
        return Err(SignatureError::Stale);
    }
    let mut matched = false;
    for secret in secrets {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        let expected = mac.finalize().into_bytes();
        for sig in &signatures {
            // Every candidate is compared, in constant time, whatever matched before.
            matched |= bool::from(expected.as_slice().ct_eq(sig.as_slice()));
        }
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_current";
    const OLD: &str = "whsec_test_previous";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;
    const NOW: i64 = 1_800_000_000;

    fn header(secret: &str, t: i64, body: &[u8]) -> String {
        format!("t={t},v1={}", sign(secret, t, body))
    }

    #[test]
    fn a_valid_signature_passes() {
        let h = header(SECRET, NOW, BODY);
        assert_eq!(verify_signature(&h, BODY, &[SECRET], NOW + 10, 300), Ok(()));
        // A known vector, independent of `sign`:
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec_test
        let known =
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91";
        assert_eq!(
            verify_signature(known, b"{}", &["whsec_test"], 1_700_000_100, 300),
            Ok(())
        );
    }

    #[test]
    fn a_tampered_payload_fails() {
        let h = header(SECRET, NOW, BODY);
        let tampered = br#"{"id":"evt_1","type":"invoice.payment_failed"}"#;
        assert_eq!(
            verify_signature(&h, tampered, &[SECRET], NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&h, BODY, &["whsec_wrong"], NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_stale_or_future_timestamp_fails() {
        let h = header(SECRET, NOW, BODY);
        assert_eq!(
            verify_signature(&h, BODY, &[SECRET], NOW + 301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(&h, BODY, &[SECRET], NOW - 301, 300),
            Err(SignatureError::Stale)
        );
        // Timestamps at the ends of the range are refused, not an overflow.
        for t in [i64::MIN, i64::MAX] {
            let h = format!("t={t},v1={}", sign(SECRET, t, BODY));
            assert_eq!(
                verify_signature(&h, BODY, &[SECRET], NOW, 300),
                Err(SignatureError::Stale)
            );
        }
    }

    #[test]
    fn rotated_secrets_and_several_signatures_are_accepted() {
        // Signed with the old secret while the endpoint already has the new one first.
        let h = header(OLD, NOW, BODY);
        assert_eq!(verify_signature(&h, BODY, &[SECRET, OLD], NOW, 300), Ok(()));
        // Stripe sends one v1 per active secret during a roll; any may match.
        let both = format!(
            "t={NOW},v1={},v1={},v0=ignored",
            sign("whsec_other", NOW, BODY),
            sign(SECRET, NOW, BODY)
        );
        assert_eq!(verify_signature(&both, BODY, &[SECRET], NOW, 300), Ok(()));
    }

    #[test]
    fn malformed_headers_fail() {
        for h in [
            "",
            "t=abc,v1=00",
            &format!("t={NOW}"),
            "v1=zz",
            &format!("t={NOW},v1=abc"),
        ] {
            assert!(
                verify_signature(h, BODY, &[SECRET], NOW, 300).is_err(),
                "{h}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_header_is_checked_without_panic(header in ".{0,200}", body in ".{0,50}") {
            let verdict = verify_signature(&header, body.as_bytes(), &[SECRET], NOW, 300);
            proptest::prop_assert!(verdict.is_err());
        }
    }
}
