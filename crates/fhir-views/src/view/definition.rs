//! Reading a ViewDefinition: its JSON into checked structs with parsed expressions. Every
//! refusal names the offending element (`select[1].unionAll[0].column[2].path`).
use std::str::FromStr;

use arrow_schema::SchemaRef;
use serde_json::{Map, Value};

use super::error::{ViewError, ViewErrorKind};
use super::fingerprint;
use super::schema::{self, Column};
use super::validate;
use crate::fhirpath::{Constants, Expr};

/// A checked SQL on FHIR ViewDefinition, ready to give the rows of resources.
#[derive(Debug, Clone)]
pub struct ViewDefinition {
    /// The view's `name`, if given (a valid SQL name).
    pub name: Option<String>,
    /// The resource type whose resources the view reads.
    pub resource: String,
    pub(crate) constants: Constants,
    pub(crate) wheres: Vec<Path>,
    pub(crate) selects: Vec<Select>,
    columns: Vec<Column>,
    schema: SchemaRef,
    fingerprint: String,
}

/// A FHIRPath expression of the view, with the element it came from (for error messages).
#[derive(Debug, Clone)]
pub(crate) struct Path {
    pub expr: Expr,
    pub at: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Select {
    /// Element path, e.g. `select[0].unionAll[1]`.
    pub at: String,
    pub columns: Vec<ColumnDef>,
    pub selects: Vec<Select>,
    pub iteration: Option<Iteration>,
    pub union_all: Vec<Select>,
}

#[derive(Debug, Clone)]
pub(crate) struct ColumnDef {
    pub column: Column,
    pub path: Path,
    /// The path is `%rowIndex` itself: a forEachOrNull's empty row gives 0, not null.
    pub is_row_index: bool,
    /// Element path, e.g. `select[0].column[1]`.
    pub at: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Iteration {
    ForEach(Path),
    ForEachOrNull(Path),
    Repeat(Vec<Path>),
}

impl ViewDefinition {
    /// Reads and checks a view.
    pub fn from_json(v: &Value) -> Result<ViewDefinition, ViewError> {
        let root = object(v, "")?;
        if let Some(t) = root.get("resourceType") {
            let t = string(t, "resourceType")?;
            if t != "ViewDefinition" {
                return Err(ViewError::new(
                    "resourceType",
                    ViewErrorKind::NotAViewDefinition {
                        expected: "ViewDefinition",
                        found: t.to_owned(),
                    },
                ));
            }
        }
        let name = match root.get("name") {
            Some(n) => {
                let n = string(n, "name")?;
                validate::check_name(n, "name")?;
                Some(n.to_owned())
            }
            None => None,
        };
        let resource = string(required(root, "resource", "")?, "resource")?;
        validate::check_resource_type(resource, "resource")?;
        let constants = read_constants(root.get("constant"))?;
        let reader = Reader {
            constants: &constants,
        };
        let wheres = match root.get("where") {
            Some(w) => array(w, "where")?
                .iter()
                .enumerate()
                .map(|(i, w)| reader.where_clause(w, &format!("where[{i}]")))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let select_list = array(required(root, "select", "")?, "select")?;
        if select_list.is_empty() {
            return Err(ViewError::new("select", ViewErrorKind::Empty));
        }
        let selects = reader.selects(select_list, "select")?;
        let columns = validate::output_columns(&selects)?;
        Ok(ViewDefinition {
            name,
            resource: resource.to_owned(),
            constants,
            wheres,
            selects,
            schema: schema::arrow_schema(&columns),
            columns,
            fingerprint: fingerprint::of(v),
        })
    }

    /// Output columns in the spec's order: own columns, nested selects', then unionAll's.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The Arrow schema of the view's rows (one nullable field per column).
    pub fn arrow_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// A fingerprint of the definition's JSON (independent of key order and whitespace): when
    /// it changes, a table built from the view must be rebuilt.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

impl FromStr for ViewDefinition {
    type Err = ViewError;

    /// Reads a view from its JSON text.
    fn from_str(text: &str) -> Result<ViewDefinition, ViewError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ViewError::new("", ViewErrorKind::Json(e.to_string())))?;
        ViewDefinition::from_json(&v)
    }
}

fn read_constants(entries: Option<&Value>) -> Result<Constants, ViewError> {
    let Some(entries) = entries else {
        return Ok(Constants::new());
    };
    let entries = array(entries, "constant")?;
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("constant[{i}]");
        let obj = object(entry, &at)?;
        let name_at = format!("{at}.name");
        let name = string(required(obj, "name", &at)?, &name_at)?;
        validate::check_name(name, &name_at)?;
        let values: Vec<&str> = obj
            .keys()
            .filter(|k| k.strip_prefix("value").is_some_and(|t| !t.is_empty()))
            .map(String::as_str)
            .collect();
        match values.len() {
            0 => return Err(ViewError::new(at, ViewErrorKind::ConstantWithoutValue)),
            1 => {}
            _ => {
                return Err(ViewError::new(
                    at,
                    ViewErrorKind::ConstantWithSeveralValues(values.join(", ")),
                ));
            }
        }
        let allowed = ["name", "id", "extension", "modifierExtension", values[0]];
        check_keys(obj, &allowed, &at)?;
    }
    Constants::from_view_json(entries)
        .map_err(|e| ViewError::new(e.path, ViewErrorKind::Constant(e.message)))
}

/// Reads selects, columns and expressions; expressions may use the view's constants.
struct Reader<'c> {
    constants: &'c Constants,
}

