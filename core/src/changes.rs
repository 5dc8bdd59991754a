//! Announcements of changes that in-process caches must hear about: a clinic's provider keys,
//! agents, plan, spending cap or status changed, an API key was revoked, or a flag changed.
//!
//! The core's writes announce their own changes ([`Changes::announce`]): subscribers in this
//! process hear at once, and every other replica hears over Redis pub/sub ([`Changes::listen`]).
//! While the subscription is down a replica cannot know what it missed, so its subscribers are
//! told [`Change::Everything`] when it breaks and again when it is back.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use uuid::Uuid;

use crate::tenancy::TenantId;
use crate::Redis;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A clinic's provider keys, agents, plan, spending cap or status.
    Tenant(TenantId),
    /// An API key was revoked.
    ApiKey(Uuid),
    /// A feature flag was created or changed.
    Flags,
    /// Anything may have changed (announcements were missed); never sent to other replicas.
    Everything,
}

impl Change {
    fn encode(self) -> Option<String> {
        match self {
            Change::Tenant(t) => Some(format!("tenant:{t}")),
            Change::ApiKey(k) => Some(format!("api_key:{k}")),
            Change::Flags => Some("flags".into()),
            Change::Everything => None,
        }
    }

    fn decode(s: &str) -> Option<Self> {
        if s == "flags" {
            return Some(Change::Flags);
        }
        let (kind, id) = s.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "tenant" => Some(Change::Tenant(TenantId(id))),
            "api_key" => Some(Change::ApiKey(id)),
            _ => None,
        }
    }
}

type Subscriber = Arc<dyn Fn(Change) + Send + Sync>;

/// Announces changes here and to every replica. Cheap to clone.
#[derive(Clone)]
pub struct Changes {
    /// `None`: this process only (tests, one-off tools).
    redis: Option<Redis>,
    subscribers: Arc<RwLock<Vec<Subscriber>>>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").finish_non_exhaustive()
    }
}

impl Changes {
    /// Announces here and, over `redis`, to every replica.
    pub fn new(redis: Redis) -> Self {
        Self {
            redis: Some(redis),
            subscribers: Arc::default(),
        }
    }

    /// Announces to this process's subscribers only.
    pub fn local() -> Self {
        Self {
            redis: None,
            subscribers: Arc::default(),
        }
    }

    fn channel(redis: &Redis) -> String {
        redis.key("invalidate")
    }

    /// Calls `f` for every change, announced here or by another replica.
    pub fn subscribe(&self, f: impl Fn(Change) + Send + Sync + 'static) {
        self.subscribers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Arc::new(f));
    }

    fn notify(&self, change: Change) {
        let subscribers = self
            .subscribers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for s in subscribers {
            s(change);
        }
    }

    /// Tells this process's subscribers at once, and every other replica over Redis. A failed
    /// publication is logged: other replicas' caches expire within a minute anyway.
    pub async fn announce(&self, change: Change) {
        self.notify(change);
        let (Some(redis), Some(payload)) = (&self.redis, change.encode()) else {
            return;
        };
        let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(Self::channel(redis))
            .arg(payload)
            .query_async(&mut redis.conn())
            .await;
        if let Err(e) = published {
            tracing::warn!(error = ?e, "could not announce a change to other replicas; their caches expire within a minute");
        }
    }

    /// Listens for changes announced by any replica, for as long as the process runs (at once
    /// done for [`Changes::local`]).
    pub fn listen(&self) -> tokio::task::JoinHandle<()> {
        let changes = self.clone();
        tokio::spawn(async move {
            let Some(redis) = changes.redis.clone() else {
                return;
            };
            loop {
                match redis.pubsub().await {
                    Ok(mut pubsub) => match pubsub.subscribe(Self::channel(&redis)).await {
                        Ok(()) => {
                            // Anything announced while unsubscribed was missed.
                            changes.notify(Change::Everything);
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                let change = msg
                                    .get_payload::<String>()
                                    .ok()
                                    .and_then(|p| Change::decode(&p));
                                if let Some(change) = change {
                                    changes.notify(change);
                                }
                            }
                            tracing::warn!("change announcements: subscription ended");
                        }
                        Err(e) => {
                            tracing::warn!(error = ?e, "change announcements: subscribe failed")
                        }
                    },
                    Err(e) => tracing::warn!(error = ?e, "change announcements: cannot connect"),
                }
                changes.notify(Change::Everything);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_the_wire() {
        let t = Change::Tenant(TenantId::new());
        assert_eq!(Change::decode(&t.encode().unwrap()), Some(t));
        let k = Change::ApiKey(Uuid::new_v4());
        assert_eq!(Change::decode(&k.encode().unwrap()), Some(k));
        assert_eq!(
            Change::decode(&Change::Flags.encode().unwrap()),
            Some(Change::Flags)
        );
        assert_eq!(Change::Everything.encode(), None);
        assert_eq!(Change::decode("tenant:nope"), None);
    }
}
