//! The SQL on FHIR conformance suite (`tests/sql-on-fhir/*.json`, see its README), every case
//! run through the view layer. A case passes when:
//! - `expect`: the rows equal the expected rows as a multiset (the reference runner sorts both
//!   sides), numbers compared numerically (`5` = `5.0`), and the rows also fit an Arrow batch of
//!   the view's schema;
//! - `expectColumns`: the view's columns have those names, in that order;
//! - `expectError`: reading the view, or running it over the file's resources, fails.
//!
//! Each case is printed by name (`cargo test -- --nocapture` shows them); a failing case fails
//! its file's test with the file, title, expected and actual rows.
use std::path::PathBuf;

use fhir_encoder::json::Tape;
use fhir_views::{Cell, RowBatchBuilder, ViewDefinition};
use serde_json::{Map, Value};

/// Cases not run, as (file, title, spec feature and why). Empty: every case runs.
const SKIPPED: &[(&str, &str, &str)] = &[];

/// Cases in the suite (22 files, 144 cases: 133 shareable, 11 experimental).
const SUITE_CASES: usize = 144;

macro_rules! suite {
    ($($test:ident => $file:literal,)*) => {
        const FILES: &[&str] = &[$($file),*];
        $(
            #[test]
            fn $test() {
                assert_file_passes($file);
            }
        )*
    };
}

suite! {
    basic => "basic.json",
    collection => "collection.json",
    combinations => "combinations.json",
    constant => "constant.json",
    constant_types => "constant_types.json",
    fhirpath => "fhirpath.json",
    fhirpath_numbers => "fhirpath_numbers.json",
    fn_boundary => "fn_boundary.json",
    fn_empty => "fn_empty.json",
    fn_extension => "fn_extension.json",
    fn_first => "fn_first.json",
    fn_join => "fn_join.json",
    fn_oftype => "fn_oftype.json",
    fn_reference_keys => "fn_reference_keys.json",
    foreach => "foreach.json",
    logic => "logic.json",
    repeat => "repeat.json",
    row_index => "row_index.json",
    union => "union.json",
    validate => "validate.json",
    view_resource => "view_resource.json",
    where_ => "where.json",
}

/// One test file: its resources (as JSON lines, how the view layer receives them) and cases.
struct SuiteFile {
    name: String,
    resources: Vec<String>,
    cases: Vec<Value>,
}

fn load(name: &str) -> SuiteFile {
    let path = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/sql-on-fhir")
    .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
    let resources = file["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} has no resources"))
        .iter()
        .map(Value::to_string)
        .collect();
    let cases = file["tests"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} has no tests"))
        .clone();
    SuiteFile {
        name: name.to_owned(),
        resources,
        cases,
    }
}

fn title(case: &Value) -> &str {
    case["title"].as_str().unwrap_or("(untitled)")
}

fn skip_reason(file: &str, title: &str) -> Option<&'static str> {
    SKIPPED
        .iter()
        .find(|(f, t, _)| *f == file && *t == title)
        .map(|(_, _, why)| *why)
}

/// What a case did: passed, failed (with why), or was skipped.
enum Outcome {
    Passed,
    Failed(String),
    Skipped,
}

/// Runs every case of a file, printing each by name.
fn run_file(file: &SuiteFile) -> Vec<(String, Outcome)> {
    file.cases
        .iter()
        .map(|case| {
            let title = title(case);
            let outcome = if let Some(why) = skip_reason(&file.name, title) {
                println!("skip {} / {title}: {why}", file.name);
                Outcome::Skipped
            } else {
                match run_case(&file.resources, case) {
                    Ok(()) => {
                        println!("ok   {} / {title}", file.name);
                        Outcome::Passed
                    }
                    Err(why) => {
                        println!("FAIL {} / {title}", file.name);
                        Outcome::Failed(why)
                    }
                }
            };
            (title.to_owned(), outcome)
        })
        .collect()
}

fn assert_file_passes(name: &str) {
    let file = load(name);
    let failures: Vec<String> = run_file(&file)
        .into_iter()
        .filter_map(|(title, outcome)| match outcome {
            Outcome::Failed(why) => Some(format!("{name} / {title}:\n{why}")),
            _ => None,
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        file.cases.len(),
        failures.join("\n\n")
    );
}

/// What running a view gave: its column names and rows, or the error reading or running it.
struct Run {
    columns: Vec<String>,
    rows: Vec<Value>,
    /// Whether the rows fit an Arrow batch of the view's schema (`Err` says why not).
    batch: Result<(), String>,
}

fn run_view(view: &Value, resources: &[String]) -> Result<Run, String> {
    let view = ViewDefinition::from_json(view).map_err(|e| format!("view refused: {e}"))?;
    let columns: Vec<String> = view.columns().iter().map(|c| c.name.clone()).collect();
    let mut builder = RowBatchBuilder::new(&view);
    let mut batch = Ok(());
    let mut rows = Vec::new();
    let mut tape = Tape::default();
    for line in resources {
        let doc = tape
            .parse(line)
            .map_err(|e| format!("resource is not JSON: {e}"))?;
        for row in view.rows(doc).map_err(|e| format!("run failed: {e}"))? {
            let object: Map<String, Value> = columns
                .iter()
                .zip(&row.cells)
                .map(|(name, cell)| (name.clone(), cell_json(cell)))
                .collect();
            rows.push(Value::Object(object));
            if batch.is_ok() {
                batch = builder.push(&row).map_err(|e| e.to_string());
            }
        }
    }
    if batch.is_ok() {
        batch = match builder.finish() {
            Ok(b) if b.num_rows() == rows.len() && b.schema() == view.arrow_schema() => Ok(()),
            Ok(b) => Err(format!(
                "batch of {} rows for {} rows",
                b.num_rows(),
                rows.len()
            )),
            Err(e) => Err(e.to_string()),
        };
    }
    Ok(Run {
        columns,
        rows,
        batch,
    })
}

fn cell_json(cell: &Cell<'_>) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::One(item) => item.as_json(),
        Cell::Many(items) => Value::Array(items.iter().map(|i| i.as_json()).collect()),
    }
}

