//! Invitations by link. The link carries a random token; only its SHA-256 is stored, so the
//! database cannot hand out working links. A link works once, until it expires or is revoked.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::members::Actor;
use super::throttle::LoginThrottle;
use super::{accounts, password, Email, Password};
use crate::audit::{self, By, Event};
use crate::db::{set_tenant, Db};
use crate::tenancy::{InvitationId, Role, TenantId, UserId};
use crate::{Error, Result};

pub const EXPIRED: &str = "This invitation has expired. Ask the clinic for a new one.";
pub const USED: &str = "This invitation has already been used. Sign in instead.";
pub const REVOKED: &str = "This invitation was withdrawn. Ask the clinic for a new one.";

/// A pending invitation, as admins see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: InvitationId,
    pub email: String,
    pub role: Role,
    pub expires_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
}

/// A just-created invitation with its token, which is shown once and never stored.
#[derive(Debug)]
pub struct NewInvitation {
    pub invitation: Invitation,
    pub token: String,
}

/// What the invitee sees before accepting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationView {
    pub clinic_name: String,
    pub email: String,
    pub role: Role,
}

fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.trim().as_bytes()).to_vec()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Invites `email` to the clinic with `role`. Re-inviting replaces any pending invitation
/// for the same address, so only the newest link works.
#[tracing::instrument(skip(db))]
pub async fn create(
    db: &Db,
    tenant: TenantId,
    actor: Actor,
    email: &str,
    role: Role,
    ttl: time::Duration,
) -> Result<NewInvitation> {
    actor.require_admin("invite people")?;
    if role == Role::Owner && actor.role != Role::Owner {
        return Err(Error::forbidden("Only an owner can invite another owner."));
    }
    let email = Email::parse(email)?;
    let mut tx = db.begin_tenant(tenant).await?;
    let already: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id WHERE lower(u.email) = $1)",
    )
    .bind(email.normalized())
    .fetch_one(&mut *tx)
    .await?;
    if already {
        return Err(Error::Conflict(format!(
            "{email} is already a member of this clinic."
        )));
    }
    sqlx::query(
        "UPDATE invitations SET revoked_at = now()
          WHERE lower(email) = $1 AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(email.normalized())
    .execute(&mut *tx)
    .await?;
    let token = new_token();
    let id = InvitationId::new();
    let (expires_at, created_at): (OffsetDateTime, OffsetDateTime) = sqlx::query_as(
        "INSERT INTO invitations (id, tenant_id, email, role, token_hash, invited_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
         RETURNING expires_at, created_at",
    )
    .bind(id)
    .bind(tenant)
    .bind(email.as_str())
    .bind(role.as_str())
    .bind(hash_token(&token))
    .bind(actor.user)
    .bind(ttl.as_seconds_f64())
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        Some(tenant),
        By::Person(actor.user),
        Event::new("invitation.created", email.as_str()).after(json!({ "role": role.as_str() })),
    )
    .await?;
    tx.commit().await?;
    Ok(NewInvitation {
        invitation: Invitation {
            id,
            email: email.to_string(),
            role,
            expires_at,
            created_at,
        },
        token,
    })
}

