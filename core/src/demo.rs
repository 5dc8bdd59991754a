//! Demo mode (`TESSERA_DEMO`): a clinic to try Tessera with on one machine, without a provider
//! account. `scripts/serve.sh --demo` starts the provider simulator and points the OpenAI and
//! Anthropic addresses at it; this seeds the clinic through the product's own functions (its
//! owner signs up, saves an OpenAI key, creates an agent), once.

use crate::auth::accounts::{self, SignUp};
use crate::auth::members::Actor;
use crate::{agents, provider_keys, Error, Result, Role, Services};

pub use tessera_types::demo::{EMAIL, PASSWORD};

pub const CLINIC: &str = "Demo Clinic";

/// Seeds the demo clinic unless its owner exists. Returns whether it was created now.
pub async fn seed(services: &Services) -> Result<bool> {
    let signed_up = accounts::sign_up(
        &services.db,
        SignUp {
            clinic_name: CLINIC,
            name: "Dana Demo",
            email: EMAIL,
            password: PASSWORD,
        },
    )
    .await;
    let (user, tenant) = match signed_up {
        Ok(ids) => ids,
        Err(Error::Conflict(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let actor = Actor {
        user,
        role: Role::Owner,
    };
    provider_keys::set(
        &services.db,
        &services.changes,
        &services.config.master_keys,
        tenant,
        actor,
        provider_keys::KeyInput {
            provider: crate::Provider::OpenAi,
            // The simulator takes any key that looks like OpenAI's.
            secret: "sk-demo-simulated-provider",
            base_url: "",
        },
        false,
    )
    .await?;
    for (name, description, prompt) in [
        (
            "Front Desk",
            "Opening hours, bookings and directions",
            "You answer patients' questions for the front desk. Be brief and friendly.",
        ),
        (
            "Clinical Notes",
            "Drafts and summarises notes",
            "You help clinicians draft and summarise notes. Use headings and lists.",
        ),
    ] {
        agents::create(
            &services.db,
            &services.changes,
            tenant,
            actor,
            &agents::AgentInput {
                name: name.into(),
                description: description.into(),
                system_prompt: prompt.into(),
                model: "gpt-4o-mini".into(),
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(true)
}
