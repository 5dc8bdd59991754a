//! Test clinics made through the product's own core functions, the way people and operators
//! make them (sign-up, invitations, provider keys, API keys, agents, an operator's plan
//! change), for the core's, the server's and the benchmark's tests alike:
//!
//! ```ignore
//! let clinic = fixtures::clinic("North")
//!     .key(Provider::OpenAi, "sk-test-good-key")
//!     .api_key("tests")
//!     .agent("Front Desk", "gpt-4o-mini")
//!     .member("nurse@north.example.com", Role::Staff)
//!     .create(&env)
//!     .await;
//! ```

use sqlx::PgPool;
use tessera_core::agents::{self, Agent, AgentInput};
use tessera_core::auth::members::Actor;
use tessera_core::auth::{self, SignUp};
use tessera_core::chat::Chatter;
use tessera_core::crypto::MasterKeys;
use tessera_core::gateway::Caller;
use tessera_core::provider_keys::{self, KeyInput};
use tessera_core::{api_keys, billing, Changes, Db, PlanId, Provider, Role, TenantId, UserId};

/// The password of every fixture account.
pub const PASSWORD: &str = "a long enough password";

/// What making a clinic needs: the database as the application role, change announcements, the
/// master keys, and (for a plan change) a pool as the schema owner.
pub struct Env<'a> {
    pub db: &'a Db,
    pub changes: &'a Changes,
    pub master: &'a MasterKeys,
    pub admin: Option<&'a PgPool>,
}

/// A clinic to make: its name, and what it has.
#[must_use = "call .create(&env)"]
pub struct ClinicBuilder {
    name: String,
    keys: Vec<(Provider, String, String)>,
    api_key: Option<String>,
    agents: Vec<AgentInput>,
    members: Vec<(String, Role)>,
    plan: Option<PlanId>,
}

/// A clinic named `name`, owned by "Owner" at `owner@<name>.example.com`.
pub fn clinic(name: &str) -> ClinicBuilder {
    ClinicBuilder {
        name: name.to_string(),
        keys: Vec::new(),
        api_key: None,
        agents: Vec::new(),
        members: Vec::new(),
        plan: None,
    }
}

/// The owner's email of a clinic named `name`.
pub fn owner_email(name: &str) -> String {
    format!(
        "owner@{}.example.com",
        name.to_lowercase().replace(' ', "-")
    )
}

impl ClinicBuilder {
    /// The clinic's own key for OpenAI or Anthropic.
    pub fn key(mut self, provider: Provider, secret: &str) -> Self {
        self.keys
            .push((provider, secret.to_string(), String::new()));
        self
    }

    /// The clinic's OpenAI-compatible endpoint.
    pub fn endpoint(mut self, base_url: &str, secret: &str) -> Self {
        self.keys.push((
            Provider::OpenAiCompatible,
            secret.to_string(),
            base_url.to_string(),
        ));
        self
    }

    /// An API key named `name` (its token is in [`TestClinic::api_key`]).
    pub fn api_key(mut self, name: &str) -> Self {
        self.api_key = Some(name.to_string());
        self
    }

    /// An agent with default settings.
    pub fn agent(self, name: &str, model: &str) -> Self {
        self.agent_with(AgentInput {
            name: name.into(),
            model: model.into(),
            ..Default::default()
        })
    }

    pub fn agent_with(mut self, input: AgentInput) -> Self {
        self.agents.push(input);
        self
    }

    /// A colleague who accepted an invitation, named "Member".
    pub fn member(mut self, email: &str, role: Role) -> Self {
        self.members.push((email.to_string(), role));
        self
    }

    /// Puts the clinic on `plan` the way an operator does (needs [`Env::admin`]).
    pub fn plan(mut self, plan: PlanId) -> Self {
        self.plan = Some(plan);
        self
    }

    /// Makes the clinic, or panics saying which step failed.
    pub async fn create(self, env: &Env<'_>) -> TestClinic {
        let name = self.name.clone();
        self.try_create(env)
            .await
            .unwrap_or_else(|e| panic!("making the test clinic {name:?}: {e}"))
    }

