//! Feature flags: rows with a typed default and ordered rules (this clinic, this plan, a
//! percentage of clinics), evaluated in process from a cache.
//!
//! Operators change flags in the console ([`create`], [`update`], [`set_enabled`],
//! [`rollback`]); each change is a new version kept in the flag's history, written to the audit
//! log in the same transaction, and announced ([`Change::Flags`]): every replica reloads its
//! cache at once, and polls every [`POLL`] in case it missed the announcement. A read
//! ([`Flags::for_clinic`], [`Flags::evaluate`]) never waits on the network: it reads the last
//! snapshot, or the built-in defaults before the first load.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::audit::{self, By, Event};
use crate::changes::{Change, Changes};
use crate::db::Db;
use crate::tenancy::{TenantId, UserId};
use crate::FastMap;
use crate::{Error, PlanId, Result};

/// How often a replica reloads the flags even without an announcement (the most a replica
/// that missed one can lag).
pub const POLL: Duration = Duration::from_secs(30);

/// The flags the product reads, with what they change (`None`: nothing reads it yet).
pub const KNOWN: &[(&str, Option<&str>)] = &[
    (
        "default_model",
        Some("agents that name no model, and the model suggested for a new agent"),
    ),
    (
        "streaming_enabled",
        Some("replies in the chat and through /v1 stream, or come whole"),
    ),
    (
        "max_context_tokens",
        Some("caps every agent's context budget"),
    ),
    ("rag_enabled", Some("agents search the clinic's documents")),
    ("reranking_enabled", None),
];

/// What an unknown flag's effect is.
pub fn effect(key: &str) -> Option<&'static str> {
    KNOWN.iter().find(|(k, _)| *k == key).and_then(|(_, e)| *e)
}

/// A flag's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Boolean,
    String,
    Integer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Boolean => "boolean",
            Kind::String => "string",
            Kind::Integer => "integer",
        }
    }

    pub fn parse(raw: &str) -> Result<Self> {
        match raw.trim() {
            "boolean" => Ok(Kind::Boolean),
            "string" => Ok(Kind::String),
            "integer" => Ok(Kind::Integer),
            other => Err(Error::invalid(format!(
                "{other:?} is not a flag type: choose boolean, string or integer."
            ))),
        }
    }

    /// A value of this type as typed: `true`/`on`/`false`/`off`, a whole number, any text.
    pub fn value(self, raw: &str) -> Result<Value> {
        let raw = raw.trim();
        match self {
            Kind::Boolean => match raw.to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" => Ok(Value::Bool(true)),
                "false" | "off" | "no" => Ok(Value::Bool(false)),
                _ => Err(Error::invalid(format!("{raw:?} is not true or false."))),
            },
            Kind::Integer => raw
                .replace(',', "")
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| Error::invalid(format!("{raw:?} is not a whole number."))),
            Kind::String => {
                if raw.chars().count() > 500 {
                    Err(Error::invalid("A value can be at most 500 characters."))
                } else {
                    Ok(Value::String(raw.to_string()))
                }
            }
        }
    }

    fn holds(self, v: &Value) -> bool {
        match self {
            Kind::Boolean => v.is_boolean(),
            Kind::String => v.is_string(),
            Kind::Integer => v.is_i64(),
        }
    }
}

/// Who a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "when", rename_all = "snake_case")]
pub enum Target {
    Clinic {
        clinic: TenantId,
    },
    Plan {
        plan: PlanId,
    },
    /// This share of clinics, chosen by a stable hash of the clinic and the flag, so a clinic
    /// in at 10% stays in at 20%.
    Percentage {
        percent: u8,
    },
}

/// A rule: who, and the value they get.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(flatten)]
    pub target: Target,
    pub value: Value,
}

/// A flag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    pub key: String,
    pub description: String,
    pub kind: Kind,
    pub default: Value,
    /// The first rule that matches a clinic gives its value.
    pub rules: Vec<Rule>,
    /// Off: the kill switch; every clinic gets the default.
    pub enabled: bool,
    pub version: i32,
}

/// Why a clinic gets a value (OpenFeature's reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The kill switch is on.
    Disabled,
    /// A clinic or plan rule.
    TargetingMatch,
    /// A percentage rule.
    Split,
    /// No rule matched.
    Default,
}

