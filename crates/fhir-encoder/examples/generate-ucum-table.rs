//! Generates `src/ucum/table.rs` from the UCUM essence (`definitions/ucum/ucum-essence.xml.gz`,
//! version 2.1; see `definitions/ucum/NOTICE.md` for its source and licence).
//!
//! Run from anywhere: `cargo run -p fhir-encoder --example generate-ucum-table`. The test
//! `tests/ucum_table.rs` fails when the committed table is not this program's output.
use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

type Error = Box<dyn std::error::Error>;

/// The canonical unit expression the reference library (ucum-java, which Pathling uses)
/// assigns special units in its special-unit handlers (`org.fhir.ucum.special.Registry`).
/// Special units not listed have none.
const SPECIAL_UNITS: [(&str, &str); 16] = [
    ("Cel", "K"),
    ("[degF]", "K"),
    ("[p'diop]", "deg"),
    ("%[slope]", "deg"),
    ("[hp_X]", "1"),
    ("[hp_C]", "1"),
    ("[pH]", "mol/l"),
    ("Np", "1"),
    ("B", "1"),
    ("B[SPL]", "10*-5.Pa"),
    ("B[V]", "V"),
    ("B[mV]", "mV"),
    ("B[uV]", "uV"),
    ("B[W]", "W"),
    ("B[kW]", "kW"),
    ("bit_s", "1"),
];

/// Units the essence 2.1 lacks: (code, inserted before, unit, value). Torr is defined by later
/// copies of the essence in this place.
const ADDED_UNITS: [(&str, &str, &str, &str); 1] = [("Torr", "atm", "Pa", "133.322")];

fn main() -> Result<(), Error> {
    let root = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    );
    let xml = read_essence(&root.join("definitions/ucum/ucum-essence.xml.gz"))?;
    let out = root.join("src/ucum/table.rs");
    std::fs::write(&out, generate(&xml)?)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The essence XML from its gzipped copy.
pub fn read_essence(path: &std::path::Path) -> Result<String, Error> {
    let mut xml = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut xml)?;
    Ok(xml)
}

struct Prefix {
    code: String,
    value: String,
}

struct Unit {
    code: String,
    metric: bool,
    special: bool,
    /// The defining expression (for special units, the argument unit of their function).
    unit: String,
    value: String,
}

/// The Rust source of `src/ucum/table.rs` for the essence `xml`.
pub fn generate(xml: &str) -> Result<String, Error> {
    let (prefixes, bases, mut units) = parse(xml)?;
    for (code, before, unit, value) in ADDED_UNITS {
        let at = units
            .iter()
            .position(|u| u.code == before)
            .ok_or_else(|| format!("the essence has no unit {before}"))?;
        let added = Unit {
            code: code.into(),
            metric: false,
            special: false,
            unit: unit.into(),
            value: value.into(),
        };
        units.insert(at, added);
    }
    let units = definitions_first(units, &prefixes, &bases)?;

    let mut out = String::from(HEADER);
    out.push_str(
        "/// Prefixes in essence order: the parser takes the first prefix that leaves a\n\
         /// metric unit behind.\n\
         pub(super) const PREFIXES: &[PrefixDef] = &[\n",
    );
    for p in &prefixes {
        out.push_str(&format!(
            "    PrefixDef {{\n        code: {:?},\n        value: {:?},\n    }},\n",
            p.code, p.value
        ));
    }
    out.push_str("];\n\n/// Base units; canonical forms are products of powers of these.\n");
    let bases: Vec<String> = bases.iter().map(|b| format!("{b:?}")).collect();
    out.push_str(&format!(
        "pub(super) const BASE_UNITS: &[&str] = &[{}];\n\n",
        bases.join(", ")
    ));
    out.push_str(
        "/// Defined units, each after the units its definition uses (else in essence order).\n\
         pub(super) const UNITS: &[UnitDef] = &[\n",
    );
    for u in &units {
        out.push_str(&format!(
            "    UnitDef {{\n        code: {:?},\n        metric: {},\n",
            u.code, u.metric
        ));
        if u.special {
            let units = SPECIAL_UNITS
                .iter()
                .find(|(code, _)| *code == u.code)
                .map_or("None".to_string(), |(_, units)| format!("Some({units:?})"));
            // Laid out as rustfmt lays out a struct literal (one line up to 18 characters).
            let field = format!("units: {units}");
            if field.len() <= 18 {
                out.push_str(&format!(
                    "        definition: Definition::Special {{ {field} }},\n"
                ));
            } else {
                out.push_str(&format!(
                    "        definition: Definition::Special {{\n            {field},\n        }},\n"
                ));
            }
        } else {
            out.push_str(&format!(
                "        definition: Definition::Linear {{\n            unit: {:?},\n            value: {:?},\n        }},\n",
                u.unit, u.value
            ));
        }
        out.push_str("    },\n");
    }
    out.push_str("];\n");
    Ok(out)
}

const HEADER: &str = r#"//! UCUM essence definitions: prefixes, base units and defined units.
//!
//! GENERATED FILE, do not edit: `cargo run -p fhir-encoder --example generate-ucum-table`
//! writes it from `definitions/ucum/ucum-essence.xml.gz` (UCUM essence 2.1; source and
//! licence in `definitions/ucum/NOTICE.md`).
use super::essence::{Definition, PrefixDef, UnitDef};