    /// Makes the clinic.
    pub async fn try_create(self, env: &Env<'_>) -> Result<TestClinic, String> {
        let email = owner_email(&self.name);
        let (owner, tenant) = auth::sign_up(
            env.db,
            SignUp {
                clinic_name: &self.name,
                name: "Owner",
                email: &email,
                password: PASSWORD,
            },
        )
        .await
        .map_err(|e| format!("signing up: {e}"))?;
        let slug = auth::viewer(env.db, owner, tenant)
            .await
            .map_err(|e| format!("reading the clinic: {e}"))?
            .ok_or("the owner is not in the clinic")?
            .tenant
            .slug;
        let mut clinic = TestClinic {
            tenant,
            slug,
            owner,
            email,
            api_key: None,
            agents: Vec::new(),
            members: Vec::new(),
        };
        let actor = clinic.owner();
        for (provider, secret, base_url) in &self.keys {
            let input = KeyInput {
                provider: *provider,
                secret,
                base_url,
            };
            provider_keys::set(env.db, env.changes, env.master, tenant, actor, input, true)
                .await
                .map_err(|e| format!("storing the {provider} key: {e}"))?;
        }
        if let Some(name) = &self.api_key {
            let (_, token) = api_keys::create(env.db, tenant, actor, name)
                .await
                .map_err(|e| format!("creating the API key: {e}"))?;
            clinic.api_key = Some(token);
        }
        for input in &self.agents {
            let agent = agents::create(env.db, env.changes, tenant, actor, input)
                .await
                .map_err(|e| format!("creating the agent {:?}: {e}", input.name))?;
            clinic.agents.push(agent);
        }
        for (email, role) in &self.members {
            clinic
                .members
                .push(member(env.db, &clinic, email, *role).await?);
        }
        if let Some(plan) = self.plan {
            let admin = env.admin.ok_or("a plan change needs Env::admin")?;
            billing::set_plan(admin, env.changes, &clinic.slug, plan)
                .await
                .map_err(|e| format!("moving to the {plan} plan: {e}"))?;
        }
        Ok(clinic)
    }
}

/// A clinic made by [`ClinicBuilder::create`].
#[derive(Clone, Debug)]
pub struct TestClinic {
    pub tenant: TenantId,
    pub slug: String,
    pub owner: UserId,
    /// The owner's email.
    pub email: String,
    /// The API key's token (`tsk_...`), when one was asked for.
    pub api_key: Option<String>,
    /// The agents, in the order asked for.
    pub agents: Vec<Agent>,
    /// The colleagues, in the order asked for.
    pub members: Vec<UserId>,
}

impl TestClinic {
    /// The owner, acting.
    pub fn owner(&self) -> Actor {
        Actor {
            user: self.owner,
            role: Role::Owner,
        }
    }

    /// The owner, chatting.
    pub fn owner_chatter(&self) -> Chatter {
        Chatter {
            tenant: self.tenant,
            user: self.owner,
        }
    }

    /// The owner, calling the gateway from the chat.
    pub fn owner_caller(&self) -> Caller {
        Caller {
            tenant: self.tenant,
            user: Some(self.owner),
            api_key: None,
        }
    }

    /// The API key's token; panics if none was asked for.
    pub fn token(&self) -> &str {
        self.api_key
            .as_deref()
            .expect("the clinic was made without .api_key(..)")
    }
}

/// Invites `email` with `role` into `clinic` and accepts (as "Member"), returning the new
/// member's id.
pub async fn member(
    db: &Db,
    clinic: &TestClinic,
    email: &str,
    role: Role,
) -> Result<UserId, String> {
    let invitation = auth::invitations::create(
        db,
        clinic.tenant,
        clinic.owner(),
        email,
        role,
        time::Duration::days(1),
    )
    .await
    .map_err(|e| format!("inviting {email}: {e}"))?;
    let (user, _) = auth::invitations::accept(db, &invitation.token, "Member", PASSWORD)
        .await
        .map_err(|e| format!("accepting the invitation of {email}: {e}"))?;
    Ok(user)
}
