//! The cluster's shared secret: when set, every request must present it.

use tonic::{Request, Status};

pub const SECRET_HEADER: &str = "x-kvraft-secret";

/// A tonic interceptor refusing requests without the secret.
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