/// Invitations not yet accepted, revoked or expired, newest first.
pub async fn pending(db: &Db, tenant: TenantId, actor: Actor) -> Result<Vec<Invitation>> {
    actor.require_admin("see invitations")?;
    let mut tx = db.begin_tenant(tenant).await?;
    let rows: Vec<(InvitationId, String, String, OffsetDateTime, OffsetDateTime)> = sqlx::query_as(
        "SELECT id, email, role, expires_at, created_at FROM invitations
          WHERE accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now()
          ORDER BY created_at DESC",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter()
        .map(|(id, email, role, expires_at, created_at)| {
            Ok(Invitation {
                id,
                email,
                role: role.parse()?,
                expires_at,
                created_at,
            })
        })
        .collect()
}

/// Withdraws a pending invitation; its link stops working.
pub async fn revoke(db: &Db, tenant: TenantId, actor: Actor, id: InvitationId) -> Result<()> {
    actor.require_admin("withdraw invitations")?;
    let mut tx = db.begin_tenant(tenant).await?;
    let email: Option<String> = sqlx::query_scalar("UPDATE invitations SET revoked_at = now() WHERE id = $1 AND accepted_at IS NULL AND revoked_at IS NULL RETURNING email")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let email = email.ok_or(Error::NotFound)?;
    audit::record(
        &mut tx,
        Some(tenant),
        By::Person(actor.user),
        Event::new("invitation.revoked", email),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct InvitationRow {
    id: InvitationId,
    tenant_id: TenantId,
    email: String,
    role: String,
    expired: bool,
    accepted: bool,
    revoked: bool,
}

// Runs in an invitation-scoped transaction, where row-level security shows only the row whose
// token hash matches; the clinic's name is read after switching to that clinic.
const BY_TOKEN: &str = "SELECT id, tenant_id, email, role,
        expires_at <= now() AS expired, accepted_at IS NOT NULL AS accepted,
        revoked_at IS NOT NULL AS revoked
   FROM invitations WHERE token_hash = $1";

async fn clinic_name(tx: &mut crate::db::Tx, tenant: TenantId) -> Result<String> {
    set_tenant(tx, tenant).await?;
    Ok(sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_one(&mut **tx)
        .await?)
}

fn usable(row: &InvitationRow) -> Result<()> {
    if row.accepted {
        Err(Error::Gone(USED.into()))
    } else if row.revoked {
        Err(Error::Gone(REVOKED.into()))
    } else if row.expired {
        Err(Error::Gone(EXPIRED.into()))
    } else {
        Ok(())
    }
}

async fn existing_user(db: &Db, email: &str) -> Result<Option<(UserId, String)>> {
    Ok(
        sqlx::query_as("SELECT id, password_hash FROM users WHERE lower(email) = lower($1)")
            .bind(email)
            .fetch_optional(db.pool())
            .await?,
    )
}

/// What an invitation link offers, or why it no longer works.
pub async fn lookup(db: &Db, token: &str) -> Result<InvitationView> {
    let hash = hash_token(token);
    let mut tx = db.begin_invitation(&hash).await?;
    let row: InvitationRow = sqlx::query_as(BY_TOKEN)
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound)?;
    usable(&row)?;
    let clinic_name = clinic_name(&mut tx, row.tenant_id).await?;
    tx.commit().await?;
    // Whether the invitee already has an account is not said: the link's holder (the inviter
    // too) must not learn it.
    Ok(InvitationView {
        clinic_name,
        email: row.email,
        role: row.role.parse()?,
    })
}

/// Accepts an invitation from a browser at `addr`: attempts count against the invited email
/// and the address like sign-in attempts, so an existing account's password cannot be guessed
/// through the link.
pub async fn accept_throttled(
    db: &Db,
    throttle: &LoginThrottle,
    addr: Option<IpAddr>,
    token: &str,
    name: &str,
    password: &str,
) -> Result<(UserId, TenantId)> {
    let email = lookup(db, token).await?.email;
    throttle.attempt(&email, addr).await?;
    let accepted = accept(db, token, name, password).await?;
    throttle.succeeded(&email, addr).await?;
    Ok(accepted)
}

/// Accepts an invitation. A new invitee chooses a name and password; someone who already has
/// an account confirms with their password. Returns the member and the clinic joined.
#[tracing::instrument(skip_all)]
pub async fn accept(
    db: &Db,
    token: &str,
    name: &str,
    password: &str,
) -> Result<(UserId, TenantId)> {
    let hash = hash_token(token);
    let mut tx = db.begin_invitation(&hash).await?;
    let found: InvitationRow = sqlx::query_as(BY_TOKEN)
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound)?;
    // The link's holder may only read the invitation: it is locked and used in its clinic's
    // scope, where it is read again (so two acceptances at once cannot both pass).
    set_tenant(&mut tx, found.tenant_id).await?;
    let row: InvitationRow = sqlx::query_as(&format!("{BY_TOKEN} FOR UPDATE"))
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound)?;
    usable(&row)?;
    let email = Email::parse(&row.email)?;

    let user_id = match existing_user(db, &row.email).await? {
        Some((id, stored)) => {
            if !password::verify(&Password::attempt(password), Some(stored)).await? {
                return Err(Error::Unauthenticated(
                    "That password doesn't match the Tessera account of this email. Use that account's password, or ask for an invitation to another email.".into(),
                ));
            }
            id
        }
        None => {
            let name = accounts::parse_person_name(name)?;
            let password = Password::new(password)?;
            let hash = password::hash(&password).await?;
            let id = UserId::new();
            accounts::insert_user(&mut tx, id, &email, &name, &hash).await?;
            id
        }
    };

    sqlx::query(
        "INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, user_id) DO NOTHING",
    )
    .bind(row.tenant_id)
    .bind(user_id)
    .bind(&row.role)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE invitations SET accepted_at = now(), accepted_by = $2 WHERE id = $1")
        .bind(row.id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        Some(row.tenant_id),
        By::Person(user_id),
        Event::new("member.joined", row.email.clone()).after(json!({ "role": row.role })),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%user_id, tenant_id = %row.tenant_id, "invitation accepted");
    Ok((user_id, row.tenant_id))
}
