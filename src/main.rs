use clap::Parser as _;

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
