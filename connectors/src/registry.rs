//! The registry of sink types: a name → factory map, explicit rather than magic.

use std::collections::BTreeMap;
use std::fmt;

use crate::{Error, Result, Sink};

/// Builds a sink from its configuration (the object without the `type` key).
pub type SinkFactory = fn(serde_json::Value) -> Result<Box<dyn Sink>>;

/// The sink types this build knows.
#[derive(Clone)]
pub struct SinkRegistry {
    factories: BTreeMap<&'static str, SinkFactory>,
}

impl fmt::Debug for SinkRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkRegistry").field("types", &self.available()).finish()
    }
}

impl Default for SinkRegistry {
    /// Every sink type compiled into this build.
    fn default() -> Self {
        let mut registry = Self::empty();
        registry.register("file", crate::file::FileSink::from_config);
        registry.register("kafka", crate::kafka::KafkaSink::from_config);
        registry
    }
}

impl SinkRegistry {
    pub fn empty() -> Self {
        Self { factories: BTreeMap::new() }
    }

    pub fn register(&mut self, sink_type: &'static str, factory: SinkFactory) {
        self.factories.insert(sink_type, factory);
    }

    /// Names of the registered sink types, sorted.
    pub fn available(&self) -> Vec<String> {
        self.factories.keys().map(|k| (*k).to_owned()).collect()
    }

    /// Builds a sink from a configuration object with a `type` key naming the sink type.
    pub fn build(&self, config: &serde_json::Value) -> Result<Box<dyn Sink>> {
        let serde_json::Value::Object(map) = config else {
            return Err(Error::Config {
                sink: "(unknown)",
                message: "a sink configuration must be an object with a `type` key".into(),
            });
        };
        let Some(serde_json::Value::String(sink_type)) = map.get("type") else {
            return Err(Error::Config {
                sink: "(unknown)",
                message: format!("missing `type`; available sinks: {}", self.available().join(", ")),
            });
        };
        let factory = self
            .factories
            .get(sink_type.as_str())
            .ok_or_else(|| Error::UnknownSinkType { requested: sink_type.clone(), available: self.available() })?;
        let mut rest = map.clone();
        rest.remove("type");
        factory(serde_json::Value::Object(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sink_types_name_the_available_ones() {
        let err = SinkRegistry::default().build(&serde_json::json!({"type": "kafkaa"})).unwrap_err();
        assert_eq!(err.to_string(), "unknown sink type 'kafkaa'; available sinks: file, kafka");
    }

    #[test]
    fn missing_type_is_explained() {
        let err = SinkRegistry::default().build(&serde_json::json!({"path": "/tmp"})).unwrap_err();
        assert!(err.to_string().contains("missing `type`; available sinks: file, kafka"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected_by_the_typed_config() {
        let err = SinkRegistry::default()
            .build(&serde_json::json!({"type": "file", "path": "/tmp/x", "formatt": "ndjson"}))
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `formatt`"), "{err}");
    }
}
