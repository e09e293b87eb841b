//! Reading one manifest file into JSON documents within the operator's size limits
//! ([`InputLimits`]).
//!
//! A YAML stream is cut at its document markers (`---` at the start of a line, which YAML
//! forbids inside any document's content) and each document is parsed on its own, so the
//! per-document limits hold for every document and a document past one of them costs only
//! that document: the YAML parser's own stream readers give up on the rest of the stream after
//! such a breach. Any other YAML error still refuses the whole file, as a broken file may have
//! its document markers wrong too.

use std::fs;
use std::io;
use std::path::Path;

use serde_json::Value;

use super::file_error;
use meshpilot_model::{Diagnostic, InputLimit, ObjectRef, Origin, Stage};

/// The size limits on manifest files; each is a `serve` flag. The defaults admit a
/// concatenated export of a large cluster (hundreds of thousands of documents, tens of MB)
/// and a Service with tens of thousands of ports, while still refusing alias bombs and
/// nesting deep enough to exhaust the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Bytes in one file; a larger file is not read.
    pub max_file_bytes: u64,
    /// YAML documents in one file.
    pub max_documents_per_file: u64,
    /// YAML nodes in one document, aliases expanded.
    pub max_nodes_per_document: u64,
    /// Nesting of mappings and sequences in one document.
    pub max_depth: u64,
    /// Aliases in one document.
    pub max_aliases_per_document: u64,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_file_bytes: 64 * 1024 * 1024,
            max_documents_per_file: 1_000_000,
            max_nodes_per_document: 2_000_000,
            max_depth: 64,
            max_aliases_per_document: 10_000,
        }
    }
}

impl InputLimits {
    /// The value `limit` is set to.
    pub fn value(&self, limit: InputLimit) -> u64 {
        match limit {
            InputLimit::FileBytes => self.max_file_bytes,
            InputLimit::DocumentsPerFile => self.max_documents_per_file,
            InputLimit::NodesPerDocument => self.max_nodes_per_document,
            InputLimit::NestingDepth => self.max_depth,
            InputLimit::AliasesPerDocument => self.max_aliases_per_document,
        }
    }

    /// The parser's budget for one document.
    fn parser_options(&self) -> serde_saphyr::Options {
        let nodes = usize::try_from(self.max_nodes_per_document).unwrap_or(usize::MAX);
        let aliases = usize::try_from(self.max_aliases_per_document).unwrap_or(usize::MAX);
        let bytes = usize::try_from(self.max_file_bytes).unwrap_or(usize::MAX);
        serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_nodes: nodes,
                // Every node is at most two events (a collection's start and end); replayed
                // aliases count too, so this also bounds what aliases expand to.
                max_events: nodes.saturating_mul(2).saturating_add(16),
                max_depth: usize::try_from(self.max_depth).unwrap_or(usize::MAX),
                max_aliases: aliases,
                max_anchors: aliases,
                max_documents: usize::try_from(self.max_documents_per_file).unwrap_or(usize::MAX),
                max_total_scalar_bytes: bytes,
                max_reader_input_bytes: Some(bytes),
            },
        }
    }
}

/// One file's documents, and the documents refused for passing a per-document limit.
#[derive(Debug, Default)]
pub(super) struct Documents {
    pub docs: Vec<Value>,
    pub refused: Vec<Diagnostic>,
}

/// Reads and parses one file into documents. `Ok(None)` when it has gone away meanwhile;
/// `Err` when the whole file is refused.
#[allow(
    clippy::result_large_err,
    reason = "Diagnostic is the sources' error contract"
)]
pub(super) fn read_documents(
    path: &Path,
    limits: &InputLimits,
) -> Result<Option<Documents>, Diagnostic> {
    let origin = || Origin::File(path.display().to_string());
    let too_big = |len: u64| {
        Diagnostic::limit_exceeded(
            origin(),
            InputLimit::FileBytes,
            limits.max_file_bytes,
            &format!("the file ({len} bytes)"),
        )
    };
    match fs::metadata(path) {
        Ok(meta) if meta.len() > limits.max_file_bytes => return Err(too_big(meta.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(file_error(path, "file is not UTF-8 text"));
        }
        Err(e) => return Err(file_error(path, format!("cannot read file: {e}"))),
    };
    // It may have grown since the `stat`.
    if text.len() as u64 > limits.max_file_bytes {
        return Err(too_big(text.len() as u64));
    }
    let is_json = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        if text.trim().is_empty() {
            return Ok(Some(Documents::default()));
        }
        return serde_json::from_str::<Value>(&text)
            .map(|doc| {
                Some(Documents {
                    docs: vec![doc],
                    refused: Vec::new(),
                })
            })
            .map_err(|e| file_error(path, format!("invalid JSON: {e}")));
    }
    parse_yaml(&text, limits, &origin()).map(Some)
}

