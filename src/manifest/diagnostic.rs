//! Diagnostics: what the manifest layer tells a user about their file. Each has a rule code
//! (`manifest::unknown_state`), a severity, a span in the source, a message and a help line.
//! This module owns their rendering (human via miette, JSON lines for tools); it never decides
//! what is wrong.

use std::fmt;

use serde::Serialize;

/// A byte range in the manifest text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Self {
            start,
            end: end.max(start),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub code: &'static str,
    pub severity: Severity,
    pub span: Span,
    pub message: String,
    /// Text shown under the span; defaults to a short form of the message.
    pub label: Option<String>,
    pub help: Option<String>,
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Self {
            code,
            severity: Severity::Error,
            span,
            message: message.into(),
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, span, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_optional_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Line and column (both 1-based; the column counts characters) of byte offsets in a text.
pub struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, line_starts }
    }

    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }
}

/// One diagnostic as a JSON object: the `--format json` line of `validate`.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct DiagnosticRecord {
    pub code: String,
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub help: Option<String>,
}

/// The diagnostics of one manifest file, with the text they point into.
#[derive(Debug, Clone)]
pub struct Report {
    pub file: String,
    pub text: String,
    pub diagnostics: Vec<Diagnostic>,
    /// Spans of secret values (API token, encryption key), masked in source excerpts.
    pub secrets: Vec<Span>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn records(&self) -> Vec<DiagnosticRecord> {
        let index = LineIndex::new(&self.text);
        self.diagnostics
            .iter()
            .map(|d| {
                let (line, column) = index.line_col(d.span.start);
                DiagnosticRecord {
                    code: d.code.to_string(),
                    severity: d.severity,
                    file: self.file.clone(),
                    line,
                    column,
                    message: d.message.clone(),
                    help: d.help.clone(),
                }
            })
            .collect()
    }

    /// Renders every diagnostic the way miette draws them, with the source excerpt.
    pub fn render_human(&self, color: bool) -> String {
        let theme = if color {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        let handler = miette::GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        let source = Excerpt {
            name: self.file.clone(),
            text: mask_secrets(&self.text, &self.secrets).into(),
        };
        let mut out = String::new();
        for d in &self.diagnostics {
            let shown = Shown {
                diagnostic: d,
                source: source.clone(),
            };
            if handler.render_report(&mut out, &shown).is_err() {
                out.push_str(&format!("{}: {}: {}\n", self.file, d.code, d.message));
            }
        }
        out
    }
}

/// Lines longer than this (bytes) are shown as a window around the span, not whole: miette
/// draws whole lines and pads with format widths, which panic past 65,535 columns.
const LONG_LINE: usize = 400;
/// How much of a long line is shown before and after the span's start (bytes).
const WINDOW_BEFORE: usize = 60;
const WINDOW_AFTER: usize = 200;

/// The manifest text as miette reads it: columns counted in characters (as the JSON records
/// do), and long lines cut to a window around the span.
#[derive(Clone)]
struct Excerpt {
    name: String,
    text: std::sync::Arc<str>,
}

impl Excerpt {
    fn line_bounds(&self, at: usize) -> (usize, usize) {
        let start = self.text[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = self.text[at..]
            .find('\n')
            .map_or(self.text.len(), |i| at + i);
        (start, end)
    }

    /// Whether the line at `at` and the `before`/`after` lines around it are all short.
    fn short_lines(&self, at: usize, before: usize, after: usize) -> bool {
        let (mut start, mut end) = self.line_bounds(at);
        if end - start > LONG_LINE {
            return false;
        }
        for _ in 0..before {
            if start == 0 {
                break;
            }
            let (s, e) = self.line_bounds(start - 1);
            if e - s > LONG_LINE {
                return false;
            }
            start = s;
        }
        for _ in 0..after {
            if end >= self.text.len() {
                break;
            }
            let (s, e) = self.line_bounds(end + 1);
            if e - s > LONG_LINE {
                return false;
            }
            end = e;
        }
        true
    }

    /// `at`, moved back to the start of the character it falls in.
    fn floor(&self, mut at: usize) -> usize {
        at = at.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        at
    }

    fn ceil(&self, mut at: usize) -> usize {
        at = at.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at += 1;
        }
        at
    }
}

impl miette::SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let at = self.floor(span.offset());
        let index = LineIndex::new(&self.text);
        if self.short_lines(at, before, after) {
            let inner = self.text.as_ref().read_span(span, before, after)?;
            let start = inner.span().offset();
            let (line, column) = index.line_col(start);
            return Ok(Box::new(miette::MietteSpanContents::new_named(
                self.name.clone(),
                inner.data(),
                *inner.span(),
                line - 1,
                column - 1,
                inner.line_count(),
            )));
        }
        let (line_start, line_end) = self.line_bounds(at);
        let from = if before == 0 && after == 0 {
            at
        } else {
            self.floor(at.saturating_sub(WINDOW_BEFORE).max(line_start))
        };
        let to = self.ceil((at + WINDOW_AFTER).min(line_end)).max(from);
        let (line, column) = index.line_col(from);
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.clone(),
            &self.text.as_bytes()[from..to],
            (from, to - from).into(),
            line - 1,
            column - 1,
            1,
        )))
    }
}

