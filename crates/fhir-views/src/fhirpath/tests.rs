//! The parser and evaluator together: printed expressions parse back to the same tree (a
//! property over generated trees), refusals say where, and evaluation follows FHIRPath.
use proptest::prelude::*;

use super::ast::{Args, BinOp, Call, Func, Node, TypeOp, Var};
use super::*;
use fhir_encoder::json::Tape;

fn parse(text: &str) -> Result<Expr, ParseError> {
    Expr::parse(text, &|name| name == "known")
}

fn eval_on(resource: &str, expr: &str) -> Result<Vec<serde_json::Value>, EvalError> {
    let mut tape = Tape::default();
    let doc = tape.parse(resource).expect("test resource is JSON");
    let root = Item::node(doc, 0);
    let constants = Constants::new();
    let env = Env {
        resource: &root,
        constants: &constants,
        row_index: 7,
    };
    let expr = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let out = evaluate(&expr, std::slice::from_ref(&root), &env)?;
    Ok(out.iter().map(Item::as_json).collect())
}

const PATIENT: &str = r#"{"resourceType":"Patient","id":"p1","active":true,
  "name":[{"use":"official","family":"Doe","given":["Jane","Q"]},{"family":"Roe"}],
  "multipleBirthInteger":2,"birthDate":"1970-06",
  "managingOrganization":{"reference":"Organization/o1"}}"#;

fn json(text: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(text).expect("expected JSON")
}

