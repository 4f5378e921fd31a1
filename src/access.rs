//! `weft token` and `weft user`: manage the credentials file a running weft
//! rereads within a second of each change.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use weft_access::{Credentials, Role};
use weft_store::TenantId;

use crate::config::{Config, ServerArgs};

/// Which credentials file: the one `weft serve` with the same flags uses.
#[derive(Debug, Clone, Args)]
pub struct CredentialsLocation {
    /// weft's TOML config file, to find the credentials file the way `weft serve` does
    #[arg(long, env = "WEFT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory [default: ./weft-data]
    #[arg(long, env = "WEFT_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The credentials file [default: credentials.toml in the data directory]
    #[arg(long, env = "WEFT_CREDENTIALS_FILE", value_name = "FILE")]
    credentials_file: Option<PathBuf>,
}

impl CredentialsLocation {
    fn path(&self) -> anyhow::Result<PathBuf> {
        let config = Config::resolve(&ServerArgs {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            credentials_file: self.credentials_file.clone(),
            ..Default::default()
        })?;
        Ok(config.auth_config().credentials_file)
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (only this once; weft keeps its hash)
    Create {
        /// The tenant whose data the token sends or reads
        #[arg(long, default_value = TenantId::DEFAULT_NAME)]
        tenant: TenantId,
        /// ingest (OTLP), read (query API and UI) or admin (both, and /metrics)
        #[arg(long)]
        role: Role,
        /// What the token is for
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        location: CredentialsLocation,
    },
    /// List the tokens (ids, tenants, roles; never the tokens themselves)
    List {
        #[command(flatten)]
        location: CredentialsLocation,
    },
    /// Revoke a token by its id; weft refuses it within a second
    Revoke {
        id: String,
        #[command(flatten)]
        location: CredentialsLocation,
    },
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user who logs in to the UI and API with a password (read from standard input), or change one
    Add {
        name: String,
        #[arg(long, default_value = TenantId::DEFAULT_NAME)]
        tenant: TenantId,
        /// read or admin (ingest works too, but OTLP clients use tokens)
        #[arg(long)]
        role: Role,
        #[command(flatten)]
        location: CredentialsLocation,
    },
    /// Remove a user
    Remove {
        name: String,
        #[command(flatten)]
        location: CredentialsLocation,
    },
}

pub fn run_token(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::Create {
            tenant,
            role,
            name,
            location,
        } => {
            let path = location.path()?;
            let mut credentials = Credentials::load(&path)?;
            let (entry, token) = credentials.create_token(tenant, role, &name)?;
            credentials.save(&path)?;
            eprintln!(
                "created token {} ({} of tenant {}) in {}; it is shown only now:",
                entry.id,
                entry.role,
                entry.tenant,
                path.display()
            );
            println!("{token}");
        }
        TokenCommand::List { location } => {
            let credentials = Credentials::load(&location.path()?)?;
            println!(
                "{:<10} {:<20} {:<8} {:<22} NAME",
                "ID", "TENANT", "ROLE", "CREATED"
            );
            for t in &credentials.tokens {
                println!(
                    "{:<10} {:<20} {:<8} {:<22} {}",
                    t.id, t.tenant, t.role, t.created, t.name
                );
            }
        }
        TokenCommand::Revoke { id, location } => {
            let path = location.path()?;
            let mut credentials = Credentials::load(&path)?;
            if !credentials.revoke_token(&id) {
                bail!("no token with id {id} in {}", path.display());
            }
            credentials.save(&path)?;
            eprintln!("revoked token {id}");
        }
    }
    Ok(())
}

pub fn run_user(args: UserArgs) -> anyhow::Result<()> {
    match args.command {
        UserCommand::Add {
            name,
            tenant,
            role,
            location,
        } => {
            let path = location.path()?;
            let mut credentials = Credentials::load(&path)?;
            if std::io::stdin().is_terminal() {
                eprint!("password for {name} (shown as you type; pipe it in to avoid that): ");
            }
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            credentials.set_user(&name, tenant, role, password)?;
            credentials.save(&path)?;
            eprintln!("user {name} saved in {}", path.display());
        }
        UserCommand::Remove { name, location } => {
            let path = location.path()?;
            let mut credentials = Credentials::load(&path)?;
            if !credentials.remove_user(&name) {
                bail!("no user {name} in {}", path.display());
            }
            credentials.save(&path)?;
            eprintln!("removed user {name}");
        }
    }
    Ok(())
}
