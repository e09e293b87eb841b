//! Diagnostics: one typed account of something wrong with the input — which object, which
//! field, what is wrong, how bad, where the object came from and which stage found it. Sources,
//! the index's cross-object checks and compile all report in this one shape; the push engine
//! logs each once and the debug endpoints show them as they are (no string prefixes to parse).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ConfigKey, KubeKind};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The input (or the part of it the field names) is not served; its previous good version
    /// may be.
    Error,
    /// The input is served, but not all of it the way it is written (e.g. a conflicting
    /// definition that another one shadows).
    Warning,
}

/// Which stage found the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Reading, parsing or converting one manifest (a source).
    Parse,
    /// The index's cross-object check (e.g. a route to a host nobody declares).
    Reference,
    /// The same object defined by two sources, or twice in the files: one definition serves
    /// (see `Diagnostic::serving`), the others are shadowed.
    Conflict,
    /// Compiling an object into Envoy resources for some proxy class.
    Compile,
}

/// Where an object (or a file that could not be read) came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A manifest file under `--config-dir`, as its path.
    File(String),
    /// The Kubernetes API server, through the watch on this kind.
    Kubernetes { kind: KubeKind },
}

impl Default for Origin {
    /// An unnamed file (for objects built in tests).
    fn default() -> Self {
        Origin::File(String::new())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => f.write_str(path),
            Origin::Kubernetes { kind } => write!(f, "Kubernetes API ({})", kind.as_str()),
        }
    }
}

/// The object a diagnostic is about, as far as it could be read: a file that does not parse
/// names none of these, a manifest without `metadata.name` only its kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The manifest's `kind`, as written (it may be one the control plane does not know).
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl ObjectRef {
    /// The object a key identifies.
    pub fn of(key: &ConfigKey) -> ObjectRef {
        ObjectRef {
            kind: Some(key.kind.as_str().to_string()),
            namespace: Some(key.namespace.to_string()),
            name: Some(key.name.to_string()),
        }
    }

    /// True when this names the object `key` (a missing namespace matches any).
    pub fn is(&self, key: &ConfigKey) -> bool {
        self.kind.as_deref() == Some(key.kind.as_str())
            && self.name.as_deref() == Some(&*key.name)
            && self.namespace.as_deref().unwrap_or(&key.namespace) == &*key.namespace
    }

    /// True when nothing about the object could be read.
    pub fn is_unknown(&self) -> bool {
        self.kind.is_none() && self.namespace.is_none() && self.name.is_none()
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(kind) = &self.kind {
            f.write_str(kind)?;
        }
        let space = if self.kind.is_some() { " " } else { "" };
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) if !ns.is_empty() => write!(f, "{space}{ns}/{name}"),
            (_, Some(name)) => write!(f, "{space}{name}"),
            _ => Ok(()),
        }
    }
}

/// One problem with the input, found by one stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub stage: Stage,
    /// Where the object (or file) came from; for a conflict, the definition that does not
    /// serve.
    pub origin: Origin,
    pub object: ObjectRef,
    /// Path of the offending field, e.g. `spec.http[0].route[1].weight`; `None` for the
    /// whole object or file.
    pub field: Option<String>,
    pub message: String,
    /// For a [`Stage::Conflict`]: the origin whose definition serves instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<Origin>,
    /// For an input refused for its size: which limit it passed, so a tool can tell it from a
    /// malformed input and name the flag that raises it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitExceeded>,
}

/// A size limit on input files; each is a `serve` flag (and environment variable) an operator
/// can raise. The protections they keep: memory for huge files, the stack for absurd nesting,
/// CPU for alias bombs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputLimit {
    /// Bytes in one manifest file.
    FileBytes,
    /// YAML documents in one manifest file.
    DocumentsPerFile,
    /// YAML nodes (mappings, sequences, scalars, with aliases expanded) in one document.
    NodesPerDocument,
    /// How deeply mappings and sequences nest in one document.
    NestingDepth,
    /// Aliases (`*name`) in one document.
    AliasesPerDocument,
}

