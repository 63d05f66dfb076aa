//! Server configuration: defaults, then a YAML file, then `SEALROOM_*` environment variables, then
//! command-line flags (applied by the CLI). Unknown keys are errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sealroom_attest::Backend;
use sealroom_engine::{SinkBinding, UploadLimits};
use sealroom_proto::RoomFile;
use sealroom_proto::room::v1::RoomContract;
use serde::{Deserialize, Serialize};

/// The committed example configuration; a test parses it.
pub const EXAMPLE: &str = include_str!("../config/server.example.yaml");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most rows one upload may carry.
    pub max_upload_rows: u64,
    /// Most bytes (in memory, decoded) one upload may carry.
    pub max_upload_bytes: u64,
    /// Largest single Flight message (one record batch), in bytes.
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let d = UploadLimits::default();
        Self { max_upload_rows: d.max_rows, max_upload_bytes: d.max_bytes, max_message_bytes: 64 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The participant (by id) whose released results the sink receives.
    pub participant: String,
    /// Only in this room (by id); absent means in every hosted room with that participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The sink itself, with a `type` key: `{type: file, path: ./activations, format: ndjson}`.
    pub sink: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Room files (YAML) to host.
    pub rooms: Vec<PathBuf>,
    /// Where datasets, results and audit logs live.
    pub data_dir: PathBuf,
    /// Arrow Flight (gRPC) listen address.
    pub flight_addr: SocketAddr,
    /// REST listen address.
    pub http_addr: SocketAddr,
    /// The TEE: `auto` (probe for SEV-SNP, TDX, SGX; never the simulation), `sev-snp`, `tdx`,
    /// `sgx`, or `simulated` (INSECURE: rooms must allow it in their contract).
    pub tee: Backend,
    /// Host names and IP addresses the enclave's TLS certificate names. Sealroom clients pin the
    /// attested certificate whatever its names; other TLS clients (pyarrow, curl) check them.
    pub tls_names: Vec<String>,
    /// Seal storage under the 32-byte key in this file instead of the TEE's sealing key. Required on
    /// Intel TDX (no sealing key; keep the file where only the TD can read it), optional with the
    /// simulated TEE (default `<data_dir>/sealing.key`, made with mode 0600 at first start).
    pub sealing_key_file: Option<PathBuf>,
    /// How often activations a sink could not take are retried (each waits its own backoff too).
    pub activation_retry_seconds: u64,
    pub limits: Limits,
    /// Activation sinks of participants.
    pub sinks: Vec<SinkConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            rooms: Vec::new(),
            data_dir: PathBuf::from("sealroom-data"),
            flight_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tee: Backend::Auto,
            tls_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            sealing_key_file: None,
            activation_retry_seconds: 30,
            limits: Limits::default(),
            sinks: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// Parses a configuration file's text.
    pub fn from_yaml(text: &str, source: &str) -> Result<Self, String> {
        serde_yaml_ng::from_str(text).map_err(|e| format!("{source}: {e}"))
    }

    /// Loads a configuration file; relative paths in it are taken relative to the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut config = Self::from_yaml(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        for room in &mut config.rooms {
            if room.is_relative() {
                *room = base.join(&*room);
            }
        }
        if let Some(key) = &mut config.sealing_key_file
            && key.is_relative()
        {
            *key = base.join(&*key);
        }
        if config.data_dir.is_relative() {
            config.data_dir = base.join(&config.data_dir);
        }
        Ok(config)
    }

    /// Applies `SEALROOM_DATA_DIR`, `SEALROOM_FLIGHT_ADDR`, `SEALROOM_HTTP_ADDR` and `SEALROOM_ROOMS`
    /// (comma-separated) from an environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(v) = get("SEALROOM_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("SEALROOM_FLIGHT_ADDR") {
            self.flight_addr = v.parse().map_err(|e| format!("SEALROOM_FLIGHT_ADDR={v}: {e}"))?;
        }
        if let Some(v) = get("SEALROOM_HTTP_ADDR") {
            self.http_addr = v.parse().map_err(|e| format!("SEALROOM_HTTP_ADDR={v}: {e}"))?;
        }
        if let Some(v) = get("SEALROOM_ROOMS") {
            self.rooms = v.split(',').filter(|s| !s.is_empty()).map(PathBuf::from).collect();
        }
        Ok(())
    }

    pub fn upload_limits(&self) -> UploadLimits {
        UploadLimits { max_rows: self.limits.max_upload_rows, max_bytes: self.limits.max_upload_bytes }
    }

    pub fn sink_bindings(&self) -> Vec<SinkBinding> {
        self.sinks
            .iter()
            .map(|s| SinkBinding { participant: s.participant.clone(), room: s.room.clone(), config: s.sink.clone() })
            .collect()
    }

    /// Reads and validates the room files.
    pub fn load_rooms(&self) -> Result<Vec<RoomContract>, String> {
        if self.rooms.is_empty() {
            return Err("no room files are configured: pass --room <file> or set `rooms:` in the config".into());
        }
        self.rooms
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read room file {}: {e}", path.display()))?;
                RoomFile::parse(&text, &path.display().to_string()).map_err(|e| e.to_string())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let config = ServerConfig::from_yaml(EXAMPLE, "server.example.yaml").unwrap();
        assert_eq!(config.flight_addr.port(), 50051);
        assert_eq!(config.sinks.len(), 1);
        assert_eq!(config.sinks[0].sink["type"], "file");
    }

    #[test]
    fn the_docker_compose_config_parses_and_names_the_mounted_room() {
        let text = include_str!("../config/docker.yaml");
        let config = ServerConfig::from_yaml(text, "docker.yaml").unwrap();
        assert_eq!(config.rooms, [PathBuf::from("/etc/sealroom/room.yaml")]);
        assert_eq!(config.http_addr.port(), 8080);
        let compose = include_str!("../../../docker-compose.yml");
        assert!(compose.contains("/etc/sealroom/room.yaml") && compose.contains("/etc/sealroom/server.yaml"));
        // The simulated TEE is chosen explicitly, and the publisher's sink is the compose file's Kafka
        // broker (KRaft) and the topic its kafka-init creates and its console consumer prints.
        assert_eq!(config.tee, sealroom_attest::Backend::Simulated);
        let sink = &config.sinks[0].sink;
        assert_eq!((sink["type"].as_str(), sink["brokers"][0].as_str()), (Some("kafka"), Some("kafka:9092")));
        let topic = sink["topic"].as_str().unwrap();
        assert!(compose.contains(&format!("\"--topic\", \"{topic}\"")), "kafka-init and the consumer use {topic}");
        assert!(compose.contains("KAFKA_PROCESS_ROLES: broker,controller"), "KRaft mode");
        sealroom_connectors::SinkRegistry::default().build(sink).unwrap();
    }

    #[test]
    fn the_example_config_loads_its_room_relative_to_itself() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/server.example.yaml");
        let config = ServerConfig::load(&path).unwrap();
        let rooms = config.load_rooms().unwrap();
        assert_eq!(rooms[0].name, "ACME Retail x Daily News audience overlap");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = ServerConfig::from_yaml("data_dri: x\n", "c.yaml").unwrap_err();
        assert!(err.contains("unknown field `data_dri`"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config = ServerConfig::default();
        config
            .apply_env(|k| match k {
                "SEALROOM_HTTP_ADDR" => Some("127.0.0.1:9999".into()),
                "SEALROOM_ROOMS" => Some("a.yaml,b.yaml".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.http_addr.port(), 9999);
        assert_eq!(config.rooms.len(), 2);
        assert!(config.apply_env(|_| Some("nonsense".into())).is_err());
    }
}