/// A flag's value for one clinic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub value: Value,
    pub reason: Reason,
    /// Which rule (`rule-1` is the first) or `default`.
    pub variant: String,
    pub version: i32,
}

/// Where a clinic falls among 10,000 buckets for a flag.
pub fn bucket(clinic: TenantId, key: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(key.as_bytes())
        .chain_update(b":")
        .chain_update(clinic.0.as_bytes())
        .finalize();
    let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    (n % 10_000) as u32
}

impl Flag {
    /// The flag's value for a clinic on a plan.
    pub fn evaluate(&self, clinic: TenantId, plan: PlanId) -> Evaluation {
        let (value, reason, rule) = self.pick(clinic, plan);
        Evaluation {
            value: value.clone(),
            reason,
            variant: rule.map_or_else(|| "default".into(), |i| format!("rule-{}", i + 1)),
            version: self.version,
        }
    }

    /// The value a clinic on a plan gets, why, and the index of the rule that gave it (`None`
    /// for the default). Nothing is copied: the gateway reads its flags on every call.
    fn pick(&self, clinic: TenantId, plan: PlanId) -> (&Value, Reason, Option<usize>) {
        if !self.enabled {
            return (&self.default, Reason::Disabled, None);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let (matched, reason) = match &rule.target {
                Target::Clinic { clinic: c } => (*c == clinic, Reason::TargetingMatch),
                Target::Plan { plan: p } => (*p == plan, Reason::TargetingMatch),
                Target::Percentage { percent } => (
                    bucket(clinic, &self.key) < u32::from(*percent) * 100,
                    Reason::Split,
                ),
            };
            if matched {
                return (&rule.value, reason, Some(i));
            }
        }
        (&self.default, Reason::Default, None)
    }
}

/// The flags as shipped (the seed of the migration), used before the first load.
fn built_in() -> FastMap<String, Arc<Flag>> {
    let flag = |key: &str, kind, default: Value| {
        (
            key.to_string(),
            Arc::new(Flag {
                key: key.into(),
                description: String::new(),
                kind,
                default,
                rules: Vec::new(),
                enabled: true,
                version: 0,
            }),
        )
    };
    [
        flag("default_model", Kind::String, json!("gpt-4o-mini")),
        flag("streaming_enabled", Kind::Boolean, json!(true)),
        flag("max_context_tokens", Kind::Integer, json!(200_000)),
        flag("rag_enabled", Kind::Boolean, json!(true)),
        flag("reranking_enabled", Kind::Boolean, json!(false)),
    ]
    .into_iter()
    .collect()
}

/// The flags that shape a clinic's model calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClinicFlags {
    pub default_model: String,
    pub streaming: bool,
    pub max_context_tokens: i64,
    pub rag: bool,
    pub reranking: bool,
}

/// The in-process cache of every flag. Cheap to clone.
#[derive(Clone)]
pub struct Flags {
    db: Option<Db>,
    snapshot: Arc<RwLock<Snapshot>>,
}

/// Every flag by key, as one replaceable whole.
type Snapshot = Arc<FastMap<String, Arc<Flag>>>;

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flags").finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct FlagRow {
    key: String,
    description: String,
    kind: String,
    default_value: Value,
    rules: Value,
    enabled: bool,
    version: i32,
}

impl TryFrom<FlagRow> for Flag {
    type Error = Error;
    fn try_from(r: FlagRow) -> Result<Self> {
        Ok(Flag {
            kind: Kind::parse(&r.kind)?,
            rules: serde_json::from_value(r.rules)
                .map_err(|e| Error::Internal(format!("flag {}: rules: {e}", r.key)))?,
            key: r.key,
            description: r.description,
            default: r.default_value,
            enabled: r.enabled,
            version: r.version,
        })
    }
}

const FLAG_COLUMNS: &str = "key, description, kind, default_value, rules, enabled, version";

/// Every flag, by key.
pub async fn all(db: &Db) -> Result<Vec<Flag>> {
    let sql = format!("SELECT {FLAG_COLUMNS} FROM feature_flags ORDER BY key");
    let rows: Vec<FlagRow> = sqlx::query_as(&sql).fetch_all(db.pool()).await?;
    rows.into_iter().map(Flag::try_from).collect()
}

