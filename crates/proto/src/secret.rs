//! The cluster's shared Secret on gRPC calls: callers attach it, and the
//! coord's and the servers' interceptor refuses a call without it. Kept in
//! one place so that the header's name cannot drift between processes.

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// The metadata key that carries the Secret.
pub const SECRET_HEADER: &str = "x-kvraft-secret";

/// The longest Secret: it also travels in the servers' peer hello, which is
/// capped before the Secret in it is checked.
pub const MAX_SECRET_BYTES: usize = 1024;

/// Why `secret` cannot be a cluster's Secret, if it cannot: it travels as
/// a gRPC header, so it is printable ASCII (spaces allowed), and it is at
/// most [`MAX_SECRET_BYTES`] long. Configs call this when they are read,
/// so that a Secret is never silently left off a call.
pub fn secret_problem(secret: &str) -> Option<String> {
    if secret.len() > MAX_SECRET_BYTES {
        return Some(format!("Secret is {} bytes, above the limit of {MAX_SECRET_BYTES}", secret.len()));
    }
    if let Some(c) = secret.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
        return Some(format!("Secret holds {c:?}: only printable ASCII travels in a gRPC header"));
    }
    None
}

/// `msg` as a request carrying `secret` (nothing when it is empty: a
/// cluster without a Secret checks nothing).
pub fn with_secret<T>(msg: T, secret: &str) -> Request<T> {
    let mut r = Request::new(msg);
    attach_secret(&mut r, secret);
    r
}

/// Adds `secret` to `req` (nothing when it is empty). A Secret that is not
/// a valid header value would be left off, and the call refused by a
/// cluster that has one; [`secret_problem`] keeps such Secrets out of
/// configs.
pub fn attach_secret<T>(req: &mut Request<T>, secret: &str) {
    if !secret.is_empty()
        && let Ok(v) = MetadataValue::try_from(secret)
    {
        req.metadata_mut().insert(SECRET_HEADER, v);
    }
}

/// A tonic interceptor refusing calls without the Secret (none is checked
/// when it is empty).
#[derive(Clone)]
pub struct SecretCheck {
    secret: String,
}

impl SecretCheck {
    pub fn new(secret: String) -> Self {
        SecretCheck { secret }
    }
}

impl tonic::service::Interceptor for SecretCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.secret.is_empty() {
            return Ok(req);
        }
        match req.metadata().get(SECRET_HEADER).and_then(|v| v.to_str().ok()) {
            Some(s) if s == self.secret => Ok(req),
            _ => Err(Status::unauthenticated("wrong or missing cluster secret")),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    #[test]
    fn only_the_right_secret_passes_a_check_that_has_one() {
        let mut check = SecretCheck::new("s3cret".into());
        assert!(check.call(with_secret((), "s3cret")).is_ok());
        let wrong = check.call(with_secret((), "other")).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(check.call(with_secret((), "")).is_err(), "a missing secret is refused");
        let mut open = SecretCheck::new(String::new());
        assert!(open.call(with_secret((), "anything")).is_ok());
        assert!(open.call(Request::new(())).is_ok());
    }

    #[test]
    fn a_secret_that_cannot_travel_is_named() {
        assert_eq!(secret_problem(""), None);
        assert_eq!(secret_problem("correct horse ~!@#"), None);
        assert!(secret_problem("line\nbreak").unwrap().contains("printable ASCII"));
        assert!(secret_problem("caf\u{e9}").unwrap().contains("printable ASCII"));
        let long = "s".repeat(MAX_SECRET_BYTES + 1);
        assert_eq!(secret_problem(&long).unwrap(), "Secret is 1025 bytes, above the limit of 1024");
        // What passes really does travel.
        let mut check = SecretCheck::new("correct horse ~!@#".into());
        assert!(check.call(with_secret((), "correct horse ~!@#")).is_ok());
    }
}
