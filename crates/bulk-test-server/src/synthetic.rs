//! Deterministic synthetic FHIR R4 data. Resource `i` of type `T` of patient `p` is a pure
//! function of `(seed, T, p, i)`, so any file can be produced while it is being sent.
use std::ops::Range;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Per-patient types: (type, id prefix, min count, max count).
const PATIENT_TYPES: &[(&str, &str, u64, u64)] = &[
    ("Patient", "pat", 1, 1),
    ("Encounter", "enc", 2, 5),
    ("Condition", "cond", 0, 4),
    ("Observation", "obs", 3, 12),
    ("MedicationRequest", "med", 0, 3),
    ("Procedure", "proc", 0, 3),
    ("Immunization", "imm", 0, 3),
    ("AllergyIntolerance", "alg", 0, 1),
];

/// Patients per group stride: group `k` holds patients `p` with `p % groups == k`.
const PATIENTS_PER_GROUP: usize = 1000;

pub(crate) struct Synthetic {
    seed: u64,
    patients: usize,
    load_time: DateTime<Utc>,
    /// Prefix sums of per-patient counts, one vector per entry of `PATIENT_TYPES`.
    prefix: Vec<Vec<u64>>,
    orgs: u64,
    practitioners: u64,
    groups: u64,
}

/// SplitMix64: small, fast and good enough for test data.
struct Rng(u64);

