//! Kick-off parameters, `_typeFilter` / `_elements` evaluation and job planning.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{Value, json};

use crate::store::{Mutation, Overlay, StoreInner, instant, push_index, set_meta};

/// A client error at kick-off: 400 with this diagnostic.
#[derive(Debug)]
pub(crate) struct BadRequest {
    pub code: &'static str,
    pub message: String,
}

fn bad(code: &'static str, message: impl Into<String>) -> BadRequest {
    BadRequest {
        code,
        message: message.into(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    System,
    Patient,
    Group(String),
}

/// One search parameter of a `_typeFilter` query.
#[derive(Clone, Debug)]
struct FilterParam {
    name: String,
    modifier: Option<String>,
    values: Vec<String>,
}

/// One `_typeFilter` query (its parameters are ANDed; queries of one type are ORed).
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    params: Vec<FilterParam>,
}

/// `_elements`: per type (None key = all types) the elements to keep.
#[derive(Clone, Debug, Default)]
pub(crate) struct Elements {
    all: BTreeSet<String>,
    by_type: HashMap<String, BTreeSet<String>>,
}

/// A validated kick-off request.
#[derive(Clone, Debug)]
pub(crate) struct ExportRequest {
    pub level: Level,
    pub types: Option<Vec<String>>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub elements: Option<Elements>,
    pub type_filters: HashMap<String, Vec<Filter>>,
    pub patients: Option<Vec<String>>,
    pub allow_partial: bool,
    /// Problems ignored under `Prefer: handling=lenient`, reported in `error[]`.
    pub warnings: Vec<String>,
    /// Requested types the server cannot export (lenient mode), reported in `error[]`.
    pub unknown_types: Vec<String>,
}

pub(crate) fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A FHIR date/dateTime/instant as the half-open interval it denotes (`2020` = the whole year).
fn parse_interval(s: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if let Some(t) = parse_instant(s) {
        return Some((t, t + Duration::milliseconds(1)));
    }
    let day = |y: i32, m: u32, d: u32| {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    };
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [y] if y.len() == 4 => {
            let y: i32 = y.parse().ok()?;
            Some((day(y, 1, 1)?, day(y + 1, 1, 1)?))
        }
        [y, m] if y.len() == 4 && m.len() == 2 => {
            let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
            let next = if m == 12 {
                day(y + 1, 1, 1)?
            } else {
                day(y, m + 1, 1)?
            };
            Some((day(y, m, 1)?, next))
        }
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
            let start = day(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
            Some((start, start + Duration::days(1)))
        }
        _ => None,
    }
}

/// All R4 resource type names.
pub(crate) const R4_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// Parameters that are not resource data and cannot be exported.
const NOT_EXPORTABLE: &[&str] = &["Bundle", "OperationOutcome", "Parameters", "Binary"];

const SUPPORTED_FILTER_PARAMS: &[&str] = &[
    "_id",
    "_lastUpdated",
    "status",
    "code",
    "category",
    "gender",
    "clinical-status",
    "intent",
    "patient",
    "subject",
    "class",
];

fn parse_filter(
    raw: &str,
    lenient: bool,
    warnings: &mut Vec<String>,
) -> Result<(String, Filter), BadRequest> {
    let (ty, query) = raw.split_once('?').ok_or_else(|| {
        bad(
            "invalid",
            format!("_typeFilter {raw:?} must look like Type?param=value"),
        )
    })?;
    if !R4_TYPES.contains(&ty) {
        return Err(bad(
            "invalid",
            format!("_typeFilter {raw:?} names an unknown resource type {ty:?}"),
        ));
    }
    let mut params = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let (name, modifier) = match k.split_once(':') {
            Some((n, m)) => (n.to_string(), Some(m.to_string())),
            None => (k.to_string(), None),
        };
        let modifier_ok = match modifier.as_deref() {
            None => true,
            Some("not") => matches!(name.as_str(), "status" | "gender" | "intent"),
            Some(_) => false,
        };
        if !SUPPORTED_FILTER_PARAMS.contains(&name.as_str()) || !modifier_ok {
            let msg = format!(
                "_typeFilter {raw:?}: search parameter {k:?} is not supported by this server"
            );
            if lenient {
                warnings.push(format!("{msg}; it was ignored"));
                continue;
            }
            return Err(bad("not-supported", msg));
        }
        if name == "_lastUpdated" {
            for v in v.split(',') {
                let (_, date) = split_prefix(v);
                if parse_interval(date).is_none() {
                    return Err(bad(
                        "invalid",
                        format!("_typeFilter {raw:?}: {v:?} is not a valid date"),
                    ));
                }
            }
        }
        params.push(FilterParam {
            name,
            modifier,
            values: v.split(',').map(str::to_string).collect(),
        });
    }
    Ok((ty.to_string(), Filter { params }))
}

