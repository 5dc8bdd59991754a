//! The session store against the real Redis.

use server::session_store::RedisSessionStore;
use tessera_core::Redis;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::SessionStore;

/// Redis with a key prefix of its own, so tests never see each other's keys.
async fn redis() -> Redis {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Redis::connect(&url, &format!("test:{}:", uuid::Uuid::new_v4()))
        .await
        .expect("connect to Redis")
}

#[tokio::test]
async fn sessions_round_trip_and_expire() {
    let store = RedisSessionStore::new(redis().await);
    let mut record = Record {
        id: Id::default(),
        data: [("user_id".to_string(), serde_json::json!("abc"))]
            .into_iter()
            .collect(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(5),
    };
    store.create(&mut record).await.unwrap();
    assert_eq!(store.load(&record.id).await.unwrap(), Some(record.clone()));

    record
        .data
        .insert("tenant_id".into(), serde_json::json!("def"));
    store.save(&record).await.unwrap();
    assert_eq!(store.load(&record.id).await.unwrap().unwrap().data.len(), 2);

    store.delete(&record.id).await.unwrap();
    assert_eq!(store.load(&record.id).await.unwrap(), None);

    let expired = Record {
        expiry_date: time::OffsetDateTime::now_utc() - time::Duration::seconds(1),
        ..record
    };
    store.save(&expired).await.unwrap();
    assert_eq!(store.load(&expired.id).await.unwrap(), None);
}