#[test]
fn navigation_and_functions() {
    let cases = [
        ("name.given", r#"["Jane","Q"]"#),
        ("Patient.name.family", r#"["Doe","Roe"]"#),
        ("name.where(use = 'official').family", r#"["Doe"]"#),
        ("name[1].family", r#"["Roe"]"#),
        ("name.given.count()", "[2]"),
        ("multipleBirth", "[2]"),
        ("multipleBirth.ofType(integer) + 1", "[3]"),
        ("multipleBirth is integer", "[true]"),
        ("multipleBirth.ofType(boolean)", "[]"),
        ("name.family.join(' & ')", r#"["Doe & Roe"]"#),
        ("name.exists(family = 'Roe')", "[true]"),
        ("name.all(family.exists())", "[true]"),
        ("name.select(given).skip(1).first()", r#"["Q"]"#),
        ("name.family | name.family", r#"["Doe","Roe"]"#),
        ("'Doe' in name.family", "[true]"),
        ("iif(active, 'yes', 'no')", r#"["yes"]"#),
        ("active and {}", "[]"),
        ("active or {}", "[true]"),
        ("(active and false).not()", "[true]"),
        ("false implies {}", "[true]"),
        ("birthDate < @1971", "[true]"),
        ("birthDate = @1970-06-01", "[]"),
        ("7 div 2 = 3 and 7 mod 2 = 1 and 3 / 2 = 1.5", "[true]"),
        ("1 / 0", "[]"),
        (
            "getResourceKey() = managingOrganization.getReferenceKey(Patient)",
            "[]",
        ),
        (
            "managingOrganization.getReferenceKey(Organization)",
            r#"["o1"]"#,
        ),
        ("%rowIndex", "[7]"),
        ("%resource.id & '/' & name.first().family", r#"["p1/Doe"]"#),
        ("name.given.where($index = 1)", r#"["Q"]"#),
        ("'abc' ~ 'ABC'", "[true]"),
        ("-(1.5) * 2", "[-3.0]"),
    ];
    for (expr, expected) in cases {
        assert_eq!(eval_on(PATIENT, expr), Ok(json(expected)), "{expr}");
    }
}

#[test]
fn evaluation_errors_are_typed() {
    assert!(matches!(
        eval_on(PATIENT, "name.given.single()"),
        Err(EvalError::Function { .. })
    ));
    assert!(matches!(
        eval_on(PATIENT, "name.family + 1"),
        Err(EvalError::NotSingleton { .. })
    ));
    assert!(matches!(
        eval_on(PATIENT, "name.where(family)"),
        Err(EvalError::NotBoolean { .. })
    ));
    assert!(matches!(
        eval_on(PATIENT, "id < 1"),
        Err(EvalError::Operands { .. })
    ));
    assert!(matches!(
        eval_on(PATIENT, "9223372036854775807 + 1"),
        Err(EvalError::Overflow { .. })
    ));
}

#[test]
fn refusals_name_the_place() {
    for (text, offset) in [
        ("name.nope()", 5),
        ("%unknown", 0),
        ("name.where(", 11),
        ("name..family", 5),
        ("first(1)", 0),
        ("1 +", 3),
    ] {
        let e = parse(text).expect_err(text);
        assert_eq!(e.offset, offset, "{text}: {e}");
    }
    assert!(parse("%known.exists()").is_ok());
}

#[test]
fn every_function_is_known_by_its_name() {
    for f in Func::ALL {
        assert_eq!(Func::from_name(f.name()), Some(*f));
    }
}

fn leaf() -> impl Strategy<Value = Node> {
    prop_oneof![
        Just(Node::Empty),
        any::<bool>().prop_map(Node::Bool),
        (0i64..1_000_000).prop_map(Node::Integer),
        (0u32..10_000, 1u32..1000).prop_map(|(i, f)| Node::Decimal(format!("{i}.{f}"))),
        "[a-z '\\\\\n`]{0,8}".prop_map(Node::String),
        Just(Node::Date("2020-01".to_owned())),
        Just(Node::DateTime("2020-01-02T03:04:05.678+01:00".to_owned())),
        Just(Node::DateTime("2020".to_owned())),
        Just(Node::Time("12:30".to_owned())),
        Just(Node::This),
        Just(Node::Index),
        Just(Node::Var(Var::RowIndex)),
        Just(Node::Var(Var::Resource)),
        Just(Node::Var(Var::Const("known".to_owned()))),
        "[a-z][a-zA-Z0-9_ ]{0,6}".prop_map(|n| Node::Member(None, n)),
    ]
}

const OPS: &[BinOp] = &[
    BinOp::Mul,
    BinOp::Div,
    BinOp::IntDiv,
    BinOp::Mod,
    BinOp::Add,
    BinOp::Sub,
    BinOp::Concat,
    BinOp::Union,
    BinOp::Lt,
    BinOp::Ge,
    BinOp::Eq,
    BinOp::NotEquiv,
    BinOp::In,
    BinOp::Contains,
    BinOp::And,
    BinOp::Or,
    BinOp::Xor,
    BinOp::Implies,
];

fn node() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), "[a-z][a-zA-Z]{0,5}")
                .prop_map(|(b, n)| Node::Member(Some(Box::new(b)), n)),
            (inner.clone(), 0..OPS.len(), inner.clone()).prop_map(|(l, op, r)| Node::Binary(
                OPS[op],
                Box::new(l),
                Box::new(r)
            )),
            (inner.clone(), inner.clone())
                .prop_map(|(b, i)| Node::Indexer(Box::new(b), Box::new(i))),
            inner.clone().prop_map(|n| Node::Neg(Box::new(n))),
            (inner.clone(), any::<bool>()).prop_map(|(n, is)| {
                let op = if is { TypeOp::Is } else { TypeOp::As };
                Node::TypeOp(op, Box::new(n), "FHIR.string".to_owned())
            }),
            (
                proptest::option::of(inner.clone()),
                0..Func::ALL.len(),
                proptest::collection::vec(inner, 0..3)
            )
                .prop_map(|(base, f, mut args)| {
                    let func = Func::ALL[f];
                    let mut ty = None;
                    match func.args() {
                        Args::Exprs(min, max) => {
                            args.truncate(max);
                            while args.len() < min {
                                args.push(Node::Integer(1));
                            }
                        }
                        Args::Lambda { .. } => args.truncate(1),
                        Args::Type { .. } => {
                            args.clear();
                            ty = Some("Patient".to_owned());
                        }
                    }
                    if func.args() == (Args::Lambda { optional: false }) && args.is_empty() {
                        args.push(Node::Bool(true));
                    }
                    Node::Call(base.map(Box::new), Call { func, args, ty })
                }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Printing is the inverse of parsing: any tree prints to text that parses back to it.
    #[test]
    fn printed_trees_parse_back(tree in node()) {
        let text = tree.to_string();
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed.root, tree, "{}", text);
    }

    /// No text makes the parser panic or recurse without bound; whatever parses prints back
    /// to text that parses to the same tree.
    #[test]
    fn any_text_parses_or_is_refused(text in "[a-z0-9.()\\[\\]'`%$@:+*/|&=<>!~ -]{0,40}") {
        if let Ok(expr) = parse(&text) {
            let again = parse(&expr.to_string());
            prop_assert_eq!(again, Ok(expr));
        }
    }
}
