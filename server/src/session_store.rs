//! Browser sessions in Redis, for `tower-sessions`, over the same Redis client as everything
//! else. Each session is one JSON value under `<prefix>session:<id>` that expires with the
//! session, so Redis drops abandoned sessions by itself.
//!
//! Written here rather than taken from `tower-sessions-redis-store`: that crate brings its own
//! Redis client (`fred`), a second connection pool and a second set of reconnection rules next
//! to the `redis` connection manager everything else uses, for some sixty lines of code.

use async_trait::async_trait;
use redis::AsyncCommands;
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, SessionStore};

use tessera_core::Redis;

#[derive(Clone, Debug)]
pub struct RedisSessionStore {
    redis: Redis,
}

impl RedisSessionStore {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    fn key(&self, id: &Id) -> String {
        self.redis.key(&format!("session:{id}"))
    }

    /// Writes a record; with `only_new`, only if no session has its id yet.
    async fn write(&self, record: &Record, only_new: bool) -> session_store::Result<bool> {
        let ttl = (record.expiry_date - OffsetDateTime::now_utc()).whole_seconds();
        if ttl <= 0 {
            // Already expired: make sure nothing stays behind.
            self.delete(&record.id).await?;
            return Ok(true);
        }
        let value = serde_json::to_string(record)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&record.id)).arg(value).arg("EX").arg(ttl);
        if only_new {
            cmd.arg("NX");
        }
        let reply: Option<String> = cmd
            .query_async(&mut self.redis.conn())
            .await
            .map_err(backend)?;
        Ok(reply.is_some())
    }
}

fn backend(e: redis::RedisError) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // Ids are 128 random bits; a collision is practically impossible, but never overwrite.
        while !self.write(record, true).await? {
            record.id = Id::default();
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.write(record, false).await.map(|_| ())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let value: Option<String> = self.redis.conn().get(self.key(id)).await.map_err(backend)?;
        value
            .map(|v| {
                serde_json::from_str(&v).map_err(|e| session_store::Error::Decode(e.to_string()))
            })
            .transpose()
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let _: i64 = self.redis.conn().del(self.key(id)).await.map_err(backend)?;
        Ok(())
    }
}
