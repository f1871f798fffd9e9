//! The rows of one resource: the spec's processing algorithm. Each select gives rows over a
//! focus; a select's parts (its own columns, each nested select, its unionAll) are combined as
//! a Cartesian product; forEach / forEachOrNull / repeat run the select once per focus, with
//! `%rowIndex` the focus's position.
use std::slice;

use fhir_encoder::json::{Doc, MAX_DEPTH};

use super::definition::{Iteration, Path, Select, ViewDefinition};
use super::error::RowError;
use crate::fhirpath::{Env, Item, evaluate};

/// One output row: a cell per column, in [`ViewDefinition::columns`] order.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// The `id` of the resource the row came from.
    pub resource_id: Option<&'a str>,
    pub cells: Vec<Cell<'a>>,
}

/// One value of a row.
#[derive(Debug, Clone)]
pub enum Cell<'a> {
    Null,
    One(Item<'a>),
    /// The values of a collection column (possibly none).
    Many(Vec<Item<'a>>),
}

/// Deepest repeat traversal: each step of a traversal that descends the resource goes at
/// least one JSON level down, so a deeper one is going round in circles (e.g. `repeat: $this`).
const MAX_REPEAT_DEPTH: usize = MAX_DEPTH;

type Rows<'a> = Vec<Vec<Cell<'a>>>;

impl ViewDefinition {
    /// The rows of one resource: none when it is not of the view's resource type or a `where`
    /// does not hold.
    pub fn rows<'a>(&self, resource: Doc<'a>) -> Result<Vec<Row<'a>>, RowError> {
        let resource_type = resource
            .get(0, "resourceType")
            .and_then(|i| resource.str(i));
        if resource_type != Some(self.resource.as_str()) {
            return Ok(Vec::new());
        }
        let resource_id = resource.get(0, "id").and_then(|i| resource.str(i));
        let root = Item::node(resource, 0);
        let run = Run {
            view: self,
            resource: &root,
            resource_id,
        };
        for w in &self.wheres {
            let out = run.eval(w, slice::from_ref(&root), 0)?;
            match Item::to_bool(&out) {
                Ok(Some(true)) => {}
                Ok(_) => return Ok(Vec::new()),
                Err(error) => {
                    return Err(RowError::WhereNotBoolean {
                        resource_id: run.id(),
                        at: w.at.clone(),
                        error,
                    });
                }
            }
        }
        let rows = run.product(&self.selects, &root, 0)?;
        Ok(rows
            .into_iter()
            .map(|cells| Row { resource_id, cells })
            .collect())
    }
}

struct Run<'v, 'a> {
    view: &'v ViewDefinition,
    resource: &'v Item<'a>,
    resource_id: Option<&'a str>,
}

