//! The `sealroom` command line.
//!
//! | command | what |
//! |---|---|
//! | `sealroom demo` | the whole collaboration in one process on embedded defaults |
//! | `sealroom hash` | a CSV of raw emails/phones → a hashed Parquet/Arrow file ready to upload |
//! | `sealroom serve` | the enclave server for room files and a data directory |
//! | `sealroom attest` | verify a server's attestation against a room file; save its certificate to pin |
//! | `sealroom audit verify` | check an audit log's chain, signatures and signers' evidence offline |
//! | `sealroom upload` | upload a file to a table over Arrow Flight |
//! | `sealroom run` / `result` | run a computation / read its released result over REST |
//! | `sealroom room check` / `id` | validate a room file / print its room id |
//! | `sealroom keygen` | a participant's issuer key: the private half to a file, the public half for the room file |
//! | `sealroom token` | a participant token (JWT, ES256) signed with an issuer key |

// A command line prints its results.
#![allow(clippy::print_stdout)]

pub mod attest;
pub mod audit;
pub mod client;
pub mod credential;
pub mod demo;
pub mod hash;
pub mod link;
pub mod link_clk;
pub mod lookalike;
pub mod proposal;
pub mod report_table;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use sealroom_matching::normalize;
use sealroom_proto::RoomFile;
use sealroom_server::ServerConfig;

/// Errors of the command line, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Connect(String),
    #[error("the server refused: {0}")]
    Server(String),
}

impl CliError {
    pub fn io(path: &Path, source: impl Into<std::io::Error>) -> Self {
        Self::Io { path: path.display().to_string(), source: source.into() }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        Self::Usage(message)
    }
}

