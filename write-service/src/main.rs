use std::ffi::OsString;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use domain::UserId;
use secrecy::{ExposeSecret, SecretString};
use service_kit::auth::Claims;
use service_kit::settings::secret;
use service_kit::shutdown::shutdown_signal;
use service_kit::telemetry;
use write_service::{Application, Settings, migrate};

/// In a perf profile of S1 (`make bench`), glibc malloc and free were about a quarter of the
/// process running the write-service and its load generator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Order command service: validates commands and appends events to PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve(Box<Settings>),
    /// Apply the database migrations and exit.
    Migrate(Box<Settings>),
    /// Print a bearer token signed with AUTH_HS256_SECRET, for development and scripts.
    Token(TokenArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The customer id the token carries as `sub`.
    #[arg(long)]
    sub: UserId,
    /// Give the token the `staff` role.
    #[arg(long)]
    staff: bool,
    /// How long the token is valid, e.g. `1h`, `30m`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    // The secret, issuer and audience read as `AuthSettings` reads them (a test checks the
    // defaults), without the settings a token does not need.
    /// The secret the services check tokens with.
    #[arg(long = "auth-hs256-secret", env = "AUTH_HS256_SECRET", hide_env_values = true, value_parser = secret)]
    secret: Option<SecretString>,
    /// The `iss` the services expect.
    #[arg(
        long = "auth-issuer",
        env = "AUTH_ISSUER",
        default_value = "order-backend"
    )]
    issuer: String,
    /// The `aud` the services expect.
    #[arg(
        long = "auth-audience",
        env = "AUTH_AUDIENCE",
        default_value = "order-backend"
    )]
    audience: String,
}

/// `serve` is the default: unless the first argument names a subcommand or asks for help or
/// the version, `serve` goes before the arguments, so `write-service` alone (or with serve's
/// flags) serves as it always did.
fn with_default_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let cli = Cli::command();
    let first = args.get(1).and_then(|a| a.to_str());
    let named = first.is_some_and(|f| {
        cli.get_subcommands()
            .any(|c| c.get_name() == f || c.get_all_aliases().any(|a| a == f))
            || matches!(f, "help" | "-h" | "--help" | "-V" | "--version")
    });
    if !named {
        args.insert(1.min(args.len()), "serve".into());
    }
    args
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    match cli.command {
        Command::Token(args) => token(args),
        Command::Migrate(settings) => {
            telemetry::init_tracing();
            tracing::info!(?settings, "starting");
            let pool = settings.pool()?;
            migrate(&pool, Duration::from_secs(30)).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve(settings) => {
            telemetry::init_tracing();
            tracing::info!(?settings, "starting");
            let app = Application::build(*settings).await?;
            tracing::info!(port = app.port(), "write-service listening");
            app.run_until(shutdown_signal()).await?;
            Ok(())
        }
    }
}

/// The token alone on stdout, so `TOKEN=$(write-service token --sub alice)` works.
fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = args.secret.context(
        "no AUTH_HS256_SECRET: set it to the secret the services check tokens with \
         (tokens for a JWKS come from your identity provider)",
    )?;
    let secret = secret.expose_secret().as_bytes();
    // A shorter secret is one the services refuse to start with: its tokens would be useless.
    anyhow::ensure!(
        secret.len() >= 32,
        "AUTH_HS256_SECRET must be at least 32 bytes, as the services require"
    );
    let claims = Claims::new(
        args.sub.as_str(),
        &args.issuer,
        &args.audience,
        args.staff,
        args.ttl,
    );
    println!("{}", claims.sign_hs256(secret)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use service_kit::auth::AuthSettings;

    use super::{Cli, Command, with_default_command};

    /// The token command reads the issuer and audience as the services do, defaults too.
    #[test]
    fn tokens_default_to_what_the_services_expect() {
        #[derive(Parser)]
        struct Service {
            #[command(flatten)]
            auth: AuthSettings,
        }
        let service = Service::parse_from(["ws"]).auth;
        let Command::Token(token) = Cli::parse_from(["ws", "token", "--sub", "a"]).command else {
            panic!("not the token command");
        };
        assert_eq!(token.issuer, service.issuer);
        assert_eq!(token.audience, service.audience);
    }

    fn args(list: &[&str]) -> Vec<String> {
        let list = list.iter().map(Into::into).collect();
        with_default_command(list)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn serve_is_the_default_command() {
        assert_eq!(args(&["ws"]), ["ws", "serve"]);
        assert_eq!(
            args(&["ws", "--addr", "0.0.0.0:1"]),
            ["ws", "serve", "--addr", "0.0.0.0:1"]
        );
        assert_eq!(args(&["ws", "migrate"]), ["ws", "migrate"]);
        assert_eq!(
            args(&["ws", "token", "--sub", "a"]),
            ["ws", "token", "--sub", "a"]
        );
        assert_eq!(args(&["ws", "--help"]), ["ws", "--help"]);
    }
}
