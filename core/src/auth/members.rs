//! Members of a clinic: listing, changing roles and removing, with the rules that keep a
//! clinic manageable (only owners touch owners; the last owner stays).

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{self, By, Event};
use crate::db::{Db, Tx};
use crate::tenancy::{Role, TenantId, UserId};
use crate::{Error, Result};

/// Who is doing something, and with which role in the clinic.
#[derive(Clone, Copy, Debug)]
pub struct Actor {
    pub user: UserId,
    pub role: Role,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: UserId,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub joined_at: OffsetDateTime,
}

impl Actor {
    /// Refuses anyone below admin with a 403 naming what they tried (`"manage members"`).
    pub fn require_admin(self, to: &str) -> Result<()> {
        if self.role.is_admin() {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "Only owners and admins can {to}."
            )))
        }
    }
}

const LAST_OWNER: &str = "A clinic needs at least one owner. Make someone else an owner first.";

/// Everyone in the clinic, owners first, then by name.
pub async fn list(db: &Db, tenant: TenantId, actor: Actor) -> Result<Vec<Member>> {
    actor.require_admin("manage members")?;
    let mut tx = db.begin_tenant(tenant).await?;
    let rows: Vec<(UserId, String, String, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT u.id, u.name, u.email, m.role, m.created_at
           FROM memberships m JOIN users u ON u.id = m.user_id
          ORDER BY CASE m.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, lower(u.name)",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter()
        .map(|(user_id, name, email, role, joined_at)| {
            Ok(Member {
                user_id,
                name,
                email,
                role: role.parse()?,
                joined_at,
            })
        })
        .collect()
}

/// The role `target` holds, locked for the rest of the transaction.
async fn role_of(tx: &mut Tx, target: UserId) -> Result<Role> {
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM memberships WHERE user_id = $1 FOR UPDATE")
            .bind(target)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(role.ok_or(Error::NotFound)?.parse()?)
}

/// A person's email, as the audit log names them.
async fn email_of(tx: &mut Tx, person: UserId) -> Result<String> {
    Ok(sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(person)
        .fetch_optional(&mut **tx)
        .await?
        .unwrap_or_default())
}

/// Owners other than `target`, counted with the owners' rows locked so two concurrent
/// demotions cannot both pass.
async fn other_owners(tx: &mut Tx, target: UserId) -> Result<i64> {
    let owners: Vec<UserId> =
        sqlx::query_scalar("SELECT user_id FROM memberships WHERE role = 'owner' FOR UPDATE")
            .fetch_all(&mut **tx)
            .await?;
    Ok(owners.iter().filter(|u| **u != target).count() as i64)
}

/// Gives `target` a new role in the clinic.
#[tracing::instrument(skip(db))]
pub async fn change_role(
    db: &Db,
    tenant: TenantId,
    actor: Actor,
    target: UserId,
    role: Role,
) -> Result<()> {
    actor.require_admin("manage members")?;
    let mut tx = db.begin_tenant(tenant).await?;
    let current = role_of(&mut tx, target).await?;
    if (current == Role::Owner || role == Role::Owner) && actor.role != Role::Owner {
        return Err(Error::forbidden(
            "Only an owner can make someone an owner or change an owner's role.",
        ));
    }
    if current == role {
        return Ok(());
    }
    if current == Role::Owner && other_owners(&mut tx, target).await? == 0 {
        return Err(Error::Conflict(LAST_OWNER.into()));
    }
    sqlx::query("UPDATE memberships SET role = $2 WHERE user_id = $1")
        .bind(target)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
    let email = email_of(&mut tx, target).await?;
    audit::record(
        &mut tx,
        Some(tenant),
        By::Person(actor.user),
        Event::new("member.role_changed", email)
            .before(json!({ "role": current.as_str() }))
            .after(json!({ "role": role.as_str() })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes `target` from the clinic (their account stays; they may belong to other clinics).
#[tracing::instrument(skip(db))]
pub async fn remove(db: &Db, tenant: TenantId, actor: Actor, target: UserId) -> Result<()> {
    actor.require_admin("manage members")?;
    let mut tx = db.begin_tenant(tenant).await?;
    let current = role_of(&mut tx, target).await?;
    if current == Role::Owner && actor.role != Role::Owner {
        return Err(Error::forbidden("Only an owner can remove an owner."));
    }
    if current == Role::Owner && other_owners(&mut tx, target).await? == 0 {
        return Err(Error::Conflict(LAST_OWNER.into()));
    }
    sqlx::query("DELETE FROM memberships WHERE user_id = $1")
        .bind(target)
        .execute(&mut *tx)
        .await?;
    let email = email_of(&mut tx, target).await?;
    audit::record(
        &mut tx,
        Some(tenant),
        By::Person(actor.user),
        Event::new("member.removed", email).before(json!({ "role": current.as_str() })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
