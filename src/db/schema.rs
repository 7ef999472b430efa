//! Resource schemas (attributes, partitions, timestamps) and `s3db.json`, the database's
//! metadata object, which every runner reads at connect time and updates with compare-and-swap.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::attribute::{AttributeError, AttributeSpec, AttributeType};

/// Current layout version of `s3db.json` and the record keys.
pub const FORMAT_VERSION: u32 = 1;

/// The content of `s3db.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub format_version: u32,
    /// The program that last changed the metadata.
    pub s3db_version: String,
    #[serde(default)]
    pub resources: IndexMap<String, StoredResource>,
}

/// A resource as `s3db.json` records it: the manifest's own shorthand.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredResource {
    #[serde(default)]
    pub attributes: IndexMap<String, String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub partitions: IndexMap<String, IndexMap<String, String>>,
    #[serde(default)]
    pub timestamps: bool,
}

impl Metadata {
    pub fn new() -> Self {
        Self {
            format_version: FORMAT_VERSION,
            s3db_version: concat!("s3db-run/", env!("CARGO_PKG_VERSION")).to_string(),
            resources: IndexMap::new(),
        }
    }

    /// Adds or replaces the declared resources; returns whether anything changed. Resources
    /// other runners declared are kept.
    pub fn merge(&mut self, declared: &IndexMap<String, StoredResource>) -> bool {
        let mut changed = false;
        for (name, def) in declared {
            if self.resources.get(name) != Some(def) {
                self.resources.insert(name.clone(), def.clone());
                changed = true;
            }
        }
        changed
    }
}

impl Default for Metadata {
    fn default() -> Self {
        Self::new()
    }
}

/// One partition field: its name and, for `string|maxlength:N`, how many characters of the value
/// make up the key.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionField {
    pub name: String,
    pub max_length: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub name: String,
    pub fields: Vec<PartitionField>,
}

impl Partition {
    /// The partition values of a record; None when a field is missing (the record is then not in
    /// the partition).
    pub fn values<'a>(&'a self, data: &Map<String, Value>) -> Option<Vec<(&'a str, String)>> {
        self.fields
            .iter()
            .map(|f| {
                let v = super::query::lookup(data, &f.name)?;
                let text = match v {
                    Value::Null => return None,
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let text = match f.max_length {
                    Some(n) => text.chars().take(n).collect(),
                    None => text,
                };
                Some((f.name.as_str(), text))
            })
            .collect()
    }
}

/// A resource's schema, parsed and ready to validate records.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSchema {
    pub name: String,
    pub attributes: IndexMap<String, AttributeSpec>,
    pub partitions: Vec<Partition>,
    pub timestamps: bool,
    /// Set for a resource s3db.js defined: its records use s3db.js's layout and rules.
    pub s3dbjs: Option<std::sync::Arc<super::s3dbjs::JsResource>>,
}

impl ResourceSchema {
    pub fn parse(name: &str, stored: &StoredResource) -> Result<Self, AttributeError> {
        let mut attributes = IndexMap::new();
        for (field, text) in &stored.attributes {
            let spec: AttributeSpec = text.parse().map_err(|e: AttributeError| AttributeError {
                message: format!("{name}.{field}: {}", e.message),
                help: e.help,
            })?;
            attributes.insert(field.clone(), spec);
        }
        let mut partitions = Vec::new();
        for (pname, fields) in &stored.partitions {
            let mut pf = Vec::new();
            for (field, text) in fields {
                let spec: AttributeSpec =
                    text.parse().map_err(|e: AttributeError| AttributeError {
                        message: format!("{name} partition {pname}.{field}: {}", e.message),
                        help: e.help,
                    })?;
                let max_length = if spec.kind == AttributeType::String {
                    spec.max_length
                } else {
                    None
                };
                pf.push(PartitionField {
                    name: field.clone(),
                    max_length,
                });
            }
            partitions.push(Partition {
                name: pname.clone(),
                fields: pf,
            });
        }
        Ok(Self {
            name: name.to_string(),
            attributes,
            partitions,
            timestamps: stored.timestamps,
            s3dbjs: None,
        })
    }

    /// The schema of a resource s3db.js defined: its partitions (same key layout as the
    /// native format's), timestamps, and its version tree for values and rules.
    pub fn from_s3dbjs(js: super::s3dbjs::JsResource) -> Result<Self, AttributeError> {
        let stored = StoredResource {
            attributes: IndexMap::new(),
            partitions: js.partitions.clone(),
            timestamps: js.timestamps,
        };
        let mut schema = Self::parse(&js.name, &stored)?;
        schema.s3dbjs = Some(std::sync::Arc::new(js));
        Ok(schema)
    }

    pub fn partition(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// Fills in defaults of missing attributes.
    pub fn apply_defaults(&self, data: &mut Map<String, Value>) {
        for (field, spec) in &self.attributes {
            if let Some(default) = &spec.default {
                if data.get(field).is_none_or(Value::is_null) {
                    data.insert(field.clone(), default.clone());
                }
            }
        }
    }

    /// Checks every declared attribute; the first problem is returned with its field's name.
    pub fn validate(
        &self,
        data: &Map<String, Value>,
    ) -> Result<(), (String, super::attribute::Violation)> {
        for (field, spec) in &self.attributes {
            spec.check(data.get(field))
                .map_err(|m| (field.clone(), m))?;
        }
        Ok(())
    }
}
