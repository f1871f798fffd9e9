//! The Patient compartment: which elements tie a resource to a patient, so a Group-scoped
//! reconciliation removes only rows of the group's patients.

use arrow::datatypes::{DataType, Schema};

/// Search parameters of each type in the Patient compartment (FHIR R4
/// `CompartmentDefinition/patient`; `Patient` itself is matched by id).
const PATIENT_COMPARTMENT: &[(&str, &[&str])] = &[
    ("Account", &["subject"]),
    ("AdverseEvent", &["subject"]),
    ("AllergyIntolerance", &["patient", "recorder", "asserter"]),
    ("Appointment", &["actor"]),
    ("AppointmentResponse", &["actor"]),
    ("AuditEvent", &["patient"]),
    ("Basic", &["patient", "author"]),
    ("BodyStructure", &["patient"]),
    ("CarePlan", &["patient", "performer"]),
    ("CareTeam", &["patient", "participant"]),
    ("ChargeItem", &["subject"]),
    ("Claim", &["patient", "payee"]),
    ("ClaimResponse", &["patient"]),
    ("ClinicalImpression", &["subject"]),
    ("Communication", &["subject", "sender", "recipient"]),
    (
        "CommunicationRequest",
        &["subject", "sender", "recipient", "requester"],
    ),
    ("Composition", &["subject", "author", "attester"]),
    ("Condition", &["patient", "asserter"]),
    ("Consent", &["patient"]),
    (
        "Coverage",
        &["policy-holder", "subscriber", "beneficiary", "payor"],
    ),
    ("CoverageEligibilityRequest", &["patient"]),
    ("CoverageEligibilityResponse", &["patient"]),
    ("DetectedIssue", &["patient"]),
    ("DeviceRequest", &["subject", "performer"]),
    ("DeviceUseStatement", &["subject"]),
    ("DiagnosticReport", &["subject"]),
    ("DocumentManifest", &["subject", "author", "recipient"]),
    ("DocumentReference", &["subject", "author"]),
    ("Encounter", &["patient"]),
    ("EnrollmentRequest", &["subject"]),
    ("EpisodeOfCare", &["patient"]),
    ("ExplanationOfBenefit", &["patient", "payee"]),
    ("FamilyMemberHistory", &["patient"]),
    ("Flag", &["patient"]),
    ("Goal", &["patient"]),
    ("Group", &["member"]),
    ("ImagingStudy", &["patient"]),
    ("Immunization", &["patient"]),
    ("ImmunizationEvaluation", &["patient"]),
    ("ImmunizationRecommendation", &["patient"]),
    ("Invoice", &["subject", "patient", "recipient"]),
    ("List", &["subject", "source"]),
    ("MeasureReport", &["patient"]),
    ("Media", &["subject"]),
    (
        "MedicationAdministration",
        &["patient", "performer", "subject"],
    ),
    ("MedicationDispense", &["subject", "patient", "receiver"]),
    ("MedicationRequest", &["subject"]),
    ("MedicationStatement", &["subject"]),
    ("MolecularSequence", &["patient"]),
    ("NutritionOrder", &["patient"]),
    ("Observation", &["subject", "performer"]),
    ("Person", &["patient"]),
    ("Procedure", &["patient", "performer"]),
    ("Provenance", &["patient"]),
    ("QuestionnaireResponse", &["subject", "author"]),
    ("RelatedPerson", &["patient"]),
    ("RequestGroup", &["subject", "participant"]),
    ("ResearchSubject", &["individual"]),
    ("RiskAssessment", &["subject"]),
    ("Schedule", &["actor"]),
    ("ServiceRequest", &["subject", "performer"]),
    ("Specimen", &["subject"]),
    ("SupplyDelivery", &["patient"]),
    ("SupplyRequest", &["subject"]),
    ("VisionPrescription", &["patient"]),
];

/// The top-level Reference (or list of Reference) columns of `schema` that tie a row of
/// `resource_type` to a patient. A compartment parameter maps to the element of the same
/// name (`policy-holder` to `policyHolder`), and `patient` to `subject` where the type
/// names its patient that way (e.g. `Encounter`, `Condition`). Parameters whose element is
/// nested (e.g. `Appointment.participant.actor`) have no column here.
pub fn patient_link_columns(resource_type: &str, schema: &Schema) -> Vec<String> {
    let Some((_, params)) = PATIENT_COMPARTMENT
        .iter()
        .find(|(t, _)| *t == resource_type)
    else {
        return Vec::new();
    };
    let mut columns: Vec<String> = Vec::new();
    for param in *params {
        let name = camel(param);
        let candidates = if name == "patient" {
            vec![name, "subject".to_string()]
        } else {
            vec![name]
        };
        if let Some(c) = candidates.into_iter().find(|c| is_reference(schema, c))
            && !columns.contains(&c)
        {
            columns.push(c);
        }
    }
    columns
}

fn camel(param: &str) -> String {
    let mut out = String::with_capacity(param.len());
    let mut upper = false;
    for c in param.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn is_reference(schema: &Schema, column: &str) -> bool {
    let Ok(field) = schema.field_with_name(column) else {
        return false;
    };
    let has_reference = |t: &DataType| match t {
        DataType::Struct(fields) => fields.iter().any(|f| f.name() == "reference"),
        _ => false,
    };
    match field.data_type() {
        DataType::List(item) | DataType::LargeList(item) => has_reference(item.data_type()),
        t => has_reference(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhir_encoder::{Encoder, EncoderOptions};

    #[test]
    fn link_columns_follow_the_compartment_definition() {
        let encoder = Encoder::new(EncoderOptions::default());
        let cols = |t: &str| patient_link_columns(t, &encoder.schema(t).unwrap());
        assert_eq!(cols("Observation"), ["subject", "performer"]);
        assert_eq!(cols("Encounter"), ["subject"]);
        assert_eq!(cols("Condition"), ["subject", "asserter"]);
        assert_eq!(cols("Claim"), ["patient"]);
        assert_eq!(
            cols("Coverage"),
            ["policyHolder", "subscriber", "beneficiary", "payor"]
        );
        assert_eq!(cols("MedicationRequest"), ["subject"]);
        // Nested only: no top-level column.
        assert!(cols("Appointment").is_empty());
        assert!(cols("Practitioner").is_empty());
    }
}
