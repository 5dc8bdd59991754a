//! Sign-in throttling, in Redis so every replica shares the count: per account *from one
//! address*, and per address across accounts. Each attempt increments both counters
//! atomically before the password is checked (so concurrent guesses cannot slip past the
//! limit); a successful sign-in clears the pair's counter and gives the address its attempt
//! back, so only failures accumulate. Counting an account per address locks out whoever
//! guesses, not the account's owner signing in from elsewhere. Sign-ups are limited per
//! address too.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::{Error, Redis, Result};

#[derive(Clone, Copy, Debug)]
pub struct ThrottleLimits {
    /// Failed attempts allowed per account from one address within the window.
    pub per_account: u32,
    /// Failed attempts allowed per client address within the window.
    pub per_address: u32,
    pub window_secs: u64,
    /// Clinics one address may sign up within `signup_window_secs`.
    pub signups_per_address: u32,
    pub signup_window_secs: u64,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            per_account: 10,
            per_address: 100,
            window_secs: 15 * 60,
            signups_per_address: 20,
            signup_window_secs: 3600,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoginThrottle {
    redis: Redis,
    limits: ThrottleLimits,
    script: std::sync::Arc<redis::Script>,
}

const ATTEMPT: &str = r#"
local a = redis.call('INCR', KEYS[1])
if a == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local b = redis.call('INCR', KEYS[2])
if b == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return {a, b, redis.call('TTL', KEYS[1]), redis.call('TTL', KEYS[2])}
"#;

impl LoginThrottle {
    pub fn new(redis: Redis, limits: ThrottleLimits) -> Self {
        Self {
            redis,
            limits,
            script: std::sync::Arc::new(redis::Script::new(ATTEMPT)),
        }
    }

    fn keys(&self, email: &str, addr: Option<IpAddr>) -> (String, String) {
        // Hash the address so no email sits in Redis in the clear.
        let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
        let account: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let addr = addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        (
            self.redis
                .key(&format!("throttle:login:acct:{account}:{addr}")),
            self.redis.key(&format!("throttle:login:addr:{addr}")),
        )
    }

    /// Counts an attempt; refuses it when either counter is over its limit.
    pub async fn attempt(&self, email: &str, addr: Option<IpAddr>) -> Result<()> {
        let (account, address) = self.keys(email, addr);
        let (a, b, ttl_a, ttl_b): (u32, u32, i64, i64) = self
            .script
            .key(&account)
            .key(&address)
            .arg(self.limits.window_secs)
            .invoke_async(&mut self.redis.conn())
            .await?;
        if a > self.limits.per_account {
            return Err(Error::RateLimited {
                retry_after_secs: ttl_a.max(1) as u64,
            });
        }
        if b > self.limits.per_address {
            return Err(Error::RateLimited {
                retry_after_secs: ttl_b.max(1) as u64,
            });
        }
        Ok(())
    }

    /// A successful sign-in: the account starts afresh and the address gets its attempt back.
    pub async fn succeeded(&self, email: &str, addr: Option<IpAddr>) -> Result<()> {
        let (account, address) = self.keys(email, addr);
        let _: () = redis::pipe()
            .atomic()
            .del(&account)
            .ignore()
            .decr(&address, 1)
            .ignore()
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Counts a sign-up from `addr`; refuses it beyond the address's limit.
    pub async fn signup(&self, addr: Option<IpAddr>) -> Result<()> {
        let addr = addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        let key = self.redis.key(&format!("throttle:signup:{addr}"));
        let (n, ttl): (u32, i64) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.limits.signup_window_secs)
            .arg("NX")
            .ignore()
            .ttl(&key)
            .query_async(&mut self.redis.conn())
            .await?;
        if n > self.limits.signups_per_address {
            return Err(Error::RateLimited {
                retry_after_secs: ttl.max(1) as u64,
            });
        }
        Ok(())
    }
}
