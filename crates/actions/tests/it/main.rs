//! Integration tests of the e-mail, SMS and task executors and of the webhook client
//! against real servers on 127.0.0.1: aiosmtpd for SMTP, local HTTP stand-ins for Twilio
//! and the task providers, scripted HTTP/1.1 servers (plain and TLS) for webhooks.

mod common;
mod email;
mod sms;
mod task;
mod webhook_client;
