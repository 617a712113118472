use clap::Parser as _;

/// Returns the memory of a burst to the system once it is over (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match instauth::cli::run(instauth::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("instauth: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
