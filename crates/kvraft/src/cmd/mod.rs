//! One module per subcommand.

pub mod lincheck;
pub mod server;
pub mod sim;
