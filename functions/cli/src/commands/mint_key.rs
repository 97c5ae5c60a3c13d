//! `mint-key CLIENT`: a new key for an HTTP API client, and the hash that goes into the
//! client keys secret. The key itself is printed once and stored nowhere.
//!
//! Rotation: mint a new key, add its hash next to the old one in the secret
//! (`{"CLIENT": ["<old>", "<new>"]}`), hand the new key over, then remove the old hash.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use secrecy::ExposeSecret;
use shared::config::{ConfigError, load_file};

#[derive(Debug, clap::Args)]
pub struct MintKeyArgs {
    /// The client's name, as in its `[[client]]` entry.
    client: String,
    /// Print `{"client", "key", "sha256"}` as JSON.
    #[arg(long)]
    json: bool,
    /// Mint even if the triggers file has no such client (e.g. before adding it).
    #[arg(long)]
    force: bool,
}

pub fn run(config: &Path, args: MintKeyArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.as_str();
    let plain = !client.is_empty()
        && client.len() <= 64
        && client
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain {
        bail!("`{client}` is not a client name (1 to 64 letters, digits, `-` or `_`)");
    }
    if !args.force {
        let triggers = match load_file(config) {
            Ok(triggers) => triggers,
            Err(error @ ConfigError::Read { .. }) => {
                bail!("{error} (pass --force to mint without checking the client)")
            }
            Err(error) => return Err(error.into()),
        };
        if !triggers.client.iter().any(|c| c.name == client) {
            let known: Vec<&str> = triggers.client.iter().map(|c| c.name.as_str()).collect();
            bail!(
                "{} has no [[client]] named `{client}` (configured: {}); add it first or pass --force",
                config.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    let minted = shared::triggers::http::mint_key(client);
    let hash = minted.hash.to_hex();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "client": client,
                "key": minted.key.expose_secret(),
                "sha256": hash,
            })
        );
    } else {
        println!("Key for client `{client}` (shown once: give it to the client, keep no copy):");
        println!("  {}", minted.key.expose_secret());
        println!("SHA-256 to add to the client keys secret, next to any current ones:");
        println!("  {hash}");
        println!("  e.g. {{\"{client}\": [\"{hash}\"]}}");
    }
    Ok(ExitCode::SUCCESS)
}