impl Flags {
    /// A cache of `db`'s flags that reloads when `changes` announces a change to them (or may
    /// have missed one). Call [`Flags::run`] to load and poll.
    pub fn new(db: Db, changes: &Changes) -> Self {
        let flags = Self {
            db: Some(db),
            snapshot: Arc::new(RwLock::new(Arc::new(built_in()))),
        };
        let reloading = flags.clone();
        changes.subscribe(move |change| {
            if matches!(change, Change::Flags | Change::Everything) {
                let flags = reloading.clone();
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        if let Err(e) = flags.reload().await {
                            tracing::warn!(error = %e, "could not reload the flags; polling again shortly");
                        }
                    });
                }
            }
        });
        flags
    }

    /// The built-in defaults only, never reloaded (tools and tests without a database).
    pub fn fixed() -> Self {
        Self {
            db: None,
            snapshot: Arc::new(RwLock::new(Arc::new(built_in()))),
        }
    }

    /// Reads every flag from Postgres into the cache.
    pub async fn reload(&self) -> Result<()> {
        let Some(db) = &self.db else { return Ok(()) };
        let mut map = built_in();
        for flag in all(db).await? {
            map.insert(flag.key.clone(), Arc::new(flag));
        }
        *self
            .snapshot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(map);
        Ok(())
    }

    /// Loads the flags, then reloads them every [`POLL`], for as long as the process runs.
    pub async fn run(self) {
        loop {
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "could not load the flags; using the last ones");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.snapshot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A flag as cached.
    pub fn get(&self, key: &str) -> Option<Arc<Flag>> {
        self.snapshot().get(key).cloned()
    }

    /// Every cached flag, by key.
    pub fn list(&self) -> Vec<Arc<Flag>> {
        let mut flags: Vec<_> = self.snapshot().values().cloned().collect();
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        flags
    }

    /// A flag's value for a clinic, or `None` for an unknown flag.
    pub fn evaluate(&self, key: &str, clinic: TenantId, plan: PlanId) -> Option<Evaluation> {
        self.get(key).map(|f| f.evaluate(clinic, plan))
    }

    /// The flags that shape a clinic's model calls. A value of the wrong type (which the
    /// console does not let through) reads as the built-in default.
    pub fn for_clinic(&self, clinic: TenantId, plan: PlanId) -> ClinicFlags {
        let snapshot = self.snapshot();
        let value = |key: &str| {
            snapshot
                .get(key)
                .map_or(&Value::Null, |f| f.pick(clinic, plan).0)
        };
        ClinicFlags {
            default_model: value("default_model")
                .as_str()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or("gpt-4o-mini")
                .to_string(),
            streaming: value("streaming_enabled").as_bool().unwrap_or(true),
            max_context_tokens: value("max_context_tokens")
                .as_i64()
                .unwrap_or(200_000)
                .max(500),
            rag: value("rag_enabled").as_bool().unwrap_or(true),
            reranking: value("reranking_enabled").as_bool().unwrap_or(false),
        }
    }
}

/// A flag as an operator fills it in. Rules are one per line:
/// `clinic <slug> = <value>`, `plan <plan> = <value>`, `<n>% = <value>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagInput {
    pub key: String,
    pub description: String,
    pub kind: String,
    pub default: String,
    pub rules: String,
}

/// Parses a flag's key.
pub fn parse_key(raw: &str) -> Result<String> {
    let key = raw.trim();
    let ok = key.len() >= 2
        && key.len() <= 63
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(key.to_string())
    } else {
        Err(Error::invalid(
            "A flag's key is 2 to 63 lowercase letters, digits and underscores, starting with a letter (such as new_editor).",
        ))
    }
}

