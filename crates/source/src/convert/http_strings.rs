//! The strings of a VirtualService HTTP route that reach Envoy as written — string matches,
//! regexes, header names and header values — checked as istiod checks them, so that none
//! makes Envoy NACK the whole route configuration (and every VirtualService sharing its port).

use super::Ctx;
use meshpilot_model::{Diagnostic, Headers, StringMatch};

type Result<T = ()> = std::result::Result<T, Diagnostic>;

/// Istio's limit on a regex's length: Envoy refuses a regex whose compiled program is over
/// its RE2 program-size limit, and the program is never smaller than the regex (the bootstrap
/// raises the limit so that regexes this long compile unless their repetitions blow them up).
pub(super) const MAX_REGEX_LEN: usize = 1024;

/// Whether an empty `prefix` is a valid StringMatch at that field.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum EmptyPrefix {
    /// A URI match: an empty prefix matches every path, and Envoy's route match takes it.
    Allowed,
    /// Everywhere else: Envoy's string matcher takes no empty prefix.
    Refused,
}

/// Checks a StringMatch at `at`: no empty regex (nor an empty prefix unless `empty_prefix`
/// allows it), and a regex that compiles and is at most [`MAX_REGEX_LEN`] characters.
pub(super) fn string_match(
    ctx: &Ctx,
    at: &str,
    m: &StringMatch,
    empty_prefix: EmptyPrefix,
) -> Result {
    match m {
        StringMatch::Prefix(p) if p.is_empty() && empty_prefix == EmptyPrefix::Refused => Err(ctx
            .err(
                &format!("{at}.prefix"),
                "prefix string match must not be empty",
            )),
        StringMatch::Regex(re) => regex(ctx, &format!("{at}.regex"), re),
        _ => Ok(()),
    }
}

/// A regex must be non-empty, at most [`MAX_REGEX_LEN`] characters, and compile with the
/// `regex` crate, whose syntax is close to RE2's (what Envoy uses).
pub(super) fn regex(ctx: &Ctx, at: &str, re: &str) -> Result {
    if re.is_empty() {
        return Err(ctx.err(at, "regex must not be empty"));
    }
    if re.len() > MAX_REGEX_LEN {
        return Err(ctx.err(
            at,
            format!(
                "regex is {} characters long, more than the {MAX_REGEX_LEN} allowed",
                re.len()
            ),
        ));
    }
    regex::Regex::new(re).map(drop).map_err(|e| {
        let text = e.to_string();
        // The crate's message repeats the pattern with a caret; keep its last line, the reason.
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().trim_start_matches("error: ").to_string())
            .unwrap_or(text);
        ctx.err(at, format!("invalid regex `{re}`: {reason}"))
    })
}

/// The characters of an HTTP header name (RFC 7230 `tchar`).
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A header name a route matches on: a token, an HTTP/2 pseudo-header, or a JWT claim
/// (`@request.auth.claims.NAME`), as istiod accepts.
pub(super) fn match_header_name(ctx: &Ctx, at: &str, name: &str) -> Result {
    const PSEUDO: [&str; 5] = [":method", ":scheme", ":authority", ":path", ":status"];
    if name.is_empty() {
        return Err(ctx.err(at, "header name must not be empty"));
    }
    if PSEUDO.contains(&name)
        || name.starts_with("@request.auth.claims.")
        || name.chars().all(is_tchar)
    {
        return Ok(());
    }
    Err(ctx.err(
        at,
        format!("{name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"),
    ))
}

/// A header name CORS allows or exposes: a token, or `*`.
pub(super) fn cors_header_name(ctx: &Ctx, at: &str, name: &str) -> Result {
    if name.is_empty() {
        return Err(ctx.err(at, "header name must not be empty"));
    }
    if name == "*" || name.chars().all(is_tchar) {
        return Ok(());
    }
    Err(ctx.err(
        at,
        format!("{name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"),
    ))
}

/// Which header operation a name is checked for: Envoy cannot change the pseudo-headers, and
/// only a request's authority may be set (through `host` or `:authority`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum HeaderOp {
    /// `request.set` / `request.add`: the authority may be set.
    SetRequest,
    /// `request.remove` and every response operation.
    Other,
}

/// A header name set, added or removed by a route.
fn operation_header_name(ctx: &Ctx, at: &str, name: &str, op: HeaderOp) -> Result {
    if name.is_empty() {
        return Err(ctx.err(at, "header name must not be empty"));
    }
    if op == HeaderOp::SetRequest && is_authority_header(name) {
        return Ok(());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(ctx.err(at, "the Host header cannot be removed or set on a response"));
    }
    if name.starts_with(':') {
        return Err(ctx.err(
            at,
            format!("{name:?}: a header starting with `:` cannot be changed"),
        ));
    }
    Ok(())
}

/// `host` or `:authority`, the two names of a request's authority.
pub(super) fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case(":authority")
}

/// A header value Envoy takes: no control characters but tab (no CR/LF), and every `%`
/// either doubled (`%%`) or opening a `%VARIABLE%` that is closed.
fn header_value(ctx: &Ctx, at: &str, value: &str) -> Result {
    if let Some(c) = value.chars().find(|c| c.is_ascii_control() && *c != '\t') {
        return Err(ctx.err(
            at,
            format!("header value {value:?} contains the control character {c:?}"),
        ));
    }
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('%') {
            rest = r;
            continue;
        }
        // A variable, possibly with arguments in parentheses: `%VAR%` or `%VAR(a,b)%`.
        match variable_end(after) {
            Some(end) => rest = &after[end..],
            None => {
                return Err(ctx.err(
                    at,
                    format!(
                        "header value {value:?} has an unescaped `%` (write `%%` for a literal `%`)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The byte after the `%` that closes a variable starting at `s` (just after its opening
/// `%`); `None` when none closes it. Parentheses hold arguments, which may contain `%`.
fn variable_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '%' if depth == 0 => return (i > 0).then_some(i + 1),
            _ => {}
        }
    }
    None
}

/// The header operations of a route or of one of its destinations (`at` ends in `.headers`):
/// names Envoy can change and values it takes.
pub(super) fn header_operations(ctx: &Ctx, at: &str, headers: &Headers) -> Result {
    for (part, ops) in [
        ("request", &headers.request),
        ("response", &headers.response),
    ] {
        let Some(ops) = ops else { continue };
        let op = if part == "request" {
            HeaderOp::SetRequest
        } else {
            HeaderOp::Other
        };
        for (verb, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let field = format!("{at}.{part}.{verb}.{name}");
                operation_header_name(ctx, &field, name, op)?;
                header_value(ctx, &field, value)?;
            }
        }
        for (k, name) in ops.remove.iter().enumerate() {
            operation_header_name(
                ctx,
                &format!("{at}.{part}.remove[{k}]"),
                name,
                HeaderOp::Other,
            )?;
        }
    }
    Ok(())
}
