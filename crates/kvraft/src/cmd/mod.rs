//! One module per subcommand.

pub mod lincheck;
pub mod sim;
