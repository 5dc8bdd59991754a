//! Sign-in throttling against the real Redis.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use tessera_core::auth::throttle::{LoginThrottle, ThrottleLimits};
use tessera_core::Error;

const ADDR: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)));

#[tokio::test]
async fn an_account_is_throttled_after_its_limit_of_failures() {
    let throttle = LoginThrottle::new(
        common::redis().await,
        ThrottleLimits {
            per_account: 3,
            per_address: 100,
            window_secs: 60,
            ..Default::default()
        },
    );
    for _ in 0..3 {
        throttle.attempt("Victim@example.com", ADDR).await.unwrap();
    }
    let err = throttle
        .attempt("victim@example.com", ADDR)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { retry_after_secs } if retry_after_secs > 0 && retry_after_secs <= 60)
    );
    assert!(matches!(
        err,
        Error::RateLimited { .. } | Error::OverBudget { .. }
    ));
    // Another account from the same address is unaffected, and so is this account from
    // another address (its owner is not locked out by someone else's guesses).
    throttle
        .attempt("someone-else@example.com", ADDR)
        .await
        .unwrap();
    let elsewhere = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    throttle
        .attempt("victim@example.com", elsewhere)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_successful_sign_in_starts_the_account_afresh() {
    let throttle = LoginThrottle::new(
        common::redis().await,
        ThrottleLimits {
            per_account: 2,
            per_address: 100,
            window_secs: 60,
            ..Default::default()
        },
    );
    throttle.attempt("a@example.com", ADDR).await.unwrap();
    throttle.attempt("a@example.com", ADDR).await.unwrap();
    throttle.succeeded("a@example.com", ADDR).await.unwrap();
    throttle.attempt("a@example.com", ADDR).await.unwrap();
}

#[tokio::test]
async fn an_address_is_throttled_across_accounts() {
    let throttle = LoginThrottle::new(
        common::redis().await,
        ThrottleLimits {
            per_account: 100,
            per_address: 5,
            window_secs: 60,
            ..Default::default()
        },
    );
    for i in 0..5 {
        throttle
            .attempt(&format!("user{i}@example.com"), ADDR)
            .await
            .unwrap();
    }
    assert!(throttle.attempt("user99@example.com", ADDR).await.is_err());
    let other = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    throttle.attempt("user99@example.com", other).await.unwrap();
}

#[tokio::test]
async fn concurrent_guesses_cannot_pass_the_limit() {
    let throttle = LoginThrottle::new(
        common::redis().await,
        ThrottleLimits {
            per_account: 5,
            per_address: 1000,
            window_secs: 60,
            ..Default::default()
        },
    );
    let attempts = (0..50).map(|_| {
        let t = throttle.clone();
        tokio::spawn(async move { t.attempt("target@example.com", ADDR).await.is_ok() })
    });
    let mut allowed = 0;
    for a in attempts {
        allowed += a.await.unwrap() as usize;
    }
    assert_eq!(allowed, 5);
}
