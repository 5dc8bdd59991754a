//! Types that cross the wire between the pages and the server functions.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Staff,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Admin, Role::Staff];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Staff => "staff",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Staff => "Staff",
            Role::Admin => "Admin",
            Role::Owner => "Owner",
        }
    }

    pub fn is_admin(self) -> bool {
        self >= Role::Admin
    }
}

/// The clinic a session acts in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clinic {
    pub id: String,
    pub name: String,
    pub slug: String,
}

/// A clinic the person may switch to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicChoice {
    pub id: String,
    pub name: String,
    pub role: Role,
}

/// Who is signed in, where, and as what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub clinic: Clinic,
    pub role: Role,
    pub clinics: Vec<ClinicChoice>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    /// `YYYY-MM-DD`, formatted on the server so both renders agree.
    pub joined: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInvite {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub expires: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersPage {
    pub me: String,
    pub my_role: Role,
    pub members: Vec<MemberRow>,
    pub invitations: Vec<PendingInvite>,
}

/// A fresh invitation: the link is shown once, to the admin who made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteCreated {
    pub email: String,
    pub role: Role,
    pub link: String,
    pub expires: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationInfo {
    pub clinic_name: String,
    pub email: String,
    pub role: Role,
    pub account_exists: bool,
}

/// A provider key as the admin page shows it: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderKeyRow {
    /// `openai`, `anthropic` or `openai_compatible`.
    pub provider: String,
    pub label: String,
    pub configured: bool,
    pub last_four: Option<String>,
    pub base_url: Option<String>,
    pub added_by: Option<String>,
    pub added: Option<String>,
    pub last_used: Option<String>,
}

/// The result of the Test button on a provider key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCheck {
    pub ok: bool,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_by: Option<String>,
    pub created: String,
    pub last_used: Option<String>,
    pub revoked: Option<String>,
}

/// A new API key: the token is shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedApiKey {
    pub name: String,
    pub token: String,
}