#[derive(Debug, Parser)]
#[command(name = "sealroom", version, about = "A confidential data clean room for advertising")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole collaboration in one process on embedded defaults (INSECURE SIMULATION).
    Demo(DemoArgs),
    /// Normalize and SHA-256 the emails and phones of a CSV into a file ready to upload.
    Hash(HashArgs),
    /// Serve room files: Arrow Flight and REST.
    Serve(ServeArgs),
    /// Verify a server's attestation evidence against a room file (before sending it anything)
    /// and save its TLS certificate for the other commands to pin.
    Attest(AttestArgs),
    /// Audit logs: verify chain, signatures and the signers' attestation offline.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Upload a Parquet or Arrow file to a table over Arrow Flight.
    Upload(UploadArgs),
    /// Run a computation over REST and print its released result.
    Run(RunArgs),
    /// Print the released result of a run over REST.
    Result(ResultArgs),
    /// Link two CSV files (or deduplicate one) locally and measure quality against a truth file.
    Link(LinkArgs),
    /// Train a lookalike model on a CSV and evaluate it (ROC AUC, recall at the top 10%).
    Lookalike(LookalikeArgs),
    /// Room files: validate, print the room id.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Make a participant's issuer key: the private key to a file (0600), the public key for the room file.
    Keygen {
        /// Where to write the private key (PKCS#8 PEM); never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Mint a participant token (JWT, ES256) with an issuer key, for `Authorization: Bearer`.
    Token(TokenArgs),
    /// Change an interactive room: propose a new contract version, list, show, approve, reject.
    #[command(subcommand)]
    Proposal(proposal::ProposalCommand),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The participant's issuer key (PKCS#8 PEM, `sealroom keygen`).
    #[arg(long, env = "SEALROOM_ISSUER_KEY")]
    pub key: PathBuf,
    /// The participant id the key belongs to.
    #[arg(long, env = "SEALROOM_PARTICIPANT")]
    pub participant: String,
    /// The room id the token is for.
    #[arg(long, required_unless_present = "room_file", conflicts_with = "room_file")]
    pub room: Option<String>,
    /// The room file (instead of --room).
    #[arg(long)]
    pub room_file: Option<PathBuf>,
    /// How long the token lives, e.g. 15m, 8h, 1day (at most the room's max_token_lifetime_seconds).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's files (replaced if a previous demo made it).
    #[arg(long, default_value = "demo-output")]
    pub dir: PathBuf,
    /// Advertiser CRM rows.
    #[arg(long, default_value_t = 50_000)]
    pub advertisers: usize,
    /// Publisher users.
    #[arg(long, default_value_t = 200_000)]
    pub publishers: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The room's k-anonymity threshold.
    #[arg(long, default_value_t = 100)]
    pub k: u32,
    /// Keep the server running after the demo, for curl and Flight clients.
    #[arg(long)]
    pub keep_running: bool,
    /// Hide progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct HashArgs {
    /// CSV with a header row.
    #[arg(long, short)]
    pub input: PathBuf,
    /// Output file: .parquet or .arrow.
    #[arg(long, short)]
    pub output: PathBuf,
    #[arg(long, default_value = "email")]
    pub email_column: String,
    #[arg(long, default_value = "phone")]
    pub phone_column: String,
    /// A column copied through unhashed, such as the customer id (matches the table's user_id column).
    #[arg(long)]
    pub id_column: Option<String>,
    /// Region of phone numbers written without a country code (ISO 3166-1 alpha-2).
    #[arg(long, default_value = "US")]
    pub region: String,
    /// Normalization rules for emails and phones: sealroom, google, meta or uid2 (the room's
    /// overlap must declare the same; see docs/matching/normalization.md).
    #[arg(long, default_value = "sealroom")]
    pub profile: String,
    /// Also encode each row's name, birth-date and address columns into a CLK Bloom filter (with
    /// keyed blocking keys) for privacy-preserving fuzzy matching. Needs the room's CLK secret.
    #[arg(long)]
    pub clk: bool,
    /// The room's CLK secret, hex (at least 16 bytes), shared by the data owners out of band.
    #[arg(long, requires = "clk")]
    pub clk_secret: Option<String>,
    /// A file holding the room's CLK secret as hex (keeps it out of shell history).
    #[arg(long, requires = "clk", conflicts_with = "clk_secret")]
    pub clk_secret_file: Option<PathBuf>,
    /// Columns to encode into the CLK (comma-separated); default: every recognized name, birth-date
    /// and address column. Both data owners must encode the same fields.
    #[arg(long, value_delimiter = ',', requires = "clk")]
    pub clk_columns: Vec<String>,
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (YAML); see services/server/config/server.example.yaml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Room file to host (repeatable); adds to the config's rooms.
    #[arg(long = "room")]
    pub rooms: Vec<PathBuf>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub flight_addr: Option<SocketAddr>,
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
}

/// Where the attested enclave's certificate is (saved by `sealroom attest --save-cert`).
#[derive(Debug, Args)]
pub struct EnclaveArgs {
    /// The enclave certificate `sealroom attest --save-cert` wrote after verifying the server:
    /// only a server holding its key is talked to.
    #[arg(long, env = "SEALROOM_ENCLAVE_CERT", default_value = "enclave.pem")]
    pub enclave_cert: PathBuf,
}

/// Offline verification inputs: endorsements and the time.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The chip's VCEK certificate (DER) from AMD's KDS, for SEV-SNP evidence that came without it.
    #[arg(long)]
    pub vcek: Option<PathBuf>,
    /// AMD's revocation list (DER) for the chip's product, from
    /// https://kdsintf.amd.com/vcek/v1/{Milan,Genoa,Turin}/crl: refuses a revoked ASK or VCEK (with --vcek).
    #[arg(long)]
    pub amd_crl: Option<PathBuf>,
    /// DCAP collateral (JSON) from a PCCS, for SGX and TDX evidence that came without it.
    #[arg(long)]
    pub collateral: Option<PathBuf>,
    /// Verify as of this time (seconds since the Unix epoch) instead of now.
    #[arg(long)]
    pub now: Option<u64>,
}

