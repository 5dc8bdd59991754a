//! The one Redis client: a connection manager (reconnects by itself) and the key prefix that
//! keeps deployments and test runs apart.

use redis::aio::ConnectionManager;

use crate::Result;

#[derive(Clone)]
pub struct Redis {
    /// Behind an `Arc`: a `Redis` is cloned per request in places, and the client's connection
    /// details are strings.
    client: std::sync::Arc<redis::Client>,
    conn: ConnectionManager,
    prefix: std::sync::Arc<str>,
    /// Values every clone shares, one per type ([`Redis::shared`]).
    shared: std::sync::Arc<std::sync::Mutex<Vec<Shared>>>,
}

/// A value of [`Redis::shared`].
type Shared = std::sync::Arc<dyn std::any::Any + Send + Sync>;

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Redis {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        // A lost connection is made again by the next command, in one attempt that the command
        // waits for: while Redis is away, commands fail at once (callers answer "try again
        // shortly") instead of waiting out a backoff (the client's default, a factor of 100 from
        // one second, held a request for a minute or more).
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(std::time::Duration::from_secs(2))
            .set_response_timeout(std::time::Duration::from_secs(5))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self {
            client: std::sync::Arc::new(client),
            conn,
            prefix: prefix.into(),
            shared: Default::default(),
        })
    }

    /// A connection to issue commands on (cheap: it shares one multiplexed connection).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection of its own for subscribing to channels.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        Ok(self.client.get_async_pubsub().await?)
    }

    /// The prefix of every key of this installation.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `prefix + name`.
    pub fn key(&self, name: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + name.len());
        key.push_str(&self.prefix);
        key.push_str(name);
        key
    }

    /// The value of type `T` that every clone of this handle shares, made by the first to ask
    /// for it: state a process keeps beside its connection for the modules that use it (the
    /// usage events its settles handed to the ledger stream, which its ledger writer takes:
    /// `metering::ledger::Handed`). Asked for once by whoever keeps it, not per command.
    pub fn shared<T: Default + Send + Sync + 'static>(&self) -> std::sync::Arc<T> {
        let mut values = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = values.iter().find_map(|v| v.clone().downcast::<T>().ok()) {
            return value;
        }
        let value = std::sync::Arc::new(T::default());
        values.push(value.clone());
        value
    }

    /// Readiness: Redis answers PING.
    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }
}