fn split_prefix(v: &str) -> (&str, &str) {
    for p in ["gt", "ge", "lt", "le", "eq", "ne", "sa", "eb"] {
        if let Some(rest) = v.strip_prefix(p)
            && rest.starts_with(|c: char| c.is_ascii_digit())
        {
            return (p, rest);
        }
    }
    ("eq", v)
}

/// `system|code`, `code`, `|code`, `system|` against a Coding.
fn token_matches_coding(coding: &Value, token: &str) -> bool {
    let system = coding.get("system").and_then(Value::as_str);
    let code = coding.get("code").and_then(Value::as_str);
    match token.split_once('|') {
        None => code == Some(token),
        Some(("", c)) => system.is_none() && code == Some(c),
        Some((s, "")) => system == Some(s),
        Some((s, c)) => system == Some(s) && code == Some(c),
    }
}

/// A token against a code string, Coding, CodeableConcept or an array of them.
fn token_matches(v: &Value, token: &str) -> bool {
    match v {
        Value::String(s) => !token.contains('|') && s == token,
        Value::Array(a) => a.iter().any(|x| token_matches(x, token)),
        Value::Object(o) => {
            if let Some(Value::Array(codings)) = o.get("coding") {
                codings.iter().any(|c| token_matches_coding(c, token))
            } else {
                token_matches_coding(v, token)
            }
        }
        _ => false,
    }
}

fn reference_matches(v: Option<&Value>, target: &str) -> bool {
    let Some(r) = v.and_then(|r| r.get("reference")).and_then(Value::as_str) else {
        return false;
    };
    let target = target.strip_prefix("Patient/").unwrap_or(target);
    crate::store::ref_id(r)
        .map(|(_, id)| id == target)
        .unwrap_or(false)
        || r == target
}

impl FilterParam {
    fn matches(&self, res: &Value, last_updated: DateTime<Utc>) -> bool {
        let any = |f: &dyn Fn(&str) -> bool| self.values.iter().any(|v| f(v));
        let field = |name: &str| res.get(name).unwrap_or(&Value::Null);
        let result = match self.name.as_str() {
            "_id" => any(&|v| res.get("id").and_then(Value::as_str) == Some(v)),
            "_lastUpdated" => {
                // Comma-separated values are ORed.
                any(&|v| {
                    let (prefix, date) = split_prefix(v);
                    let Some((lo, hi)) = parse_interval(date) else {
                        return false;
                    };
                    match prefix {
                        "gt" | "sa" => last_updated >= hi,
                        "ge" => last_updated >= lo,
                        "lt" | "eb" => last_updated < lo,
                        "le" => last_updated < hi,
                        "ne" => !(lo <= last_updated && last_updated < hi),
                        _ => lo <= last_updated && last_updated < hi,
                    }
                })
            }
            "status" | "gender" | "intent" => any(&|v| field(&self.name).as_str() == Some(v)),
            "clinical-status" => any(&|v| token_matches(field("clinicalStatus"), v)),
            "class" => any(&|v| token_matches(field("class"), v)),
            "category" => any(&|v| token_matches(field("category"), v)),
            "code" => {
                let target = ["code", "medicationCodeableConcept", "vaccineCode"]
                    .iter()
                    .find_map(|k| res.get(*k))
                    .unwrap_or(&Value::Null);
                any(&|v| token_matches(target, v))
            }
            "patient" | "subject" => any(&|v| {
                ["subject", "patient", "beneficiary"]
                    .iter()
                    .any(|k| reference_matches(res.get(*k), v))
                    || (res.get("resourceType").and_then(Value::as_str) == Some("Patient")
                        && res.get("id").and_then(Value::as_str)
                            == Some(v.strip_prefix("Patient/").unwrap_or(v)))
            }),
            _ => true,
        };
        if self.modifier.as_deref() == Some("not") {
            !result
        } else {
            result
        }
    }
}