impl VerifyArgs {
    /// The endorsements given on the command line (they replace the evidence's own) and the
    /// verification time.
    fn resolve(&self) -> Result<(Option<sealroom_attest::Endorsements>, u64), CliError> {
        let endorsements =
            attest::endorsements(self.vcek.as_deref(), self.amd_crl.as_deref(), self.collateral.as_deref())?;
        Ok((endorsements, self.now.unwrap_or_else(attest::now)))
    }
}

#[derive(Debug, Args)]
pub struct AttestArgs {
    /// REST server address.
    #[arg(long, default_value = "https://127.0.0.1:8080")]
    pub rest: String,
    /// The room file you agreed to: its attestation section is the policy, its id the room.
    #[arg(long)]
    pub room_file: PathBuf,
    /// Where to save the verified certificate (PEM), for --enclave-cert, pyarrow or curl --cacert.
    #[arg(long, default_value = "enclave.pem")]
    pub save_cert: PathBuf,
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// Print the verification as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log (the JSON lines file, or the REST `/audit` response) with nothing but the
    /// room file: hash chain, every entry's signature, and each signing key's attestation evidence.
    Verify {
        /// The log: `audit.jsonl` from the data directory, or the JSON from `GET .../audit`.
        #[arg(long)]
        log: PathBuf,
        /// The room file: its id and attestation policy.
        #[arg(long)]
        room_file: PathBuf,
        #[command(flatten)]
        verify: VerifyArgs,
    },
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Flight server address.
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    pub flight: String,
    /// Room id (`sealroom room id <room file>`).
    #[arg(long)]
    pub room: String,
    #[arg(long)]
    pub table: String,
    #[command(flatten)]
    pub credential: credential::CredentialArgs,
    #[command(flatten)]
    pub enclave: EnclaveArgs,
    /// A .parquet or .arrow file.
    pub file: PathBuf,
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: RestArgs,
    #[arg(long)]
    pub computation: String,
}

#[derive(Debug, Args)]
pub struct ResultArgs {
    #[command(flatten)]
    pub target: RestArgs,
    #[arg(long)]
    pub computation: String,
    /// Run id, or `latest`.
    #[arg(long, default_value = "latest")]
    pub run: String,
}

/// A room on a REST server, and who is asking.
#[derive(Debug, Args)]
pub struct RestArgs {
    /// REST server address.
    #[arg(long, default_value = "https://127.0.0.1:8080")]
    pub rest: String,
    /// The room id.
    #[arg(long)]
    pub room: String,
    #[command(flatten)]
    pub credential: credential::CredentialArgs,
    #[command(flatten)]
    pub enclave: EnclaveArgs,
    /// Print the server's JSON instead of tables or a summary.
    #[arg(long)]
    pub json: bool,
}

impl RestArgs {
    /// A REST client of the attested server, with the caller's token for the room.
    pub fn client(&self) -> Result<client::Rest, CliError> {
        client::Rest::new(
            &self.rest,
            &self.credential.token(&self.room)?,
            &attest::Pinned::load(&self.enclave.enclave_cert)?,
        )
    }
}

#[derive(Debug, Args)]
pub struct LookalikeArgs {
    /// Training data: a CSV with a header row (categorical columns are detected and encoded).
    #[arg(long)]
    pub data: PathBuf,
    /// Evaluate on this CSV instead of holding out part of --data (train on all of --data).
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// The column that marks seed users.
    #[arg(long)]
    pub label: String,
    /// The label value of a seed user.
    #[arg(long, default_value = "1")]
    pub positive: String,
    /// A column to leave out (repeatable), e.g. one the label was derived from.
    #[arg(long = "exclude-column")]
    pub exclude_column: Vec<String>,
    #[arg(long, value_enum, default_value = "logistic")]
    pub model: ModelArg,
    /// Share of rows held out for evaluation (stratified), without --test.
    #[arg(long, default_value_t = 0.3)]
    pub test_fraction: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Weight the classes so that seed and non-seed rows count equally (for a small seed).
    #[arg(long)]
    pub balanced: bool,
    /// Logistic regression's L2 penalty α on the summed log loss (default 10; scikit-learn's
    /// C = 1 is α = 1).
    #[arg(long)]
    pub alpha: Option<f64>,
}