impl Rng {
    fn new(parts: &[u64]) -> Rng {
        let mut h = 0x9E37_79B9_7F4A_7C15u64;
        for &p in parts {
            h = mix(h ^ p);
        }
        Rng(h)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn type_tag(ty: &str) -> u64 {
    ty.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

const OFFSETS: &[&str] = &[
    "Z", "-05:00", "-04:00", "+01:00", "+05:30", "-08:00", "+10:00",
];

/// A date-time in `years`, with a timezone offset, e.g. `2019-03-04T10:22:31-05:00`.
fn datetime(r: &mut Rng, years: Range<u64>) -> (String, (u64, u64, u64)) {
    let y = r.range(years.start, years.end - 1);
    let m = r.range(1, 12);
    let d = r.range(1, 28);
    let s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{}",
        r.range(0, 23),
        r.range(0, 59),
        r.range(0, 59),
        r.pick(OFFSETS)
    );
    (s, (y, m, d))
}

fn later(start: &str, r: &mut Rng) -> String {
    // Same day, a later hour: keep the date and offset, bump the time.
    let (date, rest) = start.split_at(11);
    let h: u64 = rest[0..2].parse().unwrap_or(0);
    let h2 = (h + r.range(0, 23 - h.min(23))).min(23);
    format!("{date}{h2:02}{}", &rest[2..])
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

fn concept(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [coding(system, code, display)], "text": display })
}

const SNOMED: &str = "http://snomed.info/sct";
const LOINC: &str = "http://loinc.org";
const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
const CVX: &str = "http://hl7.org/fhir/sid/cvx";
const UCUM: &str = "http://unitsofmeasure.org";

const GIVEN: &[&str] = &[
    "Ana", "Ben", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Inés", "Jamal", "Kai",
    "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tomás", "Uma", "Viktor",
    "Wen", "Yara", "Zoë",
];
const FAMILY: &[&str] = &[
    "Smith",
    "García",
    "Nguyen",
    "Müller",
    "O'Brien",
    "Kowalski",
    "Okafor",
    "Tanaka",
    "Rossi",
    "Haddad",
    "Johansson",
    "Dubois",
    "Silva",
    "Kim",
    "Patel",
    "Cohen",
    "Novak",
    "Ivanova",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Boston", "MA", "02118"),
    ("Springfield", "MA", "01103"),
    ("Worcester", "MA", "01608"),
    ("Lowell", "MA", "01852"),
    ("Cambridge", "MA", "02139"),
    ("Quincy", "MA", "02169"),
];
const CONDITIONS: &[(&str, &str)] = &[
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("195662009", "Acute viral pharyngitis"),
    ("10509002", "Acute bronchitis"),
    ("15777000", "Prediabetes"),
    ("55822004", "Hyperlipidemia"),
    ("40055000", "Chronic sinusitis"),
    ("444814009", "Viral sinusitis"),
    ("162864005", "Body mass index 30+ - obesity"),
    ("73595000", "Stress"),
];
const MEDS: &[(&str, &str)] = &[
    (
        "860975",
        "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet",
    ),
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("197361", "Amlodipine 5 MG Oral Tablet"),
    ("308136", "amLODIPine 2.5 MG Oral Tablet"),
    ("313782", "Acetaminophen 325 MG Oral Tablet"),
    ("849574", "Naproxen sodium 220 MG Oral Tablet"),
    ("259255", "Atorvastatin 80 MG Oral Tablet"),
];
const PROCEDURES: &[(&str, &str)] = &[
    ("430193006", "Medication Reconciliation (procedure)"),
    (
        "710824005",
        "Assessment of health and social care needs (procedure)",
    ),
    ("428191000124101", "Documentation of current medications"),
    ("76601001", "Intramuscular injection"),
    ("117015009", "Throat culture (procedure)"),
    ("73761001", "Colonoscopy"),
];
const VACCINES: &[(&str, &str)] = &[
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("113", "Td (adult) preservative free"),
    ("133", "Pneumococcal conjugate PCV 13"),
    (
        "208",
        "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose",
    ),
    ("43", "Hep B, adult"),
];
const ALLERGIES: &[(&str, &str)] = &[
    ("91935009", "Allergy to peanuts"),
    ("300913006", "Shellfish allergy"),
    ("419474003", "Allergy to mould"),
    ("232350006", "House dust mite allergy"),
];
const ENCOUNTER_TYPES: &[(&str, &str, &str)] = &[
    ("AMB", "185349003", "Encounter for check up (procedure)"),
    ("AMB", "390906007", "Follow-up encounter"),
    ("EMER", "50849002", "Emergency room admission (procedure)"),
    ("IMP", "32485007", "Hospital admission (procedure)"),
    (
        "AMB",
        "162673000",
        "General examination of patient (procedure)",
    ),
];

impl Synthetic {
    pub fn new(seed: u64, patients: usize, load_time: DateTime<Utc>) -> Synthetic {
        let mut prefix = Vec::with_capacity(PATIENT_TYPES.len());
        for (ty, _, lo, hi) in PATIENT_TYPES {
            let tag = type_tag(ty);
            let mut v = Vec::with_capacity(patients + 1);
            let mut acc = 0u64;
            v.push(0);
            for p in 0..patients as u64 {
                acc += if lo == hi {
                    *lo
                } else {
                    Rng::new(&[seed, tag, p, u64::MAX]).range(*lo, *hi)
                };
                v.push(acc);
            }
            prefix.push(v);
        }
        let n = patients as u64;
        Synthetic {
            seed,
            patients,
            load_time,
            prefix,
            orgs: if n == 0 { 0 } else { n.div_ceil(100).max(2) },
            practitioners: if n == 0 { 0 } else { n.div_ceil(20).max(3) },
            groups: match n {
                0 => 0,
                1 => 1,
                _ => n.div_ceil(PATIENTS_PER_GROUP as u64).max(2),
            },
        }
    }

    pub fn load_time(&self) -> DateTime<Utc> {
        self.load_time
    }

    pub fn types(&self) -> Vec<&'static str> {
        let mut t: Vec<&'static str> = PATIENT_TYPES.iter().map(|t| t.0).collect();
        t.extend(["Organization", "Practitioner", "Group"]);
        t.retain(|t| self.len(t) > 0);
        t.sort();
        t
    }

    fn ptype(&self, ty: &str) -> Option<usize> {
        PATIENT_TYPES.iter().position(|t| t.0 == ty)
    }

    pub fn is_patient_type(&self, ty: &str) -> bool {
        self.ptype(ty).is_some()
    }

    pub fn len(&self, ty: &str) -> u64 {
        match ty {
            "Organization" => self.orgs,
            "Practitioner" => self.practitioners,
            "Group" => self.groups,
            _ => self
                .ptype(ty)
                .map(|t| self.prefix[t][self.patients])
                .unwrap_or(0),
        }
    }