/// Parses a YAML stream document by document (see the module's comment).
#[allow(
    clippy::result_large_err,
    reason = "Diagnostic is the sources' error contract"
)]
fn parse_yaml(text: &str, limits: &InputLimits, origin: &Origin) -> Result<Documents, Diagnostic> {
    let chunks = split_documents(text);
    let count = chunks.iter().filter(|c| !c.is_blank).count() as u64;
    if count > limits.max_documents_per_file {
        return Err(Diagnostic::limit_exceeded(
            origin.clone(),
            InputLimit::DocumentsPerFile,
            limits.max_documents_per_file,
            &format!("the file ({count} documents)"),
        ));
    }
    let options = limits.parser_options();
    let mut out = Documents {
        docs: Vec::with_capacity(chunks.len()),
        refused: Vec::new(),
    };
    for (number, chunk) in chunks.iter().filter(|c| !c.is_blank).enumerate() {
        match serde_saphyr::from_multiple_with_options::<Value>(chunk.text, options.clone()) {
            Ok(docs) => out.docs.extend(docs),
            Err(e) => match breached_limit(&e) {
                Some(limit) => out.refused.push(Diagnostic::limit_exceeded(
                    origin.clone(),
                    limit,
                    limits.value(limit),
                    &format!("document {} (line {})", number + 1, chunk.first_line),
                )),
                None => {
                    return Err(Diagnostic::error(
                        Stage::Parse,
                        origin.clone(),
                        ObjectRef::default(),
                        "",
                        yaml_error_message(&e, chunk.first_line - 1),
                    ));
                }
            },
        }
    }
    Ok(out)
}

/// The operator's limit a parser budget breach corresponds to; `None` for any other error.
fn breached_limit(e: &serde_saphyr::Error) -> Option<InputLimit> {
    use serde_saphyr::Error;
    use serde_saphyr::budget::BudgetBreach;
    // The parser wraps the breach in the source snippet and alias locations it found it at.
    let mut e = e;
    while let Error::WithSnippet { error, .. } | Error::AliasError { error, .. } = e {
        e = error;
    }
    let Error::Budget { breach, .. } = e else {
        return None;
    };
    Some(match breach {
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => InputLimit::NodesPerDocument,
        BudgetBreach::Depth { .. } => InputLimit::NestingDepth,
        BudgetBreach::Documents { .. } => InputLimit::DocumentsPerFile,
        BudgetBreach::ScalarBytes { .. } | BudgetBreach::InputBytes { .. } => InputLimit::FileBytes,
        // Anchors, alias-to-anchor ratio, merge keys, recorded alias expansions: all the
        // marks of an alias bomb, which the alias limit governs.
        _ => InputLimit::AliasesPerDocument,
    })
}

/// A one-line YAML error message that always carries the line (in the file, the parser's line
/// moved down by `line_offset`) when the parser knows it.
fn yaml_error_message(e: &serde_saphyr::Error, line_offset: usize) -> String {
    let text = e.without_snippet().to_string();
    let mut text = text.lines().next().unwrap_or_default().trim().to_string();
    // The parser addresses programmers here; an operator can only fix the file.
    text = text.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    match e.location() {
        Some(loc) if loc.line() > 0 => {
            let at = format!(" at line {}, column {}", loc.line(), loc.column());
            let text = text.replace(&at, "");
            format!(
                "invalid YAML at line {}, column {}: {text}",
                loc.line() as usize + line_offset,
                loc.column()
            )
        }
        _ => format!("invalid YAML: {text}"),
    }
}

/// One document's text, cut from a stream.
struct Chunk<'a> {
    text: &'a str,
    /// Its first line in the file, from 1.
    first_line: usize,
    /// Only blank lines and comments: no document at all.
    is_blank: bool,
}

/// Cuts a YAML stream before each line that starts a document (`---` alone or followed by a
/// space). YAML forbids such a line inside any document's content (even block and quoted
/// scalars), so each piece holds at most one document. A stream with directives (`%YAML`)
/// is left whole: they belong to the document after them.
fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut first_line = 1;
    let mut line_no = 1;
    let mut offset = 0;
    let has_directives = text.starts_with('%') || text.contains("\n%");
    if !has_directives {
        for line in text.split_inclusive('\n') {
            let starts_document = line
                .strip_prefix("---")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']));
            if starts_document && offset > start {
                chunks.push(chunk(&text[start..offset], first_line));
                start = offset;
                first_line = line_no;
            }
            offset += line.len();
            line_no += 1;
        }
    }
    chunks.push(chunk(&text[start..], first_line));
    chunks
}

fn chunk(text: &str, first_line: usize) -> Chunk<'_> {
    let is_blank = text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    });
    Chunk {
        text,
        first_line,
        is_blank,
    }
}