/// The models `sealroom lookalike` trains.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModelArg {
    /// L2-regularized logistic regression (L-BFGS).
    Logistic,
    /// Gradient-boosted trees on histograms.
    Forest,
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// The first file (CSV with a header row; the first column is the record id).
    #[arg(long, required_unless_present = "dedupe", conflicts_with = "dedupe")]
    pub left: Option<PathBuf>,
    #[arg(long, requires = "left")]
    pub right: Option<PathBuf>,
    /// Deduplicate one file instead of linking two.
    #[arg(long)]
    pub dedupe: Option<PathBuf>,
    /// Linkage settings (YAML); inferred from column names when absent.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// A column to leave out (repeatable), e.g. a label the matcher must not see.
    #[arg(long = "exclude-column")]
    pub exclude_column: Vec<String>,
    /// True pairs `left_id,right_id` (header row first): prints precision, recall and F1.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Match on Bloom-filter encodings (CLKs) instead of plaintext.
    #[arg(long)]
    pub clk: bool,
    /// Write the predicted pairs (`left_id,right_id,score`) to this CSV file.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// The record id column (default: the first column).
    #[arg(long)]
    pub id_column: Option<String>,
    /// Match probability threshold (Dice threshold with --clk).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// The shared CLK secret, hex (default: a random one per run).
    #[arg(long, requires = "clk")]
    pub clk_secret: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Validate a room file and summarize it.
    Check { file: PathBuf },
    /// Print the room id of a room file.
    Id { file: PathBuf },
}

