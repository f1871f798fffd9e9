//! The UCUM table is generated: the committed file is exactly what its generator writes from the
//! committed essence.
#[allow(dead_code)]
#[path = "../examples/generate-ucum-table.rs"]
mod generator;

use std::path::Path;

#[test]
fn the_ucum_table_is_the_generators_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let xml = generator::read_essence(&root.join("definitions/ucum/ucum-essence.xml.gz")).unwrap();
    let generated = generator::generate(&xml).unwrap();
    let committed = std::fs::read_to_string(root.join("src/ucum/table.rs")).unwrap();
    assert!(
        generated == committed,
        "src/ucum/table.rs differs from the generator's output; run \
         `cargo run -p fhir-encoder --example generate-ucum-table`"
    );
}