"#;

type Parsed = (Vec<Prefix>, Vec<String>, Vec<Unit>);

fn parse(xml: &str) -> Result<Parsed, Error> {
    let mut reader = Reader::from_str(xml);
    let (mut prefixes, mut bases, mut units) = (Vec::new(), Vec::new(), Vec::new());
    // The element being read (prefix or unit) and whether its value was seen.
    let mut open: Option<(BytesStart<'static>, bool)> = None;
    loop {
        let (e, empty) = match reader.read_event()? {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(e) => {
                if matches!(e.local_name().as_ref(), b"prefix" | b"unit") {
                    open = None;
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        match e.local_name().as_ref() {
            b"base-unit" => bases.push(attr(&e, "Code")?),
            b"prefix" | b"unit" if !empty => open = Some((e.into_owned(), false)),
            b"value" | b"function" => {
                let Some((element, seen)) = &mut open else {
                    continue;
                };
                let code = attr(element, "Code")?;
                if element.local_name().as_ref() == b"prefix" {
                    if !*seen {
                        prefixes.push(Prefix {
                            code,
                            value: attr(&e, "value")?,
                        });
                    }
                } else if e.local_name().as_ref() == b"function" {
                    // A special unit: its dependency is the unit of its function's argument.
                    if let Some(u) = units.last_mut().filter(|u: &&mut Unit| u.code == code) {
                        u.unit = attr(&e, "Unit")?;
                    }
                } else if !*seen {
                    units.push(Unit {
                        metric: attr(element, "isMetric")? == "yes",
                        special: optional_attr(element, "isSpecial")?.as_deref() == Some("yes"),
                        unit: attr(&e, "Unit")?,
                        value: optional_attr(&e, "value")?.unwrap_or_default(),
                        code,
                    });
                }
                *seen = true;
            }
            _ => {}
        }
    }
    Ok((prefixes, bases, units))
}

fn attr(e: &BytesStart<'_>, name: &str) -> Result<String, Error> {
    optional_attr(e, name)?.ok_or_else(|| {
        let element = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        format!("<{element}> has no {name}").into()
    })
}

fn optional_attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, Error> {
    match e.try_get_attribute(name)? {
        Some(a) => Ok(Some(a.unescape_value()?.into_owned())),
        None => Ok(None),
    }
}

/// The units in essence order, except that a unit waits until every unit its definition uses
/// has been listed, and then comes right after the last of them.
fn definitions_first(
    units: Vec<Unit>,
    prefixes: &[Prefix],
    bases: &[String],
) -> Result<Vec<Unit>, Error> {
    let known: HashSet<&str> = units
        .iter()
        .map(|u| u.code.as_str())
        .chain(bases.iter().map(String::as_str))
        .collect();
    let mut deps = Vec::new();
    for u in &units {
        deps.push(atoms(&u.unit, &known, prefixes)?);
    }
    let codes: Vec<String> = units.iter().map(|u| u.code.clone()).collect();
    let mut slots: Vec<Option<Unit>> = units.into_iter().map(Some).collect();
    let mut listed: HashSet<String> = bases.iter().cloned().collect();
    let mut pending: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    for i in 0..codes.len() {
        pending.push(i);
        while let Some(at) = pending
            .iter()
            .position(|&p| deps[p].iter().all(|d| listed.contains(d) || *d == codes[p]))
        {
            let p = pending.remove(at);
            listed.insert(codes[p].clone());
            out.extend(slots[p].take());
        }
    }
    if !pending.is_empty() {
        let stuck: Vec<&str> = pending.iter().map(|&p| codes[p].as_str()).collect();
        return Err(format!("definitions refer to unknown units: {stuck:?}").into());
    }
    Ok(out)
}

/// The unit codes a unit expression uses (prefixes, exponents, factors and annotations
/// removed).
fn atoms(expr: &str, known: &HashSet<&str>, prefixes: &[Prefix]) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let (mut token, mut depth) = (String::new(), 0i32);
    let mut annotation = false;
    for c in expr.chars().chain(std::iter::once('.')) {
        match c {
            '{' => annotation = true,
            '}' => annotation = false,
            _ if annotation => {}
            '[' => {
                depth += 1;
                token.push(c);
            }
            ']' => {
                depth -= 1;
                token.push(c);
            }
            '.' | '/' | '(' | ')' | ' ' if depth == 0 => {
                if let Some(atom) = atom(&token, known, prefixes)? {
                    out.push(atom);
                }
                token.clear();
            }
            _ => token.push(c),
        }
    }
    Ok(out)
}

fn atom(token: &str, known: &HashSet<&str>, prefixes: &[Prefix]) -> Result<Option<String>, Error> {
    let symbol = token
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .trim_end_matches(['+', '-']);
    if symbol.is_empty() {
        return Ok(None);
    }
    if known.contains(symbol) {
        return Ok(Some(symbol.to_string()));
    }
    prefixes
        .iter()
        .filter_map(|p| symbol.strip_prefix(p.code.as_str()))
        .find(|rest| known.contains(rest))
        .map(|rest| Some(rest.to_string()))
        .ok_or_else(|| format!("unknown unit {symbol:?} in a definition").into())
}
