//! The compact FHIR R4 model generated from the official StructureDefinitions
//! (`examples/generate-model.rs` writes `src/generated/r4_model.json`).
use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(crate) struct Model {
    pub primitives: Vec<String>,
    pub types: HashMap<String, TypeDef>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TypeKind {
    Complex,
    Resource,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TypeDef {
    pub kind: TypeKind,
    pub elements: Vec<ElementDef>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ElementDef {
    pub name: String,
    #[serde(default)]
    pub choice: bool,
    #[serde(default)]
    pub array: bool,
    /// Type codes; empty for a `contentReference`.
    #[serde(default)]
    pub types: Vec<String>,
    /// `contentReference` target path, e.g. `Questionnaire.item`.
    #[serde(rename = "ref")]
    pub content_ref: Option<String>,
    /// Path of a backbone element (target of content references).
    pub path: Option<String>,
    /// Children of a backbone element.
    pub children: Option<Vec<ElementDef>>,
}

const MODEL_JSON: &str = include_str!("generated/r4_model.json");

pub(crate) fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        // The model is generated and committed with the crate; a parse failure is a build defect
        // that every test catches.
        serde_json::from_str(MODEL_JSON)
            .unwrap_or_else(|e| panic!("embedded FHIR model is corrupt: {e}"))
    })
}

impl Model {
    pub fn is_primitive(&self, code: &str) -> bool {
        self.primitives.iter().any(|p| p == code)
    }

    /// Finds a backbone element by its path, e.g. `Questionnaire.item`.
    pub fn backbone(&self, path: &str) -> Option<&ElementDef> {
        let root = path.split('.').next()?;
        let mut elements = &self.types.get(root)?.elements;
        let mut found = None;
        for seg in path.split('.').skip(1) {
            let el = elements.iter().find(|e| e.name == seg)?;
            elements = el.children.as_ref()?;
            found = Some(el);
        }
        found
    }
}
