//! The gRPC services a server offers, and the client wire beside them.
//! Each only validates and forwards to the event loop; none touches the
//! core.

pub mod admin;
pub mod admitted;
pub mod client;
pub mod client_wire;
pub mod control;

use tokio::sync::mpsc::UnboundedSender;
use tonic::Status;

use crate::node_loop::Input;

/// The event loop's input, shared by every service.
#[derive(Clone)]
pub struct LoopHandle(pub UnboundedSender<Input>);

impl LoopHandle {
    pub fn send(&self, input: Input) -> Result<(), Status> {
        self.0.send(input).map_err(|_| Status::unavailable("server is shutting down"))
    }
}
