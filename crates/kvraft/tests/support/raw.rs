//! Raw client-wire connections, for the tests of the client port.

pub use kvraft_proto as pb;
pub use kvraft_proto::frame::{self, CLIENT_WIRE};
pub use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use tokio::net::TcpStream;

use std::time::Duration;

pub const MAX: usize = 1 << 20;

/// Connects and says hello with `secret`; the welcome that comes back.
pub async fn welcomed(addr: &str, secret: &str) -> (TcpStream, pb::ClientWelcome) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&CLIENT_WIRE.hello(&pb::ClientHello { secret: secret.into() })).await.unwrap();
    let mut scratch = Vec::new();
    let w = frame::read::<pb::ClientWelcome, _>(&mut s, &mut scratch, MAX).await.unwrap().expect("a welcome");
    (s, w)
}

/// The server closes `s` (anything it says first is read and dropped).
pub async fn closed(mut s: TcpStream, what: &str) {
    let mut buf = [0u8; 1024];
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => panic!("{what}: the connection was not closed"),
        }
    }
}

pub fn framed(msg: &impl prost::Message) -> Vec<u8> {
    let mut out = Vec::new();
    frame::push(&mut out, msg);
    out
}