impl InputLimit {
    /// What is limited, in the reader's words.
    pub fn what(self) -> &'static str {
        match self {
            InputLimit::FileBytes => "bytes per file",
            InputLimit::DocumentsPerFile => "YAML documents per file",
            InputLimit::NodesPerDocument => "YAML nodes per document",
            InputLimit::NestingDepth => "YAML nesting depth",
            InputLimit::AliasesPerDocument => "YAML aliases per document",
        }
    }

    /// The `meshpilot serve` flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            InputLimit::FileBytes => "--max-file-bytes",
            InputLimit::DocumentsPerFile => "--max-documents-per-file",
            InputLimit::NodesPerDocument => "--max-yaml-nodes",
            InputLimit::NestingDepth => "--max-yaml-depth",
            InputLimit::AliasesPerDocument => "--max-yaml-aliases",
        }
    }

    /// The environment variable that sets it.
    pub fn env(self) -> &'static str {
        match self {
            InputLimit::FileBytes => "MESHPILOT_MAX_FILE_BYTES",
            InputLimit::DocumentsPerFile => "MESHPILOT_MAX_DOCUMENTS_PER_FILE",
            InputLimit::NodesPerDocument => "MESHPILOT_MAX_YAML_NODES",
            InputLimit::NestingDepth => "MESHPILOT_MAX_YAML_DEPTH",
            InputLimit::AliasesPerDocument => "MESHPILOT_MAX_YAML_ALIASES",
        }
    }

    /// Every limit, in flag order.
    pub const ALL: [InputLimit; 5] = [
        InputLimit::FileBytes,
        InputLimit::DocumentsPerFile,
        InputLimit::NodesPerDocument,
        InputLimit::NestingDepth,
        InputLimit::AliasesPerDocument,
    ];
}

/// Which limit an input passed and the value it was set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LimitExceeded {
    pub limit: InputLimit,
    /// The limit's value when the input was read.
    pub value: u64,
}

impl Diagnostic {
    /// An error in `stage` about `field` (empty: the whole object) of `object`.
    pub fn error(
        stage: Stage,
        origin: Origin,
        object: ObjectRef,
        field: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            stage,
            origin,
            object,
            field: (!field.is_empty()).then(|| field.to_string()),
            message: message.into(),
            serving: None,
            limit: None,
        }
    }

    /// A warning in `stage` about `field` of `object`: the object serves, but not all of it as
    /// written (the message says what is left out or changed).
    pub fn warning(
        stage: Stage,
        origin: Origin,
        object: ObjectRef,
        field: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(stage, origin, object, field, message)
        }
    }

    /// A definition of `key` at `shadowed` that does not serve because the one at `serving`
    /// does; `rule` says why in the reader's terms.
    pub fn conflict(key: &ConfigKey, shadowed: Origin, serving: Origin, rule: &str) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            stage: Stage::Conflict,
            message: format!("also defined by {serving}, which serves ({rule})"),
            origin: shadowed,
            object: ObjectRef::of(key),
            field: None,
            serving: Some(serving),
            limit: None,
        }
    }

    /// An input at `origin` refused because it passed `limit`, set to `value`; `what` says
    /// which part of the file (e.g. "the file", "document 3 (line 120)") and, when known, how
    /// much it holds. The message names the limit, its value and the flag that raises it.
    pub fn limit_exceeded(origin: Origin, limit: InputLimit, value: u64, what: &str) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            stage: Stage::Parse,
            message: format!(
                "{what} passes the limit of {value} {} (raise it with {} or {})",
                limit.what(),
                limit.flag(),
                limit.env()
            ),
            origin,
            object: ObjectRef::default(),
            field: None,
            serving: None,
            limit: Some(LimitExceeded { limit, value }),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if !self.object.is_unknown() {
            write!(f, ": {}", self.object)?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Diagnostic {}