    /// (patient, i) of a per-patient index.
    fn locate(&self, t: usize, idx: u64) -> (u64, u64) {
        let pre = &self.prefix[t];
        let p = pre.partition_point(|&x| x <= idx).saturating_sub(1);
        (p as u64, idx - pre[p])
    }

    pub fn id_at(&self, ty: &str, idx: u64) -> String {
        match ty {
            "Organization" => format!("org-{idx}"),
            "Practitioner" => format!("prac-{idx}"),
            "Group" => format!("grp-{idx}"),
            "Patient" => format!("pat-{idx}"),
            _ => match self.ptype(ty) {
                Some(t) => {
                    let (p, i) = self.locate(t, idx);
                    format!("{}-{p}-{i}", PATIENT_TYPES[t].1)
                }
                None => String::new(),
            },
        }
    }

    pub fn index_of(&self, ty: &str, id: &str) -> Option<u64> {
        let shared = |prefix: &str, n: u64| {
            id.strip_prefix(prefix)?
                .parse::<u64>()
                .ok()
                .filter(|&k| k < n && id == format!("{prefix}{k}"))
        };
        match ty {
            "Organization" => shared("org-", self.orgs),
            "Practitioner" => shared("prac-", self.practitioners),
            "Group" => shared("grp-", self.groups),
            "Patient" => shared("pat-", self.patients as u64),
            _ => {
                let t = self.ptype(ty)?;
                let rest = id.strip_prefix(PATIENT_TYPES[t].1)?.strip_prefix('-')?;
                let (p, i) = rest.split_once('-')?;
                let (p, i): (u64, u64) = (p.parse().ok()?, i.parse().ok()?);
                if p >= self.patients as u64 || id != format!("{}-{p}-{i}", PATIENT_TYPES[t].1) {
                    return None;
                }
                let pre = &self.prefix[t];
                let (a, b) = (pre[p as usize], pre[p as usize + 1]);
                (a + i < b).then_some(a + i)
            }
        }
    }

    fn patient_index(&self, patient_id: &str) -> Option<u64> {
        self.index_of("Patient", patient_id)
    }

    pub fn patient_ranges(&self, ty: &str, patient_id: &str) -> Option<Range<u64>> {
        let p = self.patient_index(patient_id)? as usize;
        let t = self.ptype(ty)?;
        let r = self.prefix[t][p]..self.prefix[t][p + 1];
        (!r.is_empty()).then_some(r)
    }

    pub fn group_members(&self, id: &str) -> Option<Vec<String>> {
        let k = self.index_of("Group", id)?;
        Some(
            (k..self.patients as u64)
                .step_by(self.groups as usize)
                .map(|p| format!("pat-{p}"))
                .collect(),
        )
    }

    fn meta(&self) -> Value {
        json!({ "versionId": "1", "lastUpdated": crate::resource::instant(self.load_time) })
    }

    /// The resource at `idx` of `ty` (Null for an index out of range).
    pub fn resource(&self, ty: &str, idx: u64) -> Value {
        if idx >= self.len(ty) {
            return Value::Null;
        }
        let id = self.id_at(ty, idx);
        let mut v = match ty {
            "Organization" => self.organization(idx),
            "Practitioner" => self.practitioner(idx),
            "Group" => self.group(idx),
            _ => {
                let Some(t) = self.ptype(ty) else {
                    return Value::Null;
                };
                let (p, i) = self.locate(t, idx);
                let mut r = Rng::new(&[self.seed, type_tag(ty), p, i]);
                match ty {
                    "Patient" => self.patient(p, &mut r),
                    "Encounter" => self.encounter(p, i, &mut r),
                    "Condition" => self.condition(p, &mut r),
                    "Observation" => self.observation(p, &mut r),
                    "MedicationRequest" => self.medication_request(p, &mut r),
                    "Procedure" => self.procedure(p, &mut r),
                    "Immunization" => self.immunization(p, &mut r),
                    _ => self.allergy(p, &mut r),
                }
            }
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("resourceType".into(), Value::String(ty.to_string()));
            o.insert("id".into(), Value::String(id));
            o.insert("meta".into(), self.meta());
        }
        v
    }