impl<'a> Run<'_, 'a> {
    fn id(&self) -> Option<String> {
        self.resource_id.map(str::to_owned)
    }

    fn eval(
        &self,
        path: &Path,
        focus: &[Item<'a>],
        row_index: i64,
    ) -> Result<Vec<Item<'a>>, RowError> {
        let env = Env {
            resource: self.resource,
            constants: &self.view.constants,
            row_index,
        };
        evaluate(&path.expr, focus, &env).map_err(|error| RowError::Eval {
            resource_id: self.id(),
            at: path.at.clone(),
            error,
        })
    }

    /// Sibling selects over one focus: the product of their rows.
    fn product(
        &self,
        selects: &[Select],
        focus: &Item<'a>,
        row_index: i64,
    ) -> Result<Rows<'a>, RowError> {
        let mut rows = vec![Vec::new()];
        for s in selects {
            if rows.is_empty() {
                break;
            }
            rows = cross(rows, self.select(s, focus, row_index)?);
        }
        Ok(rows)
    }

    fn select(&self, s: &Select, focus: &Item<'a>, row_index: i64) -> Result<Rows<'a>, RowError> {
        let foci: Vec<(Item<'a>, i64)> = match &s.iteration {
            None => vec![(focus.clone(), row_index)],
            Some(Iteration::ForEach(p)) => {
                indexed(self.eval(p, slice::from_ref(focus), row_index)?)
            }
            Some(Iteration::ForEachOrNull(p)) => {
                let items = self.eval(p, slice::from_ref(focus), row_index)?;
                if items.is_empty() {
                    return Ok(vec![null_row(s)]);
                }
                indexed(items)
            }
            Some(Iteration::Repeat(paths)) => {
                let mut nodes = Vec::new();
                self.traverse(s, paths, focus, row_index, 0, &mut nodes)?;
                indexed(nodes)
            }
        };
        let mut rows = Vec::new();
        for (f, i) in &foci {
            let mut part = vec![self.columns(s, f, *i)?];
            part = cross(part, self.product(&s.selects, f, *i)?);
            if !s.union_all.is_empty() {
                let mut union = Vec::new();
                for branch in &s.union_all {
                    union.extend(self.select(branch, f, *i)?);
                }
                part = cross(part, union);
            }
            rows.extend(part);
        }
        Ok(rows)
    }

    /// The spec's repeat traversal: every node each path reaches from `node`, recursively, in
    /// pre-order (a child, then what is reached from it), `node` itself excluded.
    fn traverse(
        &self,
        s: &Select,
        paths: &[Path],
        node: &Item<'a>,
        row_index: i64,
        depth: usize,
        out: &mut Vec<Item<'a>>,
    ) -> Result<(), RowError> {
        if depth >= MAX_REPEAT_DEPTH {
            return Err(RowError::RepeatTooDeep {
                resource_id: self.id(),
                at: format!("{}.repeat", s.at),
                limit: MAX_REPEAT_DEPTH,
            });
        }
        for p in paths {
            for child in self.eval(p, slice::from_ref(node), row_index)? {
                out.push(child.clone());
                self.traverse(s, paths, &child, row_index, depth + 1, out)?;
            }
        }
        Ok(())
    }

    /// The select's own columns over one focus: one row.
    fn columns(
        &self,
        s: &Select,
        focus: &Item<'a>,
        row_index: i64,
    ) -> Result<Vec<Cell<'a>>, RowError> {
        let mut cells = Vec::with_capacity(s.columns.len());
        for c in &s.columns {
            let mut items = self.eval(&c.path, slice::from_ref(focus), row_index)?;
            let cell = if c.column.collection {
                Cell::Many(items)
            } else if items.len() > 1 {
                return Err(RowError::SeveralValues {
                    resource_id: self.id(),
                    column: c.column.name.clone(),
                    count: items.len(),
                });
            } else {
                items.pop().map_or(Cell::Null, Cell::One)
            };
            cells.push(cell);
        }
        Ok(cells)
    }
}

fn indexed<'a>(items: Vec<Item<'a>>) -> Vec<(Item<'a>, i64)> {
    items.into_iter().zip(0..).collect()
}

/// The row of a forEachOrNull whose collection is empty: null in every column of the select
/// (nested ones included), except that `%rowIndex` columns give 0.
fn null_row<'a>(s: &Select) -> Vec<Cell<'a>> {
    let mut cells = Vec::new();
    push_nulls(s, &mut cells);
    cells
}

fn push_nulls<'a>(s: &Select, cells: &mut Vec<Cell<'a>>) {
    for c in &s.columns {
        cells.push(if c.is_row_index {
            Cell::One(Item::Integer(0))
        } else {
            Cell::Null
        });
    }
    for nested in &s.selects {
        push_nulls(nested, cells);
    }
    if let Some(branch) = s.union_all.first() {
        push_nulls(branch, cells);
    }
}

/// Every row of `left` followed by every row of `right`, as one row.
fn cross<'a>(left: Rows<'a>, right: Rows<'a>) -> Rows<'a> {
    if let [only] = right.as_slice() {
        return left
            .into_iter()
            .map(|mut row| {
                row.extend(only.iter().cloned());
                row
            })
            .collect();
    }
    let mut out = Vec::with_capacity(left.len() * right.len());
    for l in &left {
        for r in &right {
            out.push(l.iter().chain(r).cloned().collect());
        }
    }
    out
}