impl Reader<'_> {
    fn expr(&self, v: &Value, at: &str) -> Result<Path, ViewError> {
        let text = string(v, at)?;
        let expr = Expr::parse(text, &|name| self.constants.contains(name)).map_err(|error| {
            ViewError::new(
                at,
                ViewErrorKind::Expression {
                    text: text.to_owned(),
                    error,
                },
            )
        })?;
        Ok(Path {
            expr,
            at: at.to_owned(),
        })
    }

    fn where_clause(&self, v: &Value, at: &str) -> Result<Path, ViewError> {
        let obj = object(v, at)?;
        check_keys(obj, &["path", "description", "id", "extension"], at)?;
        self.expr(required(obj, "path", at)?, &format!("{at}.path"))
    }

    fn selects(&self, list: &[Value], at: &str) -> Result<Vec<Select>, ViewError> {
        list.iter()
            .enumerate()
            .map(|(i, s)| self.select(s, format!("{at}[{i}]")))
            .collect()
    }

    fn select(&self, v: &Value, at: String) -> Result<Select, ViewError> {
        const KEYS: &[&str] = &[
            "column",
            "select",
            "forEach",
            "forEachOrNull",
            "repeat",
            "unionAll",
            "id",
            "extension",
            "modifierExtension",
        ];
        let obj = object(v, &at)?;
        check_keys(obj, KEYS, &at)?;
        let given: Vec<&str> = ["forEach", "forEachOrNull", "repeat"]
            .into_iter()
            .filter(|k| obj.contains_key(*k))
            .collect();
        validate::check_one_iteration(&given, &at)?;
        let iteration = if let Some(e) = obj.get("forEach") {
            Some(Iteration::ForEach(self.expr(e, &format!("{at}.forEach"))?))
        } else if let Some(e) = obj.get("forEachOrNull") {
            let path = self.expr(e, &format!("{at}.forEachOrNull"))?;
            Some(Iteration::ForEachOrNull(path))
        } else if let Some(r) = obj.get("repeat") {
            let r_at = format!("{at}.repeat");
            let paths = array(r, &r_at)?;
            if paths.is_empty() {
                return Err(ViewError::new(r_at, ViewErrorKind::Empty));
            }
            let paths = paths
                .iter()
                .enumerate()
                .map(|(i, p)| self.expr(p, &format!("{r_at}[{i}]")))
                .collect::<Result<_, _>>()?;
            Some(Iteration::Repeat(paths))
        } else {
            None
        };
        let list = |key: &str| -> Result<&[Value], ViewError> {
            match obj.get(key) {
                Some(v) => array(v, &format!("{at}.{key}")),
                None => Ok(&[]),
            }
        };
        let columns = list("column")?
            .iter()
            .enumerate()
            .map(|(i, c)| self.column(c, format!("{at}.column[{i}]")))
            .collect::<Result<_, _>>()?;
        let selects = self.selects(list("select")?, &format!("{at}.select"))?;
        let union_all = self.selects(list("unionAll")?, &format!("{at}.unionAll"))?;
        Ok(Select {
            at,
            columns,
            selects,
            iteration,
            union_all,
        })
    }

    fn column(&self, v: &Value, at: String) -> Result<ColumnDef, ViewError> {
        const KEYS: &[&str] = &[
            "name",
            "path",
            "description",
            "collection",
            "type",
            "tag",
            "id",
            "extension",
            "modifierExtension",
        ];
        let obj = object(v, &at)?;
        check_keys(obj, KEYS, &at)?;
        let name_at = format!("{at}.name");
        let name = string(required(obj, "name", &at)?, &name_at)?;
        validate::check_name(name, &name_at)?;
        let path_value = required(obj, "path", &at)?;
        let path = self.expr(path_value, &format!("{at}.path"))?;
        let collection = match obj.get("collection") {
            Some(c) => c.as_bool().ok_or_else(|| {
                wrong_type(format!("{at}.collection"), "a boolean (true or false)")
            })?,
            None => false,
        };
        let fhir_type = match obj.get("type") {
            Some(t) => Some(schema::fhir_type_code(string(t, &format!("{at}.type"))?).to_owned()),
            None => None,
        };
        let (ansi_type, ansi_at) = ansi_tag(obj.get("tag"), &at)?;
        let item_type = schema::item_type(fhir_type.as_deref(), ansi_type.as_deref())
            .map_err(|kind| ViewError::new(ansi_at, kind))?;
        Ok(ColumnDef {
            column: Column {
                name: name.to_owned(),
                fhir_type,
                collection,
                ansi_type,
                item_type,
            },
            is_row_index: path_value.as_str().map(str::trim) == Some("%rowIndex"),
            path,
            at,
        })
    }
}

