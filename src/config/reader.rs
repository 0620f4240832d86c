//! Walks toml's spanned document (`toml::de::DeTable`) so that every problem found in
//! the config file (unknown key, wrong type, bad value) is collected with its line,
//! instead of stopping at the first one as plain serde deserialization would.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::ConfigIssue;

/// The collector of issues for one file, mapping byte offsets to 1-based lines.
pub(super) struct Ctx {
    file: String,
    line_starts: Vec<usize>,
    pub(super) issues: Vec<ConfigIssue>,
}

impl Ctx {
    pub(super) fn new(file: &str, text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            file: file.to_owned(),
            line_starts,
            issues: Vec::new(),
        }
    }

    pub(super) fn line(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|&start| start <= offset)
            .max(1)
    }

    pub(super) fn report(&mut self, span: &Range<usize>, key: &str, reason: impl Into<String>) {
        let line = self.line(span.start);
        self.issues.push(ConfigIssue {
            file: self.file.clone(),
            line,
            key: key.to_owned(),
            reason: reason.into(),
        });
    }
}

/// A value paired with where it came from in the file.
pub(super) type At<T> = Spanned<T>;

/// A TOML table being read: knows its dotted path and header span.
pub(super) struct TableView<'a, 'i> {
    table: &'a DeTable<'i>,
    pub(super) span: Range<usize>,
    pub(super) path: String,
}

impl<'a, 'i> TableView<'a, 'i> {
    /// Views `table`, reporting every key not in `known`.
    pub(super) fn new(
        ctx: &mut Ctx,
        table: &'a DeTable<'i>,
        span: Range<usize>,
        path: String,
        known: &[&str],
    ) -> Self {
        let view = Self { table, span, path };
        for key in table.keys() {
            if !known.contains(&key.get_ref().as_ref()) {
                let reason = format!("unknown key (expected one of: {})", known.join(", "));
                ctx.report(&key.span(), &view.key(key.get_ref()), reason);
            }
        }
        view
    }

    /// The dotted path of `key` inside this table.
    pub(super) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.table.get(key)
    }

    /// Where `key`'s value is, without checking its type.
    pub(super) fn span_of(&self, key: &str) -> Option<Range<usize>> {
        self.get(key).map(|v| v.span())
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Reports that a required `key` is absent, at this table's header line.
    pub(super) fn missing(&self, ctx: &mut Ctx, key: &str) {
        ctx.report(&self.span, &self.key(key), "missing required key");
    }

    fn wrong_type(&self, ctx: &mut Ctx, key: &str, v: &Spanned<DeValue<'_>>, want: &str) {
        let reason = format!("expected {want}, found {}", v.get_ref().type_str());
        ctx.report(&v.span(), &self.key(key), reason);
    }

    pub(super) fn str(&self, ctx: &mut Ctx, key: &str) -> Option<At<String>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Spanned::new(v.span(), s.to_string())),
            _ => {
                self.wrong_type(ctx, key, v, "a string");
                None
            }
        }
    }

    pub(super) fn bool(&self, ctx: &mut Ctx, key: &str) -> Option<At<bool>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(Spanned::new(v.span(), *b)),
            _ => {
                self.wrong_type(ctx, key, v, "a boolean");
                None
            }
        }
    }

    /// A non-negative integer that must lie in `range` (inclusive).
    pub(super) fn uint(
        &self,
        ctx: &mut Ctx,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<At<u64>> {
        let v = self.get(key)?;
        let n = int_of(v.get_ref());
        match n {
            Some(n) if range.contains(&n) => Some(Spanned::new(v.span(), n)),
            Some(_) | None if v.get_ref().is_integer() => {
                let reason = range_reason(&range);
                ctx.report(&v.span(), &self.key(key), reason);
                None
            }
            _ => {
                self.wrong_type(ctx, key, v, "an integer");
                None
            }
        }
    }

    pub(super) fn array(&self, ctx: &mut Ctx, key: &str) -> Option<At<&'a DeArray<'i>>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Array(a) => Some(Spanned::new(v.span(), a)),
            _ => {
                self.wrong_type(ctx, key, v, "an array");
                None
            }
        }
    }

    /// Strings of an array, each with its span and its `key[i]` path.
    pub(super) fn str_array(&self, ctx: &mut Ctx, key: &str) -> Option<Vec<(String, At<String>)>> {
        let arr = self.array(ctx, key)?;
        let mut out = Vec::new();
        for (i, v) in arr.get_ref().iter().enumerate() {
            let path = format!("{}[{i}]", self.key(key));
            match v.get_ref() {
                DeValue::String(s) => out.push((path, Spanned::new(v.span(), s.to_string()))),
                other => {
                    let reason = format!("expected a string, found {}", other.type_str());
                    ctx.report(&v.span(), &path, reason);
                }
            }
        }
        Some(out)
    }

    /// A sub-table (`[a.b]` or inline `b = { .. }`), checked against `known`.
    pub(super) fn table(
        &self,
        ctx: &mut Ctx,
        key: &str,
        known: &[&str],
    ) -> Option<TableView<'a, 'i>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(TableView::new(ctx, t, v.span(), self.key(key), known)),
            _ => {
                self.wrong_type(ctx, key, v, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[a.b]]`), each checked against `known`.
    pub(super) fn table_array(
        &self,
        ctx: &mut Ctx,
        key: &str,
        known: &[&str],
    ) -> Vec<TableView<'a, 'i>> {
        let Some(arr) = self.array(ctx, key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, v) in arr.get_ref().iter().enumerate() {
            let path = format!("{}[{i}]", self.key(key));
            match v.get_ref() {
                DeValue::Table(t) => out.push(TableView::new(ctx, t, v.span(), path, known)),
                other => {
                    let reason = format!("expected a table, found {}", other.type_str());
                    ctx.report(&v.span(), &path, reason);
                }
            }
        }
        out
    }
}

/// A view of an empty table, used when a section is absent so defaults still apply.
/// `span` is where a missing key is reported (the parent table's header).
pub(super) fn empty_view<'a>(
    empty: &'a DeTable<'static>,
    path: &str,
    span: Range<usize>,
) -> TableView<'a, 'static> {
    TableView {
        table: empty,
        span,
        path: path.to_owned(),
    }
}

pub(super) fn int_of(v: &DeValue<'_>) -> Option<u64> {
    match v {
        DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

fn range_reason(range: &std::ops::RangeInclusive<u64>) -> String {
    match (*range.start(), *range.end()) {
        (0, u64::MAX) => "must be a non-negative integer".to_owned(),
        (lo, u64::MAX) => format!("must be at least {lo}"),
        (lo, hi) => format!("must be between {lo} and {hi}"),
    }
}