const URL_SCHEMES: &[&str] = &["s3", "file", "memory", "http", "https"];

/// The text with every secret span and every URL's `user:password@` part replaced by `*`, byte
/// for byte, so spans still point at the same places.
pub fn mask_secrets(text: &str, secrets: &[Span]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let mut mask = |start: usize, end: usize| {
        for i in start..end.min(bytes.len()) {
            // Keep multi-byte characters whole: only ASCII bytes are replaced.
            if bytes[i].is_ascii() && !bytes[i].is_ascii_whitespace() {
                bytes[i] = b'*';
            }
        }
    };
    for s in secrets {
        mask(s.start, s.end);
    }
    // Any token that looks like a URL, however mistyped its scheme separator, has its
    // credentials masked: a connection string that fails to parse is exactly the one shown.
    let is_break = |c: char| c.is_whitespace() || c == '"' || c == '\'';
    let mut rest = text;
    let mut offset = 0;
    while !rest.is_empty() {
        let len = rest.find(is_break).unwrap_or(rest.len());
        let token = &rest[..len];
        let lead = token.len() - token.trim_start_matches(['{', '[', '(']).len();
        let bare = &token[lead..];
        let url_like = bare.contains("://")
            || bare.split_once(':').is_some_and(|(scheme, _)| {
                URL_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme))
            });
        if url_like {
            if let Some(range) = crate::types::userinfo_range(bare) {
                mask(offset + lead + range.start, offset + lead + range.end);
            }
        }
        let skip = rest[len..].chars().next().map_or(0, char::len_utf8);
        offset += len + skip;
        rest = &rest[len + skip..];
    }
    String::from_utf8(bytes).unwrap_or_else(|_| text.to_string())
}

struct Shown<'a> {
    diagnostic: &'a Diagnostic,
    source: Excerpt,
}

impl Shown<'_> {
    /// A label no longer than a window: a span over a megabyte value is underlined in part.
    fn label(&self, span: Span) -> (usize, usize) {
        let start = self.source.floor(span.start);
        let end = self
            .source
            .floor(span.end.min(start + WINDOW_AFTER))
            .max(start);
        (start, end - start)
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for Shown<'_> {}

impl miette::Diagnostic for Shown<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diagnostic.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let d = self.diagnostic;
        let primary = miette::LabeledSpan::new_primary_with_span(
            Some(d.label.clone().unwrap_or_else(|| "here".to_string())),
            self.label(d.span),
        );
        let related = d.related.iter().map(|(span, label)| {
            miette::LabeledSpan::new_with_span(Some(label.clone()), self.label(*span))
        });
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}