fn run_case(resources: &[String], case: &Value) -> Result<(), String> {
    let run = run_view(&case["view"], resources);
    if case.get("expectError").and_then(Value::as_bool) == Some(true) {
        return match run {
            Err(_) => Ok(()),
            Ok(run) => Err(format!(
                "expected an error, got rows:\n{}",
                pretty(&run.rows)
            )),
        };
    }
    let run = run?;
    let mut checked = false;
    if let Some(expected) = case.get("expectColumns") {
        let expected: Vec<&str> = expected
            .as_array()
            .ok_or("expectColumns is not an array")?
            .iter()
            .map(|c| c.as_str().unwrap_or_default())
            .collect();
        if run.columns != expected {
            return Err(format!(
                "expected columns {expected:?}\nactual columns   {:?}",
                run.columns
            ));
        }
        checked = true;
    }
    if let Some(expected) = case.get("expect") {
        let expected = expected.as_array().ok_or("expect is not an array")?;
        if sorted_canonical(expected) != sorted_canonical(&run.rows) {
            return Err(format!(
                "expected rows (any order):\n{}\nactual rows:\n{}",
                pretty(expected),
                pretty(&run.rows)
            ));
        }
        run.batch
            .map_err(|e| format!("rows as expected, but not as an Arrow batch: {e}"))?;
        checked = true;
    }
    if checked {
        Ok(())
    } else {
        Err("the case has no expect, expectColumns or expectError".to_owned())
    }
}

fn pretty(rows: &[Value]) -> String {
    rows.iter()
        .map(|r| format!("  {r}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rows as sorted canonical texts: keys sorted, numbers by value.
fn sorted_canonical(rows: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = rows.iter().map(canonical).collect();
    out.sort();
    out
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                .collect();
            entries.sort();
            format!("{{{}}}", entries.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        Value::Number(n) => match n.as_f64() {
            Some(f) => format!("{f:?}"),
            None => n.to_string(),
        },
        other => other.to_string(),
    }
}

#[test]
fn every_case_of_the_suite_is_run_or_skipped_by_name() {
    let mut total = 0;
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut skipped = 0;
    for name in FILES {
        let file = load(name);
        assert!(!file.cases.is_empty(), "{name} has no cases");
        for (title, outcome) in run_file(&file) {
            total += 1;
            match outcome {
                Outcome::Passed => passed += 1,
                Outcome::Failed(_) => failed.push(format!("{name} / {title}")),
                Outcome::Skipped => skipped += 1,
            }
        }
    }
    println!(
        "{total} cases: {passed} passed, {} failed, {skipped} skipped",
        failed.len()
    );
    assert_eq!(FILES.len(), 22, "files in the suite");
    assert_eq!(total, SUITE_CASES, "cases in the suite");
    assert_eq!(skipped, SKIPPED.len(), "every skip names an existing case");
    assert!(failed.is_empty(), "failed cases: {failed:#?}");
    assert_eq!(passed + skipped, SUITE_CASES);
}

/// The harness itself: wrong expectations must fail, so a passing suite means something.
#[test]
fn harness_rejects_wrong_expectations() {
    let resources = vec![
        r#"{"resourceType":"Patient","id":"p1","multipleBirthInteger":2}"#.to_owned(),
        r#"{"resourceType":"Patient","id":"p2"}"#.to_owned(),
    ];
    let view = serde_json::json!({
        "resource": "Patient",
        "select": [{"column": [
            {"name": "id", "path": "id", "type": "id"},
            {"name": "births", "path": "multipleBirth.ofType(integer)", "type": "integer"}
        ]}]
    });
    let case = |expectation: Value| {
        let mut case = serde_json::json!({"title": "t", "view": view.clone()});
        for (k, v) in expectation.as_object().expect("an object") {
            case[k] = v.clone();
        }
        run_case(&resources, &case)
    };
    let rows = serde_json::json!([{"id": "p2", "births": null}, {"id": "p1", "births": 2.0}]);
    // Row order does not matter; 2 = 2.0.
    assert_eq!(case(serde_json::json!({"expect": rows})), Ok(()));
    assert_eq!(
        case(serde_json::json!({"expectColumns": ["id", "births"]})),
        Ok(())
    );
    let wrong = [
        serde_json::json!({"expect": [{"id": "p1", "births": 2}]}),
        serde_json::json!({"expect": [{"id": "p1", "births": 3}, {"id": "p2", "births": null}]}),
        serde_json::json!({"expect": [{"id": "p1", "births": 2}, {"id": "p2"}]}),
        serde_json::json!({"expect": [
            {"id": "p1", "births": 2}, {"id": "p2", "births": null}, {"id": "p2", "births": null}
        ]}),
        serde_json::json!({"expectColumns": ["births", "id"]}),
        serde_json::json!({"expectError": true}),
        serde_json::json!({}),
    ];
    for expectation in wrong {
        assert!(case(expectation.clone()).is_err(), "{expectation} passed");
    }
}