/// Parses rules, one per line, resolving clinics by slug with `clinic`.
pub fn parse_rules(
    raw: &str,
    kind: Kind,
    clinic: impl Fn(&str) -> Option<TenantId>,
) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for (n, line) in raw.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |msg: String| Error::invalid(format!("Rule on line {}: {msg}", n + 1));
        let Some((who, value)) = line.split_once('=') else {
            return Err(at(
                "write it as `clinic <slug> = <value>`, `plan <plan> = <value>` or `<n>% = <value>`."
                    .into(),
            ));
        };
        let value = kind.value(value).map_err(|e| at(e.to_string()))?;
        let who = who.trim();
        let target = if let Some(percent) = who.strip_suffix('%') {
            match percent.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Target::Percentage { percent: p },
                _ => return Err(at("a percentage is a whole number from 0 to 100.".into())),
            }
        } else if let Some(slug) = who.strip_prefix("clinic ") {
            let slug = slug.trim();
            match clinic(slug) {
                Some(c) => Target::Clinic { clinic: c },
                None => return Err(at(format!("there is no clinic {slug:?}."))),
            }
        } else if let Some(plan) = who.strip_prefix("plan ") {
            match plan.trim().parse::<PlanId>() {
                Ok(p) => Target::Plan { plan: p },
                Err(_) => {
                    return Err(at(format!(
                        "{:?} is not a plan: starter, professional or enterprise.",
                        plan.trim()
                    )))
                }
            }
        } else {
            return Err(at(format!(
                "{who:?} names no one: start with `clinic`, `plan`, or give a percentage."
            )));
        };
        rules.push(Rule { target, value });
    }
    if rules.len() > 200 {
        return Err(Error::invalid("A flag can have at most 200 rules."));
    }
    Ok(rules)
}

