//! Tenants (clinics), their identifiers and the roles people hold in them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[sqlx(transparent)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Uuid::parse_str(s.trim()).map(Self).map_err(|_| Error::NotFound)
            }
        }
    };
}

id_type!(
    /// A clinic.
    TenantId
);
id_type!(
    /// A person with an account; may belong to several clinics.
    UserId
);
id_type!(
    /// An invitation to join a clinic.
    InvitationId
);

/// What a member may do in a clinic. Ordered: `Staff < Admin < Owner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Staff,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Staff => "staff",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Owners and admins manage the clinic (members, keys, billing).
    pub fn is_admin(self) -> bool {
        self >= Role::Admin
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "staff" => Ok(Role::Staff),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            other => Err(Error::invalid(format!(
                "Unknown role {other:?}: choose owner, admin or staff."
            ))),
        }
    }
}

/// A clinic as the app sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub plan: String,
    pub active: bool,
}

/// A clinic name: trimmed, 2 to 120 characters.
pub fn parse_clinic_name(raw: &str) -> Result<String> {
    let name = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    match name.chars().count() {
        0 => Err(Error::invalid("Enter the clinic's name.")),
        1 => Err(Error::invalid(
            "The clinic's name needs at least 2 characters.",
        )),
        2..=120 => Ok(name),
        _ => Err(Error::invalid(
            "The clinic's name can have at most 120 characters.",
        )),
    }
}

/// A URL-safe slug from a name: lowercase ASCII letters and digits separated by single dashes.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 48 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-').to_string();
    if slug.is_empty() {
        "clinic".to_string()
    } else {
        slug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_url_safe() {
        assert_eq!(slugify("Harbour Family Clinic"), "harbour-family-clinic");
        assert_eq!(slugify("  St. Mary's -- Dental!! "), "st-mary-s-dental");
        assert_eq!(slugify("???"), "clinic");
        assert_eq!(slugify("Zürich Praxis"), "z-rich-praxis");
    }

    #[test]
    fn roles_are_ordered_and_parsed() {
        assert!(Role::Owner > Role::Admin && Role::Admin > Role::Staff);
        assert_eq!("Admin".parse::<Role>().unwrap(), Role::Admin);
        assert!("root".parse::<Role>().is_err());
        assert!(Role::Admin.is_admin() && !Role::Staff.is_admin());
    }

    #[test]
    fn clinic_names_are_trimmed_and_bounded() {
        assert_eq!(
            parse_clinic_name("  North   Clinic ").unwrap(),
            "North Clinic"
        );
        assert!(parse_clinic_name(" ").is_err());
        assert!(parse_clinic_name(&"x".repeat(121)).is_err());
    }
}