impl Filter {
    fn matches(&self, res: &Value, last_updated: DateTime<Utc>) -> bool {
        self.params.iter().all(|p| p.matches(res, last_updated))
    }
}

impl Elements {
    fn parse(list: &[String], warnings: &mut Vec<String>) -> Result<Elements, BadRequest> {
        let mut e = Elements::default();
        for item in list
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match item.split_once('.') {
                Some((ty, el)) => {
                    if !R4_TYPES.contains(&ty) {
                        return Err(bad(
                            "invalid",
                            format!("_elements entry {item:?} names an unknown resource type"),
                        ));
                    }
                    if el.contains('.') {
                        warnings.push(format!("_elements entry {item:?}: nested elements are not supported; kept {ty}.{}", el.split('.').next().unwrap_or(el)));
                    }
                    e.by_type
                        .entry(ty.to_string())
                        .or_default()
                        .insert(el.split('.').next().unwrap_or(el).to_string());
                }
                None => {
                    e.all.insert(item.to_string());
                }
            }
        }
        Ok(e)
    }

    /// Keeps the listed elements plus the mandatory ones, and marks the resource SUBSETTED.
    pub fn apply(&self, ty: &str, res: Value) -> Value {
        let Value::Object(map) = res else { return res };
        let typed = self.by_type.get(ty);
        if self.all.is_empty() && typed.is_none() && !self.by_type.is_empty() {
            // The list names only other types: this type is exported whole.
            return Value::Object(map);
        }
        let keep = |k: &str| {
            matches!(k, "resourceType" | "id" | "meta")
                || self.all.contains(k)
                || typed.is_some_and(|t| t.contains(k))
        };
        let mut out = serde_json::Map::new();
        for (k, v) in map {
            if keep(&k) {
                out.insert(k, v);
            }
        }
        let meta = out.entry("meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            let tags = m.entry("tag").or_insert_with(|| json!([]));
            if let Some(t) = tags.as_array_mut() {
                t.push(json!({ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED", "display": "subsetted" }));
            }
        }
        Value::Object(out)
    }
}

/// Kick-off input: parameter name and value, from the query string or a `Parameters` body.
pub(crate) fn parse_request(
    level: Level,
    params: &[(String, String)],
    lenient: bool,
    post: bool,
) -> Result<ExportRequest, BadRequest> {
    let mut req = ExportRequest {
        level,
        types: None,
        since: None,
        until: None,
        elements: None,
        type_filters: HashMap::new(),
        patients: None,
        allow_partial: false,
        warnings: Vec::new(),
        unknown_types: Vec::new(),
    };
    let mut elements = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "_outputFormat" => {
                if !matches!(
                    value.as_str(),
                    "application/fhir+ndjson" | "application/ndjson" | "ndjson"
                ) {
                    return Err(bad(
                        "not-supported",
                        format!(
                            "_outputFormat {value:?} is not supported; use application/fhir+ndjson"
                        ),
                    ));
                }
            }
            "_since" | "_until" => {
                let t = parse_instant(value).ok_or_else(|| {
                    bad(
                        "invalid",
                        format!(
                            "{name} {value:?} is not a FHIR instant (e.g. 2024-01-31T12:00:00.000Z)"
                        ),
                    )
                })?;
                if name == "_since" {
                    req.since = Some(t)
                } else {
                    req.until = Some(t)
                }
            }
            "_type" => {
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !R4_TYPES.contains(&t) || NOT_EXPORTABLE.contains(&t) {
                        if lenient {
                            req.unknown_types.push(t.to_string());
                            continue;
                        }
                        return Err(bad(
                            "not-supported",
                            format!("_type {t:?} is not a resource type this server can export"),
                        ));
                    }
                    let types = req.types.get_or_insert_with(Vec::new);
                    if !types.iter().any(|x| x == t) {
                        types.push(t.to_string());
                    }
                }
                if req.types.is_none() {
                    // Only unknown types were asked for: export nothing rather than everything.
                    req.types = Some(Vec::new());
                }
            }
            "_elements" => elements.push(value.clone()),
            "_typeFilter" => {
                for raw in split_type_filters(value) {
                    let (ty, f) = parse_filter(&raw, lenient, &mut req.warnings)?;
                    req.type_filters.entry(ty).or_default().push(f);
                }
            }
            "patient" => {
                if !post {
                    return Err(bad(
                        "not-supported",
                        "the patient parameter is only supported in a POST kick-off",
                    ));
                }
                if req.level == Level::System {
                    return Err(bad(
                        "not-supported",
                        "the patient parameter is only supported at the Patient and Group level",
                    ));
                }
                let id = value.strip_prefix("Patient/").unwrap_or(value);
                if id.contains('/') || id.is_empty() {
                    return Err(bad(
                        "invalid",
                        format!("patient reference {value:?} must look like Patient/id"),
                    ));
                }
                req.patients
                    .get_or_insert_with(Vec::new)
                    .push(id.to_string());
            }
            "includeAssociatedData" => {
                for v in value.split(',') {
                    if !matches!(
                        v,
                        "LatestProvenanceResources" | "RelevantProvenanceResources"
                    ) && !v.starts_with('_')
                    {
                        let msg = format!("includeAssociatedData value {v:?} is not supported");
                        if lenient {
                            req.warnings.push(format!("{msg}; it was ignored"));
                        } else {
                            return Err(bad("not-supported", msg));
                        }
                    }
                }
            }
            "allowPartialManifests" => match value.as_str() {
                "true" => req.allow_partial = true,
                "false" => req.allow_partial = false,
                _ => {
                    return Err(bad(
                        "invalid",
                        format!("allowPartialManifests must be true or false, not {value:?}"),
                    ));
                }
            },
            "organizeOutputBy" => {
                return Err(bad(
                    "not-supported",
                    "organizeOutputBy is not supported by this server",
                ));
            }
            other => {
                let msg = format!("unknown kick-off parameter {other:?}");
                if lenient {
                    req.warnings.push(format!("{msg}; it was ignored"));
                } else {
                    return Err(bad("not-supported", msg));
                }
            }
        }
    }
    if let (Some(s), Some(u)) = (req.since, req.until)
        && u < s
    {
        return Err(bad("invalid", "_until is earlier than _since"));
    }
    if !elements.is_empty() {
        req.elements = Some(Elements::parse(&elements, &mut req.warnings)?);
    }
    Ok(req)
}

