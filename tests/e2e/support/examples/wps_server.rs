//! The fake Web PubSub service as a standalone process, for benchmarks
//! (`scripts/bench-wear.sh`): it checks every request like the service does
//! and accepts it. Prints its connection string on the first line of stdout,
//! then serves until killed.
//!
//! Usage: `wps_server <hub> <access key>`

use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(hub), Some(key)) = (args.next(), args.next()) else {
        eprintln!("usage: wps_server <hub> <access key>");
        std::process::exit(2);
    };
    let server = hxlog_test_support::wps_server::start(&hub, &key).await;
    let mut out = std::io::stdout();
    writeln!(out, "{}", server.connection_string()).expect("write to stdout");
    out.flush().expect("flush stdout");
    std::future::pending::<()>().await;
}