    fn encounters_of(&self, p: u64) -> u64 {
        let t = 1; // Encounter
        self.prefix[t][p as usize + 1] - self.prefix[t][p as usize]
    }

    fn encounter_ref(&self, p: u64, r: &mut Rng) -> Value {
        let n = self.encounters_of(p);
        json!({ "reference": format!("Encounter/enc-{p}-{}", r.range(0, n.max(1) - 1)) })
    }

    fn practitioner_ref(&self, r: &mut Rng) -> Value {
        let k = r.range(0, self.practitioners.max(1) - 1);
        json!({ "reference": format!("Practitioner/prac-{k}"), "display": format!("Dr. {} {}", GIVEN[(k % GIVEN.len() as u64) as usize], FAMILY[(k % FAMILY.len() as u64) as usize]) })
    }

    fn subject(p: u64) -> Value {
        json!({ "reference": format!("Patient/pat-{p}") })
    }

    fn patient(&self, p: u64, r: &mut Rng) -> Value {
        let given = *r.pick(GIVEN);
        let middle = *r.pick(GIVEN);
        let family = *r.pick(FAMILY);
        let gender = *r.pick(&["male", "female", "female", "male", "other", "unknown"]);
        let (birth, _) = datetime(r, 1930..2022);
        let (city, state, zip) = *r.pick(CITIES);
        // Long decimals on purpose: clients must keep every digit.
        let lat = 42.0 + r.range(0, 999_999) as f64 / 1_000_000.0 + 0.1 * 0.2;
        let lon = -71.0 - r.range(0, 999_999) as f64 / 1_000_000.0 - 0.1 * 0.2;
        let mut v = json!({
            "text": { "status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{given} {family}</div>") },
            "extension": [
                {
                    "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                    "extension": [
                        { "url": "ombCategory", "valueCoding": coding("urn:oid:2.16.840.1.113883.6.238", "2106-3", "White") },
                        { "url": "text", "valueString": "White" }
                    ]
                },
                { "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": if gender == "female" { "F" } else { "M" } },
                { "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": { "city": city, "state": state, "country": "US" } },
                { "url": "http://synthetichealth.github.io/synthea/disability-adjusted-life-years", "valueDecimal": r.range(0, 3000) as f64 / 1000.0 + 0.1 + 0.2 }
            ],
            "identifier": [
                { "system": "https://github.com/synthetichealth/synthea", "value": format!("{:016x}", r.next()) },
                {
                    "type": { "coding": [coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record Number")], "text": "Medical Record Number" },
                    "system": "http://hospital.smarthealthit.org",
                    "value": format!("MRN-{p:08}")
                }
            ],
            "name": [{ "use": "official", "family": family, "given": [given, middle], "prefix": [if gender == "female" { "Ms." } else { "Mr." }] }],
            "telecom": [{ "system": "phone", "value": format!("555-{:03}-{:04}", r.range(100, 999), r.range(0, 9999)), "use": "home" }],
            "gender": gender,
            "birthDate": &birth[0..10],
            "address": [{
                "extension": [{
                    "url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                    "extension": [ { "url": "latitude", "valueDecimal": lat }, { "url": "longitude", "valueDecimal": lon } ]
                }],
                "line": [format!("{} {} Street", r.range(1, 999), family)],
                "city": city, "state": state, "postalCode": zip, "country": "US"
            }],
            "maritalStatus": concept("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", if r.chance(50) { "M" } else { "S" }, "Marital status"),
            "communication": [{ "language": concept("urn:ietf:bcp:47", "en-US", "English") }]
        });
        if r.chance(10) {
            let (d, _) = datetime(r, 2015..2025);
            v["deceasedDateTime"] = json!(d);
        } else {
            v["deceasedBoolean"] = json!(false);
        }
        if r.chance(5) {
            v["multipleBirthInteger"] = json!(r.range(1, 3));
        } else {
            v["multipleBirthBoolean"] = json!(false);
        }
        v
    }

