//! Sign-up, sign-in and the clinics a person belongs to.

use serde::{Deserialize, Serialize};

use super::{password, Email, Password};
use crate::db::Db;
use crate::error::is_constraint;
use crate::tenancy::{parse_clinic_name, slugify, Role, Tenant, TenantId, UserId};
use crate::{Error, PlanId, Result};

/// The one message for a wrong password and an unknown email, so accounts cannot be
/// discovered by signing in.
pub const SIGN_IN_FAILED: &str = "That email and password don't match an account.";

/// What a new clinic's owner enters.
#[derive(Debug)]
pub struct SignUp<'a> {
    pub clinic_name: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub password: &'a str,
}

/// The person behind a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
}

/// One clinic a person belongs to, with their role there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub tenant: Tenant,
    pub role: Role,
}

/// A signed-in person acting in one clinic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    pub user: User,
    pub tenant: Tenant,
    pub role: Role,
}

impl Viewer {
    /// The person as the one doing something, with their role in the clinic.
    pub fn actor(&self) -> super::members::Actor {
        super::members::Actor {
            user: self.user.id,
            role: self.role,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MembershipRow {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub plan: PlanId,
    pub active: bool,
    pub role: Role,
}

impl From<MembershipRow> for Membership {
    fn from(r: MembershipRow) -> Self {
        Membership {
            role: r.role,
            tenant: Tenant {
                id: r.id,
                name: r.name,
                slug: r.slug,
                plan: r.plan,
                active: r.active,
            },
        }
    }
}

/// A person's name as shown to colleagues: trimmed, 1 to 100 characters.
pub fn parse_person_name(raw: &str) -> Result<String> {
    let name = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    match name.chars().count() {
        0 => Err(Error::invalid("Enter your name.")),
        1..=100 => Ok(name),
        _ => Err(Error::invalid("Your name can have at most 100 characters.")),
    }
}

/// Creates a clinic and its owner's account, returning the new owner's id and clinic.
#[tracing::instrument(skip_all)]
pub async fn sign_up(db: &Db, input: SignUp<'_>) -> Result<(UserId, TenantId)> {
    let clinic_name = parse_clinic_name(input.clinic_name)?;
    let name = parse_person_name(input.name)?;
    let email = Email::parse(input.email)?;
    let password = Password::new(input.password)?;
    let hash = password::hash(&password).await?;

    let user_id = UserId::new();
    let tenant_id = TenantId::new();
    let mut tx = db.begin_tenant(tenant_id).await?;
    insert_user(&mut tx, user_id, &email, &name, &hash).await?;

    let base = slugify(&clinic_name);
    let mut slug = base.clone();
    for attempt in 0.. {
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, name, slug) VALUES ($1, $2, $3) ON CONFLICT (slug) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(&clinic_name)
        .bind(&slug)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            break;
        }
        if attempt >= 20 {
            return Err(Error::Internal("could not find a free clinic slug".into()));
        }
        slug = format!("{base}-{}", random_suffix());
    }
    sqlx::query("INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(%user_id, %tenant_id, "clinic signed up");
    Ok((user_id, tenant_id))
}

pub async fn insert_user(
    tx: &mut crate::db::Tx,
    id: UserId,
    email: &Email,
    name: &str,
    password_hash: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(email.as_str())
        .bind(name)
        .bind(password_hash)
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            if is_constraint(&e, "users_email_key") {
                Error::Conflict(
                    "An account with this email already exists. Sign in instead.".into(),
                )
            } else {
                e.into()
            }
        })?;
    Ok(())
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..4)
        .map(|_| char::from(b"abcdefghjkmnpqrstuvwxyz23456789"[rng.gen_range(0..31)]))
        .collect()
}

/// A password for an account made by a command (24 characters from a 31-letter alphabet
/// without look-alikes, about 119 bits).
pub(crate) fn random_password() -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..24)
        .map(|_| char::from(b"abcdefghjkmnpqrstuvwxyz23456789"[rng.gen_range(0..31)]))
        .collect()
}

