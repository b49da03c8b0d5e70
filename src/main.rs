//! The `sessiond` binary: read settings, set up logging, then serve or run a
//! `keys` command.

use std::process::ExitCode;

use clap::Parser;
use sessiond::app::Application;
use sessiond::config::{Cli, Command};

fn main() -> ExitCode {
    if let Err(e) = load_dotenv() {
        eprintln!("error: cannot read .env: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    if let Err(e) = sessiond::log_limit::init_logger("info") {
        eprintln!("error: logging setup failed: {e}");
        return ExitCode::from(2);
    }

    match cli.command {
        Some(Command::Keys { command }) => {
            let code = sessiond::keys::cli::run(command, chrono::Utc::now());
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        None => serve(cli),
    }
}

/// Reads `.env` from the working directory when it exists. Variables
/// already set in the environment win.
fn load_dotenv() -> Result<(), String> {
    let entries = match dotenvy::from_path_iter(".env") {
        Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
        Ok(entries) => entries,
    };
    // dotenvy keeps the first of two lines for one variable, so a line
    // appended to override an earlier one would be ignored without a word.
    let mut seen = std::collections::HashSet::new();
    for entry in entries {
        let (name, _) = entry.map_err(|e| e.to_string())?;
        if !seen.insert(name.clone()) {
            return Err(format!(
                "{name} is set more than once; keep one line for it"
            ));
        }
    }
    dotenvy::from_path(".env").map_err(|e| e.to_string())
}

fn serve(cli: Cli) -> ExitCode {
    let config = match cli.serve.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config)
            .await
            .map_err(|e| e.to_string())?;
        app.run_until_stopped().await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