    fn encounter(&self, p: u64, _i: u64, r: &mut Rng) -> Value {
        let (class, code, display) = *r.pick(ENCOUNTER_TYPES);
        let (start, _) = datetime(r, 2005..2026);
        let end = later(&start, r);
        let org = r.range(0, self.orgs.max(1) - 1);
        let mut v = json!({
            "status": "finished",
            "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class },
            "type": [concept(SNOMED, code, display)],
            "subject": Self::subject(p),
            "participant": [{
                "type": [concept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PPRF", "primary performer")],
                "individual": self.practitioner_ref(r)
            }],
            "period": { "start": start, "end": end },
            "serviceProvider": { "reference": format!("Organization/org-{org}") }
        });
        if r.chance(40) {
            let (c, d) = *r.pick(CONDITIONS);
            v["reasonCode"] = json!([concept(SNOMED, c, d)]);
        }
        v
    }

    fn condition(&self, p: u64, r: &mut Rng) -> Value {
        let (code, display) = *r.pick(CONDITIONS);
        let resolved = r.chance(40);
        let (onset, _) = datetime(r, 2000..2025);
        let mut v = json!({
            "clinicalStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": if resolved { "resolved" } else { "active" } }] },
            "verificationStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed" }] },
            "category": [concept("http://terminology.hl7.org/CodeSystem/condition-category", if r.chance(50) { "encounter-diagnosis" } else { "problem-list-item" }, "Category")],
            "code": concept(SNOMED, code, display),
            "subject": Self::subject(p),
            "encounter": self.encounter_ref(p, r),
            "recordedDate": onset.clone()
        });
        if r.chance(30) {
            let end = later(&onset, r);
            v["onsetPeriod"] = json!({ "start": onset, "end": end });
        } else {
            v["onsetDateTime"] = json!(onset);
        }
        if resolved {
            let (a, _) = datetime(r, 2025..2026);
            v["abatementDateTime"] = json!(a);
        }
        v
    }

    fn observation(&self, p: u64, r: &mut Rng) -> Value {
        let (eff, _) = datetime(r, 2005..2026);
        let issued = format!("{}.{:03}{}", &eff[0..19], r.range(0, 999), &eff[19..]);
        let kind = r.range(0, 9);
        let mut v = json!({
            "status": *r.pick(&["final", "final", "final", "amended", "preliminary"]),
            "subject": Self::subject(p),
            "encounter": self.encounter_ref(p, r),
            "effectiveDateTime": eff,
            "issued": issued
        });
        let vitals = concept(
            "http://terminology.hl7.org/CodeSystem/observation-category",
            "vital-signs",
            "vital-signs",
        );
        let lab = concept(
            "http://terminology.hl7.org/CodeSystem/observation-category",
            "laboratory",
            "laboratory",
        );
        let social = concept(
            "http://terminology.hl7.org/CodeSystem/observation-category",
            "social-history",
            "social-history",
        );
        let qty = |value: f64, unit: &str| json!({ "value": value, "unit": unit, "system": UCUM, "code": unit });
        match kind {
            0 => {
                // Pounds converted to kilograms: long binary fractions like 28.104000000000003.
                let lbs = r.range(20, 300) as f64 + r.range(0, 9) as f64 * 0.1;
                v["category"] = json!([vitals]);
                v["code"] = concept(LOINC, "29463-7", "Body Weight");
                v["valueQuantity"] = qty(lbs * 0.45359237, "kg");
            }
            1 => {
                v["category"] = json!([vitals]);
                v["code"] = concept(LOINC, "8302-2", "Body Height");
                v["valueQuantity"] = qty(r.range(500, 2000) as f64 / 10.0 + 0.004, "cm");
            }
            2 => {
                v["category"] = json!([vitals]);
                v["code"] = concept(
                    LOINC,
                    "85354-9",
                    "Blood pressure panel with all children optional",
                );
                v["component"] = json!([
                    { "code": concept(LOINC, "8462-4", "Diastolic Blood Pressure"), "valueQuantity": qty(r.range(55, 100) as f64, "mm[Hg]") },
                    { "code": concept(LOINC, "8480-6", "Systolic Blood Pressure"), "valueQuantity": qty(r.range(95, 170) as f64, "mm[Hg]") }
                ]);
            }
            3 => {
                v["category"] = json!([vitals]);
                v["code"] = concept(LOINC, "8867-4", "Heart rate");
                v["valueQuantity"] = qty(r.range(50, 120) as f64, "/min");
            }
            4 => {
                v["category"] = json!([vitals]);
                v["code"] = concept(LOINC, "39156-5", "Body Mass Index");
                let w = r.range(400, 1200) as f64 / 10.0;
                let h = r.range(150, 200) as f64 / 100.0;
                v["valueQuantity"] = qty(w / (h * h), "kg/m2");
            }
            5 => {
                v["category"] = json!([lab]);
                v["code"] = concept(LOINC, "2339-0", "Glucose");
                v["valueQuantity"] = qty(r.range(600, 2000) as f64 * 0.1, "mg/dL");
                v["referenceRange"] = json!([{ "low": { "value": 70, "unit": "mg/dL" }, "high": { "value": 99, "unit": "mg/dL" } }]);
                v["interpretation"] = json!([concept(
                    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                    "N",
                    "Normal"
                )]);
            }
            6 => {
                v["category"] = json!([lab]);
                v["code"] = concept(LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood");
                v["valueQuantity"] = qty(r.range(40, 110) as f64 / 10.0 + 0.1 + 0.2, "%");
            }
            7 => {
                v["category"] = json!([social]);
                v["code"] = concept(LOINC, "72166-2", "Tobacco smoking status NHIS");
                let (c, d) = *r.pick(&[
                    ("266919005", "Never smoker"),
                    ("8517006", "Former smoker"),
                    ("77176002", "Smoker"),
                ]);
                v["valueCodeableConcept"] = concept(SNOMED, c, d);
            }
            8 => {
                v["category"] = json!([lab]);
                v["code"] = concept(LOINC, "2093-3", "Total Cholesterol");
                v["valueQuantity"] = qty(r.range(1400, 2600) as f64 / 10.0, "mg/dL");
            }
            _ => {
                v["category"] = json!([social]);
                v["code"] = concept(LOINC, "82810-3", "Pregnancy status");
                v["valueBoolean"] = json!(false);
                v.as_object_mut().map(|o| o.remove("effectiveDateTime"));
                let (a, _) = datetime(r, 2005..2026);
                let b = later(&a, r);
                v["effectivePeriod"] = json!({ "start": a, "end": b });
            }
        }
        v
    }

    fn medication_request(&self, p: u64, r: &mut Rng) -> Value {
        let (code, display) = *r.pick(MEDS);
        let (authored, _) = datetime(r, 2005..2026);
        let freq = r.range(1, 3);
        json!({
            "status": *r.pick(&["active", "completed", "stopped"]),
            "intent": "order",
            "medicationCodeableConcept": concept(RXNORM, code, display),
            "subject": Self::subject(p),
            "encounter": self.encounter_ref(p, r),
            "authoredOn": authored,
            "requester": self.practitioner_ref(r),
            "dosageInstruction": [{
                "sequence": 1,
                "text": format!("Take {freq} time(s) a day"),
                "timing": { "repeat": { "frequency": freq, "period": 1.0, "periodUnit": "d" } },
                "asNeededBoolean": r.chance(20),
                "doseAndRate": [{
                    "type": concept("http://terminology.hl7.org/CodeSystem/dose-rate-type", "ordered", "Ordered"),
                    "doseQuantity": { "value": r.range(1, 4) as f64 * 0.5, "unit": "tablet" }
                }]
            }]
        })
    }

    fn procedure(&self, p: u64, r: &mut Rng) -> Value {
        let (code, display) = *r.pick(PROCEDURES);
        let (start, _) = datetime(r, 2005..2026);
        let mut v = json!({
            "status": *r.pick(&["completed", "completed", "in-progress"]),
            "code": concept(SNOMED, code, display),
            "subject": Self::subject(p),
            "encounter": self.encounter_ref(p, r)
        });
        if r.chance(50) {
            let end = later(&start, r);
            v["performedPeriod"] = json!({ "start": start, "end": end });
        } else {
            v["performedDateTime"] = json!(start);
        }
        v
    }

    fn immunization(&self, p: u64, r: &mut Rng) -> Value {
        let (code, display) = *r.pick(VACCINES);
        let (when, _) = datetime(r, 2005..2026);
        json!({
            "status": "completed",
            "vaccineCode": concept(CVX, code, display),
            "patient": Self::subject(p),
            "encounter": self.encounter_ref(p, r),
            "occurrenceDateTime": when,
            "primarySource": true,
            "lotNumber": format!("LOT{:06}", r.range(0, 999_999))
        })
    }

    fn allergy(&self, p: u64, r: &mut Rng) -> Value {
        let (code, display) = *r.pick(ALLERGIES);
        let (when, _) = datetime(r, 2000..2026);
        json!({
            "clinicalStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active" }] },
            "verificationStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed" }] },
            "type": "allergy",
            "category": ["food"],
            "criticality": *r.pick(&["low", "high", "unable-to-assess"]),
            "code": concept(SNOMED, code, display),
            "patient": Self::subject(p),
            "recordedDate": when
        })
    }

    fn organization(&self, k: u64) -> Value {
        let mut r = Rng::new(&[self.seed, type_tag("Organization"), k]);
        let (city, state, zip) = *r.pick(CITIES);
        json!({
            "identifier": [{ "system": "https://github.com/synthetichealth/synthea", "value": format!("{:016x}", r.next()) }],
            "active": true,
            "type": [concept("http://terminology.hl7.org/CodeSystem/organization-type", "prov", "Healthcare Provider")],
            "name": format!("{} {} Health Center", city, FAMILY[(k % FAMILY.len() as u64) as usize]),
            "telecom": [{ "system": "phone", "value": format!("555-{:03}-{:04}", r.range(100, 999), r.range(0, 9999)) }],
            "address": [{ "line": [format!("{} Main Street", r.range(1, 999))], "city": city, "state": state, "postalCode": zip, "country": "US" }]
        })
    }

    fn practitioner(&self, k: u64) -> Value {
        let mut r = Rng::new(&[self.seed, type_tag("Practitioner"), k]);
        json!({
            "identifier": [{ "system": "http://hl7.org/fhir/sid/us-npi", "value": format!("{}", 9_999_900_000u64 + k) }],
            "active": true,
            "name": [{ "family": FAMILY[(k % FAMILY.len() as u64) as usize], "given": [GIVEN[(k % GIVEN.len() as u64) as usize]], "prefix": ["Dr."] }],
            "telecom": [{ "system": "email", "value": format!("prac{k}@example.org"), "use": "work" }],
            "gender": *r.pick(&["male", "female"])
        })
    }

    fn group(&self, k: u64) -> Value {
        let members: Vec<Value> = (k..self.patients as u64)
            .step_by(self.groups.max(1) as usize)
            .map(|p| json!({ "entity": { "reference": format!("Patient/pat-{p}") } }))
            .collect();
        json!({
            "type": "person",
            "actual": true,
            "name": format!("Synthetic cohort {k}"),
            "quantity": members.len(),
            "member": members
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let s = Synthetic::new(3, 50, Utc::now());
        for ty in s.types() {
            for i in 0..s.len(ty) {
                let id = s.id_at(ty, i);
                assert_eq!(s.index_of(ty, &id), Some(i), "{ty} {id}");
                assert_eq!(s.resource(ty, i)["id"], json!(id));
            }
        }
        assert_eq!(s.index_of("Observation", "obs-1-999"), None);
        assert_eq!(s.index_of("Observation", "obs-01-0"), None);
        assert_eq!(s.index_of("Patient", "pat-50"), None);
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let t = Utc::now();
        let a = Synthetic::new(1, 20, t);
        let b = Synthetic::new(1, 20, t);
        let c = Synthetic::new(2, 20, t);
        assert_eq!(a.resource("Observation", 7), b.resource("Observation", 7));
        assert_ne!(a.resource("Patient", 3), c.resource("Patient", 3));
    }
}
