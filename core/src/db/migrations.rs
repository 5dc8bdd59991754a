//! The schema's migrations (`migrations/`, embedded in the binary) and the record of how each
//! one landed. A landed migration never changes: a schema change is a new migration, and a
//! test holds every file to the checksum in [`LANDED`].

use sqlx::PgPool;

use crate::Result;

/// The migrations in `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Every landed migration: its version and the SHA-384 of its file (hex), as sqlx records it
/// in `_sqlx_migrations`. A new migration is added here when it lands.
pub const LANDED: &[(i64, &str)] = &[
    (20261129000001, "1253998a566ba2bd796b15fbc3c7ef5754506da5adfb8cbebfdd565769aa886c68642b027673040c0aa04383e65f07a5"),
    (20261129000002, "435ed92680eabbba1bf9b5bd69ae62ef43229e03736fb021fdb3f7680d92e19e556d768b7d50d0bc976c0542df2447a5"),
    (20261129000003, "885ff7acebcd9a0f943b62e5a8461ccc2a45bb4328e773a35d9a3f6da680930eab8e45c9314a0b515e7fc3a2c3b13f1c"),
    (20261129000004, "88a151d011effbb6c97df9c109252885539f5a667912fd85cb02fe27662ff78014e04531c1f6127905e89e5d86efd102"),
    (20261129000005, "cce4576214eb020b71b029adf67c95ff5c13c8e1e29efbbf1a72f525fcf25eed7cfc7ebbaf8101e39a44bb44311fc6f5"),
    (20261129000006, "30a073ecd9e3c922f945a93a92e47fab0478b6326260e14c7fc78e3e438ee6fb4342b6260a92727e98c4b69a6f1b90ba"),
    (20261129000007, "a2f9e1d51645dc447eb27478904aff88747a8bc493dd996033f01ba07aad340b820bb8724e3b15fb9a8acce21ede088b"),
    (20261202000008, "e6c3b9882387fe1dfaf4f861917f19cfff2e67971366bc4078a7525285333848d8902301ffe5419929f690340fb74a8d"),
    (20261202000009, "bd45191af4f91d4752832cb1f59236cd0e874e5059663f013ede5e228d4f69e635d177e735d8032464eb6d18331ebd4c"),
    (20261202000010, "769e8401356cec4f20340d715760fdca040847a8a1b305d77cb3c54de3ecd4996c0807bbe3994d7b0e6f28f834d6578b"),
    (20261202000011, "5c4cb8b675a4e26d24fcb94a1e53f04cb57ec429226580bd95d3f7faf55e94c990e22dfe6c471d5398531ff991f792a1"),
    (20261203000012, "3725cd3ecaba498e48bf14785077e06b69073aa29945e4de7412b34d1095fa379cf35a7aa4f1b221db07a12425f87885"),
    (20261203000013, "0f34db0a9efde2e2aed5c2bfe79feb8ec7819dcdb3e02c5e691610e69ab0dc955844de960f13a112573cbb5846a4f944"),
    (20261203000014, "ad1a94e5c507362fd775bc4eaf95d5cf1ec72ccf81b1c1c9359daf988068a1248f1f404452525166e7bd9282ee5b594c"),
    (20261204000015, "d446e298a3d49fe82db189f603457c9cf7fd7d7add83025e7d30d25fa625310603a52608e65b08f5b893e7b6e6f91f52"),
    (20261205000016, "d31d1a6da8bab56ba57bcd67a881f02f0bb83ef6a404fb73af3e3b712380ef6fe4d34e8c471b7038bf9ae5a7c8380adc"),
    (20261206000017, "c1f5520b61990b478e0575c11068ad268032d275dc24226731f1aea0efbc948d79d1290b8403ddb739a470df685d589d"),
];

/// Checksums of edited copies of landed migrations that reached databases before the edit
/// was undone: migration 5 once carried the `generating` status that migration 8 now adds. A
/// database that applied such a copy has the landed checksum put back before migrating (its
/// schema then equals the landed one's after migration 8), instead of refusing to start.
const EDITED: &[(i64, &str)] = &[(
    20261129000005,
    "127fb2c9a716a03182ba0fabd5bd019c2ef22eaefcd5ce5246ea0f9c7736149bf2b1036f46de922b9873ce2d3ed580d5",
)];

/// Applies pending migrations on a pool connected as the schema owner, first putting back the
/// landed checksum of any migration a database applied in an edited copy.
pub async fn migrate_pool(pool: &PgPool) -> Result<()> {
    let recorded: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if recorded {
        for (version, edited) in EDITED {
            let landed = LANDED
                .iter()
                .find(|(v, _)| v == version)
                .map(|(_, sum)| *sum)
                .unwrap_or_default();
            let repaired = sqlx::query(
                "UPDATE _sqlx_migrations SET checksum = decode($2, 'hex')
                  WHERE version = $1 AND checksum = decode($3, 'hex')",
            )
            .bind(version)
            .bind(landed)
            .bind(edited)
            .execute(pool)
            .await?
            .rows_affected();
            if repaired > 0 {
                tracing::info!(
                    version,
                    "migration applied from an edited copy: landed checksum put back"
                );
            }
        }
    }
    MIGRATOR.run(pool).await?;
    Ok(())
}
