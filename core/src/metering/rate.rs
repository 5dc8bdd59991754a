//! Requests per minute through the API, per clinic and per API key, from the plan: one Redis
//! script counts both in the current minute and says how long until the next.

use std::sync::{Arc, LazyLock};

use uuid::Uuid;

use super::{Limits, Metering};
use crate::tenancy::TenantId;
use crate::{Error, Result};

// KEYS: the clinic's and the key's counters for this minute. ARGV: their limits (-1: none),
// the counters' lifetime. Counts the request, and returns both counts.
const COUNT: &str = r#"
local a = redis.call('INCR', KEYS[1])
if a == 1 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
local b = 0
if KEYS[2] ~= KEYS[1] then
  b = redis.call('INCR', KEYS[2])
  if b == 1 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
end
return {a, b}
"#;

static SCRIPT: LazyLock<Arc<redis::Script>> = LazyLock::new(|| Arc::new(redis::Script::new(COUNT)));

impl Metering {
    /// The per-minute counters of a clinic and of its API key (the clinic's again without one)
    /// for the minute of `now` (seconds since the epoch).
    pub(super) fn rate_keys(
        &self,
        tenant: TenantId,
        api_key: Option<Uuid>,
        now: i64,
    ) -> (String, String) {
        let minute = now.div_euclid(60);
        let clinic = self.redis.key(&format!("rate:t:{tenant}:{minute}"));
        let key = match api_key {
            Some(k) => self.redis.key(&format!("rate:k:{k}:{minute}")),
            None => clinic.clone(),
        };
        (clinic, key)
    }

    /// Counts one API request of `tenant` (made with `api_key`), or refuses it with
    /// [`Error::RateLimited`] when the clinic or the key is over its plan's limit this minute.
    pub async fn admit(
        &self,
        tenant: TenantId,
        api_key: Option<Uuid>,
        limits: &Limits,
    ) -> Result<()> {
        if limits.requests_per_minute.is_none() && limits.key_requests_per_minute.is_none() {
            return Ok(());
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (clinic_key, key_key) = self.rate_keys(tenant, api_key, now);
        let (clinic, key): (i64, i64) = SCRIPT
            .key(&clinic_key)
            .key(&key_key)
            .arg(limits.requests_per_minute.map_or(-1, i64::from))
            .arg(limits.key_requests_per_minute.map_or(-1, i64::from))
            .arg(61)
            .invoke_async(&mut self.redis.conn())
            .await?;
        let over = |count: i64, limit: Option<i32>| limit.is_some_and(|l| count > i64::from(l));
        if over(clinic, limits.requests_per_minute)
            || (api_key.is_some() && over(key, limits.key_requests_per_minute))
        {
            return Err(Error::RateLimited {
                retry_after_secs: (60 - now.rem_euclid(60)).max(1) as u64,
            });
        }
        Ok(())
    }
}