/// `_typeFilter` values are comma-joined; a comma inside a query is percent-encoded, but a
/// raw comma between parameter values (`status=a,b`) must not split the filter, so a piece that
/// does not start with `Type?` continues the previous filter.
fn split_type_filters(value: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in value.split(',') {
        let starts_filter = piece
            .split_once('?')
            .is_some_and(|(t, _)| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphabetic()));
        match out.last_mut() {
            Some(last) if !starts_filter => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.to_string()),
        }
    }
    out
}

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Output,
    Deleted,
    Error,
}

pub(crate) enum Seg {
    Base(Range<u64>),
    Line(Arc<str>),
}

/// One file of a job: produced on demand from the base data and the job's snapshot.
pub(crate) struct FileSpec {
    pub number: usize,
    pub resource_type: String,
    pub kind: FileKind,
    pub output_index: Option<usize>,
    pub count: u64,
    segs: Vec<Seg>,
    store: Arc<StoreInner>,
    elements: Option<Elements>,
    pub len: OnceLock<u64>,
}

impl FileSpec {
    /// Produces the NDJSON body; `sink` returns false to stop early.
    pub fn render(&self, sink: &mut dyn FnMut(&[u8]) -> bool) {
        let mut buf = Vec::with_capacity(4096);
        let ty = self.resource_type.as_str();
        let mut emit = |line: &str, buf: &mut Vec<u8>| -> bool {
            buf.clear();
            match (&self.elements, self.kind) {
                (Some(e), FileKind::Output) => {
                    let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                    let _ = serde_json::to_writer(&mut *buf, &e.apply(ty, v));
                }
                _ => buf.extend_from_slice(line.as_bytes()),
            }
            buf.push(b'\n');
            sink(buf)
        };
        for seg in &self.segs {
            match seg {
                Seg::Line(l) => {
                    if !emit(l, &mut buf) {
                        return;
                    }
                }
                Seg::Base(r) => {
                    for i in r.clone() {
                        let line = self.store.base.line(ty, i);
                        if !emit(&line, &mut buf) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Sets the length without rendering when every line is already in memory as served.
    pub fn quick_length(&self) {
        if self.elements.is_some() && self.kind == FileKind::Output {
            return;
        }
        let memory = matches!(self.store.base, crate::store::Base::Memory(_));
        let mut n = 0u64;
        for seg in &self.segs {
            match seg {
                Seg::Line(l) => n += l.len() as u64 + 1,
                Seg::Base(r) if memory => {
                    for i in r.clone() {
                        n += self.store.base.line(&self.resource_type, i).len() as u64 + 1;
                    }
                }
                Seg::Base(_) => return,
            }
        }
        let _ = self.len.set(n);
    }

    /// Body length in bytes (computed once by rendering).
    pub fn length(&self) -> u64 {
        *self.len.get_or_init(|| {
            let mut n = 0u64;
            self.render(&mut |b| {
                n += b.len() as u64;
                true
            });
            n
        })
    }
}

pub(crate) struct Plan {
    pub files: Vec<Arc<FileSpec>>,
}

impl Plan {
    pub fn of_kind(&self, kind: FileKind) -> impl Iterator<Item = &Arc<FileSpec>> {
        self.files.iter().filter(move |f| f.kind == kind)
    }
}

/// A kick-off and its state.
pub(crate) struct Job {
    pub id: String,
    pub request_url: String,
    pub transaction_time: DateTime<Utc>,
    pub allow_partial: bool,
    pub polls: AtomicU32,
    pub plan: OnceLock<Result<Arc<Plan>, String>>,
    pub cancelled: AtomicBool,
    /// Planning progress in per mille.
    pub progress: AtomicU64,
    pub manifest_served: AtomicBool,
}

impl Job {
    pub fn new(
        id: String,
        request_url: String,
        transaction_time: DateTime<Utc>,
        allow_partial: bool,
    ) -> Job {
        Job {
            id,
            request_url,
            transaction_time,
            allow_partial,
            polls: AtomicU32::new(0),
            plan: OnceLock::new(),
            cancelled: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            manifest_served: AtomicBool::new(false),
        }
    }

    pub fn in_progress(&self) -> bool {
        !self.cancelled.load(Ordering::Relaxed) && !self.manifest_served.load(Ordering::Relaxed)
    }
}

/// Inputs of planning besides the request.
pub(crate) struct PlanInput<'a> {
    pub store: Arc<StoreInner>,
    pub overlay: Arc<Overlay>,
    pub req: &'a ExportRequest,
    pub transaction_time: DateTime<Utc>,
    pub resources_per_file: usize,
    pub duplicates: Option<usize>,
    /// Add a file of bad lines per type ([`crate::Fault::BadLines`]).
    pub bad_lines: bool,
}

fn outcome_line(severity: &str, code: &str, text: &str) -> Arc<str> {
    Arc::from(
        json!({
            "resourceType": "OperationOutcome",
            "issue": [{ "severity": severity, "code": code, "diagnostics": text }]
        })
        .to_string(),
    )
}

/// Decides which resources go into which files. Runs on a blocking thread.
pub(crate) fn plan(input: PlanInput<'_>, job: &Job) -> Result<Plan, String> {
    let PlanInput {
        store,
        overlay,
        req,
        transaction_time: tx,
        resources_per_file,
        duplicates,
        bad_lines,
    } = input;
    let base = &store.base;
    let per_file = resources_per_file.max(1) as u64;
    let mut errors: Vec<Arc<str>> = Vec::new();
    for t in &req.unknown_types {
        errors.push(outcome_line(
            "error",
            "not-supported",
            &format!("Resource type {t} cannot be exported by this server"),
        ));
    }
    for w in &req.warnings {
        errors.push(outcome_line("warning", "not-supported", w));
    }

    // Which patients' compartments are exported (None = no restriction).
    let patients: Option<Vec<String>> = match &req.level {
        Level::System => None,
        Level::Patient => req.patients.clone(),
        Level::Group(gid) => {
            let members = match overlay.get(&("Group".to_string(), gid.clone())) {
                Some(Mutation::Upsert { value, .. }) => Some(crate::store::group_members(value)),
                Some(Mutation::Delete { .. }) => None,
                None => base.group_members(gid),
            }
            .ok_or_else(|| format!("Group/{gid} not found"))?;
            Some(match &req.patients {
                Some(ps) => members.into_iter().filter(|m| ps.contains(m)).collect(),
                None => members,
            })
        }
    };
    if let Some(ps) = &req.patients {
        for p in ps {
            let known = base.is_patient(p)
                || matches!(
                    overlay.get(&("Patient".to_string(), p.clone())),
                    Some(Mutation::Upsert { .. })
                );
            if !known {
                errors.push(outcome_line(
                    "error",
                    "not-found",
                    &format!("Patient/{p} was not found"),
                ));
            }
        }
    }
    let patient_set: Option<BTreeSet<&str>> = patients
        .as_ref()
        .map(|v| v.iter().map(String::as_str).collect());
    let compartment_only = req.level != Level::System;

    let mut types: BTreeSet<String> = base.types().into_iter().collect();
    for (ty, _) in overlay.keys() {
        types.insert(ty.clone());
    }
    if let Some(wanted) = &req.types {
        types.retain(|t| wanted.contains(t));
    }
    let until = req.until.map(|u| u.min(tx)).unwrap_or(tx);
    let in_window = |lu: DateTime<Utc>| req.since.is_none_or(|s| lu > s) && lu <= until;

    let mut outputs: Vec<(String, Vec<Seg>, u64)> = Vec::new();
    let mut deleted_lines: Vec<Arc<str>> = Vec::new();
    let total_types = types.len().max(1) as u64;
    for (n, ty) in types.iter().enumerate() {
        if job.cancelled.load(Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        job.progress
            .store(n as u64 * 1000 / total_types, Ordering::Relaxed);
        let filters = req.type_filters.get(ty);
        // Candidate base indices.
        let mut ranges: Vec<Range<u64>> = match &patient_set {
            None if compartment_only => base.compartment_ranges(ty),
            None => {
                let n = base.len(ty);
                if n == 0 {
                    Vec::new()
                } else {
                    std::iter::once(0..n).collect()
                }
            }
            Some(ps) => {
                let mut rs: Vec<Range<u64>> =
                    ps.iter().flat_map(|p| base.patient_ranges(ty, p)).collect();
                rs.sort_by_key(|r| r.start);
                rs
            }
        };
        // Resources changed through the store are served from the overlay instead.
        let mut overlaid: Vec<u64> = overlay
            .range((ty.clone(), String::new())..)
            .take_while(|((t, _), _)| t == ty)
            .filter_map(|((_, id), _)| base.index_of(ty, id))
            .collect();
        overlaid.sort_unstable();
        if !overlaid.is_empty() {
            ranges = subtract(ranges, &overlaid);
        }
        // Time window.
        match base.uniform_last_updated(ty) {
            Some(lu) => {
                if !in_window(lu) {
                    ranges.clear();
                }
            }
            None => {
                let mut kept = Vec::new();
                for r in ranges {
                    for i in r {
                        if in_window(base.last_updated(ty, i)) {
                            push_index(&mut kept, i);
                        }
                    }
                }
                ranges = kept;
            }
        }
        if let Some(fs) = filters {
            let mut kept = Vec::new();
            for r in ranges {
                for i in r {
                    if i % 4096 == 0 && job.cancelled.load(Ordering::Relaxed) {
                        return Err("cancelled".into());
                    }
                    let v = base.value(ty, i);
                    let lu = base.last_updated(ty, i);
                    if fs.iter().any(|f| f.matches(&v, lu)) {
                        push_index(&mut kept, i);
                    }
                }
            }
            ranges = kept;
        }
        let mut segs: Vec<Seg> = ranges.into_iter().map(Seg::Base).collect();
        let mut count: u64 = segs
            .iter()
            .map(|s| match s {
                Seg::Base(r) => r.end - r.start,
                Seg::Line(_) => 1,
            })
            .sum();
        for ((_, id), m) in overlay
            .range((ty.clone(), String::new())..)
            .take_while(|((t, _), _)| t == ty)
        {
            match m {
                Mutation::Upsert {
                    line,
                    value,
                    last_updated,
                    patient,
                } => {
                    if !in_window(*last_updated) {
                        continue;
                    }
                    let in_scope = match &patient_set {
                        None => !compartment_only || patient.is_some(),
                        Some(ps) => patient.as_deref().is_some_and(|p| ps.contains(p)),
                    };
                    if in_scope
                        && filters
                            .is_none_or(|fs| fs.iter().any(|f| f.matches(value, *last_updated)))
                    {
                        segs.push(Seg::Line(line.clone()));
                        count += 1;
                    }
                }
                Mutation::Delete { at, patient } => {
                    let in_scope = match &patient_set {
                        None => !compartment_only || patient.is_some(),
                        Some(ps) => patient.as_deref().is_some_and(|p| ps.contains(p)),
                    };
                    if req.since.is_some() && in_window(*at) && in_scope {
                        deleted_lines.push(Arc::from(
                            json!({
                                "resourceType": "Bundle",
                                "type": "transaction",
                                "entry": [{ "request": { "method": "DELETE", "url": format!("{ty}/{id}") } }]
                            })
                            .to_string(),
                        ));
                    }
                }
            }
        }
        if count > 0 {
            outputs.push((ty.clone(), segs, count));
        }
    }

    let mut files = Vec::new();
    let elements = req.elements.clone();
    let push =
        |files: &mut Vec<Arc<FileSpec>>, ty: &str, kind: FileKind, segs: Vec<Seg>, count: u64| {
            let number = files.len();
            let output_index = (kind == FileKind::Output).then(|| {
                files
                    .iter()
                    .filter(|f: &&Arc<FileSpec>| f.kind == FileKind::Output)
                    .count()
            });
            files.push(Arc::new(FileSpec {
                number,
                resource_type: ty.to_string(),
                kind,
                output_index,
                count,
                segs,
                store: store.clone(),
                elements: if kind == FileKind::Output {
                    elements.clone()
                } else {
                    None
                },
                len: OnceLock::new(),
            }));
        };
    for (ty, segs, _) in outputs {
        let mut first: Vec<Arc<str>> = Vec::new();
        let mut chunk: Vec<Seg> = Vec::new();
        let mut in_chunk = 0u64;
        for seg in segs {
            match seg {
                Seg::Line(l) => {
                    if duplicates.is_some_and(|d| first.len() < d) {
                        first.push(l.clone());
                    }
                    chunk.push(Seg::Line(l));
                    in_chunk += 1;
                    if in_chunk == per_file {
                        push(
                            &mut files,
                            &ty,
                            FileKind::Output,
                            std::mem::take(&mut chunk),
                            in_chunk,
                        );
                        in_chunk = 0;
                    }
                }
                Seg::Base(mut r) => {
                    while !r.is_empty() {
                        let take = (per_file - in_chunk).min(r.end - r.start);
                        if let Some(d) = duplicates {
                            for i in r.start
                                ..(r.start + take)
                                    .min(r.start + d.saturating_sub(first.len()) as u64)
                            {
                                first.push(base.line(&ty, i));
                            }
                        }
                        chunk.push(Seg::Base(r.start..r.start + take));
                        in_chunk += take;
                        r.start += take;
                        if in_chunk == per_file {
                            push(
                                &mut files,
                                &ty,
                                FileKind::Output,
                                std::mem::take(&mut chunk),
                                in_chunk,
                            );
                            in_chunk = 0;
                        }
                    }
                }
            }
        }
        if in_chunk > 0 {
            push(&mut files, &ty, FileKind::Output, chunk, in_chunk);
        }
        if !first.is_empty() {
            // Older copies, served after the current ones: last-writer-wins clients get it wrong.
            let stale: Vec<Seg> = first.iter().map(|l| Seg::Line(stale_copy(l))).collect();
            let n = stale.len() as u64;
            push(&mut files, &ty, FileKind::Output, stale, n);
        }
        if bad_lines {
            let bad: Vec<Seg> = [
                format!(r#"{{"resourceType":"{ty}","id":"#),
                format!(r#"{{"resourceType":"{ty}","id":"bad-1",}}"#),
                format!(r#"{{"resourceType":"{ty}"}}"#),
                r#"{"resourceType":"NoSuchType","id":"bad-2"}"#.to_string(),
            ]
            .into_iter()
            .map(|l| Seg::Line(Arc::from(l)))
            .collect();
            let n = bad.len() as u64;
            push(&mut files, &ty, FileKind::Output, bad, n);
        }
    }
    if !deleted_lines.is_empty() {
        let n = deleted_lines.len() as u64;
        push(
            &mut files,
            "Bundle",
            FileKind::Deleted,
            deleted_lines.into_iter().map(Seg::Line).collect(),
            n,
        );
    }
    if !errors.is_empty() {
        let n = errors.len() as u64;
        push(
            &mut files,
            "OperationOutcome",
            FileKind::Error,
            errors.into_iter().map(Seg::Line).collect(),
            n,
        );
    }
    job.progress.store(1000, Ordering::Relaxed);
    Ok(Plan { files })
}

/// The same resource, one day older and with an earlier version.
fn stale_copy(line: &str) -> Arc<str> {
    let Ok(mut v) = serde_json::from_str::<Value>(line) else {
        return Arc::from(line);
    };
    let lu = v
        .get("meta")
        .and_then(|m| m.get("lastUpdated"))
        .and_then(Value::as_str)
        .and_then(parse_instant)
        .unwrap_or_else(Utc::now);
    let version = v
        .get("meta")
        .and_then(|m| m.get("versionId"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
        .map(|n| n.saturating_sub(1).to_string())
        .unwrap_or_else(|| "0".into());
    set_meta(&mut v, &version, &instant(lu - Duration::days(1)), true);
    Arc::from(v.to_string())
}

/// Removes sorted indices from sorted ranges.
fn subtract(ranges: Vec<Range<u64>>, sorted: &[u64]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in ranges {
        let mut start = r.start;
        let lo = sorted.partition_point(|&x| x < r.start);
        for &x in sorted[lo..].iter().take_while(|&&x| x < r.end) {
            if x > start {
                out.push(start..x);
            }
            start = x + 1;
        }
        if start < r.end {
            out.push(start..r.end);
        }
    }
    out
}

/// Counts per type of a plan's outputs (for logs).
#[allow(dead_code)]
pub(crate) fn output_counts(plan: &Plan) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for f in plan.of_kind(FileKind::Output) {
        *m.entry(f.resource_type.clone()).or_insert(0) += f.count;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_splits_ranges() {
        assert_eq!(
            subtract(std::iter::once(0..10).collect(), &[0, 3, 4, 9]),
            vec![1..3, 5..9]
        );
        assert_eq!(subtract(vec![0..2, 5..7], &[1, 5, 6]), vec![0..1]);
    }

    #[test]
    fn type_filters_split_only_between_queries() {
        assert_eq!(
            split_type_filters("Observation?status=final,amended,Patient?gender=female"),
            vec![
                "Observation?status=final,amended".to_string(),
                "Patient?gender=female".to_string()
            ]
        );
    }

    #[test]
    fn intervals() {
        let (lo, hi) = parse_interval("2020-02").unwrap();
        assert_eq!(instant(lo), "2020-02-01T00:00:00.000Z");
        assert_eq!(instant(hi), "2020-03-01T00:00:00.000Z");
        assert!(parse_interval("2020-13").is_none());
        assert!(parse_interval("garbage").is_none());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        let name = prop::sample::select(vec![
            "_type",
            "_since",
            "_until",
            "_elements",
            "_typeFilter",
            "_outputFormat",
            "patient",
            "includeAssociatedData",
            "allowPartialManifests",
            "x",
        ]);
        prop::collection::vec((name.prop_map(str::to_string), "\\PC{0,40}"), 0..6)
    }

    proptest! {
        #[test]
        fn kickoff_parameters_never_panic(params in pairs(), lenient: bool, post: bool) {
            let _ = parse_request(Level::Patient, &params, lenient, post);
        }

        #[test]
        fn since_round_trips(ms in 0i64..4_000_000_000_000) {
            let t = DateTime::from_timestamp_millis(ms).unwrap();
            let params = vec![("_since".to_string(), instant(t))];
            let req = parse_request(Level::System, &params, false, false).unwrap();
            prop_assert_eq!(req.since, Some(t));
        }

        #[test]
        fn type_filter_splitting_keeps_every_filter(values in prop::collection::vec("[a-z]{1,8}(,[a-z]{1,8}){0,2}", 1..4)) {
            let filters: Vec<String> = values.iter().map(|v| format!("Observation?status={v}")).collect();
            prop_assert_eq!(split_type_filters(&filters.join(",")), filters);
        }

        #[test]
        fn intervals_are_ordered(s in "[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?") {
            if let Some((lo, hi)) = parse_interval(&s) {
                prop_assert!(lo < hi);
            }
        }
    }
}
