//! The runbook's other half, people: what an incident's channels are told
//! and when (`moments`, `outbox`), whom to page while nobody acknowledges
//! (`escalation`), and how messages read (`templates`). All pure: the
//! incident, the channels and the clock in, the records to add out; the
//! notifier records them before anything is sent, so a restart neither
//! sends twice nor skips.

pub mod channel_limits;
pub mod escalation;
pub mod in_flight;
pub mod moments;
pub mod opsgenie;
pub mod outbox;
pub mod payloads;
pub mod readiness;
pub mod report;
pub mod send;
pub mod signing;
pub mod teams;
pub mod templates;
pub mod webhook_body;
