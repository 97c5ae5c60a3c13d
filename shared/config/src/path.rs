//! Field paths (`schedule[0].target.project`) and mapping them to lines of the source file.

use std::fmt;
use std::ops::Range;

use toml_edit::{Item, Table, Value};

/// One step into the document: a key of a table or an index into an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Where a value lives in the triggers file, e.g. `schedule[0].cron`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    pub fn root() -> Self {
        Self::default()
    }

    /// A child path under a table key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    /// A child path under an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(file)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A parsed copy of the file that keeps byte spans, used only to point errors at lines.
pub struct SourceMap<'a> {
    source: &'a str,
    document: Option<toml_edit::Document<&'a str>>,
}

/// A node while walking: table-like or a plain value.
#[derive(Clone, Copy)]
enum Node<'d> {
    Item(&'d Item),
    Table(&'d Table),
    Value(&'d Value),
}

impl<'a> SourceMap<'a> {
    pub fn new(source: &'a str) -> Self {
        // toml_edit can panic while recovering from a syntax error (`==\n.=`, found by
        // fuzzing), so it only reads text that toml's own parser accepts as TOML.
        let is_toml = source.parse::<toml::Table>().is_ok();
        Self {
            source,
            document: is_toml
                .then(|| toml_edit::Document::parse(source).ok())
                .flatten(),
        }
    }

    /// 1-based (line, column) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let before = &self.source[..floor_char_boundary(self.source, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    /// The span of the value at `path`, or of its nearest ancestor that has one.
    pub fn span_of(&self, path: &FieldPath) -> Option<Range<usize>> {
        let document = self.document.as_ref()?;
        let mut node = Node::Table(document.as_table());
        let mut best = None;
        for segment in path.segments() {
            let (next, key_span) = match child(node, segment) {
                Some(found) => found,
                None => break,
            };
            // Prefer the key's position: it is where a reader looks for the field.
            best = key_span.or_else(|| span(next)).or(best);
            node = next;
        }
        best
    }

    /// The deepest field path whose value's span contains `offset`.
    pub fn path_at(&self, offset: usize) -> FieldPath {
        let mut path = FieldPath::root();
        let Some(document) = self.document.as_ref() else {
            return path;
        };
        let mut node = Node::Table(document.as_table());
        'descend: loop {
            for (segment, next, key_span) in children(node) {
                let value_span = span(next);
                let inside =
                    |s: &Option<Range<usize>>| s.as_ref().is_some_and(|s| s.contains(&offset));
                if inside(&key_span) || inside(&value_span) || contains_deep(next, offset) {
                    path = match &segment {
                        Segment::Key(key) => path.key(key),
                        Segment::Index(index) => path.index(*index),
                    };
                    node = next;
                    continue 'descend;
                }
            }
            return path;
        }
    }
}

fn floor_char_boundary(s: &str, mut offset: usize) -> usize {
    while offset > 0 && !s.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn span(node: Node<'_>) -> Option<Range<usize>> {
    match node {
        Node::Item(item) => item.span(),
        Node::Table(table) => table.span(),
        Node::Value(value) => value.span(),
    }
}

/// Tables declared with `[header]` have a span only for the header, so descend to check.
fn contains_deep(node: Node<'_>, offset: usize) -> bool {
    children(node).into_iter().any(|(_, child, key_span)| {
        key_span.is_some_and(|s| s.contains(&offset))
            || span(child).is_some_and(|s| s.contains(&offset))
            || contains_deep(child, offset)
    })
}

fn child<'d>(node: Node<'d>, segment: &Segment) -> Option<(Node<'d>, Option<Range<usize>>)> {
    match (node, segment) {
        (Node::Item(Item::Table(table)) | Node::Table(table), Segment::Key(key)) => {
            let key_span = table.key(key).and_then(|k| k.span());
            table.get(key).map(|item| (Node::Item(item), key_span))
        }
        (Node::Item(Item::ArrayOfTables(tables)), Segment::Index(index)) => {
            tables.get(*index).map(|table| (Node::Table(table), None))
        }
        (Node::Item(Item::Value(value)) | Node::Value(value), segment) => match (value, segment) {
            (Value::InlineTable(table), Segment::Key(key)) => {
                let key_span = table.key(key).and_then(|k| k.span());
                table.get(key).map(|value| (Node::Value(value), key_span))
            }
            (Value::Array(array), Segment::Index(index)) => {
                array.get(*index).map(|value| (Node::Value(value), None))
            }
            _ => None,
        },
        _ => None,
    }
}

fn children(node: Node<'_>) -> Vec<(Segment, Node<'_>, Option<Range<usize>>)> {
    match node {
        Node::Item(Item::Table(table)) | Node::Table(table) => table
            .iter()
            .map(|(key, item)| {
                let key_span = table.key(key).and_then(|k| k.span());
                (Segment::Key(key.to_owned()), Node::Item(item), key_span)
            })
            .collect(),
        Node::Item(Item::ArrayOfTables(tables)) => tables
            .iter()
            .enumerate()
            .map(|(i, table)| (Segment::Index(i), Node::Table(table), None))
            .collect(),
        Node::Item(Item::Value(value)) | Node::Value(value) => match value {
            Value::InlineTable(table) => table
                .iter()
                .filter_map(|(key, _)| {
                    let key_span = table.key(key).and_then(|k| k.span());
                    table
                        .get(key)
                        .map(|v| (Segment::Key(key.to_owned()), Node::Value(v), key_span))
                })
                .collect(),
            Value::Array(array) => array
                .iter()
                .enumerate()
                .map(|(i, v)| (Segment::Index(i), Node::Value(v), None))
                .collect(),
            _ => Vec::new(),
        },
        Node::Item(Item::None) => Vec::new(),
    }
}
