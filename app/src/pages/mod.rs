pub mod api_keys;
pub mod auth;
pub mod errors;
pub mod home;
pub mod invite;
pub mod keys;
pub mod members;
pub mod usage;
