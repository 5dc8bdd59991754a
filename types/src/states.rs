//! Typed states stored as text: each enum has one name per variant, used in Postgres (the
//! schema's `CHECK`s list the same names), on the wire (serde) and in forms (`FromStr`).

use std::fmt;
use std::str::FromStr;

use crate::UnknownName;

/// An enum whose variants are stored and sent as fixed names.
macro_rules! named_enum {
    (
        $(#[$doc:meta])*
        $name:ident ($what:literal) {
            $( $(#[$vdoc:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vdoc])* $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            const NAMES: &'static [&'static str] = &[$($text),+];

            /// The stored name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s.trim() {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownName {
                        what: $what,
                        given: other.to_string(),
                        expected: Self::NAMES,
                    }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                Ok(s.parse()?)
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    };
}

named_enum! {
    /// What a member may do in a clinic. Ordered: `Staff < Admin < Owner`.
    Role ("role") {
        Staff = "staff",
        Admin = "admin",
        Owner = "owner",
    }
}

impl Role {
    /// Owners and admins manage the clinic (members, keys, agents, billing).
    pub fn is_admin(self) -> bool {
        self >= Role::Admin
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Staff => "Staff",
            Role::Admin => "Admin",
            Role::Owner => "Owner",
        }
    }

    /// Most powerful first, as role pickers list them.
    pub const DESCENDING: [Role; 3] = [Role::Owner, Role::Admin, Role::Staff];
}

named_enum! {
    /// Who wrote a message: the clinic's instructions, a person, or the model.
    MessageRole ("message role") {
        System = "system",
        User = "user",
        Assistant = "assistant",
    }
}

named_enum! {
    /// Where a message of a conversation stands.
    MessageStatus ("message status") {
        /// A reply waiting for the request that generates it.
        Pending = "pending",
        /// A request is generating the reply (a page opened meanwhile waits for it).
        Generating = "generating",
        Complete = "complete",
        /// Stopped by the person; what was generated is kept.
        Stopped = "stopped",
        /// The reply failed; the message's error says why.
        Failed = "failed",
    }
}

impl MessageStatus {
    /// The reply is still to come (waiting or being generated).
    pub fn in_progress(self) -> bool {
        matches!(self, MessageStatus::Pending | MessageStatus::Generating)
    }
}

named_enum! {
    /// How the generation of a reply ended.
    ReplyEnd ("reply end") {
        Complete = "complete",
        Stopped = "stopped",
        Failed = "failed",
    }
}

impl From<ReplyEnd> for MessageStatus {
    fn from(end: ReplyEnd) -> Self {
        match end {
            ReplyEnd::Complete => MessageStatus::Complete,
            ReplyEnd::Stopped => MessageStatus::Stopped,
            ReplyEnd::Failed => MessageStatus::Failed,
        }
    }
}

named_enum! {
    /// The plans a clinic can be on (their prices and limits are rows of `plans`).
    PlanId ("plan") {
        Starter = "starter",
        Professional = "professional",
        Enterprise = "enterprise",
    }
}

impl PlanId {
    /// The plan a clinic falls back to when its subscription ends.
    pub const FALLBACK: PlanId = PlanId::Starter;
}

named_enum! {
    /// Where model calls go.
    Provider ("provider") {
        OpenAi = "openai",
        Anthropic = "anthropic",
        /// Any server speaking OpenAI's API at a base URL the clinic sets (Ollama, vLLM, ...).
        OpenAiCompatible = "openai_compatible",
    }
}

impl Provider {
    pub fn label(self) -> &'static str {
        match self {
            Provider::OpenAi => "OpenAI",
            Provider::Anthropic => "Anthropic",
            Provider::OpenAiCompatible => "OpenAI-compatible endpoint",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_say_what_exists() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(*role));
        }
        let err = "root".parse::<Role>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unknown role \"root\": choose staff, admin, owner."
        );
        assert_eq!(
            "openai_compatible".parse::<Provider>(),
            Ok(Provider::OpenAiCompatible)
        );
        assert!("Generating".parse::<MessageStatus>().is_err());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Owner > Role::Admin && Role::Admin > Role::Staff);
        assert!(Role::Admin.is_admin() && !Role::Staff.is_admin());
    }

    #[test]
    fn serde_uses_the_stored_names() {
        let json = serde_json::to_string(&MessageStatus::Generating).unwrap();
        assert_eq!(json, "\"generating\"");
        assert_eq!(
            serde_json::from_str::<Role>("\"admin\"").unwrap(),
            Role::Admin
        );
        assert!(serde_json::from_str::<Role>("\"Admin\"").is_err());
        assert!(MessageStatus::Generating.in_progress());
        assert!(!MessageStatus::from(ReplyEnd::Stopped).in_progress());
    }
}

named_enum! {
    /// Where a document is on its way to being searchable.
    DocumentStatus ("document status") {
        /// Waiting for a worker.
        Queued = "queued",
        /// Its text is being read and split into passages.
        Extracting = "extracting",
        /// Its passages are being embedded.
        Embedding = "embedding",
        /// Searchable.
        Ready = "ready",
        /// Ingestion gave up; the document's error says why.
        Failed = "failed",
    }
}

impl DocumentStatus {
    /// A worker still has the document to do.
    pub fn in_progress(self) -> bool {
        matches!(
            self,
            DocumentStatus::Queued | DocumentStatus::Extracting | DocumentStatus::Embedding
        )
    }

    /// For people: "Ready".
    pub fn label(self) -> &'static str {
        match self {
            DocumentStatus::Queued => "Queued",
            DocumentStatus::Extracting => "Extracting",
            DocumentStatus::Embedding => "Embedding",
            DocumentStatus::Ready => "Ready",
            DocumentStatus::Failed => "Failed",
        }
    }
}

named_enum! {
    /// The file formats Tessera reads.
    DocumentKind ("document format") {
        Text = "text",
        Markdown = "markdown",
        Html = "html",
        Pdf = "pdf",
        Docx = "docx",
    }
}

impl DocumentKind {
    /// For people: "PDF".
    pub fn label(self) -> &'static str {
        match self {
            DocumentKind::Text => "Text",
            DocumentKind::Markdown => "Markdown",
            DocumentKind::Html => "HTML",
            DocumentKind::Pdf => "PDF",
            DocumentKind::Docx => "Word",
        }
    }
}