/// The value of a column's `ansi/type` tag, and the path of that tag's value.
fn ansi_tag(tags: Option<&Value>, at: &str) -> Result<(Option<String>, String), ViewError> {
    let tags_at = format!("{at}.tag");
    let Some(tags) = tags else {
        return Ok((None, tags_at));
    };
    let mut found = (None, tags_at.clone());
    for (i, tag) in array(tags, &tags_at)?.iter().enumerate() {
        let tag_at = format!("{tags_at}[{i}]");
        let obj = object(tag, &tag_at)?;
        check_keys(obj, &["name", "value", "id", "extension"], &tag_at)?;
        let name = string(required(obj, "name", &tag_at)?, &format!("{tag_at}.name"))?;
        let value_at = format!("{tag_at}.value");
        let value = string(required(obj, "value", &tag_at)?, &value_at)?;
        if name == "ansi/type" {
            found = (Some(value.to_owned()), value_at);
        }
    }
    Ok(found)
}

fn child(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

fn wrong_type(at: impl Into<String>, expected: &'static str) -> ViewError {
    ViewError::new(at, ViewErrorKind::WrongType { expected })
}

fn required<'v>(obj: &'v Map<String, Value>, key: &str, at: &str) -> Result<&'v Value, ViewError> {
    obj.get(key)
        .ok_or_else(|| ViewError::new(child(at, key), ViewErrorKind::Missing))
}

fn object<'v>(v: &'v Value, at: &str) -> Result<&'v Map<String, Value>, ViewError> {
    v.as_object().ok_or_else(|| wrong_type(at, "an object"))
}

fn array<'v>(v: &'v Value, at: &str) -> Result<&'v [Value], ViewError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| wrong_type(at, "an array"))
}

fn string<'v>(v: &'v Value, at: &str) -> Result<&'v str, ViewError> {
    v.as_str().ok_or_else(|| wrong_type(at, "a string"))
}

/// Refuses keys a view element does not have (a misspelt `forEach` must not be ignored).
fn check_keys(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), ViewError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ViewError::new(
            child(at, k),
            ViewErrorKind::UnknownElement(k.clone()),
        )),
        None => Ok(()),
    }
}
