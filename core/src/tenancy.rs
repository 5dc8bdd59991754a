//! Tenants (clinics), their identifiers and the roles people hold in them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use tessera_types::Role;

use crate::{Error, PlanId, Result};

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

/// A clinic as the app sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub plan: PlanId,
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

/// A URL-safe slug from a name: lowercase ASCII letters and digits separated by single dashes,
/// at most `max_len` long; `fallback` when the name has no such character.
pub fn slug(name: &str, max_len: usize, fallback: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if slug.len() >= max_len {
            break;
        }
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        fallback.to_string()
    } else {
        slug.to_string()
    }
}

/// A clinic's slug: `Harbour Family Clinic` -> `harbour-family-clinic`.
pub fn slugify(name: &str) -> String {
    slug(name, 48, "clinic")
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
    fn clinic_names_are_trimmed_and_bounded() {
        assert_eq!(
            parse_clinic_name("  North   Clinic ").unwrap(),
            "North Clinic"
        );
        assert!(parse_clinic_name(" ").is_err());
        assert!(parse_clinic_name(&"x".repeat(121)).is_err());
    }
}
