//! Connections to each server's ServerControl and Admin services, made
//! lazily and kept, with the cluster secret on every request.

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
    admin: HashMap<u64, (String, Channel)>,
}

fn lazy(addr: &str) -> Option<Channel> {
    let e = Endpoint::from_shared(format!("http://{addr}")).ok()?;
    Some(e.connect_timeout(CALL_TIMEOUT).timeout(CALL_TIMEOUT).tcp_nodelay(true).connect_lazy())
}

impl Controls {
    pub fn new(secret: String) -> Self {
        Controls { secret, ..Default::default() }
    }

    /// Points `id` at its addresses (reconnecting if they changed).
    pub fn set(&mut self, id: u64, control_addr: &str, client_addr: &str) {
        for (map, addr) in [(&mut self.control, control_addr), (&mut self.admin, client_addr)] {
            if map.get(&id).is_some_and(|(a, _)| a == addr) {
                continue;
            }
            if let Some(ch) = lazy(addr) {
                map.insert(id, (addr.to_owned(), ch));
            }
        }
    }

    pub fn control(&self, id: u64) -> Option<ServerControlClient<Channel>> {
        self.control.get(&id).map(|(_, ch)| ServerControlClient::new(ch.clone()))
    }

    pub fn admin(&self, id: u64) -> Option<AdminClient<Channel>> {
        self.admin.get(&id).map(|(_, ch)| AdminClient::new(ch.clone()))
    }

    /// A request carrying the cluster secret.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = with_secret(msg, &self.secret);
        r.set_timeout(CALL_TIMEOUT);
        r
    }
}