fn load_room(file: &Path) -> Result<sealroom_proto::room::v1::RoomContract, CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| CliError::io(file, e))?;
    RoomFile::parse(&text, &file.display().to_string()).map_err(|e| CliError::Input(e.to_string()))
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn print_result(result: &serde_json::Value, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(result).unwrap_or_default());
    } else {
        println!("{}", report_table::render(result));
        println!("release digest: {}", result["release_digest"].as_str().unwrap_or("?"));
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Demo(a) => {
            demo::run(&demo::DemoOptions {
                dir: a.dir,
                advertisers: a.advertisers,
                publishers: a.publishers,
                seed: a.seed,
                k: a.k,
                keep_running: a.keep_running,
                progress: !a.no_progress,
            })
            .await?;
        }
        Command::Hash(a) => {
            let options = hash::HashOptions {
                input: a.input,
                output: a.output,
                email_column: a.email_column,
                phone_column: a.phone_column,
                id_column: a.id_column,
                region: normalize::region(&a.region)?,
                profile: a.profile.parse().map_err(CliError::Usage)?,
                clk_secret: clk_secret(a.clk, a.clk_secret.as_deref(), a.clk_secret_file.as_deref())?,
                clk_columns: a.clk_columns,
                progress: !a.no_progress,
            };
            let summary = tokio::task::spawn_blocking(move || hash::hash_csv(&options))
                .await
                .map_err(|e| CliError::Input(e.to_string()))??;
            println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
        }
        Command::Serve(a) => {
            let mut config = match &a.config {
                Some(path) => ServerConfig::load(path)?,
                None => ServerConfig::default(),
            };
            config.apply_env(|k| std::env::var(k).ok())?;
            config.rooms.extend(a.rooms);
            if let Some(d) = a.data_dir {
                config.data_dir = d;
            }
            if let Some(addr) = a.flight_addr {
                config.flight_addr = addr;
            }
            if let Some(addr) = a.http_addr {
                config.http_addr = addr;
            }
            let contracts = config.load_rooms()?;
            for c in &contracts {
                println!("hosting room {} ({}), k = {}", c.room_id(), c.name, c.effective_k());
            }
            let server =
                sealroom_server::start(&config, contracts).await.map_err(|e| CliError::Server(e.to_string()))?;
            let tee = server.engine.tee();
            if tee.is_insecure() {
                println!("{}", sealroom_engine::tee::SIMULATION_BANNER);
            }
            println!(
                "TEE {} · enclave key sha256 {}",
                tee.0.describe(),
                server.engine.enclave().identity().fingerprint()
            );
            println!(
                "Flight: https://{}   REST: https://{} (TLS with the enclave key: clients run `sealroom attest` first)",
                server.flight_addr, server.http_addr
            );
            shutdown_signal().await;
            println!("shutting down: draining requests, then flushing sinks");
            server.shutdown().await.map_err(|e| CliError::Server(e.to_string()))?;
        }
        Command::Attest(a) => {
            let contract = load_room(&a.room_file)?;
            let (endorsements, now) = a.verify.resolve()?;
            let attested = attest::attest(&a.rest, &contract, endorsements.as_ref(), now).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&attested.verification).unwrap_or_default());
            } else {
                print!("{}", attested.verification.render());
            }
            if !attested.verification.passed() {
                return Err(CliError::Server(format!(
                    "the server at {} failed attestation: nothing was sent to it and its certificate was not saved",
                    a.rest
                )));
            }
            attested.certificate.save(&a.save_cert)?;
            println!("saved the attested enclave certificate to {} (pass it as --enclave-cert)", a.save_cert.display());
        }
        Command::Audit(AuditCommand::Verify { log, room_file, verify }) => {
            let contract = load_room(&room_file)?;
            let (endorsements, now) = verify.resolve()?;
            let report = audit::verify_file(&log, &contract, endorsements.as_ref(), now)?;
            print!("{}", report.render());
            if !report.passed() {
                return Err(CliError::Input(format!("{} fails verification", log.display())));
            }
        }
        Command::Upload(a) => {
            let token = a.credential.token(&a.room)?;
            let ack = client::upload(&client::UploadRequest {
                flight: a.flight,
                room: a.room,
                table: a.table,
                token,
                enclave: attest::Pinned::load(&a.enclave.enclave_cert)?,
                file: a.file,
                progress: !a.no_progress,
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&ack).unwrap_or_default());
        }
        Command::Run(a) => {
            let rest = a.target.client()?;
            let run = rest.post(&format!("/v1/rooms/{}/computations/{}/runs", a.target.room, a.computation)).await?;
            let result = rest.get(run["result"].as_str().unwrap_or_default()).await?;
            if !a.target.json {
                println!("run {} took {} ms", run["run"]["run_id"].as_str().unwrap_or("?"), run["run"]["duration_ms"]);
            }
            print_result(&result, a.target.json);
        }
        Command::Result(a) => {
            let path = format!("/v1/rooms/{}/computations/{}/runs/{}/result", a.target.room, a.computation, a.run);
            let result = a.target.client()?.get(&path).await?;
            print_result(&result, a.target.json);
        }
        Command::Lookalike(a) => {
            let summary = lookalike::run(&lookalike::LookalikeOptions {
                data: a.data,
                test: a.test,
                label: a.label,
                positive: a.positive,
                exclude: a.exclude_column,
                model: match a.model {
                    ModelArg::Logistic => sealroom_models::model::ModelKind::Logistic,
                    ModelArg::Forest => sealroom_models::model::ModelKind::Forest,
                },
                balanced: a.balanced,
                alpha: a.alpha,
                test_fraction: a.test_fraction,
                seed: a.seed,
            })?;
            println!("{summary}");
        }
        Command::Link(a) => {
            let (left, right) = match (a.dedupe, a.left) {
                (Some(d), _) => (d, None),
                (None, Some(l)) => {
                    let r =
                        a.right.ok_or_else(|| CliError::Usage("--left needs --right (or use --dedupe FILE)".into()))?;
                    (l, Some(r))
                }
                (None, None) => return Err(CliError::Usage("give --left and --right, or --dedupe".into())),
            };
            let options = link::LinkOptions {
                left,
                right,
                settings: a.settings,
                exclude: a.exclude_column,
                truth: a.truth,
                output: a.output,
                id_column: a.id_column,
                threshold: a.threshold,
                clk: a.clk,
                clk_secret: a.clk_secret,
            };
            let report = tokio::task::spawn_blocking(move || link::run(&options))
                .await
                .map_err(|e| CliError::Input(e.to_string()))??;
            for line in &report.lines {
                println!("{line}");
            }
            println!(
                "matches: {}, pairs compared: {}, seconds: {:.3}",
                report.matches, report.pairs_compared, report.seconds
            );
            if let Some(q) = &report.quality {
                println!("precision {:.4}  recall {:.4}  F1 {:.4}", q.precision, q.recall, q.f1);
            }
            println!("{}", report.json());
        }
        Command::Proposal(command) => proposal::run(command).await?,
        Command::Room(RoomCommand::Check { file }) => {
            let contract = load_room(&file)?;
            // SQL queries are checked and planned the way the server does when it hosts the room.
            sealroom_engine::check_sql(&contract)
                .await
                .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
            println!("{} is valid", file.display());
            println!("  room id        {}", contract.room_id());
            println!("  name           {}", contract.name);
            println!("  effective k    {}", contract.effective_k());
            println!(
                "  simulated TEE  {}",
                if contract.allows_simulated_tee() { "allowed (INSECURE)" } else { "refused" }
            );
            for p in &contract.participants {
                let roles: Vec<&str> = p.roles().map(|r| r.file_name()).collect();
                println!("  participant    {} ({}): {}", p.id, p.name, roles.join(", "));
            }
            for t in &contract.tables {
                println!("  table          {} (owner {}, {} columns)", t.name, t.owner, t.columns.len());
            }
            for c in &contract.computations {
                println!(
                    "  computation    {} ({}), run by {}, results to {}",
                    c.name,
                    c.kind_name(),
                    c.run_by.join(","),
                    c.results_to.join(",")
                );
            }
        }
        Command::Room(RoomCommand::Id { file }) => println!("{}", load_room(&file)?.room_id()),
        Command::Keygen { out } => print!("{}", credential::keygen(&out)?),
        Command::Token(a) => {
            let room = match (a.room, a.room_file) {
                (Some(room), _) => room,
                (None, Some(file)) => load_room(&file)?.room_id().to_string(),
                (None, None) => return Err(CliError::Usage("give --room <room id> or --room-file <room.yaml>".into())),
            };
            let key = credential::load_key(&a.key)?;
            println!("{}", credential::mint(&key, &a.participant, &room, a.ttl)?);
        }
    }
    Ok(())
}

/// The CLK secret from `--clk-secret` or `--clk-secret-file` (hex, at least 16 bytes).
fn clk_secret(clk: bool, hex_value: Option<&str>, file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, CliError> {
    if !clk {
        return Ok(None);
    }
    let text = match (hex_value, file) {
        (Some(h), _) => h.to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?,
        (None, None) => {
            return Err(CliError::Usage(
                "--clk needs the room's CLK secret: --clk-secret HEX or --clk-secret-file PATH (make one with \
                 `openssl rand -hex 32` and share it with the other data owner, never with the operator)"
                    .into(),
            ));
        }
    };
    let secret = hex::decode(text.trim()).map_err(|e| CliError::Usage(format!("the CLK secret must be hex: {e}")))?;
    if secret.len() < 16 {
        return Err(CliError::Usage(format!(
            "the CLK secret has {} bytes; use at least 16 (32 recommended)",
            secret.len()
        )));
    }
    Ok(Some(secret))
}