/// Rules written back as the lines [`parse_rules`] reads, clinics by slug.
pub fn format_rules(rules: &[Rule], slug: impl Fn(TenantId) -> String) -> String {
    rules
        .iter()
        .map(|r| {
            let value = match &r.value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match &r.target {
                Target::Clinic { clinic } => format!("clinic {} = {value}", slug(*clinic)),
                Target::Plan { plan } => format!("plan {plan} = {value}"),
                Target::Percentage { percent } => format!("{percent}% = {value}"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A value as people read it.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A clinic as the console's flag pages need it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ClinicRef {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub plan: PlanId,
}

/// Every clinic (operators).
pub async fn clinics(db: &Db, operator: UserId) -> Result<Vec<ClinicRef>> {
    let mut tx = db.begin_operator(operator).await?;
    let rows = sqlx::query_as("SELECT id, name, slug, plan FROM tenants ORDER BY lower(name)")
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows)
}

/// A version of a flag, as its history shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub flag: Flag,
    pub note: String,
    pub changed_by: String,
    pub changed_at: OffsetDateTime,
}

/// A flag and its history, newest version first (operators).
pub async fn history(db: &Db, key: &str) -> Result<(Flag, Vec<Version>)> {
    let sql = format!("SELECT {FLAG_COLUMNS} FROM feature_flags WHERE key = $1");
    let row: FlagRow = sqlx::query_as(&sql)
        .bind(key)
        .fetch_optional(db.pool())
        .await?
        .ok_or(Error::NotFound)?;
    let flag = Flag::try_from(row)?;
    #[derive(sqlx::FromRow)]
    struct V {
        #[sqlx(flatten)]
        flag: FlagRow,
        note: String,
        changed_by: Option<String>,
        changed_at: OffsetDateTime,
    }
    let rows: Vec<V> = sqlx::query_as(
        "SELECT v.key, v.description, v.kind, v.default_value, v.rules, v.enabled, v.version, v.note,
                u.email AS changed_by, v.changed_at
           FROM feature_flag_versions v LEFT JOIN users u ON u.id = v.changed_by
          WHERE v.key = $1 ORDER BY v.version DESC",
    )
    .bind(key)
    .fetch_all(db.pool())
    .await?;
    let versions = rows
        .into_iter()
        .map(|v| {
            Ok(Version {
                flag: Flag::try_from(v.flag)?,
                note: v.note,
                changed_by: v.changed_by.unwrap_or_else(|| "Tessera".into()),
                changed_at: v.changed_at,
            })
        })
        .collect::<Result<_>>()?;
    Ok((flag, versions))
}

/// The flag as an entry in the audit log shows it.
fn audited(flag: &Flag) -> Value {
    json!({
        "version": flag.version,
        "enabled": flag.enabled,
        "default": flag.default,
        "rules": flag.rules,
        "description": flag.description,
    })
}

/// Writes `flag` as its next version (or its first), with its history row and audit entry, in
/// one transaction, refusing when someone else changed it since `expected` was read; then
/// announces it.
async fn write(
    db: &Db,
    changes: &Changes,
    operator: UserId,
    before: Option<&Flag>,
    mut flag: Flag,
    note: String,
    action: &'static str,
) -> Result<Flag> {
    let mut tx = db.begin_operator(operator).await?;
    match before {
        None => {
            flag.version = 1;
            let inserted = sqlx::query(
                "INSERT INTO feature_flags (key, description, kind, default_value, rules, enabled, version, updated_by)
                 VALUES ($1, $2, $3, $4, $5, $6, 1, $7) ON CONFLICT (key) DO NOTHING",
            )
            .bind(&flag.key)
            .bind(&flag.description)
            .bind(flag.kind.as_str())
            .bind(&flag.default)
            .bind(json!(flag.rules))
            .bind(flag.enabled)
            .bind(operator)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(Error::Conflict(format!(
                    "A flag named {} already exists.",
                    flag.key
                )));
            }
        }
        Some(old) => {
            flag.version = old.version + 1;
            let updated = sqlx::query(
                "UPDATE feature_flags SET description = $2, default_value = $3, rules = $4, enabled = $5,
                        version = $6, updated_at = now(), updated_by = $7
                  WHERE key = $1 AND version = $8",
            )
            .bind(&flag.key)
            .bind(&flag.description)
            .bind(&flag.default)
            .bind(json!(flag.rules))
            .bind(flag.enabled)
            .bind(flag.version)
            .bind(operator)
            .bind(old.version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(Error::Conflict(format!(
                    "Someone changed {} since you opened it (it is no longer version {}). Reload to see their change.",
                    flag.key, old.version
                )));
            }
        }
    }
    sqlx::query(
        "INSERT INTO feature_flag_versions (key, version, description, kind, default_value, rules, enabled, note, changed_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&flag.key)
    .bind(flag.version)
    .bind(&flag.description)
    .bind(flag.kind.as_str())
    .bind(&flag.default)
    .bind(json!(flag.rules))
    .bind(flag.enabled)
    .bind(&note)
    .bind(operator)
    .execute(&mut *tx)
    .await?;
    let mut event = Event::new(action, flag.key.clone()).after(audited(&flag));
    if let Some(old) = before {
        event = event.before(audited(old));
    }
    audit::record(&mut tx, None, By::Operator(operator), event).await?;
    tx.commit().await?;
    changes.announce(Change::Flags).await;
    Ok(flag)
}

/// Reads a flag as it is now, for a change.
async fn current(db: &Db, key: &str) -> Result<Flag> {
    history(db, key).await.map(|(f, _)| f)
}

fn validate(
    input: &FlagInput,
    kind: Kind,
    clinics: &[ClinicRef],
) -> Result<(String, Value, Vec<Rule>)> {
    let description = input.description.trim().to_string();
    if description.chars().count() > 500 {
        return Err(Error::invalid(
            "The description can be at most 500 characters.",
        ));
    }
    let default = kind
        .value(&input.default)
        .map_err(|e| Error::invalid(format!("Default: {e}")))?;
    let rules = parse_rules(&input.rules, kind, |slug| {
        clinics.iter().find(|c| c.slug == slug).map(|c| c.id)
    })?;
    Ok((description, default, rules))
}

/// Creates a flag (operators).
pub async fn create(
    db: &Db,
    changes: &Changes,
    operator: UserId,
    input: &FlagInput,
) -> Result<Flag> {
    let key = parse_key(&input.key)?;
    let kind = Kind::parse(&input.kind)?;
    let clinics = clinics(db, operator).await?;
    let (description, default, rules) = validate(input, kind, &clinics)?;
    let flag = Flag {
        key,
        description,
        kind,
        default,
        rules,
        enabled: true,
        version: 1,
    };
    write(
        db,
        changes,
        operator,
        None,
        flag,
        "created".into(),
        "flag.created",
    )
    .await
}

/// Changes a flag's description, default and rules (operators); `expected` is the version the
/// operator edited.
pub async fn update(
    db: &Db,
    changes: &Changes,
    operator: UserId,
    key: &str,
    expected: i32,
    input: &FlagInput,
) -> Result<Flag> {
    let old = current(db, key).await?;
    if old.version != expected {
        return Err(Error::Conflict(format!(
            "Someone changed {key} since you opened it (it is now version {}). Reload to see their change.",
            old.version
        )));
    }
    let clinics = clinics(db, operator).await?;
    let (description, default, rules) = validate(input, old.kind, &clinics)?;
    let flag = Flag {
        description,
        default,
        rules,
        ..old.clone()
    };
    write(
        db,
        changes,
        operator,
        Some(&old),
        flag,
        "edited".into(),
        "flag.updated",
    )
    .await
}

/// Switches a flag on, or off as a whole (the kill switch: every clinic gets the default).
pub async fn set_enabled(
    db: &Db,
    changes: &Changes,
    operator: UserId,
    key: &str,
    enabled: bool,
) -> Result<Flag> {
    let old = current(db, key).await?;
    if old.enabled == enabled {
        return Ok(old);
    }
    let flag = Flag {
        enabled,
        ..old.clone()
    };
    let (note, action) = if enabled {
        ("switched on", "flag.switched_on")
    } else {
        (
            "switched off (everyone gets the default)",
            "flag.switched_off",
        )
    };
    write(db, changes, operator, Some(&old), flag, note.into(), action).await
}

/// Makes an earlier version the current one again, as a new version (operators).
pub async fn rollback(
    db: &Db,
    changes: &Changes,
    operator: UserId,
    key: &str,
    version: i32,
) -> Result<Flag> {
    let (old, versions) = history(db, key).await?;
    let target = versions
        .into_iter()
        .find(|v| v.flag.version == version)
        .ok_or_else(|| Error::invalid(format!("{key} has no version {version}.")))?;
    if !target.flag.kind.holds(&target.flag.default) {
        return Err(Error::invalid("That version cannot be restored."));
    }
    let flag = Flag {
        version: old.version,
        ..target.flag
    };
    write(
        db,
        changes,
        operator,
        Some(&old),
        flag,
        format!("rolled back to version {version}"),
        "flag.rolled_back",
    )
    .await
}

/// How many clinics get which value, and what one named clinic gets.
#[derive(Clone, Debug, PartialEq)]
pub struct Preview {
    /// Each value, with how many clinics get it, most first.
    pub counts: Vec<(Value, usize)>,
    pub clinics: usize,
    /// The clinic asked about: its name, value and reason.
    pub clinic: Option<(String, Evaluation)>,
}

/// What a flag (as typed, not yet saved) would give every clinic (operators).
pub async fn preview(
    db: &Db,
    operator: UserId,
    key: &str,
    input: &FlagInput,
    clinic: &str,
) -> Result<Preview> {
    let old = current(db, key).await?;
    let clinics = clinics(db, operator).await?;
    let (description, default, rules) = validate(input, old.kind, &clinics)?;
    let flag = Flag {
        description,
        default,
        rules,
        ..old
    };
    Ok(preview_of(&flag, &clinics, clinic))
}

/// [`preview`] over a list of clinics.
pub fn preview_of(flag: &Flag, clinics: &[ClinicRef], named: &str) -> Preview {
    let mut counts: Vec<(Value, usize)> = Vec::new();
    for c in clinics {
        let v = flag.evaluate(c.id, c.plan).value;
        match counts.iter_mut().find(|(x, _)| *x == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let named = named.trim();
    let clinic = (!named.is_empty())
        .then(|| {
            clinics.iter().find(|c| {
                c.slug == named || c.name.eq_ignore_ascii_case(named) || c.id.to_string() == named
            })
        })
        .flatten()
        .map(|c| (c.name.clone(), flag.evaluate(c.id, c.plan)));
    Preview {
        counts,
        clinics: clinics.len(),
        clinic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(rules: Vec<Rule>) -> Flag {
        Flag {
            key: "new_editor".into(),
            description: String::new(),
            kind: Kind::Boolean,
            default: json!(false),
            rules,
            enabled: true,
            version: 3,
        }
    }

    #[test]
    fn rules_apply_in_order_and_the_kill_switch_wins() {
        let north = TenantId::new();
        let south = TenantId::new();
        let f = flag(vec![
            Rule {
                target: Target::Clinic { clinic: north },
                value: json!(false),
            },
            Rule {
                target: Target::Plan {
                    plan: PlanId::Professional,
                },
                value: json!(true),
            },
        ]);
        let e = f.evaluate(north, PlanId::Professional);
        assert_eq!(
            (e.value, e.reason, e.variant.as_str()),
            (json!(false), Reason::TargetingMatch, "rule-1")
        );
        let e = f.evaluate(south, PlanId::Professional);
        assert_eq!((e.value, e.reason), (json!(true), Reason::TargetingMatch));
        let e = f.evaluate(south, PlanId::Starter);
        assert_eq!((e.value, e.reason), (json!(false), Reason::Default));
        let off = Flag {
            enabled: false,
            ..f
        };
        let e = off.evaluate(south, PlanId::Professional);
        assert_eq!((e.value, e.reason), (json!(false), Reason::Disabled));
    }

    #[test]
    fn percentages_are_within_tolerance_and_stable_as_they_grow() {
        let clinics: Vec<TenantId> = (0..10_000).map(|_| TenantId::new()).collect();
        let at = |percent: u8| {
            let f = flag(vec![Rule {
                target: Target::Percentage { percent },
                value: json!(true),
            }]);
            clinics
                .iter()
                .map(|c| f.evaluate(*c, PlanId::Starter).value == json!(true))
                .collect::<Vec<bool>>()
        };
        let mut previous = at(0);
        assert!(previous.iter().all(|x| !x));
        for percent in [1u8, 5, 10, 25, 50, 75, 100] {
            let now = at(percent);
            let share = now.iter().filter(|x| **x).count() as f64 / 10_000.0;
            let want = f64::from(percent) / 100.0;
            assert!((share - want).abs() < 0.02, "{percent}%: {share}");
            // A clinic in at a lower percentage stays in.
            assert!(
                previous.iter().zip(&now).all(|(was, is)| !was || *is),
                "{percent}%"
            );
            previous = now;
        }
        // Another flag picks other clinics.
        let a = bucket(clinics[0], "a");
        let same = clinics
            .iter()
            .filter(|c| bucket(**c, "a") == bucket(**c, "b"))
            .count();
        assert!(same < 50, "{same}");
        assert_eq!(a, bucket(clinics[0], "a"));
    }

    #[test]
    fn rules_are_read_and_written_as_lines() {
        let north = TenantId::new();
        let lookup = |slug: &str| (slug == "north").then_some(north);
        let rules = parse_rules(
            "clinic north = off\n\nplan professional = true\n 25% = on ",
            Kind::Boolean,
            lookup,
        )
        .unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].target, Target::Clinic { clinic: north });
        assert_eq!(rules[2].target, Target::Percentage { percent: 25 });
        let text = format_rules(&rules, |_| "north".into());
        assert_eq!(
            text,
            "clinic north = false\nplan professional = true\n25% = true"
        );
        assert_eq!(parse_rules(&text, Kind::Boolean, lookup).unwrap(), rules);
        for (bad, says) in [
            ("clinic south = true", "no clinic"),
            ("101% = true", "0 to 100"),
            ("plan gold = true", "not a plan"),
            ("everyone = true", "names no one"),
            ("clinic north = maybe", "true or false"),
            ("clinic north", "write it as"),
        ] {
            let e = parse_rules(bad, Kind::Boolean, lookup)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says) && e.contains("line 1"), "{bad}: {e}");
        }
        assert!(parse_rules("plan starter = 12,000", Kind::Integer, lookup).is_ok());
        assert!(parse_key("Bad-Key").is_err());
        assert!(parse_key("new_editor").is_ok());
    }

    #[test]
    fn clinic_flags_fall_back_to_the_built_in_defaults() {
        let flags = Flags::fixed();
        let f = flags.for_clinic(TenantId::new(), PlanId::Starter);
        assert_eq!(
            f,
            ClinicFlags {
                default_model: "gpt-4o-mini".into(),
                streaming: true,
                max_context_tokens: 200_000,
                rag: true,
                reranking: false,
            }
        );
    }
}
