//! The endpoints and clients of the triggers file, compiled once for serving requests.

use std::collections::BTreeMap;

use crate::config::chain::NamePattern;
use crate::config::endpoint::{
    ClientSpec, CompiledParameter, EndpointSpec, ParameterSchema, RateLimit,
};
use crate::config::{ActionSpec, CircleCiSettings, TriggersFile};

/// A triggers file the validator should have refused (only reachable when a caller builds
/// a [`TriggersFile`] by hand instead of loading it).
#[derive(Debug, thiserror::Error)]
#[error("endpoint `{endpoint}`: {reason}")]
pub struct CatalogError {
    pub endpoint: String,
    pub reason: String,
}

/// One `[[endpoint]]` with its patterns compiled.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub spec: EndpointSpec,
    /// What a call does (read once from the spec's action fields).
    pub action: ActionSpec,
    pub parameters: BTreeMap<String, CompiledParameter>,
    pub branches: Vec<NamePattern>,
    pub tags: Vec<NamePattern>,
}

impl Endpoint {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    fn compile(spec: &EndpointSpec) -> Result<Self, CatalogError> {
        let error = |reason: String| CatalogError {
            endpoint: spec.name.clone(),
            reason,
        };
        let parameters = spec
            .parameters
            .iter()
            .map(|(name, schema): (&String, &ParameterSchema)| {
                schema
                    .compile()
                    .map(|compiled| (name.clone(), compiled))
                    .map_err(|reason| error(format!("parameter `{name}`: {reason}")))
            })
            .collect::<Result<_, _>>()?;
        let patterns = |list: &[String]| -> Result<Vec<NamePattern>, CatalogError> {
            list.iter()
                .map(|text| NamePattern::parse(text).map_err(|e| error(e.to_string())))
                .collect()
        };
        let action = spec
            .action_fields()
            .spec()
            .map_err(|invalid| error(invalid.to_string()))?;
        Ok(Self {
            spec: spec.clone(),
            action,
            parameters,
            branches: patterns(&spec.target.branches)?,
            tags: patterns(&spec.target.tags)?,
        })
    }
}

/// A `[[client]]` with its rate parsed.
#[derive(Debug, Clone)]
pub struct Client {
    pub spec: ClientSpec,
    pub rate: Option<RateLimit>,
}

impl Client {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn may_call(&self, endpoint: &str) -> bool {
        self.spec.may_call(endpoint)
    }
}

/// Everything the HTTP API serves, looked up by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub circleci: CircleCiSettings,
    endpoints: BTreeMap<String, Endpoint>,
    clients: BTreeMap<String, Client>,
}

impl Catalog {
    pub fn new(file: &TriggersFile) -> Result<Self, CatalogError> {
        let endpoints = file
            .endpoint
            .iter()
            .map(|spec| Endpoint::compile(spec).map(|e| (spec.name.clone(), e)))
            .collect::<Result<_, _>>()?;
        let clients = file
            .client
            .iter()
            .map(|spec| {
                (
                    spec.name.clone(),
                    Client {
                        spec: spec.clone(),
                        rate: spec.rate(),
                    },
                )
            })
            .collect();
        Ok(Self {
            circleci: file.circleci.clone(),
            endpoints,
            clients,
        })
    }

    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.get(name)
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    pub fn client(&self, name: &str) -> Option<&Client> {
        self.clients.get(name)
    }
}
