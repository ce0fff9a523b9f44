//! Integration tests of the e-mail, SMS and task executors against real servers on
//! 127.0.0.1: aiosmtpd for SMTP, local HTTP stand-ins for Twilio and the task providers.

mod common;
mod email;
mod sms;
mod task;
