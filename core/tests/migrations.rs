//! Landed migrations never change, and a database that applied the once-edited migration 5
//! still starts.

use std::path::{Path, PathBuf};

use sqlx::PgPool;
use tessera_core::db::{self, LANDED, MIGRATOR};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn landed_migrations_keep_their_checksums() {
    for m in MIGRATOR.iter() {
        let Some((_, landed)) = LANDED.iter().find(|(v, _)| *v == m.version) else {
            panic!(
                "migration {} is new: add it to db::LANDED with checksum {}",
                m.version,
                hex(&m.checksum)
            );
        };
        assert_eq!(
            hex(&m.checksum),
            *landed,
            "migration {} changed after it landed: undo the edit and make the change in a new migration",
            m.version
        );
    }
    for (version, _) in LANDED {
        assert!(
            MIGRATOR.iter().any(|m| m.version == *version),
            "landed migration {version} is missing from migrations/"
        );
    }
}

/// Migrations 1 to 7 in a folder of their own: as they landed, or with migration 5 as a
/// database saw it between its edit and the undoing of that edit.
fn migrations_up_to_7(edited_5: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("tessera-migrations-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(root.join("../migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let version: i64 = name[..14].parse().unwrap();
        if version <= 20261129000007 {
            std::fs::copy(&path, dir.join(&name)).unwrap();
        }
    }
    if edited_5 {
        std::fs::copy(
            root.join("tests/fixtures/20261129000005_agents_and_conversations.edited.sql"),
            dir.join("20261129000005_agents_and_conversations.sql"),
        )
        .unwrap();
    }
    dir
}

async fn apply(pool: &PgPool, dir: &Path) {
    let old = sqlx::migrate::Migrator::new(dir).await.unwrap();
    assert_eq!(old.iter().count(), 7);
    old.run(pool).await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}

#[sqlx::test(migrations = false)]
async fn a_database_migrated_with_the_edited_migration_5_still_migrates(pool: PgPool) {
    apply(&pool, &migrations_up_to_7(true)).await;
    // Plain sqlx refuses it: the recorded checksum of migration 5 differs from the file's.
    assert!(MIGRATOR.run(&pool).await.is_err());

    db::migrate_pool(&pool).await.unwrap();

    let recorded: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(recorded.len(), LANDED.len());
    for ((version, checksum), (landed_version, landed)) in recorded.iter().zip(LANDED) {
        assert_eq!(version, landed_version);
        assert_eq!(hex(checksum), *landed);
    }
    // Migrating again changes nothing.
    db::migrate_pool(&pool).await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_database_migrated_before_the_edit_migrates(pool: PgPool) {
    apply(&pool, &migrations_up_to_7(false)).await;
    db::migrate_pool(&pool).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count as usize, LANDED.len());
}
