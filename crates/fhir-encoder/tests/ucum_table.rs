//! The UCUM table is generated: the committed file is exactly what its generator writes from the
//! committed essence.
#[allow(dead_code)]
#[path = "../examples/generate-ucum-table.rs"]
mod generator;

#[test]
fn the_ucum_table_is_the_generators_output() {
    // At run time: a build shared between checkouts must read this checkout's files.
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    );
    let xml = generator::read_essence(&root.join("definitions/ucum/ucum-essence.xml.gz")).unwrap();
    let generated = generator::generate(&xml).unwrap();
    let committed = std::fs::read_to_string(root.join("src/ucum/table.rs")).unwrap();
    assert!(
        generated == committed,
        "src/ucum/table.rs differs from the generator's output; run \
         `cargo run -p fhir-encoder --example generate-ucum-table`"
    );
}
