//! `sealroom proposal`: propose, list, show, approve and reject contract versions of an interactive
//! room (see `docs/governance.md`). Approving and rejecting sign a decision with the participant's
//! issuer key, after checking that the contract the server shows is the one whose digest is signed.

use std::path::PathBuf;

use clap::Subcommand;
use sealroom_attest::token::{self, Decision};
use sealroom_proto::RoomFile;
use serde_json::{Value, json};

use crate::{CliError, RestArgs, client, credential};

#[derive(Debug, Subcommand)]
pub enum ProposalCommand {
    /// Propose a room file as the next version of the room's contract.
    Propose {
        #[command(flatten)]
        room: RestArgs,
        /// The whole proposed room file: the contract in force plus the change.
        #[arg(long)]
        room_file: PathBuf,
        /// The version it changes (`contract_version` of the room); a proposal against an older
        /// version is refused.
        #[arg(long)]
        base_version: u64,
        /// Why, for the other participants.
        #[arg(long, default_value = "")]
        description: String,
        /// Also sign and send your own approval (with --key) when your data is touched.
        #[arg(long)]
        approve: bool,
    },
    /// List the room's proposals.
    List {
        #[command(flatten)]
        room: RestArgs,
    },
    /// Show one proposal with its proposed contract.
    Show {
        #[command(flatten)]
        room: RestArgs,
        /// The proposal id.
        #[arg(long)]
        id: String,
    },
    /// Approve a proposal: sign a decision with your issuer key (--key) and send it.
    Approve {
        #[command(flatten)]
        room: RestArgs,
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reject a proposal: sign a decision with your issuer key (--key) and send it.
    Reject {
        #[command(flatten)]
        room: RestArgs,
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(command: ProposalCommand) -> Result<(), CliError> {
    match command {
        ProposalCommand::Propose { room, room_file, base_version, description, approve } => {
            let text = std::fs::read_to_string(&room_file).map_err(|e| CliError::io(&room_file, e))?;
            // Checked here first, so that a typo is reported with its line before anything is sent.
            RoomFile::parse(&text, &room_file.display().to_string()).map_err(|e| CliError::Input(e.to_string()))?;
            if approve && room.credential.key.is_none() {
                return Err(CliError::Usage(
                    "--approve signs with your issuer key: give --key and --participant".into(),
                ));
            }
            let client = room.client()?;
            let body = json!({ "base_version": base_version, "room_file": text, "description": description });
            let created = client.post_json(&format!("/v1/rooms/{}/proposals", room.room), &body).await?;
            let mut proposal = created["proposal"].clone();
            let me = room.credential.participant.clone().unwrap_or_default();
            let touched = proposal["approvers"].as_array().is_some_and(|a| a.iter().any(|p| p == me.as_str()));
            if approve && touched && proposal["state"] == "open" {
                proposal = decide(&room, &client, &proposal, "approve", "").await?;
            }
            print_proposal(&proposal, room.json);
        }
        ProposalCommand::List { room } => {
            let all = room.client()?.get(&format!("/v1/rooms/{}/proposals", room.room)).await?;
            if room.json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else {
                let proposals = all["proposals"].as_array().cloned().unwrap_or_default();
                if proposals.is_empty() {
                    println!("no proposals");
                }
                for p in proposals {
                    println!(
                        "{}  v{} → v{}  {:<10}  by {}  awaiting: {}",
                        p["id"].as_str().unwrap_or("?"),
                        p["base_version"],
                        p["version"],
                        p["state"].as_str().unwrap_or("?"),
                        p["proposed_by"].as_str().unwrap_or("?"),
                        list(&p["awaiting"])
                    );
                }
            }
        }
        ProposalCommand::Show { room, id } => {
            let shown = room.client()?.get(&format!("/v1/rooms/{}/proposals/{id}", room.room)).await?;
            let proposal = &shown["proposal"];
            if room.json {
                println!("{}", serde_json::to_string_pretty(&shown).unwrap_or_default());
            } else {
                print_proposal(proposal, false);
                println!("\nproposed contract:\n{}", shown_contract(proposal)?.to_yaml());
            }
        }
        ProposalCommand::Approve { room, id, reason } => fetch_and_decide(&room, &id, "approve", &reason).await?,
        ProposalCommand::Reject { room, id, reason } => fetch_and_decide(&room, &id, "reject", &reason).await?,
    }
    Ok(())
}

/// Reads proposal `id`, then signs and sends `verdict` on the contract it shows.
async fn fetch_and_decide(args: &RestArgs, id: &str, verdict: &str, reason: &str) -> Result<(), CliError> {
    let client = args.client()?;
    let shown = client.get(&format!("/v1/rooms/{}/proposals/{id}", args.room)).await?;
    let decided = decide(args, &client, &shown["proposal"], verdict, reason).await?;
    print_proposal(&decided, args.json);
    Ok(())
}

/// Signs `verdict` on `proposal` (as the server showed it) and sends it.
async fn decide(
    args: &RestArgs,
    client: &client::Rest,
    proposal: &Value,
    verdict: &str,
    reason: &str,
) -> Result<Value, CliError> {
    let (Some(key), Some(participant)) = (&args.credential.key, &args.credential.participant) else {
        return Err(CliError::Usage(format!(
            "to {verdict} you sign a decision with your issuer key: give --key <issuer key> and --participant <id>"
        )));
    };
    let key = credential::load_key(key)?;
    let digest = checked_digest(proposal)?;
    let id = proposal["id"].as_str().unwrap_or_default().to_owned();
    let decision = Decision {
        sub: participant.clone(),
        room: args.room.clone(),
        proposal: id.clone(),
        version: proposal["version"].as_u64().unwrap_or(0),
        contract_sha256: digest,
        decision: verdict.to_owned(),
        iat: token::unix_now(),
        reason: reason.to_owned(),
    };
    let signature = key.sign_decision(&decision).map_err(|e| CliError::Input(e.to_string()))?;
    let decided = client
        .post_json(&format!("/v1/rooms/{}/proposals/{id}/{verdict}", args.room), &json!({ "signature": signature }))
        .await?;
    Ok(decided["proposal"].clone())
}

/// The digest of the contract the server shows, which must be the digest it says the proposal has:
/// a participant signs only what it was shown.
fn checked_digest(proposal: &Value) -> Result<String, CliError> {
    let digest = shown_contract(proposal)?.to_contract().canonical_sha256();
    let claimed = proposal["contract_sha256"].as_str().unwrap_or_default();
    if digest != claimed {
        return Err(CliError::Server(format!(
            "the proposal says its contract is {claimed}, but the contract it shows is {digest}; nothing was signed"
        )));
    }
    Ok(digest)
}

/// The proposed contract a proposal shows.
fn shown_contract(proposal: &Value) -> Result<RoomFile, CliError> {
    serde_json::from_value(proposal["contract"].clone())
        .map_err(|e| CliError::Server(format!("the proposal's contract is not a room file: {e}")))
}

fn list(v: &Value) -> String {
    let items: Vec<&str> = v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if items.is_empty() { "nobody".to_owned() } else { items.join(", ") }
}

fn print_proposal(p: &Value, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(p).unwrap_or_default());
        return;
    }
    println!(
        "proposal {} by {}: version {} → {} ({}{})",
        p["id"].as_str().unwrap_or("?"),
        p["proposed_by"].as_str().unwrap_or("?"),
        p["base_version"],
        p["version"],
        p["state"].as_str().unwrap_or("?"),
        if p["development"] == true { ", development mode: no approval needed" } else { "" }
    );
    println!("contract sha256 {}", p["contract_sha256"].as_str().unwrap_or("?"));
    for change in p["changes"].as_array().into_iter().flatten() {
        println!("  - {}", change.as_str().unwrap_or("?"));
    }
    println!("approvers: {}   awaiting: {}", list(&p["approvers"]), list(&p["awaiting"]));
}
