//! Accounts: people, their passwords, the clinics they belong to, invitations, and the
//! throttle on sign-in attempts.

pub mod accounts;
pub mod email;
pub mod invitations;
pub mod members;
pub mod password;
pub mod throttle;

pub use accounts::{
    authenticate, current_clinic, first_clinic, memberships, sign_up, viewer, Membership, SignUp,
    User, Viewer,
};
pub use email::Email;
pub use password::Password;