/// Records a sign-in in the audit log: a success in the clinic signed into (or platform-wide
/// for an operator with no clinic); a failure platform-wide with the email tried, and in each
/// clinic of the account it names, if any (so its admins see guessing at their members).
pub async fn audit_sign_in(
    db: &Db,
    email: &str,
    outcome: std::result::Result<(UserId, Option<TenantId>), ()>,
) -> Result<()> {
    use crate::audit::{record_alone, By, Event};
    let shown: String = email.trim().chars().take(254).collect();
    match outcome {
        Ok((user, clinic)) => {
            record_alone(
                db,
                clinic,
                By::Person(user),
                Event::new("sign_in.succeeded", shown),
            )
            .await
        }
        Err(()) => {
            record_alone(
                db,
                None,
                By::System,
                Event::new("sign_in.failed", shown.clone()),
            )
            .await?;
            let known: Option<UserId> = match Email::parse(email) {
                Ok(e) => {
                    sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = $1")
                        .bind(e.normalized())
                        .fetch_optional(db.pool())
                        .await?
                }
                Err(_) => None,
            };
            if let Some(user) = known {
                for m in memberships(db, user).await? {
                    let event = Event::new("sign_in.failed", shown.clone());
                    record_alone(db, Some(m.tenant.id), By::System, event).await?;
                }
            }
            Ok(())
        }
    }
}

/// Checks an email and password. Unknown emails and wrong passwords fail the same way, after
/// the same amount of hashing work.
#[tracing::instrument(skip_all)]
pub async fn authenticate(db: &Db, email: &str, password: &str) -> Result<UserId> {
    let failed = || Error::Unauthenticated(SIGN_IN_FAILED.into());
    let attempt = Password::attempt(password);
    let row: Option<(UserId, String)> = match Email::parse(email) {
        Ok(email) => {
            sqlx::query_as("SELECT id, password_hash FROM users WHERE lower(email) = $1")
                .bind(email.normalized())
                .fetch_optional(db.pool())
                .await?
        }
        Err(_) => None,
    };
    let (id, hash) = match row {
        Some((id, hash)) => (Some(id), Some(hash)),
        None => (None, None),
    };
    if password::verify(&attempt, hash).await? {
        id.ok_or_else(failed)
    } else {
        Err(failed())
    }
}

/// Looks a user up by id.
pub async fn user(db: &Db, id: UserId) -> Result<Option<User>> {
    let row: Option<(UserId, String, String)> =
        sqlx::query_as("SELECT id, email, name FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
    Ok(row.map(|(id, email, name)| User { id, email, name }))
}

/// The clinics a person belongs to, by name. Runs in a user-scoped transaction: row-level
/// security shows a person their own memberships and nobody else's.
pub async fn memberships(db: &Db, user: UserId) -> Result<Vec<Membership>> {
    let mut tx = db.begin_user(user).await?;
    let rows: Vec<MembershipRow> = sqlx::query_as(
        "SELECT t.id, t.name, t.slug, t.plan, t.active, m.role
           FROM memberships m JOIN tenants t ON t.id = m.tenant_id
          WHERE m.user_id = $1
          ORDER BY lower(t.name), t.id",
    )
    .bind(user)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(Membership::from).collect())
}

/// The person, clinic and role behind a session, or `None` when the person no longer belongs
/// to that clinic (removed since they signed in).
pub async fn viewer(db: &Db, user: UserId, tenant: TenantId) -> Result<Option<Viewer>> {
    let Some(user) = self::user(db, user).await? else {
        return Ok(None);
    };
    let mut tx = db.begin_tenant(tenant).await?;
    let row: Option<MembershipRow> = sqlx::query_as(
        "SELECT t.id, t.name, t.slug, t.plan, t.active, m.role
           FROM memberships m JOIN tenants t ON t.id = m.tenant_id
          WHERE m.user_id = $1",
    )
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(Membership::from).map(|m| Viewer {
        user,
        tenant: m.tenant,
        role: m.role,
    }))
}

/// The clinic a person lands in when none is chosen: their first active one, else their first.
pub fn first_clinic(memberships: &[Membership]) -> Option<TenantId> {
    memberships
        .iter()
        .find(|m| m.tenant.active)
        .or(memberships.first())
        .map(|m| m.tenant.id)
}

/// The person in their current clinic: `preferred` (the session's) while they still belong to
/// it, else the clinic they would land in after signing in. `None` when they belong to no
/// clinic any more.
pub async fn current_clinic(
    db: &Db,
    user: UserId,
    preferred: Option<TenantId>,
) -> Result<Option<Viewer>> {
    if let Some(tenant) = preferred {
        if let Some(v) = viewer(db, user, tenant).await? {
            return Ok(Some(v));
        }
    }
    match first_clinic(&memberships(db, user).await?) {
        Some(tenant) => viewer(db, user, tenant).await,
        None => Ok(None),
    }
}
