//! One connection to each server's control port, made lazily and kept,
//! for its ServerControl and Admin services, with the cluster secret on
//! every request. Admin is read there, not on the client port: the control
//! port keeps its places for the coord, so a server whose client port is
//! full still answers it (a restarted coord asks every server for its
//! role and term, and would otherwise miss a live leader).

use std::collections::HashMap;
use std::time::Duration;

use kvraft_proto::admin_client::AdminClient;
use kvraft_proto::secret::with_secret;
use kvraft_proto::server_control_client::ServerControlClient;
use tonic::transport::{Channel, Endpoint};

/// How long one call to a server may take before it counts as unanswered.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone, Default)]
pub struct Controls {
    secret: String,
    control: HashMap<u64, (String, Channel)>,
}

fn lazy(addr: &str) -> Option<Channel> {
    let e = Endpoint::from_shared(format!("http://{addr}")).ok()?;
    Some(e.connect_timeout(CALL_TIMEOUT).timeout(CALL_TIMEOUT).tcp_nodelay(true).connect_lazy())
}

impl Controls {
    pub fn new(secret: String) -> Self {
        Controls { secret, ..Default::default() }
    }

    /// Points `id` at its control address (reconnecting if it changed).
    pub fn set(&mut self, id: u64, control_addr: &str) {
        if self.control.get(&id).is_some_and(|(a, _)| a == control_addr) {
            return;
        }
        if let Some(ch) = lazy(control_addr) {
            self.control.insert(id, (control_addr.to_owned(), ch));
        }
    }

    pub fn control(&self, id: u64) -> Option<ServerControlClient<Channel>> {
        self.control.get(&id).map(|(_, ch)| ServerControlClient::new(ch.clone()))
    }

    pub fn admin(&self, id: u64) -> Option<AdminClient<Channel>> {
        self.control.get(&id).map(|(_, ch)| AdminClient::new(ch.clone()))
    }

    /// A request carrying the cluster secret.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = with_secret(msg, &self.secret);
        r.set_timeout(CALL_TIMEOUT);
        r
    }
}
